"""The paper's tables as stored in common/paper.py, checked against the challenge formula."""

import pytest

from common import paper
from common.scoring import mai_score

TABLE2_TOP3 = {  # the top-3 each Table 2 score implies, rounded to 0.1 as the paper rounds top-1
    ("mobilenet_v2", "float32"): 95.5,
    ("mobilenet_v2", "int8"): 94.3,
    ("efficientnet_b2", "float32"): 99.0,
    ("efficientnet_b2", "int8"): 98.3,
}


@pytest.mark.parametrize("row", paper.ROWS, ids=lambda r: r.label)
def test_every_table2_row_is_reproduced_by_the_score_formula(row):
    assert row.top3 == TABLE2_TOP3[(row.arch, row.format)]
    assert round(paper.implied_top3(row.top1, row.score, row.table2_cpu_s), 1) == row.top3
    assert mai_score(row.top1, row.top3, row.table2_cpu_s) == pytest.approx(row.score, rel=0.01)


def test_scores_use_table2_runtimes_not_table3():
    # Table 2 rounds EfficientNet's CPU time; its scores come from the rounded times.
    table3 = {(r.arch, r.format): r.devices[paper.IPHONE_12_PRO].cpu_s for r in paper.ROWS}
    effnet = {r.format: r for r in paper.ROWS if r.arch == "efficientnet_b2"}
    assert (effnet["float32"].table2_cpu_s, effnet["int8"].table2_cpu_s) == (0.27, 0.28)
    assert (table3[("efficientnet_b2", "float32")], table3[("efficientnet_b2", "int8")]) == (0.272, 0.283)
    int8 = effnet["int8"]
    with_table3 = mai_score(int8.top1, int8.top3, table3[("efficientnet_b2", "int8")])
    assert abs(with_table3 / int8.score - 1) > 0.01  # 1.339, not 1.3533
    # MobileNetV2's times are the same in both tables
    for r in paper.ROWS:
        if r.arch == "mobilenet_v2":
            assert r.table2_cpu_s == r.devices[paper.IPHONE_12_PRO].cpu_s

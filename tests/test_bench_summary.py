"""summary.md has one section per bench; writing one keeps the others (`make bench` runs bench.run,
then bench.quant, and either can be run again alone)."""

from __future__ import annotations

from bench.summary import TITLE, sections, write_section

RUN_TABLE = "machine: 2 cores\n\n| figure | value | target |\n|---|---|---|\n| `make run` wall time | 412 s | < 600 s |"
QUANT = "## int8 that keeps its accuracy (synthetic set)\n\n| arch | format |\n|---|---|\n| resnet50 | int8 |"


def test_each_bench_replaces_only_its_own_section(tmp_path):
    write_section(tmp_path, "main", RUN_TABLE)
    write_section(tmp_path, "quant", QUANT)
    write_section(tmp_path, "main", RUN_TABLE.replace("412", "398"))  # bench.run again, after bench.quant
    text = (tmp_path / "summary.md").read_text()
    assert text.startswith(TITLE + "\n")
    assert sections(text) == {"main": RUN_TABLE.replace("412", "398"), "quant": QUANT}
    assert text.index("398 s") < text.index("## int8")  # bench.run's table first
    write_section(tmp_path, "quant", QUANT.replace("resnet50", "mobilenet_v2"))
    assert sections((tmp_path / "summary.md").read_text())["main"] == RUN_TABLE.replace("412", "398")


def test_a_summary_written_before_the_sections_keeps_both_tables(tmp_path):
    # What bench.run, then bench.quant, wrote before: the title, bench.run's table, the quant section.
    (tmp_path / "summary.md").write_text(f"{TITLE}\n\n{RUN_TABLE}\n\n{QUANT}\n")
    write_section(tmp_path, "main", RUN_TABLE.replace("412", "401"))
    assert sections((tmp_path / "summary.md").read_text()) == {"main": RUN_TABLE.replace("412", "401"), "quant": QUANT}

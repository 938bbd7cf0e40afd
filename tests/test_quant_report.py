"""The report lists the five worst layers of each integer model from its quant_debug.json."""

from common.report import render_report
from common.schemas import LayerError, QuantDebugReport
from tests.test_report import parse


def _doc(arch: str, fmt: str, errors: list[float]) -> QuantDebugReport:
    layers = [LayerError(index=i, tensor=f"{arch}_1/backbone_1/block_{i}_project_1/convolution", op="CONV_2D",
                         layers=[f"block_{i}_project"], rmse_over_scale=r, mean_error=-0.001 * i,
                         max_abs_error=0.1, rmse=r * 0.02, scale=0.02, zero_point=-3, num_elements=4096)
              for i, r in enumerate(errors)]
    return QuantDebugReport(run_id="r", arch=arch, format=fmt, tool="tf.lite.experimental.QuantizationDebugger",
                            calibration_samples=200, images=200, suspect_threshold=0.7, layers=layers,
                            worst=[], model_sha256="0" * 64)


def test_worst_layers_of_each_integer_model(fixture_run):
    debug = {("efficientnet_b2", "int8"): _doc("efficientnet_b2", "int8", [0.3, 2.5, 0.31, 9.75, 0.9, 0.29, 1.2]),
             ("resnet50", "int8"): _doc("resnet50", "int8", [0.3, 0.4])}
    text = render_report(fixture_run.results, fixture_run.evals, fixture_run.benches, quant_debug=debug)
    table = parse(text).root.find("section", id="conversion").find("table", id="worst-layers")
    rows = [r.text() for r in table.find("tbody").find_all("tr")]
    b2 = [r for r in rows if "EfficientNet-B2" in r]
    assert len(b2) == 5 and len(rows) == 7  # five of seven layers; resnet50 has only two
    assert "block_3_project" in b2[0] and "9.75" in b2[0]
    assert "block_1_project" in b2[1] and "block_6_project" in b2[2] and "block_4_project" in b2[3]


def test_no_debugger_reports_no_table(fixture_run):
    text = render_report(fixture_run.results, fixture_run.evals, fixture_run.benches)
    assert parse(text).root.find_all("table", id="worst-layers") == []


def test_int8_qat_is_shown_against_its_own_fine_tuned_weights(fixture_run):
    """int8-qat's difference from Keras mixes extra training with rounding: the report adds what it
    loses against its fine-tuned weights in float, with the interval and the McNemar p."""
    from common.schemas import Interval, PairedTest

    (arch, fmt), ev = next(iter(fixture_run.evals.items()))
    test = PairedTest(diff=0.5, ci=Interval(lo=-0.5, hi=1.5), first_only=9, second_only=6, p_value=0.61)
    evals = {**fixture_run.evals, (arch, fmt): ev.model_copy(update={
        "finetuned_float_top1": ev.top1 + 0.5, "drop_top1_vs_finetuned_test": test})}
    section = parse(render_report(fixture_run.results, evals, fixture_run.benches)).root.find("section", id="conversion")
    text = section.text()
    assert "Against its own fine-tuned weights in float" in text
    assert f"{ev.top1 + 0.5:.2f} %, this model {ev.top1:.2f} %: lost 0.50 ±1.00 pts top-1 (McNemar p 0.61)" in text
    # without the reference, no such note
    plain = parse(render_report(fixture_run.results, fixture_run.evals, fixture_run.benches)).root
    assert "fine-tuned weights" not in plain.find("section", id="conversion").text()

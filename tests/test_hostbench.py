"""common.hostbench: LiteRT on the host CPU — sane numbers, memory method, device identity."""

import sys

import numpy as np
import pytest

from common import hostbench
from common.errors import ScenebenchError


def _check_timings(m, num_runs):
    t = m.timings
    assert t.count == num_runs == len(m.samples_ms)
    assert all(s > 0 for s in m.samples_ms)
    assert t.init > 0 and t.first > 0 and t.warmup_mean > 0
    assert 0 < t.min <= t.p50 <= t.p90 <= t.p99 <= t.max
    assert t.min <= t.mean <= t.max and t.std >= 0
    assert t.mean == pytest.approx(float(np.mean(m.samples_ms)))


def test_isolated_measurement_of_int8_model(tiny_models):
    m = hostbench.measure(tiny_models.int8, num_threads=2, warmup_runs=3, num_runs=30, isolate=True)
    _check_timings(m, 30)
    assert m.delegate_applied == "cpu" and m.isolated
    assert "fresh child process" in m.memory.method
    assert m.memory.peak_mb > 0 and m.memory.overall_mb >= m.memory.init_mb >= 0
    assert m.memory.peak_mb > m.memory.overall_mb  # the peak includes Python and LiteRT themselves


def test_in_process_measurement_says_it_is_not_isolated(tiny_models):
    m = hostbench.measure(tiny_models.float32, num_threads=1, warmup_runs=0, num_runs=10, isolate=False)
    assert m.timings.count == 10 and m.timings.warmup_mean is None and m.timings.first > 0
    assert "not isolated" in m.memory.method


def test_uint8_input_is_filled_with_its_dtype(tiny_models):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(tiny_models.int8))
    interp.allocate_tensors()
    hostbench._fill_inputs(interp)
    detail = interp.get_input_details()[0]
    data = interp.get_tensor(detail["index"])
    assert data.dtype == np.uint8 and data.max() > 200 and data.min() < 50
    # deterministic: the same "photo" every time
    hostbench._fill_inputs(interp)
    assert np.array_equal(interp.get_tensor(detail["index"]), data)


def test_overhead_helpers_run(tiny_models):
    assert hostbench.bare_invoke_loop(tiny_models.int8, 20) > 0
    assert hostbench.timed_loop_seconds(tiny_models.int8, 20) > 0


def test_bad_model_fails_clearly(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer")
    with pytest.raises(ScenebenchError, match="bad.tflite"):
        hostbench.measure(bad, num_runs=2, isolate=True)


def test_bad_parameters_fail_clearly(tiny_models):
    with pytest.raises(hostbench.HostBenchError, match="num_runs"):
        hostbench.measure(tiny_models.int8, num_runs=0, isolate=False)


def test_host_device_is_labelled_as_the_host():
    d = hostbench.host_device()
    assert d.backend == "host" and d.id.startswith("host-") and d.delegates == ["cpu"]
    assert "iphone" not in d.id.lower() and "iPhone" not in d.model
    assert "Host CPU" in d.name
    assert d.id == hostbench.host_device().id  # stable, and not derived from the hostname
    assert hostbench.cpu_model_name() in d.model


def test_hostbench_does_not_import_tensorflow():
    import subprocess

    code = ("import sys, common.hostbench, runner.service, runner.client, runner.ios; "
            "bad=[m for m in sys.modules if m.split('.')[0] in ('tensorflow','keras')]; "
            "sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0

"""The ios backend's xcrun/devicectl commands, checked with a stand-in `xcrun` on PATH."""

import json
import os
import sys
from pathlib import Path

import pytest

from common.hashing import sha256_file
from runner.api import JobRequest
from runner.ios import DATA_DIR, END_MARKER, IosBackend, IosError
from tests.fixtures.xcrun import DEVICE_ID, UDID


def _request(delegate="cpu", **kw):
    return JobRequest(model_url="file:///unused", model_sha256="0" * 64, device=DEVICE_ID, delegate=delegate, **kw)


def test_devices_are_the_paired_physical_iphones(fake_xcrun):
    devices = IosBackend(app_path=fake_xcrun.app).devices()
    assert [d.id for d in devices] == [DEVICE_ID, "ios-00008030-000a1b2c3d4e5f60"]
    first, second = devices
    assert first.model == "iPhone13,3" and first.os == "iOS 17.5.1" and first.backend == "ios"
    assert "iPhone 12 Pro" in first.name and first.state == "idle"
    assert first.delegates == ["cpu", "gpu", "coreml"]
    assert second.state == "offline"
    assert fake_xcrun.calls()[0][:6] == ["devicectl", "list", "devices", "--timeout", "10", "--json-output"]


def test_run_installs_copies_and_launches_with_benchmark_model_flags(fake_xcrun, tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"tflite-bytes")
    backend = IosBackend(app_path=fake_xcrun.app, bundle_id="com.example.bench")
    device = backend.devices()[0]
    res = backend.run(device, model, _request("gpu", num_threads=4, warmup_runs=3, num_runs=30))
    calls = [c for c in fake_xcrun.calls() if c[:3] != ["devicectl", "list", "devices"]]
    assert calls[0] == ["devicectl", "device", "install", "app", "--device", UDID, fake_xcrun.app]
    copies = [c for c in calls if c[:4] == ["devicectl", "device", "copy", "to"]]
    assert len(copies) == 2
    for c in copies:
        assert c[c.index("--domain-type") + 1] == "appDataContainer"
        assert c[c.index("--domain-identifier") + 1] == "com.example.bench"
        assert c[c.index("--device") + 1] == UDID
    assert calls[-1] == ["devicectl", "device", "process", "launch", "--device", UDID, "--terminate-existing",
                         "--console", "--environment-variables", '{"OS_ACTIVITY_DT_MODE": "enable"}',
                         "com.example.bench"]
    params = json.loads((fake_xcrun.container / DATA_DIR / "benchmark_params.json").read_text())
    assert params["graph"] == "model.tflite"
    assert (params["num_threads"], params["warmup_runs"], params["num_runs"]) == ("4", "3", "30")
    assert params["use_gpu"] == "true" and params["use_coreml"] == "false"
    assert params["gpu_wait_type"] == "aggressive" and params["report_peak_memory_footprint"] == "true"
    assert all(isinstance(v, str) for v in params.values())  # the app passes each as --key=value
    assert (fake_xcrun.container / DATA_DIR / "model.tflite").read_bytes() == b"tflite-bytes"
    assert res.delegate_applied == "gpu" and res.device.model == "iPhone13,3"
    assert res.memory.peak_mb == pytest.approx(187.25)

    # A second job on the same phone does not reinstall the app.
    backend.run(device, model, _request("cpu"))
    installs = [c for c in fake_xcrun.calls() if c[:4] == ["devicectl", "device", "install", "app"]]
    assert len(installs) == 1


def test_int8_on_coreml_records_cpu(fake_xcrun, tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    backend = IosBackend(app_path=fake_xcrun.app)
    res = backend.run(backend.devices()[0], model, _request("coreml"))
    params = json.loads((fake_xcrun.container / DATA_DIR / "benchmark_params.json").read_text())
    assert params["use_coreml"] == "true" and "gpu_wait_type" not in params
    assert (res.delegate_requested, res.delegate_applied) == ("coreml", "cpu")


def test_failed_benchmark_raises_with_the_log(fake_xcrun, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_XCRUN_FORCE_LOG", "failed_invoke.log")
    monkeypatch.setenv("FAKE_XCRUN_END", "1 reason=benchmark_model returned an error (see the lines above)")
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    backend = IosBackend(app_path=fake_xcrun.app)
    with pytest.raises(IosError, match="Failed to invoke"):
        backend.run(backend.devices()[0], model, _request("cpu"))


def test_log_without_the_end_line_is_a_failed_run(fake_xcrun, tmp_path, monkeypatch):
    """The app crashed or was killed after printing its timings: not a result."""
    monkeypatch.setenv("FAKE_XCRUN_END", "none")
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    backend = IosBackend(app_path=fake_xcrun.app)
    with pytest.raises(IosError, match=f"no '{END_MARKER}' line"):
        backend.run(backend.devices()[0], model, _request("cpu"))


def test_missing_xcrun_is_a_clear_error(tmp_path):
    with pytest.raises(IosError, match="not found: install Xcode"):
        IosBackend(app_path=None, xcrun=str(tmp_path / "no-xcrun")).devices()


def test_runner_process_with_ios_backend(fake_xcrun, runner_factory, tmp_path):
    """The real runner process drives the stand-in xcrun end to end."""
    model = tmp_path / "m.tflite"
    model.write_bytes(b"model-bytes")
    rp = runner_factory(extra_args=["--backend", "ios", "--ios-app", fake_xcrun.app],
                        env=fake_xcrun.env).start()
    from runner.client import RunnerClient, wait_for_job

    client = RunnerClient(rp.url, rp.token)
    assert [d.id for d in client.devices()][0] == DEVICE_ID
    req = JobRequest(model_url=model.as_uri(), model_sha256=sha256_file(model), device=DEVICE_ID, delegate="coreml")
    done = wait_for_job(client, client.submit(req), timeout_s=60)
    assert done.result.delegate_applied == "cpu" and done.result.device.model == "iPhone13,3"
    assert done.result.memory.peak_mb == pytest.approx(158.906)


def test_device_states_follow_coredevice():
    """A reachable phone rests with its tunnel "disconnected"; only "unavailable" is unreachable."""
    from runner.ios import device_reachable, parse_devicectl_devices

    doc = json.loads((Path(__file__).parent / "data" / "devicectl" / "list_devices.json").read_text())
    devices = {d.name.split(" (")[0]: d for d in parse_devicectl_devices(doc, busy={"ios-00008030-0103524335e2f624"})}
    assert set(devices) == {"Lab 13 Pro", "Lab 11", "Drawer 14 Pro", "New 15"}  # the watch is not a target
    assert devices["Lab 13 Pro"].state == "idle" and devices["Lab 13 Pro"].model == "iPhone14,2"
    assert devices["Lab 13 Pro"].os == "iOS 18.1.1" and devices["Lab 13 Pro"].id == "ios-00008110-00015d4e1439801e"
    assert devices["Lab 11"].state == "busy"  # on Wi-Fi, tunnel resting, a job running
    assert devices["Drawer 14 Pro"].state == "offline"
    assert devices["New 15"].state == "offline"
    reasons = {d["deviceProperties"]["name"]: device_reachable(d)[1] for d in doc["result"]["devices"]}
    assert "Developer Mode is disabled" in reasons["New 15"]
    assert "unreachable" in reasons["Drawer 14 Pro"]


def test_a_run_that_outlives_the_timeout_is_killed(fake_xcrun, tmp_path, monkeypatch):
    pid_file = tmp_path / "hung.pid"
    monkeypatch.setenv("FAKE_XCRUN_HANG", str(pid_file))
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    backend = IosBackend(app_path=fake_xcrun.app, run_timeout_s=2)
    with pytest.raises(IosError, match="(?s)did not finish within 2 s.*Waiting for the application"):
        backend.run(backend.devices()[0], model, _request("cpu"))
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left running
        os.kill(int(pid_file.read_text()), 0)


def _cli(*args, env=None):
    import subprocess

    return subprocess.run([sys.executable, "-m", "runner", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, cwd=Path(__file__).parent.parent)


def test_devices_command_says_why_a_phone_is_offline(fake_xcrun):
    doc = (Path(__file__).parent / "data" / "devicectl" / "list_devices.json").read_text()
    proc = _cli("devices", "--backend", "ios", env={"FAKE_XCRUN_DEVICES": doc})
    assert proc.returncode == 0, proc.stderr
    lines = {line.split("\t")[0]: line for line in proc.stdout.splitlines()}
    assert "\tidle\tLab 13 Pro (iPhone 13 Pro)\tiPhone14,2\tiOS 18.1.1\tcpu,gpu,coreml" in lines[
        "ios-00008110-00015d4e1439801e"]
    assert "offline" in lines["ios-00008120-001a2b3c4d5e6f70"]
    assert "Developer Mode is disabled: enable it in Settings" in lines["ios-00008120-001a2b3c4d5e6f70"]
    assert "unreachable" in lines["ios-00008120-0014485601e3c01e"]


def test_try_command_runs_one_job_on_a_phone(fake_xcrun, tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"int8 model bytes")
    proc = _cli("try", "--backend", "ios", "--ios-app", fake_xcrun.app, "--model", str(model),
                "--delegate", "coreml", "--num-runs", "50")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["device"]["id"] == DEVICE_ID and result["delegate_requested"] == "coreml"
    assert result["delegate_applied"] == "cpu" and result["timings_ms"]["count"] == 50
    assert (fake_xcrun.container / DATA_DIR / "model.tflite").read_bytes() == b"int8 model bytes"


def test_try_command_refuses_an_offline_phone_and_a_missing_model(fake_xcrun, tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    offline = _cli("try", "--backend", "ios", "--ios-app", fake_xcrun.app, "--model", str(model),
                   "--device", "ios-00008030-000a1b2c3d4e5f60")
    assert offline.returncode == 2 and "is offline" in offline.stderr + offline.stdout
    missing = _cli("try", "--backend", "ios", "--ios-app", fake_xcrun.app, "--model", str(tmp_path / "nope.tflite"))
    assert missing.returncode == 2 and "--model must name a .tflite file" in missing.stderr + missing.stdout
    no_app = _cli("try", "--backend", "ios", "--model", str(model))
    assert no_app.returncode == 2 and "missing setting --ios-app" in no_app.stderr + no_app.stdout


def test_serve_refuses_an_ios_backend_without_a_real_app_bundle(fake_xcrun, tmp_path):
    env = {"SCENEBENCH_RUNNER_TOKEN": "t"}
    not_a_bundle = tmp_path / "Downloads"
    not_a_bundle.mkdir()
    for args, says in (([], "missing setting --ios-app"),
                       (["--ios-app", str(not_a_bundle)], "is not an iOS app bundle (no Info.plist in it)")):
        proc = _cli("serve", "--backend", "ios", "--port", "0", *args, env=env)
        assert proc.returncode == 2 and says in proc.stderr + proc.stdout


def test_a_rebuilt_app_is_installed_again(fake_xcrun, tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    backend = IosBackend(app_path=fake_xcrun.app)
    device = backend.devices()[0]
    backend.run(device, model, _request("cpu"))
    backend.run(device, model, _request("cpu"))
    binary = Path(fake_xcrun.app) / "TFLiteBenchmark"
    binary.write_bytes(b"\xcf\xfa\xed\xfe rebuilt")
    os.utime(binary, ns=(binary.stat().st_atime_ns, binary.stat().st_mtime_ns + 10**9))
    backend.run(device, model, _request("cpu"))
    installs = [c for c in fake_xcrun.calls() if c[:4] == ["devicectl", "device", "install", "app"]]
    assert len(installs) == 2


def test_try_command_on_the_host(tiny_models):
    proc = _cli("try", "--model", str(tiny_models.int8), "--num-runs", "20", "--warmup-runs", "2")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["device"]["backend"] == "host" and "not an iPhone" in result["device"]["name"]
    assert result["timings_ms"]["count"] == 20 and len(result["samples_ms"]) == 20


def test_json_logs_stay_off_stdout_where_the_answer_goes(tiny_models):
    """In pods and pipes logs are JSON lines; `try` and `devices` print their answer on stdout all the same."""
    proc = _cli("try", "--model", str(tiny_models.int8), "--num-runs", "3", "--warmup-runs", "1",
                env={"SCENEBENCH_LOG_FORMAT": "json"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["timings_ms"]["count"] == 3  # the whole of stdout is the result document
    assert '"event": "try_summary"' in proc.stderr
    listing = _cli("devices", env={"SCENEBENCH_LOG_FORMAT": "json"})
    assert listing.returncode == 0 and listing.stdout.startswith("host-") and len(listing.stdout.splitlines()) == 1

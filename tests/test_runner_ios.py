"""The ios backend's xcrun/devicectl commands, checked with a stand-in `xcrun` on PATH (tests/fixtures/xcrun.py)."""

import json
import os
import sys
import time
from pathlib import Path

import pytest

from common.errors import ConfigError
from common.hashing import sha256_file
from runner.api import JobRequest
from runner.ios import DATA_DIR, END_MARKER, IosBackend, IosError, benchmark_params, max_secs_for
from tests.fixtures.xcrun import BUNDLE_ID, DEVICE_ID, IPHONE_X_ID, UDID, write_app_bundle


def _request(delegate="cpu", sha="0" * 64, **kw):
    return JobRequest(model_url="file:///unused", model_sha256=sha, device=DEVICE_ID, delegate=delegate, **kw)


def _backend(fake, **kw):
    kw.setdefault("cooldown_s", 0)
    return IosBackend(app_path=fake.app, **kw)


def _model(tmp_path, data=b"x"):
    model = tmp_path / "m.tflite"
    model.write_bytes(data)
    return model


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (its parent may be gone and nobody reaps it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def test_devices_are_the_paired_physical_iphones_with_their_os_build(fake_xcrun):
    devices = _backend(fake_xcrun).devices()
    assert [d.id for d in devices] == [DEVICE_ID, "ios-00008030-000a1b2c3d4e5f60", IPHONE_X_ID]
    first, second, iphone_x = devices
    assert first.model == "iPhone13,3" and first.os == "iOS 17.5.1 (21F90)" and first.backend == "ios"
    assert "iPhone 12 Pro" in first.name and first.state == "idle"
    assert first.delegates == ["cpu", "gpu", "coreml"]
    assert second.state == "offline"
    assert iphone_x.os == "iOS 16.7.10 (20H350)" and iphone_x.state == "idle"
    assert fake_xcrun.calls()[0][:6] == ["devicectl", "list", "devices", "--timeout", "10", "--json-output"]


def test_a_job_is_a_timing_pass_and_a_separate_memory_pass(fake_xcrun, tmp_path):
    model = _model(tmp_path, b"tflite-bytes")
    backend = _backend(fake_xcrun, run_timeout_s=1800, thermal_wait_s=300)
    device = backend.devices()[0]
    res = backend.run(device, model, _request("gpu", num_threads=4, warmup_runs=3, num_runs=50))
    calls = [c for c in fake_xcrun.calls() if c[:3] != ["devicectl", "list", "devices"]]
    assert calls[0] == ["devicectl", "device", "install", "app", "--device", UDID, fake_xcrun.app]
    copies = [c for c in calls if c[:4] == ["devicectl", "device", "copy", "to"]]
    assert [c[c.index("--destination") + 1] for c in copies] == [
        f"{DATA_DIR}/model.tflite", f"{DATA_DIR}/benchmark_params.json", f"{DATA_DIR}/benchmark_params.json"]
    for c in copies:
        assert c[c.index("--domain-type") + 1] == "appDataContainer"
        assert c[c.index("--domain-identifier") + 1] == BUNDLE_ID  # read from the app's Info.plist
    launches = [c for c in calls if c[:4] == ["devicectl", "device", "process", "launch"]]
    assert len(launches) == 2
    for c in launches:
        assert c[:10] == ["devicectl", "device", "process", "launch", "--device", UDID, "--terminate-existing",
                          "--console", "--environment-variables", '{"OS_ACTIVITY_DT_MODE": "enable"}']
        assert c[10] == "--json-output" and c[-1] == BUNDLE_ID
    timing, memory = fake_xcrun.params()
    assert timing["report_peak_memory_footprint"] == "false" and memory["report_peak_memory_footprint"] == "true"
    assert (timing["num_threads"], timing["warmup_runs"], timing["num_runs"]) == ("4", "3", "50")
    assert (memory["warmup_runs"], memory["num_runs"]) == ("1", "10")
    assert timing["use_gpu"] == "true" and timing["gpu_precision_loss_allowed"] == "true"
    assert timing["gpu_wait_type"] == "aggressive" and timing["use_coreml"] == "false"
    assert timing["scenebench_thermal_wait_s"] == "300" and memory["scenebench_thermal_wait_s"] == "0"
    # benchmark_model stops by itself (two phases of max_secs, after the thermal wait) before the runner's kill
    max_secs = float(timing["max_secs"])
    assert 300 + 2 * max_secs < 1800 and max_secs == max_secs_for(1800, 300)
    assert all(isinstance(v, str) for v in timing.values())  # the app passes each as --key=value
    assert (fake_xcrun.container / DATA_DIR / "model.tflite").read_bytes() == b"tflite-bytes"

    assert res.delegate_applied == "gpu" and res.device.model == "iPhone13,3"
    assert len(res.samples_ms) == 50 and res.timings_ms.p50 is not None and res.timings_ms.p90 is not None
    assert res.memory.peak_mb == pytest.approx(187.25)  # from the memory pass
    c = res.conditions
    assert c.memory_pass == "separate" and c.gpu_precision_loss_allowed is True and c.neural_engine is True
    assert (c.app_tf_tag, c.app_build_id, c.os_build) == ("v2.18.0", "20261120T0912Z-4f2c9e1", "21F90")
    assert c.state_before.thermal == "nominal" and c.thermal_wait_limit_s == 300

    # A second job on the same phone does not reinstall the app.
    backend.run(device, model, _request("cpu"))
    installs = [c for c in fake_xcrun.calls() if c[:4] == ["devicectl", "device", "install", "app"]]
    assert len(installs) == 1


def test_no_memory_pass_when_memory_runs_is_zero(fake_xcrun, tmp_path):
    backend = _backend(fake_xcrun, memory_runs=0)
    res = backend.run(backend.devices()[0], _model(tmp_path), _request("cpu"))
    assert len(fake_xcrun.params()) == 1 and res.conditions.memory_pass == "same"
    assert res.memory.peak_mb is None and res.memory.overall_mb == pytest.approx(58.1992)


def test_int8_on_coreml_records_cpu(fake_xcrun, tmp_path):
    backend = _backend(fake_xcrun)
    res = backend.run(backend.devices()[0], _model(tmp_path), _request("coreml"))
    params = fake_xcrun.params()[0]
    assert params["use_coreml"] == "true" and "gpu_wait_type" not in params
    assert (res.delegate_requested, res.delegate_applied) == ("coreml", "cpu")
    assert res.conditions.coreml_compute_units.startswith("all")


def test_coreml_on_an_iphone_x_says_it_has_no_neural_engine(fake_xcrun, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_XCRUN_FORCE_LOG", "app_coreml_float_partial.log")
    backend = _backend(fake_xcrun)
    iphone_x = next(d for d in backend.devices() if d.id == IPHONE_X_ID)
    res = backend.run(iphone_x, _model(tmp_path), _request("coreml").model_copy(update={"device": IPHONE_X_ID}))
    assert res.conditions.neural_engine is False and res.delegate_applied == "partial"
    # devicectl is given the UDID as it listed it (lower case for phones before 2018)
    launch = [c for c in fake_xcrun.calls() if c[:4] == ["devicectl", "device", "process", "launch"]][0]
    assert launch[launch.index("--device") + 1] == "5f1c0b7e2a9d4c36b8e1f0a2d3c4b5a697e8f012"


def test_failed_benchmark_raises_with_the_log(fake_xcrun, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_XCRUN_FORCE_LOG", "app_failed_invoke.log")
    backend = _backend(fake_xcrun)
    with pytest.raises(IosError, match="failed to invoke"):
        backend.run(backend.devices()[0], _model(tmp_path), _request("cpu"))


def test_log_without_the_end_line_is_a_failed_run(fake_xcrun, tmp_path, monkeypatch):
    """The app crashed or was killed after printing its timings: not a result."""
    monkeypatch.setenv("FAKE_XCRUN_END", "none")
    backend = _backend(fake_xcrun)
    with pytest.raises(IosError, match=f"no '{END_MARKER}' line"):
        backend.run(backend.devices()[0], _model(tmp_path), _request("cpu"))


def test_a_failed_memory_pass_keeps_the_timing(fake_xcrun, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_XCRUN_FORCE_MEMORY_LOG", "app_failed_invoke.log")
    backend = _backend(fake_xcrun)
    res = backend.run(backend.devices()[0], _model(tmp_path), _request("cpu"))
    assert len(res.samples_ms) == 50 and res.memory.peak_mb is None
    assert any("memory pass failed" in n for n in res.notes)


def test_missing_xcrun_is_a_clear_error(tmp_path):
    with pytest.raises(IosError, match="not found: install Xcode"):
        IosBackend(app_path=None, xcrun=str(tmp_path / "no-xcrun")).devices()


def test_cooldown_between_the_delegates_of_one_model(fake_xcrun, tmp_path):
    slept: list[float] = []
    backend = IosBackend(app_path=fake_xcrun.app, cooldown_s=30.0, sleep=slept.append)
    device = backend.devices()[0]
    model = _model(tmp_path)
    first = backend.run(device, model, _request("cpu", sha="a" * 64))
    second = backend.run(device, model, _request("gpu", sha="a" * 64))
    other_model = backend.run(device, model, _request("coreml", sha="b" * 64))
    assert first.conditions.cooldown_s is None and other_model.conditions.cooldown_s is None
    assert len(slept) == 1 and 25 < slept[0] <= 30 and second.conditions.cooldown_s == pytest.approx(slept[0])


def test_max_secs_leaves_time_for_the_wait_and_refuses_no_time():
    assert max_secs_for(1800, 300) == 720.0
    req = _request("cpu")
    assert benchmark_params(req, 720)["max_secs"] == "720"
    with pytest.raises(ConfigError, match="--job-timeout-s 100 leaves benchmark_model no time"):
        max_secs_for(100, 300)


def test_runner_process_with_ios_backend(fake_xcrun, runner_factory, tmp_path):
    """The real runner process drives the stand-in xcrun end to end."""
    model = _model(tmp_path, b"model-bytes")
    rp = runner_factory(extra_args=["--backend", "ios", "--ios-app", fake_xcrun.app, "--cooldown-s", "0"],
                        env=fake_xcrun.env).start()
    from runner.client import RunnerClient, wait_for_job

    client = RunnerClient(rp.url, rp.token)
    assert [d.id for d in client.devices()][0] == DEVICE_ID
    req = JobRequest(model_url=model.as_uri(), model_sha256=sha256_file(model), device=DEVICE_ID, delegate="coreml")
    done = wait_for_job(client, client.submit(req), timeout_s=60)
    assert done.result.delegate_applied == "cpu" and done.result.device.model == "iPhone13,3"
    assert done.result.memory.peak_mb == pytest.approx(158.906)
    assert done.result.conditions.memory_pass == "separate" and len(done.result.samples_ms) == 50


def test_device_states_follow_coredevice():
    """A reachable phone rests with its tunnel "disconnected"; only "unavailable" is unreachable."""
    from runner.ios import device_reachable, parse_devicectl_devices

    doc = json.loads((Path(__file__).parent / "data" / "devicectl" / "list_devices.json").read_text())
    devices = {d.name.split(" (")[0]: d for d in parse_devicectl_devices(doc, busy={"ios-00008030-0103524335e2f624"})}
    assert set(devices) == {"Lab 13 Pro", "Lab 11", "Drawer 14 Pro", "New 15"}  # the watch is not a target
    assert devices["Lab 13 Pro"].state == "idle" and devices["Lab 13 Pro"].model == "iPhone14,2"
    assert devices["Lab 13 Pro"].os == "iOS 18.1.1 (22B91)" and devices["Lab 13 Pro"].id == "ios-00008110-00015d4e1439801e"
    assert devices["Lab 11"].state == "busy"  # on Wi-Fi, tunnel resting, a job running
    assert devices["Drawer 14 Pro"].state == "offline"
    assert devices["New 15"].state == "offline"
    reasons = {d["deviceProperties"]["name"]: device_reachable(d)[1] for d in doc["result"]["devices"]}
    assert "Developer Mode is disabled" in reasons["New 15"]
    assert "unreachable" in reasons["Drawer 14 Pro"]
    # every device is one device: its own ECID (the hex half of its UDID), serial and build
    hws = [d["hardwareProperties"] for d in doc["result"]["devices"]]
    assert len({h["ecid"] for h in hws}) == len({h["serialNumber"] for h in hws}) == len(hws)
    assert all(h["ecid"] == int(h["udid"].split("-")[1], 16) for h in hws)


@pytest.mark.parametrize("json_at", ["launch", "exit"])
def test_a_run_that_outlives_the_timeout_is_ended_on_the_phone(fake_xcrun, tmp_path, monkeypatch, json_at):
    """On timeout the app is terminated on the phone (pid from --json-output, else from the app's start line)."""
    pid_file = tmp_path / "hung.json"
    monkeypatch.setenv("FAKE_XCRUN_HANG", str(pid_file))
    monkeypatch.setenv("FAKE_XCRUN_JSON_AT", json_at)
    backend = _backend(fake_xcrun, run_timeout_s=3, thermal_wait_s=0)
    with pytest.raises(IosError, match=r"(?s)did not finish within 3 s.*the app \(pid \d+\) was terminated on the "
                                       r"phone.*Waiting for the application to terminate"):
        backend.run(backend.devices()[0], _model(tmp_path), _request("cpu"))
    pids = json.loads(pid_file.read_text())
    terminate = [c for c in fake_xcrun.calls() if c[:4] == ["devicectl", "device", "process", "terminate"]]
    assert len(terminate) == 1
    assert terminate[0][4:10] == ["--device", UDID, "--pid", str(pids["app"]), "--kill", "--json-output"]
    deadline = time.monotonic() + 5
    while _alive(pids["app"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pids["app"])  # the app on the "phone" is gone
    with pytest.raises(ProcessLookupError):  # the local devicectl: killed and reaped, not left running
        os.kill(pids["devicectl"], 0)


def _cli(*args, env=None):
    import subprocess

    return subprocess.run([sys.executable, "-m", "runner", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, cwd=Path(__file__).parent.parent)


def test_devices_command_says_why_a_phone_is_offline(fake_xcrun):
    doc = (Path(__file__).parent / "data" / "devicectl" / "list_devices.json").read_text()
    proc = _cli("devices", "--backend", "ios", env={"FAKE_XCRUN_DEVICES": doc})
    assert proc.returncode == 0, proc.stderr
    lines = {line.split("\t")[0]: line for line in proc.stdout.splitlines()}
    assert "\tidle\tLab 13 Pro (iPhone 13 Pro)\tiPhone14,2\tiOS 18.1.1 (22B91)\tcpu,gpu,coreml" in lines[
        "ios-00008110-00015d4e1439801e"]
    assert "offline" in lines["ios-00008120-001a2b3c4d5e6f70"]
    assert "Developer Mode is disabled: enable it in Settings" in lines["ios-00008120-001a2b3c4d5e6f70"]
    assert "unreachable" in lines["ios-00008120-0014485601e3c01e"]


def test_try_command_runs_one_job_on_a_phone(fake_xcrun, tmp_path):
    model = _model(tmp_path, b"int8 model bytes")
    proc = _cli("try", "--backend", "ios", "--ios-app", fake_xcrun.app, "--model", str(model),
                "--delegate", "coreml", "--num-runs", "50")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["device"]["id"] == DEVICE_ID and result["delegate_requested"] == "coreml"
    assert result["delegate_applied"] == "cpu" and result["timings_ms"]["count"] == 50
    assert result["conditions"]["os_build"] == "21F90" and result["conditions"]["app_tf_tag"] == "v2.18.0"
    assert (fake_xcrun.container / DATA_DIR / "model.tflite").read_bytes() == b"int8 model bytes"


def test_try_command_refuses_an_offline_phone_and_a_missing_model(fake_xcrun, tmp_path):
    model = _model(tmp_path)
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
                       (["--ios-app", str(not_a_bundle)], "is not an iOS app bundle (no Info.plist in it)"),
                       (["--ios-app", fake_xcrun.app, "--ios-bundle-id", "org.tensorflow.lite.benchmark"],
                        "is not the bundle id of --ios-app")):
        proc = _cli("serve", "--backend", "ios", "--port", "0", *args, env=env)
        assert proc.returncode == 2 and says in proc.stderr + proc.stdout


def test_bundle_id_comes_from_the_app(tmp_path):
    app = write_app_bundle(tmp_path / "Team.app", bundle_id="org.scenebench.tflitebenchmark.XYZ9876543")
    assert IosBackend(app_path=app).bundle_id == "org.scenebench.tflitebenchmark.XYZ9876543"


def test_a_rebuilt_app_is_installed_again(fake_xcrun, tmp_path):
    model = _model(tmp_path)
    backend = _backend(fake_xcrun)
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
    assert result["conditions"]["runs_completed"] == 20


def test_json_logs_stay_off_stdout_where_the_answer_goes(tiny_models):
    """In pods and pipes logs are JSON lines; `try` and `devices` print their answer on stdout all the same."""
    proc = _cli("try", "--model", str(tiny_models.int8), "--num-runs", "3", "--warmup-runs", "1",
                env={"SCENEBENCH_LOG_FORMAT": "json"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["timings_ms"]["count"] == 3  # the whole of stdout is the result document
    assert '"event": "try_summary"' in proc.stderr
    listing = _cli("devices", env={"SCENEBENCH_LOG_FORMAT": "json"})
    assert listing.returncode == 0 and listing.stdout.startswith("host-") and len(listing.stdout.splitlines()) == 1


def test_benchmark_step_records_the_conditions_of_each_iphone_job(fake_xcrun, runner_factory, tmp_path, tiny_models):
    """jobs.benchmark against a real runner driving the stand-in xcrun: every bench document says how it was taken."""
    from common import layout
    from common.schemas import ArtifactRef, BenchResult, ConvertReport, TensorInfo
    from common.store import LocalStore
    from jobs import benchmark

    store = LocalStore(tmp_path / "artifacts")
    key = layout.tflite_model("r1", "mobilenet_v2", "float32")
    info = store.put_file(key, tiny_models.float32)
    store.put_json(layout.convert_json("r1", "mobilenet_v2", "float32"), ConvertReport(
        run_id="r1", arch="mobilenet_v2", format="float32", model=ArtifactRef(key=key, sha256=info.sha256,
                                                                              size=info.size),
        size_mb=0.1, input=TensorInfo(name="in", dtype="float32", shape=[1, 32, 48, 3]),
        output=TensorInfo(name="out", dtype="float32", shape=[1, 5]), op_counts={"CONV_2D": 2}, converter="test",
        seconds=0.1, source_model_sha256="0" * 64, cache_key="k", code_version="test"))
    rp = runner_factory(extra_args=["--backend", "ios", "--ios-app", fake_xcrun.app, "--cooldown-s", "0"],
                        env=fake_xcrun.env).start()
    assert benchmark.main(["--store", store.uri, "--run-id", "r1", "--arch", "mobilenet_v2", "--format", "float32",
                           "--runner-url", rp.url, "--runner-token", rp.token, "--devices", DEVICE_ID]) == 0
    docs = {b.delegate_requested: b for b in (store.get_model(k, BenchResult)
                                               for k in store.list(layout.bench_prefix("r1", "mobilenet_v2", "float32")))}
    assert set(docs) == {"cpu", "gpu", "coreml"}
    assert docs["coreml"].delegate_applied == "partial" and "3 of 71 nodes" in docs["coreml"].reason
    assert (docs["coreml"].conditions.delegated_nodes, docs["coreml"].conditions.total_nodes) == (3, 71)
    assert docs["gpu"].conditions.gpu_precision_loss_allowed is True and docs["gpu"].delegate_applied == "gpu"
    for b in docs.values():
        assert b.conditions.memory_pass == "separate" and b.conditions.os_build == "21F90"
        assert len(b.samples_ms) == b.timings_ms.count and b.timings_ms.p90 is not None


def test_runner_md_keeps_the_first_contact_checklist_and_honest_labels():
    text = (Path(__file__).parent.parent / "RUNNER.md").read_text()
    assert "(Neural Engine)" not in text and "`coreml` (Core ML)" in text
    first = text[text.index("7. **First contact"):text.index("8. **Install the runner**")]
    for step in ("xcrun devicectl device process launch", "--json-output launch.json",
                 "xcrun devicectl device process terminate", "python -m runner devices --backend ios",
                 "python -m runner try --backend ios", "**Save as fixtures**", "tests/data/devicectl/list_devices.json",
                 "tests/data/ios_logs/"):
        assert step in first, step
    assert first.index("xcrun devicectl device process launch") < first.index("python -m runner devices") \
        < first.index("python -m runner try")
    # every runner setting of the ios backend is documented
    for flag in ("--thermal-wait-s", "--cooldown-s", "--memory-runs", "--job-timeout-s", "--ios-bundle-id"):
        assert f"| `{flag}` |" in text, flag

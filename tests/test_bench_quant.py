"""bench.quant's verdict and table: which formats count for the ≤ 0.5-point goal."""

from bench import quant


def _row(arch, fmt, drop, float_top1=90.0, **extra):
    return {"arch": arch, "format": fmt, "calibration_samples": 200, "float_top1": float_top1,
            "top1": float_top1 - drop, "drop_pts": drop, "drop_ci95": [drop - 1, drop + 1], "mcnemar_p": 1.0,
            "agreement": 95.0, "size_mb": 1.0, "host_ms": 1.0, "images": 600, **extra}


def test_int8_qat_is_a_phone_integer_format_and_meets_the_goal_on_its_own():
    rows = [_row("efficientnet_b2", "float32", 0.0), _row("efficientnet_b2", "int8", 6.8),
            _row("efficientnet_b2", "int16x8", 0.0), _row("efficientnet_b2", "int8-qat", -1.8),
            _row("resnet50", "int8", 0.3, float_top1=79.0),
            _row("mobilenet_v2", "int8", 0.2, sweep=True)]
    g = quant.goal(rows)
    assert g["efficientnet_b2"]["met_by"] == ["int8-qat"] and g["efficientnet_b2"]["met"]
    assert "int16x8" not in g["efficientnet_b2"]["met_by"]  # CPU only on iOS: not a phone integer format
    assert g["resnet50"]["met_by"] == ["int8"] and not g["resnet50"]["met"]  # float below 80 %
    assert "mobilenet_v2" not in g  # sweep rows do not count


def test_table_names_int8_qat_and_its_reference():
    doc = {"config": {"image_size": "32x48", "epochs": {"efficientnet_b2": 8}}, "train": {},
           "wall_time_s": 1.0, "rows": [_row("efficientnet_b2", "int8-qat", -1.8)],
           "goal": quant.goal([_row("efficientnet_b2", "int8-qat", -1.8)])}
    text = quant.table(doc)
    assert "| efficientnet_b2 | int8-qat |" in text and "met by int8-qat" in text
    assert "model before its fine-tuning" in text


def test_int8_qat_counts_only_when_it_keeps_its_own_fine_tuned_accuracy_too():
    """Extra epochs can lift int8-qat over the float model it replaces while its conversion still
    loses points against its own fine-tuned weights: that does not meet the goal."""
    gain_from_training = _row("resnet50", "int8-qat", -5.0, drop_vs_finetuned_pts=1.2)
    g = quant.goal([_row("resnet50", "float32", 0.0), gain_from_training])
    assert g["resnet50"]["met_by"] == [] and not g["resnet50"]["met"]
    kept = _row("resnet50", "int8-qat", -5.0, drop_vs_finetuned_pts=0.3, finetuned_float_top1=95.3,
                drop_vs_finetuned_ci95=[-0.5, 1.0], mcnemar_p_vs_finetuned=0.5)
    g = quant.goal([_row("resnet50", "float32", 0.0), kept])
    assert g["resnet50"]["met_by"] == ["int8-qat"] and g["resnet50"]["met"]
    doc = {"config": {"image_size": "32x48", "epochs": {"resnet50": 3}}, "train": {}, "wall_time_s": 1.0,
           "rows": [kept], "goal": g}
    text = quant.table(doc)
    assert "| resnet50 | 90.0 | 95.3 | 95.0 | +0.30 [-0.50, +1.00] | 0.5 |" in text


def test_tasks_run_side_by_side_after_their_dependencies():
    """Two workers: independent tasks overlap (each waits for the other to start), a task starts
    only after its dependencies, and the longest path goes first."""
    import threading

    started = {n: threading.Event() for n in ("a", "b")}
    order = []

    def meet(me, other):
        def go():
            order.append(me)
            started[me].set()
            assert started[other].wait(timeout=30), f"{other} never ran beside {me}"
            return me
        return go

    tasks = [quant.Task("short", lambda: order.append("short") or "s", seconds=1),
             quant.Task("a", meet("a", "b"), seconds=10), quant.Task("b", meet("b", "a"), seconds=5),
             quant.Task("after-a", lambda: order.append("after-a") or "x", ("a", "short"), seconds=1)]
    done = quant.run_tasks(tasks, workers=2)
    assert done == {"a": "a", "b": "b", "short": "s", "after-a": "x"}
    assert order.index("after-a") > max(order.index("a"), order.index("short"))
    assert set(order[:2]) == {"a", "b"}  # the longest paths first, "short" (1 + 1 s) after them


def test_a_failed_task_starts_nothing_new_and_lets_the_running_one_finish():
    import threading

    import pytest

    release, finished, ran = threading.Event(), [], []

    def slow():
        release.wait(timeout=30)
        finished.append("slow")

    def fail():
        release.set()
        raise SystemExit("jobs.convert failed (1)")

    tasks = [quant.Task("slow", slow, seconds=10), quant.Task("fail", fail, seconds=9),
             quant.Task("later", lambda: ran.append("later"), ("fail",), seconds=1),
             quant.Task("queued", lambda: ran.append("queued"), seconds=0.5)]
    with pytest.raises(SystemExit, match="jobs.convert failed"):
        quant.run_tasks(tasks, workers=2)
    assert finished == ["slow"] and ran == []


def test_tasks_that_wait_on_a_missing_task_are_refused():
    import pytest

    with pytest.raises(ValueError, match="waits on train/x, which is not a task"):
        quant.run_tasks([quant.Task("convert", lambda: None, ("train/x",))], workers=2)

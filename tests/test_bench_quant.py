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

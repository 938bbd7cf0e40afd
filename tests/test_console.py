"""The terminal pieces: a leaderboard that fits the window, native stderr kept out of the live view."""

from __future__ import annotations

import io
import os

import pytest
from rich.console import Console
from structlog.testing import capture_logs

from common.console import NativeStderr, fit_widths, leaderboard_table
from tests.fixtures.results import build_run

HOST_LABEL = "host CPU (AMD EPYC 7B13), not an iPhone · cpu"


def render(renderable, width: int) -> list[str]:
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None).print(renderable)
    return buf.getvalue().splitlines()


def test_fit_widths_folds_the_widest_flexible_column_first_and_keeps_numbers():
    assert fit_widths([15, 7, 5, 46], [8, 5, None, 14], 60) == [15, 7, 5, 33]
    assert fit_widths([15, 7, 5, 46], [8, 5, None, 14], 30) == [8, 5, 5, 14]  # floors, even if too wide
    assert fit_widths([15, 7, 5, 46], [8, 5, None, 14], 200) == [15, 7, 5, 46]


@pytest.mark.parametrize("width", [60, 80, 100, 140])
def test_leaderboard_fits_the_window_and_shows_where_latency_was_measured(width):
    results = build_run().results
    for m in results.models[:3]:  # two devices: the label becomes a column
        m.score_basis = HOST_LABEL
    lines = render(leaderboard_table(results, width), width)
    assert max(len(line) for line in lines) <= width
    text = " ".join(line.strip() for line in lines)
    for m in results.models:
        assert m.arch in text.replace(" ", "") or m.arch[:6] in text
    # The label folds over lines but every word of it is there, for each host row.
    words = " ".join(lines).split()
    assert words.count("iPhone") >= 3 and "not" in words and "measured" in words
    if width >= 100:  # room for every number on one line
        assert any("8.6110" in line for line in lines)


def test_one_measurement_label_for_all_models_is_a_line_above_the_table():
    results = build_run().results
    for m in results.models:
        m.score_basis = HOST_LABEL
    lines = render(leaderboard_table(results, 80), 80)
    assert f"measured on: {HOST_LABEL}" in lines
    assert max(len(line) for line in lines) <= 80


def test_native_stderr_chatter_goes_to_the_log_and_errors_stay_errors():
    native = NativeStderr()
    with capture_logs() as logs:
        native.start()
        try:
            # What native libraries write to fd 2, in their real form: LiteRT's minimal logger
            # (seen in this project's runs), and a TensorFlow start-up sequence as printed on a
            # CUDA machine (public issue logs): absl's pre-init warning, then an E-level line.
            os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
            os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
            os.write(2, b"E0000 00:00:1770197764.752227    6422 cuda_dnn.cc:8310] Unable to register cuDNN factory: "
                        b"Attempting to register factory for plugin cuDNN when one has already been registered\n")
            os.write(2, b"something unexpected\n")
        finally:
            native.stop()
    got = [(e["log_level"], e["line"][:12]) for e in logs if e["event"] == "native_output"]
    assert got == [("info", "INFO: Create"), ("info", "WARNING: All"), ("error", "E0000 00:00:"),
                   ("warning", "something un")]
    os.write(2, b"")  # fd 2 is usable again

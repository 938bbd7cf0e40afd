"""`python -m jobs.artifacts` against a local folder and the loopback S3 server."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from common.store import open_store
from jobs.artifacts import build_parser, main

KEYS = {
    "runs/r1/run.json": b'{"run_id": "r1"}\n',
    "runs/r1/mobilenet_v2/float32/model.tflite": b"TFL3 model bytes",
    "results/latest.json": b'{"run_id": "r1"}\n',
}


@pytest.fixture(params=["file", "s3"])
def store_uri(request, tmp_path):
    if request.param == "file":
        return f"file://{tmp_path / 'artifacts'}"
    return request.getfixturevalue("s3_store_uri")


@pytest.fixture
def filled(store_uri):
    store = open_store(store_uri)
    for key, data in KEYS.items():
        store.put_bytes(key, data)
    return store


def test_parser_accepts_store_before_or_after_the_command():
    p = build_parser()
    assert p.parse_args(["--store", "s3://b/p", "ls"]).store == "s3://b/p"
    assert p.parse_args(["ls", "--store", "s3://b/p", "runs/"]).store == "s3://b/p"
    assert p.parse_args(["url", "k", "--expires", "60"]).expires == 60


def test_ls(filled, store_uri, capsys):
    assert main(["--store", store_uri, "ls"]) == 0
    assert capsys.readouterr().out.splitlines() == sorted(KEYS)
    assert main(["ls", "runs/r1/", "--store", store_uri, "-l"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].endswith("runs/r1/mobilenet_v2/float32/model.tflite")
    assert hashlib.sha256(KEYS["runs/r1/mobilenet_v2/float32/model.tflite"]).hexdigest() in lines[0]


def test_store_from_environment(filled, store_uri, monkeypatch, capsys):
    monkeypatch.setenv("SCENEBENCH_STORE", store_uri)
    assert main(["ls", "results/"]) == 0
    assert capsys.readouterr().out.splitlines() == ["results/latest.json"]


def test_get_file_and_prefix(filled, store_uri, tmp_path, monkeypatch, capsys):
    dest = tmp_path / "dl"
    dest.mkdir()
    assert main(["--store", store_uri, "get", "runs/r1/mobilenet_v2/float32/model.tflite", str(dest)]) == 0
    assert (dest / "model.tflite").read_bytes() == KEYS["runs/r1/mobilenet_v2/float32/model.tflite"]
    monkeypatch.chdir(tmp_path)
    assert main(["--store", store_uri, "get", "runs/r1/"]) == 0
    assert (tmp_path / "r1" / "run.json").read_bytes() == KEYS["runs/r1/run.json"]
    assert (tmp_path / "r1" / "mobilenet_v2/float32/model.tflite").exists()
    capsys.readouterr()


def test_cat_writes_the_bytes(filled, store_uri, capsysbinary):
    assert main(["--store", store_uri, "cat", "results/latest.json"]) == 0
    assert capsysbinary.readouterr().out == KEYS["results/latest.json"]


def test_url(filled, store_uri, capsys):
    assert main(["--store", store_uri, "url", "runs/r1/mobilenet_v2/float32/model.tflite",
                 "--expires", "600"]) == 0
    url = capsys.readouterr().out.strip()
    with urllib.request.urlopen(url, timeout=10) as resp:  # file:// or a presigned http URL
        assert resp.read() == KEYS["runs/r1/mobilenet_v2/float32/model.tflite"]


def test_failures_have_exit_codes(filled, store_uri, capsys):
    assert main(["--store", store_uri, "cat", "runs/none.json"]) == 1
    assert main(["--store", store_uri, "url", "runs/none.json"]) == 1
    assert main(["--store", "gs://bucket/x", "ls"]) == 2
    assert main(["--store", store_uri, "frobnicate"]) == 2
    assert capsys.readouterr().out == ""  # errors go to stderr, never into the data stream


def test_runs_as_a_module(filled, store_uri):
    # The real command line, as a person or a pod runs it (environment already points at S3).
    proc = subprocess.run([sys.executable, "-m", "jobs.artifacts", "--store", store_uri, "ls"],
                          capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1],
                          env={**os.environ, "SCENEBENCH_LOG_FORMAT": "json"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == sorted(KEYS)

"""Test session set-up: fixture modules under tests/fixtures/ are loaded as plugins."""

import os
import pathlib
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("SCENEBENCH_LOG_FORMAT", "console")
# `make test` runs test files on several processes (pytest-xdist): each keeps its own local cache
# (SavedModel exports, store downloads by key), so that two runs with the same run id in two
# processes never meet in one folder.
if os.environ.get("PYTEST_XDIST_WORKER") and not os.environ.get("SCENEBENCH_CACHE_DIR"):
    os.environ["SCENEBENCH_CACHE_DIR"] = os.path.join(tempfile.gettempdir(),
                                                      f"scenebench-cache-test-{os.getpid()}")

pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}"
    for p in (pathlib.Path(__file__).parent / "fixtures").glob("*.py")
    if p.stem != "__init__"
)

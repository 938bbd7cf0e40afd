"""Check that the pinned dependency sets resolve to wheels on another platform, installing nothing.

    python .ci/check_wheels.py                       # macOS arm64, sets cpu,cluster,dev and runner
    python .ci/check_wheels.py --sets runner --python-versions 3.11,3.12

pip resolves for a foreign platform with `--platform/--python-version --only-binary=:all:`, but
it evaluates environment markers against the interpreter that runs it, not against the target
(a Linux runner would pick `tensorflow-cpu` for a Mac). So the requirement lists are read from
pyproject.toml here, their markers are evaluated for the target, and pip gets them marker-free.
Markers inside the dependencies' own metadata are still evaluated by pip for this host; the
report lists every resolved wheel so that a reader can see what was checked.
Exit code 0 when every set resolves to wheels for the target, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Target:
    pip_platform: str
    markers: dict[str, str]


# The marker variables of CPython on an Apple Silicon Mac (PEP 508 names).
TARGETS = {
    "macos-arm64": Target(
        pip_platform="macosx_14_0_arm64",
        markers={"os_name": "posix", "sys_platform": "darwin", "platform_system": "Darwin",
                 "platform_machine": "arm64", "platform_python_implementation": "CPython",
                 "implementation_name": "cpython", "platform_release": "23.0.0", "platform_version": ""},
    ),
}
DEFAULT_SETS = ("cpu,cluster,dev", "runner")


def requirements_for(pyproject: dict, extras: list[str], target: Target, python_version: str) -> list[str]:
    """The project's requirements with `extras`, markers evaluated for the target, self-references expanded."""
    project = pyproject["project"]
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"unknown extra(s) {', '.join(unknown)}; pyproject.toml has: {', '.join(optional)}")
    env = dict(target.markers, python_version=python_version,
               python_full_version=f"{python_version}.0", implementation_version=f"{python_version}.0")
    out: list[str] = []
    seen_extras: set[str] = set()
    pending = [(None, r) for r in project.get("dependencies", [])] + [(e, r) for e in extras for r in optional[e]]
    while pending:
        extra, text = pending.pop(0)
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate(dict(env, extra=extra or "")):
            continue
        if req.name.lower() == project["name"].lower():  # scenebench[other-extra]
            for e in sorted(req.extras - seen_extras):
                seen_extras.add(e)
                pending += [(e, r) for r in optional[e]]
            continue
        req.marker = None
        out.append(str(req))
    return out


def resolve(requirements: list[str], target: Target, python_version: str) -> dict:
    """pip's dry-run report for the requirements on the target; raises CalledProcessError when it fails."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--only-binary=:all:", "--platform", target.pip_platform, "--python-version", python_version,
               "--implementation", "cp", "--report", str(report), *requirements]
        subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return json.loads(report.read_text())


def wheel_names(report: dict) -> dict[str, str]:
    """{distribution name: file name of the wheel pip chose}."""
    return {i["metadata"]["name"].lower(): i["download_info"]["url"].rsplit("/", 1)[-1] for i in report["install"]}


def check(sets: list[str], target_name: str, python_versions: list[str]) -> int:
    target = TARGETS[target_name]
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    failures = 0
    for python_version in python_versions:
        for extras_text in sets:
            extras = [e for e in extras_text.split(",") if e]
            reqs = requirements_for(pyproject, extras, target, python_version)
            label = f"[{extras_text}] on {target_name} ({target.pip_platform}), Python {python_version}"
            started = time.monotonic()
            try:
                wheels = wheel_names(resolve(reqs, target, python_version))
            except subprocess.CalledProcessError as exc:
                failures += 1
                print(f"FAIL {label}: pip could not resolve it to wheels\n{exc.stderr.strip()[-2000:]}")
                continue
            seconds = time.monotonic() - started
            not_wheels = [f for f in wheels.values() if not f.endswith(".whl")]
            tf = {n: f for n, f in wheels.items() if re.fullmatch(r"tensorflow(-cpu)?|ai-edge-litert", n)}
            print(f"ok   {label}: {len(wheels)} wheels in {seconds:.0f} s; "
                  + (", ".join(tf[n] for n in sorted(tf)) or "no TensorFlow, no LiteRT"))
            if not_wheels:
                failures += 1
                print(f"FAIL {label}: not wheels: {', '.join(not_wheels)}")
            if extras == ["runner"] and any(n.startswith("tensorflow") for n in wheels):
                failures += 1
                print(f"FAIL {label}: the runner set pulls in TensorFlow: "
                      f"{', '.join(n for n in wheels if n.startswith('tensorflow'))}")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python .ci/check_wheels.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="macos-arm64", choices=sorted(TARGETS))
    parser.add_argument("--sets", default=";".join(DEFAULT_SETS),
                        help="';'-separated extras sets, each a comma-separated list (default: %(default)s)")
    parser.add_argument("--python-versions", default="3.11", help="comma-separated (default: %(default)s)")
    args = parser.parse_args(argv)
    return check([s for s in args.sets.split(";") if s], args.target,
                 [v for v in args.python_versions.split(",") if v])


if __name__ == "__main__":
    raise SystemExit(main())

"""summary.md is written by several benches: each owns one section and keeps the others'."""

from __future__ import annotations

import re
from pathlib import Path

TITLE = "# scenebench benchmark figures"
_MARK = "<!-- bench:{} -->"
_SECTION = re.compile(r"<!-- bench:([a-z0-9_-]+) -->\n")


def sections(text: str) -> dict[str, str]:
    """{name: text} of a summary.md; text before the first marker is the section 'main'
    (summary.md files from before the markers hold only bench.run's table, or that table
    followed by the quantization section)."""
    parts = _SECTION.split(text)
    out: dict[str, str] = {}
    head = parts[0].removeprefix(TITLE).strip("\n")
    legacy_quant = head.find("## int8 that keeps its accuracy")
    if legacy_quant >= 0:
        out["quant"] = head[legacy_quant:].strip("\n")
        head = head[:legacy_quant].strip("\n")
    if head:
        out["main"] = head
    for name, body in zip(parts[1::2], parts[2::2]):
        out[name] = body.strip("\n")
    return out


def write_section(out: Path, name: str, text: str) -> Path:
    """Replace section `name` of out/summary.md with text, keeping every other section.

    'main' (bench.run's table) comes first, the others in the order they were first written.
    """
    path = out / "summary.md"
    current = sections(path.read_text()) if path.is_file() else {}
    current[name] = text.strip("\n")
    order = ["main"] * ("main" in current) + [k for k in current if k != "main"]
    body = "\n\n".join(_MARK.format(k) + "\n" + current[k] for k in order)
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(TITLE + "\n\n" + body + "\n")
    return path

"""Typed job settings: one pydantic-settings model per job, filled from SCENEBENCH_* and flags.

Each job declares a frozen `JobSettings` subclass. `build_parser` turns its fields into
argparse flags (so the Argo templates are checked against a real parser) and `load`
merges flags over environment over defaults, turning validation failures into one
`ConfigError` that names the flag, the variable and what would be valid.
"""

from __future__ import annotations

import argparse
import enum
import re
import typing
from typing import Any, Literal, Sequence, get_args, get_origin

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.errors import ConfigError

ENV_PREFIX = "SCENEBENCH_"


class JobSettings(BaseSettings):
    """Base of every job's settings: frozen, unknown keys rejected, SCENEBENCH_ prefix."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        frozen=True,
        validate_default=True,
        env_ignore_empty=True,
    )


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def _choices(annotation: Any) -> list[str] | None:
    origin = get_origin(annotation)
    if origin is Literal:
        return [str(a) for a in get_args(annotation)]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [str(m.value) for m in annotation]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for arg in get_args(annotation):
            found = _choices(arg)
            if found:
                return found
    return None


def _is_bool(annotation: Any) -> bool:
    if annotation is bool:
        return True
    return get_origin(annotation) in (typing.Union,) and bool in get_args(annotation)


def build_parser(settings_cls: type[JobSettings], prog: str, description: str) -> argparse.ArgumentParser:
    """An argparse parser with one flag per settings field.

    Flags default to None so that an absent flag leaves the environment or the field
    default in charge. List fields take comma-separated values.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    for name, field in settings_cls.model_fields.items():
        help_text = field.description or ""
        choices = _choices(field.annotation)
        if choices and get_origin(field.annotation) is not list:
            help_text += f" One of: {', '.join(choices)}."
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        if default not in (None, "", [], ()):
            shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
            help_text += f" Default: {shown}."
        help_text += f" Env: {env_name(name)}."
        if _is_bool(field.annotation):
            parser.add_argument(flag_name(name), dest=name, default=None,
                                action=argparse.BooleanOptionalAction, help=help_text)
        else:
            parser.add_argument(flag_name(name), dest=name, default=None, metavar=name.upper(),
                                help=help_text)
    return parser


_T = typing.TypeVar("_T", bound=JobSettings)


def load(settings_cls: type[_T], args: argparse.Namespace | dict | None = None) -> _T:
    """Build settings from parsed flags (over SCENEBENCH_* env, over defaults).

    Raises ConfigError naming every bad setting, its flag and variable, and what is valid.
    """
    given = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
    given = {k: v for k, v in given.items() if v is not None}
    try:
        return settings_cls(**given)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(settings_cls, exc)) from None


def describe_validation_error(settings_cls: type[JobSettings], exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = err.get("loc") or ("?",)
        field = str(loc[0])
        where = f"{flag_name(field)} / {env_name(field)}" if field in settings_cls.model_fields else field
        value = err.get("input")
        msg = err.get("msg", "invalid value")
        if err.get("type") == "extra_forbidden":
            valid = ", ".join(flag_name(f) for f in settings_cls.model_fields)
            lines.append(f"unknown setting {field!r}; valid settings: {valid}")
            continue
        choices = _choices(settings_cls.model_fields[field].annotation) if field in settings_cls.model_fields else None
        hint = f"; valid values: {', '.join(choices)}" if choices and "valid values" not in msg else ""
        lines.append(f"bad setting {where} = {value!r}: {msg}{hint}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def split_list(value: Any) -> list[str]:
    """Accept 'a,b', '["a","b"]' (as Argo passes JSON lists) or a list; drop blanks."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        items = [str(v) for v in value]
    else:
        text = str(value).strip()
        if text.startswith("["):
            import json

            try:
                items = [str(v) for v in json.loads(text)]
            except json.JSONDecodeError:
                items = re.split(r"[,\s]+", text.strip("[]"))
        else:
            items = re.split(r"[,\s]+", text)
    return [i.strip().strip("'\"") for i in items if i.strip().strip("'\"")]


def image_size_text(value: Any) -> str:
    """A validated image size in its canonical 'HxW' spelling."""
    h, w = parse_image_size(value)
    return f"{h}x{w}"


def parse_image_size(value: Any) -> tuple[int, int]:
    """'384x576' (height x width) -> (384, 576)."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        h, w = int(value[0]), int(value[1])
    else:
        m = re.fullmatch(r"\s*(\d+)\s*[xX×,]\s*(\d+)\s*", str(value))
        if not m:
            raise ValueError(f"image size must be HEIGHTxWIDTH, e.g. 384x576, got {value!r}")
        h, w = int(m.group(1)), int(m.group(2))
    if not (32 <= h <= 4096 and 32 <= w <= 4096):
        raise ValueError(f"image size {h}x{w} out of range: each side must be 32..4096 pixels")
    return h, w


def expand_choices(value, valid: Sequence[str], what: str) -> list[str]:
    """'all' or a list (comma-separated or JSON) of valid values -> the list in registry order."""
    items = split_list(value)
    if not items:
        raise ValueError(f"no {what} given; valid values: all, {', '.join(valid)}")
    if "all" in items:
        if len(items) > 1:
            raise ValueError(f"'all' cannot be combined with other {what}; valid values: all, {', '.join(valid)}")
        return list(valid)
    bad = [i for i in items if i not in valid]
    if bad:
        raise ValueError(f"unknown {what} {', '.join(map(repr, bad))}; valid values: all, {', '.join(valid)}")
    # Keep the registry's order and drop repeats: the fan-out list must be stable night to night.
    return [v for v in valid if v in items]

"""Settings: flags generated from models, env fallback, and errors that name the fix."""

from typing import Literal

import pytest
from pydantic import Field

from common.errors import ConfigError
from common.settings import JobSettings, build_parser, load, parse_image_size, split_list


class Demo(JobSettings):
    arch: Literal["a", "b"] = Field("a", description="Which one.")
    count: int = Field(3, ge=1, description="How many.")
    flag: bool = Field(False, description="A switch.")
    name: str = Field(..., description="Required.")


def test_flags_env_and_defaults(monkeypatch):
    p = build_parser(Demo, "demo", "d")
    monkeypatch.setenv("SCENEBENCH_COUNT", "7")
    s = load(Demo, p.parse_args(["--name", "x", "--arch", "b", "--flag"]))
    assert (s.arch, s.count, s.flag, s.name) == ("b", 7, True, "x")
    s = load(Demo, p.parse_args(["--name", "x", "--count", "2", "--no-flag"]))
    assert s.count == 2 and s.flag is False


def test_help_names_choices_env_and_defaults():
    text = build_parser(Demo, "demo", "d").format_help()
    assert "One of: a, b" in text and "SCENEBENCH_ARCH" in text and "Default: 3" in text
    assert "PydanticUndefined" not in text


def test_bad_value_names_flag_env_and_valid_values():
    p = build_parser(Demo, "demo", "d")
    with pytest.raises(ConfigError) as err:
        load(Demo, p.parse_args(["--name", "x", "--arch", "zzz"]))
    msg = str(err.value)
    assert "--arch" in msg and "SCENEBENCH_ARCH" in msg and "'zzz'" in msg and "'a'" in msg
    with pytest.raises(ConfigError, match="--count / SCENEBENCH_COUNT"):
        load(Demo, p.parse_args(["--name", "x", "--count", "0"]))
    with pytest.raises(ConfigError, match="--name"):
        load(Demo, p.parse_args([]))


def test_settings_are_frozen():
    s = load(Demo, {"name": "x"})
    with pytest.raises(Exception):
        s.count = 4  # type: ignore[misc]


@pytest.mark.parametrize("text,expected", [
    ("a,b", ["a", "b"]), ('["a","b"]', ["a", "b"]), ("['a', 'b']", ["a", "b"]), ("a b", ["a", "b"]),
    ("", []), (["x", "y"], ["x", "y"]),
])
def test_split_list(text, expected):
    assert split_list(text) == expected


def test_image_size():
    assert parse_image_size("384x576") == (384, 576)
    assert parse_image_size("64X96") == (64, 96)
    for bad in ("384", "10x10", "axb", "384x99999"):
        with pytest.raises(ValueError):
            parse_image_size(bad)

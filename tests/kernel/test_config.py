"""Config loading: field paths and bounds in every error, TOML files, strict types."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from net_core.config import (
    in_range,
    load_toml,
    non_empty,
    one_of,
    positive,
    power_of_two,
    structure,
    unstructure,
)
from net_core.errors import ConfigError, NetError


@attrs.frozen
class Ring:
    capacity: int = attrs.field(default=1024, validator=power_of_two(1024))
    mode: str = attrs.field(default="drop_newest", validator=one_of("drop_newest", "drop_oldest"))


@attrs.frozen
class Bus:
    shards: int = attrs.field(default=4, validator=positive)
    ratio: float = attrs.field(default=0.5, validator=in_range(0.0, 1.0))
    name: str = attrs.field(default="bus", validator=non_empty)
    ring: Ring = attrs.field(factory=Ring)
    tags: list[str] = attrs.field(factory=list)


def test_defaults_and_round_trip() -> None:
    bus = structure({"shards": 8, "ring": {"capacity": 4096}}, Bus)
    assert bus == Bus(shards=8, ring=Ring(capacity=4096))
    assert structure(unstructure(bus), Bus) == bus
    assert structure(None, Bus) == Bus()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"shards": 0}, "shards: must be >= 1, got 0"),
        ({"ratio": 1.5}, "ratio: must be in [0.0, 1.0], got 1.5"),
        ({"name": ""}, "name: must not be empty"),
        ({"ring": {"capacity": 1000}}, "ring.capacity: must be a power of two >= 1024, got 1000"),
        (
            {"ring": {"mode": "x"}},
            "ring.mode: must be one of 'drop_newest', 'drop_oldest', got 'x'",
        ),
        ({"shards": "4"}, "shards: expected an integer, got str '4'"),
        ({"shards": 2.0}, "shards: expected an integer, got float 2.0"),
        ({"ratio": "high"}, "ratio: expected a number, got str 'high'"),
        ({"tags": ["a", 3]}, "tags.1: expected a string, got int 3"),
        ({"shardz": 3}, "unknown field(s): shardz"),
        ({"ring": {"size": 3}}, "ring: unknown field(s): size"),
    ],
)
def test_errors_name_the_field_path_and_the_bound(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        structure(data, Bus)
    assert str(info.value) == message
    assert isinstance(info.value, NetError)
    assert isinstance(info.value, ValueError)


def test_several_errors_are_reported_together() -> None:
    with pytest.raises(ConfigError) as info:
        structure({"shards": "x", "ring": {"capacity": 3}}, Bus)
    text = str(info.value)
    assert "shards: expected an integer, got str 'x'" in text
    assert "ring.capacity: must be a power of two >= 1024, got 3" in text


def test_path_prefix() -> None:
    with pytest.raises(ConfigError, match=r"^bus\.ring\.capacity: must be a power of two"):
        structure({"ring": {"capacity": 3}}, Bus, path="bus")
    with pytest.raises(ConfigError, match=r"^bus: expected a table/mapping for Bus, got list"):
        structure([1], Bus, path="bus")  # type: ignore[arg-type]


def test_direct_construction_validates_too() -> None:
    with pytest.raises(ConfigError, match=r"^shards: must be >= 1, got -2$"):
        Bus(shards=-2)


def test_load_toml(tmp_path: Path) -> None:
    path = tmp_path / "net.toml"
    path.write_text("[tool.net.bus]\nshards = 2\n[tool.net.bus.ring]\ncapacity = 2048\n")
    assert load_toml(path, Bus, table="tool.net.bus") == Bus(shards=2, ring=Ring(capacity=2048))
    path.write_text("[bus]\nshards = 0\n")
    with pytest.raises(ConfigError, match=r"^bus\.shards: must be >= 1, got 0$"):
        load_toml(path, Bus, table="bus")
    with pytest.raises(ConfigError, match=r"table \[nope\] not found"):
        load_toml(path, Bus, table="nope")
    path.write_text("shards = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(path, Bus)
    with pytest.raises(ConfigError, match="config file not found"):
        load_toml(tmp_path / "missing.toml", Bus)

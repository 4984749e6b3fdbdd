"""Channel names and hashes (vectors from the fact sheet, mesh.md §6.1)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from net_core.errors import DecodeError
from net_core.identity import (
    ChannelName,
    ChannelNameDecodeError,
    ChannelNameError,
    channel_hash,
    validate_channel_name,
    wire_channel_hash,
)
from net_core.identity._channel import _is_valid_fast
from net_core.redex import ChannelNameError as RedexChannelNameError
from net_core.redex import validate_channel_name as redex_validate


def test_vectors() -> None:
    assert channel_hash("sensors/lidar") == 0x7FA5E5D8
    assert wire_channel_hash("sensors/lidar") == 0xE5D8
    assert channel_hash("lab/x") == 0x0DE02EE8
    assert wire_channel_hash("lab/x") == 0x2EE8
    assert channel_hash("a") == 0x1E964E1F
    name = ChannelName("sensors/lidar")
    assert (name.hash, name.wire_hash) == (0x7FA5E5D8, 0xE5D8)
    assert channel_hash(name) == 0x7FA5E5D8


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "channel name is empty"),
        ("x" * 256, "too long (256 > 255)"),
        ("/a", "must not start or end with '/'"),
        ("a/", "must not start or end with '/'"),
        ("a//b", "must not contain '//'"),
        ("a b", "invalid character ' '"),
        ("a/./b", 'segment "." is reserved'),
        ("..", 'segment ".." is reserved'),
        ("\ud800", "invalid character"),
    ],
)
def test_rejections(name: str, message: str) -> None:
    with pytest.raises(ChannelNameError, match=re.escape(message)):
        validate_channel_name(name)
    with pytest.raises(ChannelNameError):
        ChannelName(name)


def test_accepted_edge_cases() -> None:
    for name in ("x" * 255, "...", "a.b", ".hidden/x", "a-b_c.d/e"):
        validate_channel_name(name)


def test_depth_and_prefix_on_segment_boundaries() -> None:
    base = ChannelName("a/b")
    assert base.depth == 2
    assert ChannelName("a").depth == 1
    assert base.is_prefix_of("a/b")
    assert base.is_prefix_of(ChannelName("a/b/c"))
    assert not base.is_prefix_of("a/bc")
    assert not base.is_prefix_of("a")


def test_decode() -> None:
    assert ChannelName.decode(b"lab/x") == ChannelName("lab/x")
    assert ChannelName.decode(b"lab/x").encode() == b"lab/x"
    for bad in (b"\xff", b"", b"a//b"):
        with pytest.raises(ChannelNameDecodeError) as err:
            ChannelName.decode(bad)
        assert isinstance(err.value, DecodeError)


@given(st.text(alphabet="ab./-_Z9 é", max_size=12) | st.text(max_size=300))
def test_same_rule_and_texts_as_the_redex_layer(name: str) -> None:
    """The identity layer may not import RedEX (layering), so it has its own copy of the
    rule; the two must agree on every name and every message."""
    try:
        redex_validate(name)
    except RedexChannelNameError as exc:
        expected: str | None = str(exc)
    else:
        expected = None
    if expected is None:
        validate_channel_name(name)
        return
    with pytest.raises(ChannelNameError) as ours:
        validate_channel_name(name)
    assert str(ours.value) == expected


@given(st.text(alphabet="ab./-_Z9 é\n", max_size=12) | st.text(max_size=300))
def test_fast_path_agrees_with_the_full_rule(name: str) -> None:
    try:
        validate_channel_name(name)
    except ChannelNameError:
        valid = False
    else:
        valid = True
    assert _is_valid_fast(name) == valid


def test_fast_path_boundaries() -> None:
    assert _is_valid_fast("x" * 255)
    assert not _is_valid_fast("x" * 256)
    assert not _is_valid_fast("a\n")
    assert not _is_valid_fast("a/.")
    assert _is_valid_fast("a/.b")

"""RedexIndex (live secondary index with lag recovery) and TypedRedexFile."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import attrs
import pytest

from net_core.redex import (
    Insert,
    Redex,
    RedexDecodeError,
    RedexEvent,
    RedexIndex,
    Remove,
    TypedRedexFile,
)
from net_core.redex._index import LAG_BACKOFF_MS


@attrs.frozen
class Tag:
    item: str
    tag: str
    present: bool = True


def project(tag: Tag) -> list[Insert[str, str] | Remove[str, str]]:
    op = Insert if tag.present else Remove
    return [op(tag.tag, tag.item)]


@pytest.mark.anyio
async def test_index_follows_history_and_live_appends() -> None:
    file = Redex().open_file("idx/tags")
    typed = TypedRedexFile(file, Tag)
    typed.append(Tag("a", "red"))
    typed.append(Tag("b", "red"))
    async with RedexIndex(file, project, decode=typed.decode) as index:
        await index.wait_for_seq(1)
        assert index.get("red") == {"a", "b"}
        seq = typed.append_batch([Tag("a", "red", present=False), Tag("c", "blue")])
        assert seq == 2
        with anyio.fail_after(5):
            await index.wait_for_seq(3)
        assert index.get("red") == {"b"}
        assert index.get("blue") == {"c"}
        assert sorted(index.keys()) == ["blue", "red"]
        assert index.contains("red", "b")
        assert not index.contains("red", "a")
        typed.append(Tag("b", "red", present=False))
        with anyio.fail_after(5):
            await index.wait_for_seq(4)
        assert not index.contains("red")  # an emptied key disappears
        assert len(index) == 1
        assert index.lag_resets == 0


@pytest.mark.anyio
async def test_index_skips_undecodable_events() -> None:
    file = Redex().open_file("idx/bad")
    typed = TypedRedexFile(file, Tag)
    typed.append(Tag("a", "x"))
    file.append(b"not json")
    typed.append(Tag("b", "x"))
    async with RedexIndex(file, project, decode=typed.decode) as index:
        with anyio.fail_after(5):
            await index.wait_for_seq(2)
        assert index.get("x") == {"a", "b"}
        assert index.skipped == 1


@pytest.mark.anyio
async def test_index_recovers_from_lag_by_clearing_and_retailing_live(
    caplog: pytest.LogCaptureFixture,
) -> None:
    file = Redex().open_file("idx/lag", tail_buffer_size=2)

    def keyed(event: RedexEvent) -> list[Insert[int, int]]:
        return [Insert(event.seq, event.seq)]

    with caplog.at_level(logging.WARNING, logger="net_core.redex"):
        async with RedexIndex(file, keyed) as index:
            await anyio.sleep(0.01)  # the index is live (nothing to backfill)
            file.append_batch([b"x"] * 10)  # more than the buffer at once: lag
            with anyio.fail_after(5):
                while index.lag_resets == 0:  # noqa: ASYNC110 - polling a plain counter
                    await anyio.sleep(0.005)
            # Cleared, then re-tailed from next_seq: only later events appear.
            await anyio.sleep(0.05)
            later = file.append(b"y")
            with anyio.fail_after(5):
                await index.wait_for_seq(later)
            assert index.get(later) == {later}
            assert all(k >= 10 for k in list(index.keys()))
    assert "lagged" in caplog.text


def test_lag_backoff_schedule() -> None:
    assert LAG_BACKOFF_MS == (0, 5, 20, 60, 250)


@pytest.mark.anyio
async def test_index_ends_when_the_file_closes() -> None:
    file = Redex().open_file("idx/close")
    async with RedexIndex(file, lambda e: [Insert(e.seq, e.payload)]) as index:
        file.append(b"a")
        with anyio.fail_after(5):
            await index.wait_for_seq(0)
        file.close()
        await anyio.sleep(0.05)
        assert index.get(0) == {b"a"}


@pytest.mark.anyio
async def test_typed_file_round_trip_and_tail(tmp_path: Path) -> None:
    redex = Redex(tmp_path)
    typed = TypedRedexFile(redex.open_file("typed/tags", persistent=True), Tag)
    assert typed.append(Tag("a", "t")) == 0
    assert typed.append_batch([]) is None
    assert typed.append_batch([Tag("b", "t"), Tag("c", "u", False)]) == 1
    assert typed.read_range(0, 10) == [
        (0, Tag("a", "t")),
        (1, Tag("b", "t")),
        (2, Tag("c", "u", False)),
    ]
    assert typed.read_one(2) == Tag("c", "u", False)
    assert len(typed) == 3
    got = []
    async for seq, value in typed.tail(1):
        got.append((seq, value))
        if seq == 2:
            break
    assert got == [(1, Tag("b", "t")), (2, Tag("c", "u", False))]
    typed.file.close()
    reopened = TypedRedexFile(Redex(tmp_path).open_file("typed/tags", persistent=True), Tag)
    assert [v for _, v in reopened.read_range(0, 10)] == [
        Tag("a", "t"),
        Tag("b", "t"),
        Tag("c", "u", False),
    ]


def test_typed_decode_errors_name_the_seq() -> None:
    file = Redex().open_file("typed/bad")
    typed = TypedRedexFile(file, Tag)
    file.append(b'{"item": 1}')
    file.append(b"\xff")
    with pytest.raises(RedexDecodeError, match=r"typed read of 'typed/bad' at seq 0"):
        typed.read_one(0)
    with pytest.raises(RedexDecodeError, match="at seq 1"):
        typed.read_one(1)


def test_typed_file_of_primitives() -> None:
    typed = TypedRedexFile(Redex().open_file("typed/ints"), dict[str, int])
    typed.append({"a": 1})
    assert typed.read_one(0) == {"a": 1}
    assert typed.encode({"b": 2}) == b'{"b":2}'

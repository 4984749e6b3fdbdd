"""The C kernels of the CortEX hot paths (``seal_record``, ``fold_tasks``) against the
Python paths they shortcut: same bytes, same state, same watermarks, same errors."""

from __future__ import annotations

import anyio
import pytest
import xxhash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from net_core.cortex import (
    CortexAdapter,
    CortexAdapterConfig,
    TasksFold,
    TasksState,
    checksum_v1,
    seal,
)
from net_core.cortex._pcstruct import c_kernel, pack
from net_core.redex import Redex

seal_record = c_kernel("seal_record")
fold_tasks = c_kernel("fold_tasks")
requires_c = pytest.mark.skipif(
    seal_record is None, reason="C accelerator not built (no compiler at install time)"
)

U64 = st.integers(0, 2**64 - 1)
TITLES = st.text(max_size=12)


@requires_c
@given(
    st.integers(0, 255),
    st.integers(0, 255),
    U64,
    U64,
    st.sampled_from(["usu", "uu", "u", "usSsu", "uSu", ""]),
    st.data(),
)
def test_seal_record_equals_seal_of_pack(
    dispatch: int, flags: int, origin: int, counter: int, fmt: str, data: st.DataObject
) -> None:
    assert seal_record is not None
    values = [
        data.draw(U64 if code == "u" else TITLES if code == "s" else st.tuples(TITLES, TITLES))
        for code in fmt
    ]
    expected = seal(dispatch, origin, counter, pack(fmt, *values), flags=flags)
    got = seal_record(dispatch, flags, origin, counter, xxhash.xxh3_64_intdigest, fmt, *values)
    assert got == expected


@requires_c
def test_seal_record_rejects_bad_fields() -> None:
    assert seal_record is not None
    xxh3 = xxhash.xxh3_64_intdigest
    with pytest.raises(ValueError, match="dispatch"):
        seal_record(256, 0, 1, 1, xxh3, "u", 1)
    with pytest.raises(ValueError, match="origin_hash"):
        seal_record(1, 0, -1, 1, xxh3, "u", 1)
    with pytest.raises(ValueError, match="out of range"):
        seal_record(1, 0, 1, 1, xxh3, "u", -5)
    with pytest.raises(TypeError):
        seal_record(1, 0, 1, 1, xxh3, "uu", 1)


def _event(kind: str, draw: st.DataObject, origin: int, counter: int) -> bytes:
    ids = st.integers(0, 6)
    now = st.integers(0, 2**64 - 1)
    if kind == "create":
        return seal(
            1, origin, counter, pack("usu", draw.draw(ids), draw.draw(TITLES), draw.draw(now))
        )
    if kind == "rename":
        return seal(
            2, origin, counter, pack("usu", draw.draw(ids), draw.draw(TITLES), draw.draw(now))
        )
    if kind == "complete":
        return seal(3, origin, counter, pack("uu", draw.draw(ids), draw.draw(now)))
    if kind == "delete":
        return seal(4, origin, counter, pack("u", draw.draw(ids)))
    if kind == "unknown":
        return seal(0x42, origin, counter, b"whatever")
    if kind == "v1":
        tail = pack("usu", draw.draw(ids), "legacy", 5)
        head = seal(1, origin, counter, tail)[:20]
        return head + checksum_v1(tail).to_bytes(4, "little") + tail
    if kind == "bad_checksum":
        good = bytearray(seal(1, origin, counter, pack("usu", 1, "x", 1)))
        good[21] ^= 0xFF
        return bytes(good)
    if kind == "short":
        return b"\x01" * draw.draw(st.integers(0, 23))
    if kind == "bad_tail":
        return seal(1, origin, counter, b"\x01\xff")  # title length runs past the end
    if kind == "pad":
        tail = pack("uu", draw.draw(ids), 9)
        raw = bytearray(seal(3, origin, counter, tail))
        raw[2] = 1  # a nonzero pad: ignored on read
        return bytes(raw)
    if kind == "trailing":
        return seal(1, origin, counter, pack("usu", draw.draw(ids), "t", 3) + b"junk")
    raise AssertionError(kind)


KINDS = [
    "create",
    "rename",
    "complete",
    "delete",
    "unknown",
    "v1",
    "bad_checksum",
    "short",
    "bad_tail",
    "pad",
    "trailing",
]


async def _fold(payloads: list[bytes], *, kernel: bool, batch_limit: int) -> tuple[object, ...]:
    redex = Redex()
    file = redex.open_file("k")
    for payload in payloads:
        file.append(payload)
    fold = TasksFold(7)
    if not kernel:
        fold.fold_batch = None
    config = CortexAdapterConfig(error_policy="log_and_continue", batch_limit=batch_limit)
    async with CortexAdapter.open(file, fold, TasksState(), config) as adapter:
        result = (
            dict(adapter.state.tasks),
            list(adapter.state.tasks),
            adapter.state.app_seq,
            adapter.folded_through_seq,
            adapter.applied_through_seq,
            adapter.fold_errors,
        )
    redex.close()
    return result


@requires_c
@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=150)
@given(st.lists(st.sampled_from(KINDS), max_size=40), st.integers(1, 8), st.data())
def test_fold_tasks_kernel_matches_the_python_fold(
    kinds: list[str], batch_limit: int, data: st.DataObject
) -> None:
    payloads = [
        _event(kind, data, origin=data.draw(st.sampled_from([7, 8])), counter=i)
        for i, kind in enumerate(kinds)
    ]
    fast = anyio.run(lambda: _fold(payloads, kernel=True, batch_limit=batch_limit))
    slow = anyio.run(lambda: _fold(payloads, kernel=False, batch_limit=batch_limit))
    assert fast == slow


@requires_c
def test_fold_tasks_kernel_stops_where_python_must_decide() -> None:
    assert fold_tasks is not None
    from net_core.cortex import Task, TaskStatus  # noqa: PLC0415

    good = seal(1, 7, 0, pack("usu", 1, "a", 5))
    v1_tail = pack("usu", 2, "b", 6)
    v1 = seal(1, 7, 1, v1_tail)[:20] + checksum_v1(v1_tail).to_bytes(4, "little") + v1_tail
    items = [good, v1, good]
    tasks: dict[int, Task] = {}
    index, app_seq = fold_tasks(
        items,
        0,
        tasks,
        7,
        0,
        Task,
        TaskStatus.PENDING,
        TaskStatus.COMPLETED,
        xxhash.xxh3_64_intdigest,
    )
    assert (index, app_seq) == (1, 1)  # stopped at the v1 record, nothing changed for it
    assert tasks == {1: Task(1, "a", TaskStatus.PENDING, 5, 5)}
    assert type(tasks[1]) is Task
    # Resuming after the Python path handled item 1 folds the rest.
    index, app_seq = fold_tasks(
        items,
        2,
        tasks,
        7,
        2,
        Task,
        TaskStatus.PENDING,
        TaskStatus.COMPLETED,
        xxhash.xxh3_64_intdigest,
    )
    assert (index, app_seq) == (3, 2)
    with pytest.raises(TypeError):
        fold_tasks(
            "not a list",
            0,
            tasks,
            7,
            0,
            Task,
            TaskStatus.PENDING,
            TaskStatus.COMPLETED,
            xxhash.xxh3_64_intdigest,
        )

"""The plugin kernel: registration through hooks, discovery, isolation, lookup."""

from __future__ import annotations

import io
import logging
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from net_core.dedup import MemoryDedup
from net_core.errors import (
    ConfigError,
    DuplicatePluginError,
    PluginLoadError,
    UnknownPluginError,
)
from net_core.plugins import (
    ComponentSpec,
    Kind,
    LifecycleEvent,
    LifecycleKind,
    PluginManager,
    get_plugin_manager,
    hookimpl,
    reset_plugin_manager,
)
from net_core.retention import CountRetention, RetentionView
from tests.kernel.fakedist import GOOD_RETENTION, FakeDists


def test_builtins_are_registered_through_the_hooks() -> None:
    pm = PluginManager(discover=False)
    [info] = pm.plugins()
    assert (info.name, info.distribution, info.builtin) == ("builtin", "net-core", True)
    assert info.provides[Kind.RETENTION] == ("count", "bytes", "age")
    assert info.provides[Kind.DEDUP] == ("memory",)
    assert pm.names("retention") == ["age", "bytes", "count"]
    policy = pm.retention_policy("count", {"max_events": 2})
    assert policy == CountRetention(max_events=2)
    assert isinstance(pm.dedup("memory", {"capacity": 8}), MemoryDedup)


def test_unknown_name_lists_the_alternatives() -> None:
    pm = PluginManager(discover=False)
    with pytest.raises(UnknownPluginError) as info:
        pm.retention_policy("ttl")
    err = info.value
    assert err.kind == "retention"
    assert err.available == ["age", "bytes", "count"]
    assert "unknown retention 'ttl'; available: age, bytes, count" in str(err)
    with pytest.raises(UnknownPluginError, match=r"transport 'quic'; available: memory, udp"):
        pm.transport("quic")
    with pytest.raises(UnknownPluginError, match=r"storage 'redis'; available: memory, redex"):
        pm.storage_backend("redis")
    # Unknown names inside a retention table are config errors with the field path.
    with pytest.raises(ConfigError, match=r"^retention\.ttl: unknown retention 'ttl'"):
        pm.retention_from_config({"ttl": {}})


def test_third_party_plugin_is_discovered_from_its_entry_point(fake_dists: FakeDists) -> None:
    fake_dists.add(
        "acme-retention", version="2.3.4", plugins={"acme": GOOD_RETENTION.format(name="one")}
    )
    pm = fake_dists.manager()
    info = pm.provider("retention", "one")
    assert (info.name, info.distribution, info.version, info.builtin) == (
        "acme",
        "acme-retention",
        "2.3.4",
        False,
    )
    policy = pm.retention_policy("one")
    assert policy.eviction_count(RetentionView.of([1, 2, 3], [21, 21, 21]), 0) == 2
    assert pm.failures == []


def test_duplicate_registration_names_both_distributions(fake_dists: FakeDists) -> None:
    fake_dists.add("acme-a", plugins={"a": GOOD_RETENTION.format(name="same")})
    fake_dists.add("acme-b", plugins={"b": GOOD_RETENTION.format(name="same")})
    with pytest.raises(DuplicatePluginError) as info:
        fake_dists.manager()
    assert info.value.distributions == ("acme-a", "acme-b")
    assert "'acme-a'" in str(info.value)
    assert "'acme-b'" in str(info.value)
    assert "retention 'same'" in str(info.value)


def test_duplicate_of_a_builtin_names_net_core(fake_dists: FakeDists) -> None:
    fake_dists.add("acme-count", plugins={"c": GOOD_RETENTION.format(name="count")})
    with pytest.raises(DuplicatePluginError, match="'net-core' and 'acme-count'"):
        fake_dists.manager()


def test_duplicate_can_be_resolved_with_the_allow_list(fake_dists: FakeDists) -> None:
    fake_dists.add("acme-a", plugins={"a": GOOD_RETENTION.format(name="same")})
    fake_dists.add("acme-b", plugins={"b": GOOD_RETENTION.format(name="same")})
    pm = fake_dists.manager(allow="acme-b")
    assert pm.provider("retention", "same").distribution == "acme-b"
    assert pm.skipped == [("a", "acme-a")]


BROKEN_IMPORT = """
    import this_module_does_not_exist_anywhere
"""

BAD_SIGNATURE = """
    from net_core.plugins import hookimpl

    @hookimpl
    def net_lifecycle_event(evt, extra):
        pass
"""

UNKNOWN_HOOK = """
    from net_core.plugins import hookimpl

    @hookimpl
    def net_storage_backend():
        return []
"""

RAISING_HOOK = """
    from net_core.plugins import hookimpl

    @hookimpl
    def net_dedup_backends():
        raise RuntimeError("boom at load")
"""

WRONG_RETURN = """
    from net_core.plugins import hookimpl

    @hookimpl
    def net_transports():
        return ["udp"]
"""

SYNTAX_ERROR = """
    def broken(:
"""


@pytest.mark.parametrize(
    ("source", "stage", "fragment"),
    [
        (BROKEN_IMPORT, "import", "ModuleNotFoundError"),
        (SYNTAX_ERROR, "import", "SyntaxError"),
        (BAD_SIGNATURE, "register", "invalid hooks"),
        (UNKNOWN_HOOK, "register", "unknown hook(s): net_storage_backend"),
        (RAISING_HOOK, "register", "hook net_dedup_backends raised RuntimeError: boom at load"),
        (WRONG_RETURN, "register", "expected ComponentSpec objects"),
    ],
    ids=["import-error", "syntax-error", "bad-signature", "unknown-hook", "raising", "bad-return"],
)
def test_broken_plugin_is_reported_and_isolated(
    fake_dists: FakeDists,
    caplog: pytest.LogCaptureFixture,
    source: str,
    stage: str,
    fragment: str,
) -> None:
    fake_dists.add("acme-good", version="1.0.0", plugins={"good": GOOD_RETENTION.format(name="g")})
    fake_dists.add("acme-broken", version="0.0.1", plugins={"broken": source})
    with caplog.at_level(logging.WARNING, logger="net_core.plugins"):
        pm = fake_dists.manager()
    # The others are loaded ...
    assert pm.provider("retention", "g").distribution == "acme-good"
    assert pm.names("retention") == ["age", "bytes", "count", "g"]
    # ... and the broken one is reported with its distribution name, and left out whole.
    [failure] = pm.failures
    assert (failure.name, failure.distribution, failure.version) == (
        "broken",
        "acme-broken",
        "0.0.1",
    )
    assert failure.stage == stage
    assert fragment in failure.error
    assert "broken" not in pm.plugin_names()
    assert "acme-broken" in caplog.text
    assert isinstance(failure.as_error(), PluginLoadError)


def test_plugin_that_fails_half_way_leaves_nothing_behind() -> None:
    class Half:
        @hookimpl
        def net_retention_policies(self) -> list[ComponentSpec[Any]]:
            return [ComponentSpec(name="half", factory=lambda: CountRetention(1))]

        @hookimpl
        def net_dedup_backends(self) -> list[ComponentSpec[Any]]:
            raise ValueError("second hook fails")

    pm = PluginManager(discover=False)
    with pytest.raises(PluginLoadError, match="second hook fails"):
        pm.register(Half(), name="half", distribution="acme-half")
    assert "half" not in pm.names("retention")
    assert pm.plugin_names() == ["builtin"]
    # And the same name can be registered again afterwards.
    pm.register(object(), name="half")


def test_allow_list_from_the_environment(
    fake_dists: FakeDists, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dists.add("acme-a", plugins={"a": GOOD_RETENTION.format(name="pa")})
    fake_dists.add("acme-b", plugins={"b": GOOD_RETENTION.format(name="pb")})
    eps = fake_dists.entry_points()

    monkeypatch.delenv("NET_CORE_PLUGINS", raising=False)
    assert {"pa", "pb"} <= set(PluginManager(entry_points=eps).names("retention"))

    # By entry-point name or by distribution name.
    monkeypatch.setenv("NET_CORE_PLUGINS", "a")
    pm = PluginManager(entry_points=eps)
    assert "pa" in pm.names("retention")
    assert "pb" not in pm.names("retention")
    assert pm.skipped == [("b", "acme-b")]

    monkeypatch.setenv("NET_CORE_PLUGINS", " acme-b , unrelated ")
    pm = PluginManager(entry_points=eps)
    assert "pb" in pm.names("retention")
    assert "pa" not in pm.names("retention")

    # Empty: built-ins only.
    monkeypatch.setenv("NET_CORE_PLUGINS", "")
    pm = PluginManager(entry_points=eps)
    assert pm.plugin_names() == ["builtin"]
    assert len(pm.skipped) == 2


def test_hook_tracing_from_the_environment(
    fake_dists: FakeDists, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dists.add("acme-a", version="9.9", plugins={"a": GOOD_RETENTION.format(name="pa")})
    stream = io.StringIO()
    monkeypatch.setenv("NET_CORE_TRACE_HOOKS", "1")
    pm = fake_dists.manager(trace_stream=stream)
    pm.notify(LifecycleEvent(LifecycleKind.BUS_STARTED, "bus-1"))
    lines = stream.getvalue().splitlines()
    assert any("net_retention_policies <- builtin (net-core" in line for line in lines)
    assert any("net_retention_policies <- a (acme-a 9.9): pa" in line for line in lines)
    assert all(line.startswith("[net-core hooks] ") and line.endswith(" ms)") for line in lines)

    stream = io.StringIO()
    monkeypatch.setenv("NET_CORE_TRACE_HOOKS", "0")
    fake_dists.manager(trace_stream=stream)
    assert stream.getvalue() == ""


def test_lifecycle_notifications_reach_every_plugin_and_failures_are_contained(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[tuple[str, str]] = []

    class Listener:
        def __init__(self, tag: str, fail: bool = False) -> None:
            self.tag = tag
            self.fail = fail

        @hookimpl
        def net_lifecycle_event(self, event: LifecycleEvent) -> None:
            if self.fail:
                raise RuntimeError("listener bug")
            seen.append((self.tag, str(event.kind)))

    class NoArgs:
        @hookimpl
        def net_lifecycle_event(self) -> None:
            seen.append(("noargs", ""))

    pm = PluginManager(discover=False)
    pm.register(Listener("one"), name="one")
    pm.register(Listener("bad", fail=True), name="bad")
    pm.register(Listener("two"), name="two")
    pm.register(NoArgs(), name="noargs")
    with caplog.at_level(logging.ERROR, logger="net_core.plugins"):
        pm.notify(LifecycleEvent(LifecycleKind.SHARD_ADDED, "bus", {"shard": 3}))
    assert sorted(seen) == [("noargs", ""), ("one", "shard_added"), ("two", "shard_added")]
    assert pm.notify_errors == 1
    assert "listener bug" in caplog.text


def test_registering_in_code_and_unregistering() -> None:
    class Mine:
        @hookimpl
        def net_retention_policies(self) -> list[ComponentSpec[Any]]:
            return [ComponentSpec(name="mine", factory=lambda: CountRetention(1))]

    pm = PluginManager(discover=False)
    pm.register(Mine(), name="mine", distribution="my-app", version="3.0")
    assert pm.provider("retention", "mine").version == "3.0"
    with pytest.raises(PluginLoadError, match=r"already|registered"):
        pm.register(Mine(), name="mine")
    pm.unregister("mine")
    with pytest.raises(UnknownPluginError):
        pm.retention_policy("mine")
    with pytest.raises(UnknownPluginError):
        pm.unregister("mine")


def test_component_spec_validation() -> None:
    with pytest.raises(ValueError, match="must match"):
        ComponentSpec(name="Bad Name", factory=lambda: None)
    spec = ComponentSpec(name="plain", factory=lambda: 42)
    assert spec.build() == 42
    with pytest.raises(ConfigError, match="takes no options"):
        spec.build({"x": 1})


def test_factory_returning_the_wrong_type_is_a_plugin_error() -> None:
    class Wrong:
        @hookimpl
        def net_dedup_backends(self) -> list[ComponentSpec[Any]]:
            return [ComponentSpec(name="wrong", factory=lambda: "not a dedup")]

        @hookimpl
        def net_retention_policies(self) -> list[ComponentSpec[Any]]:
            return [ComponentSpec(name="wrong", factory=lambda: 7)]

    pm = PluginManager(discover=False)
    pm.register(Wrong(), name="wrong", distribution="acme-wrong")
    with pytest.raises(PluginLoadError, match=r"acme-wrong.*not a Dedup"):
        pm.dedup("wrong")
    with pytest.raises(PluginLoadError, match="not a RetentionPolicy"):
        pm.retention_policy("wrong")


@pytest.mark.anyio
async def test_process_wide_manager_is_created_once_under_concurrency() -> None:
    reset_plugin_manager()
    managers: list[PluginManager] = []

    async def fetch() -> None:
        managers.append(await anyio.to_thread.run_sync(get_plugin_manager))

    async with anyio.create_task_group() as tg:
        for _ in range(16):
            tg.start_soon(fetch)
    assert len(managers) == 16
    assert all(m is managers[0] for m in managers)
    reset_plugin_manager()
    assert get_plugin_manager() is not managers[0]


@pytest.mark.anyio
async def test_lifecycle_notify_from_concurrent_tasks_delivers_every_event() -> None:
    received: list[int] = []

    class Counter:
        @hookimpl
        def net_lifecycle_event(self, event: LifecycleEvent) -> None:
            received.append(int(event.data["shard"]))

    pm = PluginManager(discover=False)
    pm.register(Counter(), name="counter")

    async def emit(shard: int) -> None:
        await anyio.lowlevel.checkpoint()
        pm.notify(LifecycleEvent(LifecycleKind.SHARD_ADDED, "bus", {"shard": shard}))

    async with anyio.create_task_group() as tg:
        for shard in range(50):
            tg.start_soon(emit, shard)
    assert sorted(received) == list(range(50))

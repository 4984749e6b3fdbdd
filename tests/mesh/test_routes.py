"""The pure RoutingTable: direct routes, offers, staleness, reroute, split horizon."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from net_core.mesh import DIRECT_METRIC, Route, RoutingTable

AGE = 1_000


def test_direct_route_and_lookup_ignores_stale() -> None:
    table = RoutingTable(AGE)
    route = table.add_direct(7, 100)
    assert route == Route(7, 7, DIRECT_METRIC, 100)
    assert route.direct
    assert table.lookup(7, 100 + AGE) == route
    assert table.lookup(7, 101 + AGE) is None  # older than max_route_age
    assert table.next_hop(7, 100) == 7
    assert table.lookup(8, 100) is None
    assert 7 in table
    assert len(table) == 1
    with pytest.raises(ValueError, match="max_route_age_ns"):
        RoutingTable(0)


def test_add_route_with_metric_rules() -> None:
    table = RoutingTable(AGE)
    assert table.add_route_with_metric(9, 2, 4, 0)  # absent: insert
    assert table.lookup(9, 0) == Route(9, 2, 4, 0)
    # equal metric from another next hop: must not move the route (0.18 rule)
    assert not table.add_route_with_metric(9, 3, 4, 10)
    assert table.lookup(9, 10) == Route(9, 2, 4, 0)
    assert table.alternates(9) == [Route(9, 3, 4, 10)]
    # worse metric from the current next hop: refresh only
    assert not table.add_route_with_metric(9, 2, 6, 20)
    assert table.lookup(9, 20) == Route(9, 2, 4, 20)
    # strictly better: replace; the old one becomes an alternate
    assert table.add_route_with_metric(9, 5, 3, 30)
    assert table.lookup(9, 30) == Route(9, 5, 3, 30)
    assert [r.next_hop for r in table.alternates(9)] == [2, 3]
    # a stale route is replaced by any offer
    assert table.add_route_with_metric(9, 3, 7, 30 + AGE + 1)
    assert table.next_hop(9, 30 + AGE + 1) == 3


def test_pingwave_from_direct_peer_refreshes_direct_route() -> None:
    table = RoutingTable(AGE)
    table.add_direct(4, 0)
    assert not table.add_route_with_metric(4, 4, 2, 900)  # hop 0 pingwave: metric 2
    route = table.lookup(4, 1500)
    assert route is not None
    assert route.direct
    assert route.updated_ns == 900
    # a longer path to a direct peer never replaces the direct route
    assert not table.add_route_with_metric(4, 5, 3, 950)
    assert table.next_hop(4, 950) == 4


def test_direct_route_wins_over_learned_route() -> None:
    table = RoutingTable(AGE)
    table.add_route_with_metric(4, 5, 3, 0)
    table.add_direct(4, 10)
    assert table.lookup(4, 10) == Route(4, 4, 1, 10)
    assert table.alternates(4) == [Route(4, 5, 3, 0)]


def test_sweep_removes_stale_routes_and_falls_back_to_fresh_alternates() -> None:
    table = RoutingTable(AGE)
    table.add_route_with_metric(1, 2, 2, 0)
    table.add_route_with_metric(3, 2, 2, 0)
    table.add_route_with_metric(3, 4, 5, 600)  # alternate, fresher
    assert table.sweep(AGE) == []
    assert table.sweep(AGE + 1) == [1]
    assert table.lookup(3, AGE + 1) == Route(3, 4, 5, 600)
    assert table.sweep(600 + AGE + 1) == [3]
    assert len(table) == 0


def test_reroute_prefers_alternate_then_any_live_peer_and_restores() -> None:
    table = RoutingTable(AGE)
    table.add_direct(2, 0)
    table.add_direct(5, 0)
    table.add_direct(6, 0)
    table.add_route_with_metric(3, 2, 2, 0)  # 3 via 2
    table.add_route_with_metric(3, 5, 4, 0)  # alternate via 5
    table.add_route_with_metric(4, 2, 3, 0)  # 4 via 2, no alternate
    table.add_route_with_metric(2, 6, 5, 0)  # 2 itself is reachable via 6 too
    changed = table.reroute(2, [2, 5, 6], 100)
    by_dest = {r.destination: r for r in changed}
    assert by_dest[3] == Route(3, 5, 4, 100)  # (1) the alternate
    assert by_dest[4] == Route(4, 5, 4, 100)  # (2) any live direct peer, metric + 1
    assert by_dest[2] == Route(2, 6, 5, 100)  # the failed peer itself via its alternate
    assert table.next_hop(3, 100) == 5
    restored = table.restore(2, 200)
    assert {r.destination: r.next_hop for r in restored} == {2: 2, 3: 2, 4: 2}
    assert table.lookup(2, 200) == Route(2, 2, 1, 200)
    assert table.lookup(3, 200) == Route(3, 2, 2, 200)
    assert table.restore(2, 300) == []  # nothing saved any more


def test_reroute_without_any_live_peer_keeps_route() -> None:
    table = RoutingTable(AGE)
    table.add_route_with_metric(3, 2, 2, 0)
    assert table.reroute(2, [2], 10) == []
    assert table.next_hop(3, 10) == 2


def test_remove_next_hop_moves_or_deletes() -> None:
    table = RoutingTable(AGE)
    table.add_direct(2, 0)
    table.add_route_with_metric(3, 2, 2, 0)
    table.add_route_with_metric(3, 5, 4, 0)
    table.add_route_with_metric(4, 2, 3, 0)
    assert sorted(table.remove_next_hop(2)) == [2, 4]
    assert table.lookup(3, 0) == Route(3, 5, 4, 0)
    assert table.remove(3) == Route(3, 5, 4, 0)
    assert table.remove(3) is None
    assert table.routes() == []


def test_split_horizon() -> None:
    table = RoutingTable(AGE)
    assert table.split_horizon(9, 2, 0) == frozenset({2})
    table.add_route_with_metric(9, 3, 3, 0)
    assert table.split_horizon(9, 2, 0) == frozenset({2, 3})
    assert table.split_horizon(9, 2, AGE + 1) == frozenset({2})  # stale route: ignored


def test_alternates_are_bounded() -> None:
    table = RoutingTable(AGE)
    table.add_route_with_metric(1, 100, 2, 0)
    for hop in range(10):
        table.add_route_with_metric(1, hop, 3 + hop, 0)
    alternates = table.alternates(1)
    assert len(alternates) == 4
    assert [r.next_hop for r in alternates] == [0, 1, 2, 3]  # the best ones are kept


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["offer", "direct", "sweep", "reroute", "restore", "drop"]),
        st.integers(0, 5),  # destination
        st.integers(0, 5),  # next hop
        st.integers(1, 20),  # metric
        st.integers(0, 300),  # time step
    ),
    max_size=60,
)


@given(_OPS)
def test_invariants_under_arbitrary_operations(ops: list[tuple[str, int, int, int, int]]) -> None:
    """One route per destination; lookup only returns fresh routes; metrics stay in
    1..65535; a better offer always wins and an equal one never moves the next hop."""
    table = RoutingTable(AGE)
    now = 0
    for op, dest, hop, metric, step in ops:
        now += step
        before = table.lookup(dest, now)
        if op == "offer":
            table.add_route_with_metric(dest, hop, metric, now)
            after = table.lookup(dest, now)
            assert after is not None
            if before is None or metric < before.metric:
                assert (after.next_hop, after.metric) == (hop, metric)
            elif before.next_hop != hop:
                assert (after.next_hop, after.metric) == (before.next_hop, before.metric)
        elif op == "direct":
            table.add_direct(dest, now)
            assert table.lookup(dest, now) == Route(dest, dest, 1, now)
        elif op == "sweep":
            table.sweep(now)
            for route in table.routes():
                assert now - route.updated_ns <= AGE
        elif op == "reroute":
            for route in table.reroute(hop, range(6), now):
                assert route.next_hop != hop
        elif op == "restore":
            table.restore(hop, now)
        else:
            table.remove_next_hop(hop)
            assert all(r.next_hop != hop for r in table.routes())
        routes = table.routes()
        assert len({r.destination for r in routes}) == len(routes)
        for route in routes:
            assert 1 <= route.metric <= 0xFFFF
            found = table.lookup(route.destination, now)
            assert found is None or found == route
            assert (found is None) == (now - route.updated_ns > AGE)

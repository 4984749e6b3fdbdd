"""The mesh routing table: one route per destination, distance-vector rules (``mesh.md`` §3.6).

Theory of operation. A route says "to reach node *destination*, hand the packet to the
direct peer *next_hop*" with a ``metric`` (hops + 1) and the time it was last confirmed.

* A direct session installs a **direct route** (next hop = the destination, metric 1).
* A pingwave from origin O that reached us through direct peer S with ``hop_count`` h
  offers the route O via S with metric ``h + 2`` (:meth:`RoutingTable.add_route_with_metric`):
  inserted when there is none, **replacing** the route only for a strictly lower metric
  (0.18 rule: an equal metric must not move the next hop), otherwise only **refreshing**
  its time when the offer comes from the current next hop. Pingwaves of direct peers
  (h = 0, metric 2) therefore keep their metric-1 direct routes fresh.
* Offers that lose are remembered as **alternates** (at most :data:`MAX_ALTERNATES` per
  destination, best metric first): they are what :meth:`RoutingTable.reroute` falls back
  on when a next hop fails.
* :meth:`RoutingTable.lookup` ignores routes older than ``max_route_age`` (the node uses
  3 x session_timeout); :meth:`RoutingTable.sweep` deletes them.
* Failure of a next hop (:meth:`RoutingTable.reroute`): every route through it moves to
  (1) its freshest best alternate through another live peer, else (2) any other live
  direct peer; the original is saved and :meth:`RoutingTable.restore` puts it back when
  the peer recovers. The proximity-graph BFS step of the reference is not implemented
  (the node keeps no graph): the alternates stand in for it.
* Split horizon: :meth:`RoutingTable.split_horizon` says which peers a pingwave from an
  origin must not be forwarded to (its sender and our next hop towards that origin).

Pure: times are integer nanoseconds passed in by the caller; nothing here reads a clock,
opens a socket or starts a task. Node ids are u64; metrics are u16 (saturating).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, final

import attrs

__all__ = ["DIRECT_METRIC", "MAX_ALTERNATES", "MAX_METRIC", "Route", "RoutingTable"]

DIRECT_METRIC: Final = 1
"""The metric of a route to a direct peer."""
MAX_METRIC: Final = 0xFFFF
"""Metrics are u16 on the reference; ours saturate there."""
MAX_ALTERNATES: Final = 4
"""How many losing offers a destination remembers for rerouting."""


@final
@attrs.frozen(slots=True)
class Route:
    """How to reach ``destination``: through the direct peer ``next_hop``."""

    destination: int
    next_hop: int
    metric: int
    updated_ns: int

    @property
    def direct(self) -> bool:
        """True for the route to a direct peer (next hop = destination, metric 1)."""
        return self.next_hop == self.destination and self.metric == DIRECT_METRIC


@attrs.define(slots=True)
class _Entry:
    route: Route
    alternates: dict[int, Route] = attrs.field(factory=dict)
    saved: Route | None = None
    """The route a reroute replaced, restored when its next hop recovers."""


@final
class RoutingTable:
    """Routes by destination node id (see the module docstring).

    ``max_route_age_ns``: routes older than this are invisible to :meth:`lookup` and
    removed by :meth:`sweep`.
    """

    __slots__ = ("_entries", "max_route_age_ns")

    def __init__(self, max_route_age_ns: int) -> None:
        if max_route_age_ns <= 0:
            raise ValueError(f"max_route_age_ns must be > 0, got {max_route_age_ns}")
        self.max_route_age_ns = max_route_age_ns
        self._entries: dict[int, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, destination: object) -> bool:
        return destination in self._entries

    # -- updates -----------------------------------------------------------------------

    def add_direct(self, node_id: int, now_ns: int) -> Route:
        """Install (or refresh) the direct route to ``node_id``: it always wins."""
        route = Route(node_id, node_id, DIRECT_METRIC, now_ns)
        entry = self._entries.get(node_id)
        if entry is None:
            self._entries[node_id] = _Entry(route)
            return route
        if entry.route.next_hop != node_id:
            self._remember(entry, entry.route)
        entry.alternates.pop(node_id, None)
        entry.route = route
        entry.saved = None
        return route

    def add_route_with_metric(
        self, destination: int, next_hop: int, metric: int, now_ns: int
    ) -> bool:
        """Offer ``destination`` via ``next_hop`` at ``metric``; True when the route
        changed (inserted or replaced).

        Absent: insert. Strictly lower metric than the current route: replace (the old
        one becomes an alternate). Otherwise: refresh the current route's time when the
        offer comes from its next hop (with the better of the two metrics kept), else
        remember the offer as an alternate.
        """
        metric = min(max(metric, DIRECT_METRIC), MAX_METRIC)
        offer = Route(destination, next_hop, metric, now_ns)
        entry = self._entries.get(destination)
        if entry is None:
            self._entries[destination] = _Entry(offer)
            return True
        current = entry.route
        stale = now_ns - current.updated_ns > self.max_route_age_ns
        if metric < current.metric or stale:
            if current.next_hop != next_hop:
                self._remember(entry, current)
            entry.alternates.pop(next_hop, None)
            entry.route = offer
            return current.next_hop != next_hop or metric != current.metric
        if current.next_hop == next_hop:
            entry.route = attrs.evolve(current, updated_ns=now_ns)
            return False
        self._remember(entry, offer)
        return False

    def _remember(self, entry: _Entry, route: Route) -> None:
        if route.next_hop == entry.route.destination and route.metric == DIRECT_METRIC:
            return  # a direct route is re-learned from the session, not kept as an alternate
        alternates = entry.alternates
        alternates[route.next_hop] = route
        if len(alternates) > MAX_ALTERNATES:
            worst = max(alternates.values(), key=lambda r: (r.metric, -r.updated_ns))
            del alternates[worst.next_hop]

    def remove(self, destination: int) -> Route | None:
        """Forget every route to ``destination``; return the route it had."""
        entry = self._entries.pop(destination, None)
        return None if entry is None else entry.route

    def remove_next_hop(self, next_hop: int) -> list[int]:
        """Forget ``next_hop`` as a next hop (it is gone for good): routes through it
        move to an alternate when there is one and are deleted otherwise. Returns the
        destinations whose route was deleted."""
        deleted: list[int] = []
        for destination, entry in list(self._entries.items()):
            entry.alternates.pop(next_hop, None)
            if entry.saved is not None and entry.saved.next_hop == next_hop:
                entry.saved = None
            if entry.route.next_hop != next_hop:
                continue
            best = _best(entry.alternates.values())
            if best is None:
                del self._entries[destination]
                deleted.append(destination)
            else:
                del entry.alternates[best.next_hop]
                entry.route = best
        return deleted

    def sweep(self, now_ns: int) -> list[int]:
        """Delete routes (and alternates) older than ``max_route_age``; return the
        destinations that lost their route."""
        limit = self.max_route_age_ns
        deleted: list[int] = []
        for destination, entry in list(self._entries.items()):
            for hop, alt in list(entry.alternates.items()):
                if now_ns - alt.updated_ns > limit:
                    del entry.alternates[hop]
            if now_ns - entry.route.updated_ns <= limit:
                continue
            best = _best(entry.alternates.values())
            if best is None:
                del self._entries[destination]
                deleted.append(destination)
            else:
                del entry.alternates[best.next_hop]
                entry.route = best
        return deleted

    def reroute(self, failed: int, live_peers: Iterable[int], now_ns: int) -> list[Route]:
        """The direct peer ``failed`` is down: move every route through it to (1) its best
        alternate through a live peer, else (2) any other live direct peer (metric + 1,
        a guess that the next pingwaves correct). The replaced route is saved for
        :meth:`restore`. Returns the new routes."""
        live = [p for p in live_peers if p != failed]
        live_set = set(live)
        changed: list[Route] = []
        for destination, entry in self._entries.items():
            current = entry.route
            if current.next_hop != failed:
                continue
            usable = [a for a in entry.alternates.values() if a.next_hop in live_set]
            best = _best(usable)
            if best is not None:
                del entry.alternates[best.next_hop]
                new = attrs.evolve(best, updated_ns=now_ns)
            else:
                fallback = next((p for p in live if p != destination), None)
                if fallback is None and destination in live_set:
                    fallback = destination
                if fallback is None:
                    continue
                new = Route(destination, fallback, min(current.metric + 1, MAX_METRIC), now_ns)
            if entry.saved is None:
                entry.saved = current
            entry.route = new
            changed.append(new)
        return changed

    def restore(self, recovered: int, now_ns: int) -> list[Route]:
        """``recovered`` is back: routes a :meth:`reroute` moved away from it return to it
        when that is better than what they have now. Returns the restored routes."""
        restored: list[Route] = []
        for entry in self._entries.values():
            saved = entry.saved
            if saved is None or saved.next_hop != recovered:
                continue
            entry.saved = None
            if saved.metric <= entry.route.metric:
                if entry.route.next_hop != recovered:
                    self._remember(entry, entry.route)
                entry.route = attrs.evolve(saved, updated_ns=now_ns)
                restored.append(entry.route)
        return restored

    # -- queries -----------------------------------------------------------------------

    def lookup(self, destination: int, now_ns: int) -> Route | None:
        """The live route to ``destination`` (None when absent or older than
        ``max_route_age``)."""
        entry = self._entries.get(destination)
        if entry is None:
            return None
        route = entry.route
        if now_ns - route.updated_ns > self.max_route_age_ns:
            return None
        return route

    def next_hop(self, destination: int, now_ns: int) -> int | None:
        """The next hop of :meth:`lookup` (None without a live route)."""
        route = self.lookup(destination, now_ns)
        return None if route is None else route.next_hop

    def split_horizon(self, origin: int, sender: int, now_ns: int) -> frozenset[int]:
        """The peers a pingwave of ``origin`` received from ``sender`` must not be
        forwarded to: the sender, and our next hop towards ``origin``."""
        hop = self.next_hop(origin, now_ns)
        return frozenset((sender,) if hop is None else (sender, hop))

    def routes(self) -> list[Route]:
        """Every route, stale ones included, sorted by destination."""
        return [self._entries[d].route for d in sorted(self._entries)]

    def alternates(self, destination: int) -> list[Route]:
        """The remembered losing offers for ``destination``, best first."""
        entry = self._entries.get(destination)
        if entry is None:
            return []
        return sorted(entry.alternates.values(), key=lambda r: (r.metric, -r.updated_ns))


def _best(routes: Iterable[Route]) -> Route | None:
    best: Route | None = None
    for route in routes:
        if best is None or (route.metric, -route.updated_ns) < (best.metric, -best.updated_ns):
            best = route
    return best

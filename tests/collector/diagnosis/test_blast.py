"""Unit tests for ``collector.diagnosis.blast``: which services a root cause hurts, on hand-built
trace facts recorded in a real ``TraceDiagnosis``'s windows and a hand-built snapshot.

Times: the snapshot is generated at ``NOW`` and the detection window starts at ``T0``; window
traces are recorded at ``IN_WINDOW``, baseline traces at ``IN_BASELINE`` (well before ``T0``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import pytest

from collector.diagnosis.assessment import (
    BY_RISE,
    BY_TRACES,
    DOWN,
    ERRORS,
    LATENCY,
    SHARED_HOST,
    Impact,
    RootCause,
)
from collector.diagnosis.blast import BlastConfig, BlastRadius
from collector.diagnosis.consumer import TraceDiagnosis
from collector.diagnosis.traces import Origin, TraceFacts, Visit
from collector.diagnosis.window import ServiceWindows
from collector.model import Edge, Node, Snapshot

NOW = 1000.0
T0 = 980.0
IN_WINDOW = 990.0
IN_BASELINE = 900.0
NS_PER_MS = 1_000_000

_trace_ids = itertools.count(1)


def new_trace_id() -> bytes:
    return next(_trace_ids).to_bytes(16, "big")


def visits(path: Sequence[str], failed: Iterable[str] = (),
           ms: dict[str, float] | None = None) -> list[Visit]:
    """``path`` from the entry service down: each visit's caller is the one before it.
    ``ms`` gives a visit's self and inclusive time (default 5 ms)."""
    bad = set(failed)
    out = []
    for i, name in enumerate(path):
        t = int((ms or {}).get(name, 5.0) * NS_PER_MS)
        out.append(Visit(name, name in bad, t, t, False, path[i - 1] if i else None, i - 1))
    return out


def fail(windows: ServiceWindows, path: Sequence[str], victims: Sequence[str],
         absorbed_by: str | None = None, t: float = IN_WINDOW) -> bytes:
    """A request down ``path`` whose last service is an error origin; its error reached the
    ``victims`` (failed visits above it) and was absorbed by ``absorbed_by``."""
    root = path[-1]
    tid = new_trace_id()
    origin = Origin(root, False, path[-2] if len(path) > 1 else None, list(victims),
                    absorbed_by)
    windows.record(TraceFacts(tid, visits(path, (root, *victims)), [origin]), t)
    return tid


def ok(windows: ServiceWindows, path: Sequence[str], n: int = 1, t: float = IN_WINDOW,
       ms: dict[str, float] | None = None) -> list[bytes]:
    tids = []
    for _ in range(n):
        tid = new_trace_id()
        windows.record(TraceFacts(tid, visits(path, ms=ms), []), t)
        tids.append(tid)
    return tids


def snapshot(edges: Sequence[tuple[str, str]], virtual: Iterable[str] = ("user",),
             teams: dict[str, str] | None = None,
             health: dict[str, str] | None = None,
             meta: dict[str, dict[str, int]] | None = None) -> Snapshot:
    snap = Snapshot(window_s=60.0, generated_at=NOW)
    virt = set(virtual)
    for name in sorted({n for e in edges for n in e}):
        snap.nodes[name] = Node(name, "virtual" if name in virt else "service",
                                team=(teams or {}).get(name),
                                health=(health or {}).get(name, "healthy"),
                                meta=dict((meta or {}).get(name, {})))
    for src, dst in edges:
        snap.edges[(src, dst)] = Edge(src, dst)
    return snap


def cause(service: str, kind: str = ERRORS) -> RootCause:
    return RootCause(service, kind, None, False, 0.9, {"summary": f"{service} broke"})


def blast(diag: TraceDiagnosis, snap: Snapshot, *causes: RootCause,
          config: BlastConfig | None = None) -> list[RootCause]:
    return BlastRadius(diag, config=config).apply(snap, list(causes), T0)


def impacts(out: Sequence[RootCause], service: str) -> dict[str, Impact]:
    (rc,) = [c for c in out if c.service == service]
    return {i.service: i for i in rc.impacted}


SHOP = [("user", "frontend"), ("frontend", "checkout"), ("checkout", "payment"),
        ("payment", "fraud")]
CHAIN = ["frontend", "checkout", "payment", "fraud"]


# -- errors: from the traces ------------------------------------------------------------------


def test_error_cascade_lists_every_caller_with_counts_and_trace_ids() -> None:
    diag = TraceDiagnosis()
    w = diag.windows
    tids = [fail(w, CHAIN, ["payment", "checkout", "frontend"]) for _ in range(4)]
    ok(w, CHAIN, 6)
    snap = snapshot(SHOP, teams={"payment": "payments", "checkout": "orders"})
    (out,) = blast(diag, snap, cause("fraud"))
    assert [i.service for i in out.impacted] == ["payment", "checkout", "frontend"]
    pay = out.impacted[0]
    assert (pay.team, pay.how, pay.requests, pay.affected, pay.explained) == \
        ("payments", BY_TRACES, 10, 4, 4)
    assert pay.share == 1.0
    # Example trace ids: the first three, hex.
    assert pay.trace_ids == tuple(t.hex() for t in tids[:3])
    assert pay.summary == ("payment: 4 of 10 requests failed with fraud's error below them "
                           "(100% of its 4 failures)")
    assert out.impacted[2].team is None  # frontend's node has no team
    # The cause itself is otherwise unchanged.
    assert (out.service, out.kind, out.evidence) == ("fraud", ERRORS, {"summary": "fraud broke"})


def test_errors_with_other_causes_lower_the_explained_share() -> None:
    diag = TraceDiagnosis()
    w = diag.windows
    for _ in range(4):
        fail(w, CHAIN, ["payment", "checkout", "frontend"])
    for _ in range(4):  # checkout's own errors, passed on to frontend: not fraud's doing
        fail(w, ["frontend", "checkout"], ["frontend"])
    ok(w, CHAIN, 2)
    (out,) = blast(diag, snapshot(SHOP), cause("fraud"))
    by = impacts([out], "fraud")
    assert (by["payment"].requests, by["payment"].affected, by["payment"].explained) == \
        (6, 4, 4)
    for name in ("checkout", "frontend"):
        imp = by[name]
        assert (imp.requests, imp.affected, imp.explained, imp.share) == (10, 8, 4, 0.5)
        assert imp.summary.endswith("(50% of its 8 failures)")


@pytest.mark.parametrize(("failures", "min_explained", "listed"),
                         [(1, 2, False), (2, 2, True), (2, 3, False), (3, 3, True)])
def test_a_caller_needs_min_explained_failures_to_be_impacted(
        failures: int, min_explained: int, listed: bool) -> None:
    diag = TraceDiagnosis()
    for _ in range(failures):
        fail(diag.windows, ["checkout", "payment"], ["checkout"])
    ok(diag.windows, ["checkout", "payment"], 10)
    snap = snapshot([("checkout", "payment")])
    (out,) = blast(diag, snap, cause("payment"), config=BlastConfig(min_explained=min_explained))
    assert [i.service for i in out.impacted] == (["checkout"] if listed else [])


def test_error_root_cause_does_not_fall_back_on_latency_for_a_caller_with_traces() -> None:
    diag = TraceDiagnosis()
    ok(diag.windows, ["checkout", "payment"], 20, t=IN_BASELINE)
    ok(diag.windows, ["checkout", "payment"], 20, ms={"checkout": 2000.0})
    (out,) = blast(diag, snapshot([("checkout", "payment")], health={"checkout": "failing"}),
                   cause("payment"))
    assert out.impacted == ()


# -- errors: callers that fall back ------------------------------------------------------------


@pytest.mark.parametrize(("absorbed", "listed"), [(2, True), (3, False)])
def test_a_caller_absorbing_more_than_it_passes_on_is_not_impacted(
        absorbed: int, listed: bool) -> None:
    diag = TraceDiagnosis()
    w = diag.windows
    for _ in range(2):
        fail(w, ["checkout", "email"], ["checkout"])
    for _ in range(absorbed):
        fail(w, ["checkout", "email"], [], absorbed_by="checkout")
    (out,) = blast(diag, snapshot([("checkout", "email")]), cause("email"))
    assert [i.service for i in out.impacted] == (["checkout"] if listed else [])


def test_the_walk_goes_on_only_through_impacted_callers() -> None:
    # frontend has no traces and its metrics say it is failing: it is impacted when the walk
    # reaches it, which it does only through an impacted checkout.
    edges = [("frontend", "checkout"), ("checkout", "email")]
    health = {"frontend": "failing"}

    absorbing = TraceDiagnosis()
    for _ in range(5):
        fail(absorbing.windows, ["checkout", "email"], [], absorbed_by="checkout")
    (out,) = blast(absorbing, snapshot(edges, health=health), cause("email"))
    assert out.impacted == ()

    failing = TraceDiagnosis()
    for _ in range(5):
        fail(failing.windows, ["checkout", "email"], ["checkout"])
    (out,) = blast(failing, snapshot(edges, health=health), cause("email"))
    assert [(i.service, i.how) for i in out.impacted] == \
        [("checkout", BY_TRACES), ("frontend", BY_RISE)]


def test_callers_of_an_absorbing_caller_are_not_impacted_through_it() -> None:
    # checkout falls back around email 10 times out of 13 (not impacted); the 3 failures
    # that did pass on reached frontend, which the graph connects only through checkout.
    diag = TraceDiagnosis()
    w = diag.windows
    for _ in range(10):
        fail(w, ["frontend", "checkout", "email"], [], absorbed_by="checkout")
    for _ in range(3):
        fail(w, ["frontend", "checkout", "email"], ["checkout", "frontend"])
    snap = snapshot([("frontend", "checkout"), ("checkout", "email")])
    (out,) = blast(diag, snap, cause("email"))
    assert "checkout" not in {i.service for i in out.impacted}  # holds today
    assert out.impacted == ()  # fails today: frontend is listed by the traces-only pass


# -- no traces: the graph's health ---------------------------------------------------------------


@pytest.mark.parametrize("health", ["degraded", "failing", "down"])
def test_a_caller_with_no_traces_is_impacted_when_its_health_is_bad(health: str) -> None:
    diag = TraceDiagnosis()
    snap = snapshot([("checkout", "payment")], health={"checkout": health},
                    teams={"checkout": "orders"},
                    meta={"checkout": {"calls": 40, "errors": 12}})
    (out,) = blast(diag, snap, cause("payment"))
    (imp,) = out.impacted
    assert (imp.service, imp.team, imp.how, imp.requests, imp.affected, imp.explained,
            imp.trace_ids) == ("checkout", "orders", BY_RISE, 40, 12, 0, ())
    assert imp.summary == (f"checkout is {health} (from metrics; no traces show payment "
                           "below it)")


@pytest.mark.parametrize("health", ["healthy", "unknown"])
def test_a_caller_with_no_traces_and_good_or_unknown_health_is_not_impacted(
        health: str) -> None:
    snap = snapshot([("checkout", "payment")], health={"checkout": health},
                    meta={"checkout": {"calls": 40, "errors": 12}})
    (out,) = blast(TraceDiagnosis(), snap, cause("payment"))
    assert out.impacted == ()


def test_metrics_fallback_without_call_counts_reports_zeros() -> None:
    snap = snapshot([("checkout", "payment")], health={"checkout": "failing"})
    (out,) = blast(TraceDiagnosis(), snap, cause("payment", DOWN))
    (imp,) = out.impacted
    assert (imp.requests, imp.affected, imp.share) == (0, 0, None)


# -- latency ------------------------------------------------------------------------------------


def slow_diag(slow: int, fast: int, baseline: int = 20) -> TraceDiagnosis:
    """quote is slow (200 ms of its own) in ``slow`` window requests under shipping and
    checkout, fast (5 ms) in ``fast`` more; ``baseline`` fast requests before the window."""
    diag = TraceDiagnosis()
    w = diag.windows
    w.slow_ms["quote"] = 50.0  # set by the root-cause step from quote's baseline
    path = ["checkout", "shipping", "quote"]
    ok(w, path, baseline, t=IN_BASELINE)
    ok(w, path, slow, ms={"checkout": 210.0, "shipping": 205.0, "quote": 200.0})
    ok(w, path, fast)
    return diag


LATENCY_EDGES = [("checkout", "shipping"), ("shipping", "quote")]


def test_latency_cause_lists_callers_slowed_by_its_own_time_in_their_traces() -> None:
    diag = slow_diag(slow=3, fast=7)
    (out,) = blast(diag, snapshot(LATENCY_EDGES), cause("quote", LATENCY))
    assert [i.service for i in out.impacted] == ["shipping", "checkout"]
    ship = out.impacted[0]
    # 3 of its 10 requests were slower than its baseline p95, all explained by quote.
    assert (ship.how, ship.requests, ship.affected, ship.explained) == (BY_TRACES, 10, 3, 3)
    assert len(ship.trace_ids) == 3
    assert ship.summary == "shipping: 3 of 10 requests were slowed by quote's own time below them"


def test_latency_cause_without_a_baseline_counts_the_slowed_requests_as_affected() -> None:
    diag = slow_diag(slow=3, fast=7, baseline=0)
    (out,) = blast(diag, snapshot(LATENCY_EDGES), cause("quote", LATENCY))
    ship = impacts([out], "quote")["shipping"]
    assert (ship.affected, ship.explained) == (3, 3)


def test_latency_cause_with_one_slowed_request_falls_back_on_the_p95_rise() -> None:
    # One request slowed by quote is below min_explained: the callers' p95 decides. One
    # slow request of 30 leaves the p95 alone...
    diag = slow_diag(slow=1, fast=29)
    (out,) = blast(diag, snapshot(LATENCY_EDGES), cause("quote", LATENCY))
    assert out.impacted == ()
    # ... one of 10 is above the 95th percentile: a rise, with no trace evidence.
    diag = slow_diag(slow=1, fast=9)
    (out,) = blast(diag, snapshot(LATENCY_EDGES), cause("quote", LATENCY))
    ship = impacts([out], "quote")["shipping"]
    assert (ship.how, ship.requests, ship.affected, ship.explained, ship.trace_ids) == \
        (BY_RISE, 10, 1, 0, ())
    assert ship.summary.startswith("shipping: its p95 rose to 212 ms (was 5 ms)")


def test_latency_cause_lists_a_caller_whose_inclusive_p95_rose() -> None:
    diag = TraceDiagnosis()
    w = diag.windows
    path = ["checkout", "quote"]
    ok(w, path, 20, t=IN_BASELINE, ms={"checkout": 10.0})
    ok(w, path, 10, ms={"checkout": 100.0})  # no slow_ms for quote: no slowed_by counts
    (out,) = blast(diag, snapshot([("checkout", "quote")]), cause("quote", LATENCY))
    (imp,) = out.impacted
    assert (imp.service, imp.how, imp.requests, imp.affected, imp.explained, imp.trace_ids) == \
        ("checkout", BY_RISE, 10, 10, 0, ())
    assert imp.summary == ("checkout: its p95 rose to 106 ms (was 9 ms); no traces show quote "
                           "below its slow requests")


def test_latency_rise_fallback_needs_the_blast_configs_min_samples() -> None:
    diag = TraceDiagnosis()
    path = ["checkout", "quote"]
    ok(diag.windows, path, 20, t=IN_BASELINE, ms={"checkout": 10.0})
    ok(diag.windows, path, 4, ms={"checkout": 100.0})  # BlastConfig's latency: 5 samples
    (out,) = blast(diag, snapshot([("checkout", "quote")]), cause("quote", LATENCY))
    assert out.impacted == ()
    ok(diag.windows, path, 1, ms={"checkout": 100.0})
    (out,) = blast(diag, snapshot([("checkout", "quote")]), cause("quote", LATENCY))
    assert [i.service for i in out.impacted] == ["checkout"]


def test_latency_rise_fallback_with_no_baseline_needs_a_second() -> None:
    path = ["checkout", "quote"]
    slow = TraceDiagnosis()
    ok(slow.windows, path, 10, ms={"checkout": 1500.0})
    (out,) = blast(slow, snapshot([("checkout", "quote")]), cause("quote", LATENCY))
    (imp,) = out.impacted
    assert imp.how == BY_RISE and "(was no baseline)" in imp.summary

    merely_slowish = TraceDiagnosis()
    ok(merely_slowish.windows, path, 10, ms={"checkout": 500.0})
    (out,) = blast(merely_slowish, snapshot([("checkout", "quote")]), cause("quote", LATENCY))
    assert out.impacted == ()


# -- what is listed -----------------------------------------------------------------------------


def test_virtual_nodes_are_never_listed() -> None:
    diag = TraceDiagnosis()
    for _ in range(3):
        fail(diag.windows, ["frontend", "payment"], ["frontend"])
    snap = snapshot([("user", "frontend"), ("frontend", "payment")],
                    health={"user": "failing"}, meta={"user": {"calls": 9, "errors": 3}})
    (out,) = blast(diag, snap, cause("payment"))
    assert [i.service for i in out.impacted] == ["frontend"]


def test_other_root_causes_are_not_listed_but_the_walk_goes_through_them() -> None:
    diag = TraceDiagnosis()
    for _ in range(3):
        fail(diag.windows, CHAIN, ["payment", "checkout", "frontend"])
    out = blast(diag, snapshot(SHOP), cause("fraud"), cause("payment"))
    assert list(impacts(out, "fraud")) == ["checkout", "frontend"]
    assert list(impacts(out, "payment")) == []  # none of payment's own origins
    assert [c.service for c in out] == ["fraud", "payment"]


def test_a_shared_host_cause_is_passed_through_unchanged() -> None:
    diag = TraceDiagnosis()
    for _ in range(3):
        fail(diag.windows, CHAIN, ["payment", "checkout", "frontend"])
    host = RootCause("node-7", SHARED_HOST, None, False, 0.7, {"services": ["fraud"]},
                     host="node-7")
    (out,) = blast(diag, snapshot(SHOP), host)
    assert out is host


def test_services_the_traces_name_but_the_graph_does_not_connect_are_added() -> None:
    diag = TraceDiagnosis()
    for _ in range(2):
        fail(diag.windows, ["batch", "payment"], ["batch"])
    fail(diag.windows, ["report", "payment"], ["report"])  # one: not enough
    ok(diag.windows, ["nightly", "payment"], 5)  # no failures from payment
    (out,) = blast(diag, snapshot([("checkout", "payment")]), cause("payment"))
    assert [(i.service, i.how, i.explained) for i in out.impacted] == [("batch", BY_TRACES, 2)]


def test_the_walk_is_breadth_first_with_callers_in_name_order() -> None:
    diag = TraceDiagnosis()
    w = diag.windows
    for caller in ("zeta", "alpha", "mid"):
        for _ in range(2):
            fail(w, ["top", caller, "db"], [caller, "top"])
    edges = [("zeta", "db"), ("alpha", "db"), ("mid", "db"), ("top", "zeta"), ("top", "alpha")]
    (out,) = blast(diag, snapshot(edges), cause("db"))
    assert [i.service for i in out.impacted] == ["alpha", "mid", "zeta", "top"]
    assert impacts([out], "db")["top"].explained == 6


def test_a_cycle_in_the_graph_lists_each_service_once() -> None:
    diag = TraceDiagnosis()
    for _ in range(2):
        fail(diag.windows, ["a", "b", "root"], ["b", "a"])
    edges = [("a", "b"), ("b", "a"), ("b", "root"), ("root", "a")]
    (out,) = blast(diag, snapshot(edges), cause("root"))
    assert [i.service for i in out.impacted] == ["b", "a"]


def test_impacted_are_capped_at_max_impacted() -> None:
    diag = TraceDiagnosis()
    for _ in range(2):
        fail(diag.windows, CHAIN, ["payment", "checkout", "frontend"])
    (out,) = blast(diag, snapshot(SHOP), cause("fraud"), config=BlastConfig(max_impacted=2))
    assert [i.service for i in out.impacted] == ["payment", "checkout"]


def test_traces_outside_the_detection_window_do_not_count() -> None:
    diag = TraceDiagnosis()
    for _ in range(5):
        fail(diag.windows, ["checkout", "payment"], ["checkout"], t=IN_BASELINE)
    (out,) = blast(diag, snapshot([("checkout", "payment")]), cause("payment"))
    assert out.impacted == ()


def test_no_causes_give_no_output() -> None:
    assert blast(TraceDiagnosis(), snapshot(SHOP)) == []


def test_latency_walk_stops_at_a_caller_that_was_not_slowed() -> None:
    # checkout's inclusive p95 rose, but shipping, between it and quote, is as fast as
    # ever: the walk from quote stops at shipping and never reaches checkout.
    diag = TraceDiagnosis()
    path = ["checkout", "shipping", "quote"]
    ok(diag.windows, path, 20, t=IN_BASELINE, ms={"checkout": 10.0})
    ok(diag.windows, path, 10, ms={"checkout": 100.0})
    (out,) = blast(diag, snapshot(LATENCY_EDGES), cause("quote", LATENCY))
    assert out.impacted == ()


def test_latency_impact_counts_all_slow_requests_as_affected_and_explains_quotes() -> None:
    # Besides 3 requests slowed by quote, shipping was slow on its own in 2 more: affected
    # counts all 5 (above its baseline p95), explained only quote's 3.
    diag = slow_diag(slow=3, fast=5)
    ok(diag.windows, ["checkout", "shipping", "quote"], 2,
       ms={"checkout": 310.0, "shipping": 300.0})
    (out,) = blast(diag, snapshot(LATENCY_EDGES), cause("quote", LATENCY))
    ship = impacts([out], "quote")["shipping"]
    assert (ship.how, ship.requests, ship.affected, ship.explained, ship.share) == \
        (BY_TRACES, 10, 5, 3, 0.6)


def test_two_slowed_requests_are_enough_trace_evidence_for_a_latency_cause() -> None:
    diag = slow_diag(slow=2, fast=8)
    (out,) = blast(diag, snapshot(LATENCY_EDGES), cause("quote", LATENCY))
    ship = impacts([out], "quote")["shipping"]
    assert (ship.how, ship.affected, ship.explained, len(ship.trace_ids)) == (BY_TRACES, 2, 2, 2)


# -- a candidate that is another's effect ------------------------------------------------------


def slow_cause(service: str, before_ms: float, after_ms: float) -> RootCause:
    """A latency candidate whose own-time p95 rose from ``before_ms`` to ``after_ms``."""
    return RootCause(service, LATENCY, None, False, 0.9,
                     {"summary": f"{service} slow", "before": {"own_p95_ms": before_ms},
                      "after": {"own_p95_ms": after_ms}})


def test_a_caller_slowed_less_than_its_slow_callee_is_impacted_not_paged() -> None:
    # Measured under the burner campaign: while a callee slept 400 ms, frontend's requests
    # piled up and its own time rose from 22 to 90-180 ms: paged as a second fault.
    diag = slow_diag(slow=3, fast=7)
    radius = BlastRadius(diag)
    out = radius.apply(snapshot(LATENCY_EDGES),
                       [slow_cause("quote", 5, 200), slow_cause("shipping", 5, 65)], T0)
    assert [c.service for c in out] == ["quote"]
    assert list(impacts(out, "quote")) == ["shipping", "checkout"]
    (held, why) = radius.held["shipping"]
    assert held.service == "shipping"
    assert why == ("an effect of quote: 3 of its requests had quote's slow visits below them, "
                   "its own time up 60 ms against 195 ms there")


def test_a_caller_whose_own_time_rose_as_much_as_its_callees_is_a_fault_of_its_own() -> None:
    diag = slow_diag(slow=3, fast=7)
    radius = BlastRadius(diag)
    out = radius.apply(snapshot(LATENCY_EDGES),
                       [slow_cause("quote", 5, 200), slow_cause("shipping", 5, 200)], T0)
    assert [c.service for c in out] == ["quote", "shipping"]
    assert radius.held == {}


def test_a_slow_service_with_no_slow_visit_below_its_requests_is_not_an_effect() -> None:
    # Two slow services, neither below the other's requests: two faults.
    diag = slow_diag(slow=0, fast=10)
    radius = BlastRadius(diag)
    out = radius.apply(snapshot(LATENCY_EDGES),
                       [slow_cause("quote", 5, 200), slow_cause("shipping", 5, 65)], T0)
    assert [c.service for c in out] == ["quote", "shipping"]
    assert radius.held == {}

"""Root cause versus symptoms, and blast radius, on the demo shop's traces.

Each test runs a healthy baseline, injects a fault, and reads the default-window snapshot of
a collector with the real traffic graph and diagnosis installed (injected clock, no sleeps).
"""

from __future__ import annotations

from typing import Any

from diagnosis_sim import SHOP, Dep, Fault, Shop, drive, make_service, settle


def diagnose(faults: dict[str, Fault], noise: dict[str, float] | None = None,
             fault_s: int = 20, **shop_kw: Any) -> list[dict[str, Any]]:
    service, clock = make_service(1_000_000.0)
    shop = Shop(noise=noise or {}, **shop_kw)
    drive(service, clock, shop, 80)
    shop.faults = faults
    drive(service, clock, shop, fault_s)
    settle(service, clock)
    causes: list[dict[str, Any]] = service.snapshot().meta["root_causes"]
    return causes


def impacted(cause: dict[str, Any]) -> set[str]:
    return {d["service"] for d in cause["impacted"]}


def test_deep_cascade_blames_the_origin_and_lists_callers_as_impacted() -> None:
    (cause,) = diagnose({"fraud-detection": Fault(error_rate=0.5)})
    assert (cause["service"], cause["kind"]) == ("fraud-detection", "errors")
    assert impacted(cause) == {"payment", "checkout", "frontend"}
    ev = cause["evidence"]
    assert ev["trace_ids"] and len(ev["trace_ids"]) <= 5
    assert ev["before"]["origin_error_ratio"] == 0.0 and ev["after"]["origin_error_ratio"] > 0.3
    assert "fraud-detection" in ev["summary"]


def test_refused_connection_to_instrumented_callee_blames_the_callee() -> None:
    # No peer.service: the callee is known only by the port it serves on.
    (cause,) = diagnose({"payment": Fault(down=True)}, peer_service=False)
    assert (cause["service"], cause["kind"]) == ("payment", "down")
    assert impacted(cause) == {"checkout", "frontend"}


def test_timeout_to_instrumented_callee_blames_the_callee_not_the_caller() -> None:
    (cause,) = diagnose({"shipping": Fault(down=True, timeout=True)})
    assert (cause["service"], cause["kind"]) == ("shipping", "down")
    assert "checkout" in impacted(cause)


def test_failing_uninstrumented_database_is_the_root_cause() -> None:
    (cause,) = diagnose({"orders": Fault(error_rate=0.5)})
    assert (cause["service"], cause["virtual"]) == ("orders", True)
    assert cause["kind"] == "errors"
    assert impacted(cause) == {"checkout", "frontend"}


def test_timeout_to_uninstrumented_external_api_blames_the_api() -> None:
    # payment calls a card processor known only by its address; it stops answering.
    topo = dict(SHOP, payment=[Dep("fraud-detection"),
                               Dep("api.psp.example", attrs={"server.address":
                                                             "api.psp.example"})])
    (cause,) = diagnose({"api.psp.example": Fault(down=True, timeout=True)}, topo=topo)
    assert (cause["service"], cause["virtual"]) == ("api.psp.example", True)
    assert cause["kind"] == "down"
    assert impacted(cause) == {"payment", "checkout", "frontend"}


def test_latency_fault_under_a_slow_caller_blames_the_callee_self_time() -> None:
    # checkout spends 40 ms of its own on every request; quote becomes 300 ms slower.
    (cause,) = diagnose({"quote": Fault(latency_ms=300)})
    assert (cause["service"], cause["kind"]) == ("quote", "latency")
    assert impacted(cause) == {"shipping", "checkout", "frontend"}
    assert cause["evidence"]["after"]["self_p95_ms"] > 200


def test_slow_database_is_a_latency_root_cause() -> None:
    (cause,) = diagnose({"redis": Fault(latency_ms=200)})
    assert (cause["service"], cause["kind"]) == ("redis", "latency")


def test_optional_dependency_failure_blames_it_and_the_caller_is_not_impacted() -> None:
    (cause,) = diagnose({"ad": Fault(error_rate=1.0)}, noise={"currency": 0.03})
    assert (cause["service"], cause["kind"]) == ("ad", "errors")
    assert impacted(cause) == set()
    assert cause["evidence"]["counts"]["absorbed_by_callers"] > 0


def test_steady_background_noise_is_not_a_root_cause() -> None:
    assert diagnose({}, noise={"currency": 0.04, "email": 0.1}) == []


def test_noisy_service_is_not_blamed_next_to_a_real_fault() -> None:
    causes = diagnose({"cart": Fault(error_rate=0.3)}, noise={"currency": 0.04})
    assert [c["service"] for c in causes] == ["cart"]


def test_two_simultaneous_faults_give_two_root_causes() -> None:
    causes = diagnose({"fraud-detection": Fault(error_rate=0.6), "quote": Fault(latency_ms=250)})
    assert sorted((c["service"], c["kind"]) for c in causes) == [
        ("fraud-detection", "errors"), ("quote", "latency")]
    by = {c["service"]: c for c in causes}
    assert "shipping" in impacted(by["quote"]) and "shipping" not in impacted(
        by["fraud-detection"])
    assert "payment" in impacted(by["fraud-detection"])


def test_long_fault_stays_a_root_cause_after_the_baseline_period() -> None:
    # The baseline is 60 s here; the fault lasts 3 minutes and is still found at the end,
    # because a service's own anomalous buckets are kept out of its baseline.
    service, clock = make_service(1_000_000.0)
    shop = Shop()
    drive(service, clock, shop, 80)
    shop.faults = {"payment": Fault(error_rate=0.4)}
    drive(service, clock, shop, 180, rps=2, evaluate=True)
    settle(service, clock)
    causes = service.snapshot().meta["root_causes"]
    assert [c["service"] for c in causes] == ["payment"]


def test_metrics_second_a_scrape_down_service_with_no_spans_is_a_root_cause() -> None:
    from collector.diagnosis.consumer import TraceDiagnosis
    from collector.diagnosis.rootcause import RootCauseFinder
    from collector.model import Edge, Node, Snapshot

    snap = Snapshot(window_s=60.0, generated_at=1_000.0)
    snap.nodes["checkout"] = Node("checkout", "service", team="orders")
    snap.nodes["payment"] = Node("payment", "service", team="payments", meta={"up": False})
    snap.nodes["email"] = Node("email", "service", meta={"up": True})
    snap.edges[("checkout", "payment")] = Edge("checkout", "payment", meta={
        "calls": 30, "errors": 30, "client_only_errors": 30})
    (cause,) = RootCauseFinder(TraceDiagnosis()).find(snap).causes
    assert (cause.service, cause.kind, cause.team) == ("payment", "down", "payments")
    assert "scrape fails" in cause.evidence["summary"]


def test_a_service_whose_scrape_is_refused_and_that_served_nothing_lately_is_down() -> None:
    # frontend's callers (users) send no spans: no refused calls show it going. A minute of
    # traffic, then 5 s of nothing; the 20 s window still holds what it served.
    from collector.diagnosis.consumer import TraceDiagnosis
    from collector.diagnosis.rootcause import RootCauseFinder
    from collector.model import Node, Snapshot

    diag = TraceDiagnosis()
    shop = Shop()
    t = 1_000.0
    for i in range(60 * 5):
        diag.consume(shop.request(t + i / 5), now=t + i / 5)
    now = t + 65.0
    diag.flush(now)

    def found(meta: dict[str, Any]) -> list[tuple[str, str]]:
        snap = Snapshot(window_s=60.0, generated_at=now)
        snap.nodes["frontend"] = Node("frontend", "service", team="web", meta=meta)
        return [(c.service, c.kind) for c in RootCauseFinder(diag).find(snap).causes]

    assert found({"up": True}) == []  # answering its scrape: merely no users lately
    assert found({"up": False, "scrape_timed_out": True}) == []  # starved or hung, not gone
    # A scrape failing otherwise (a reset, a bad page) or refused by a process that never
    # answered one (still starting) is not a process gone.
    assert found({"up": False}) == []
    assert found({"up": False, "scrape_refused": True}) == [("frontend", "down")]


def test_a_busy_entry_point_is_seen_gone_sooner_than_a_quiet_one() -> None:
    # Refused scrape, then silence: gone once its usual traffic would have sent 5 requests
    # (GONE_EXPECTED), one recent window at least, three at most.
    from collector.diagnosis.consumer import TraceDiagnosis
    from collector.diagnosis.rootcause import RootCauseFinder
    from collector.model import Node, Snapshot

    def gone_after(rate: float, silence_s: float) -> bool:
        diag = TraceDiagnosis()
        shop = Shop()
        t = 1_000.0
        for i in range(int(60 * rate)):
            diag.consume(shop.request(t + i / rate), now=t + i / rate)
        now = t + 60.0 + silence_s
        diag.flush(now)
        snap = Snapshot(window_s=60.0, generated_at=now)
        snap.nodes["frontend"] = Node("frontend", "service", team="web",
                                      meta={"up": False, "scrape_refused": True})
        return [(c.service, c.kind) for c in RootCauseFinder(diag).find(snap).causes] == [
            ("frontend", "down")]

    # 10 requests/s: 5 are due in 0.5 s, so one recent window (1 s) of nothing is enough,
    # once finished traces (0.5 s behind) could show it.
    assert not gone_after(10.0, 0.6)
    assert gone_after(10.0, 1.6)
    # 1 request/s: 5 are due in 5 s, at most three recent windows are waited for.
    assert not gone_after(1.0, 2.6)
    assert gone_after(1.0, 4.6)


def test_metrics_second_a_failing_service_needs_more_than_one_error() -> None:
    from collector.diagnosis.assessment import RootCause
    from collector.diagnosis.consumer import TraceDiagnosis
    from collector.diagnosis.rootcause import RootCauseFinder
    from collector.model import Node, Snapshot

    def causes(calls: int, errors: int) -> list[RootCause]:
        snap = Snapshot(window_s=60.0, generated_at=1_000.0)
        snap.nodes["email"] = Node("email", "service", team="comms", health="failing",
                                   error_ratio=errors / calls,
                                   meta={"up": True, "calls": calls, "errors": errors})
        return RootCauseFinder(TraceDiagnosis()).find(snap).causes

    assert causes(10, 1) == []  # one failed call of ten: "failing", but no evidence of a fault
    (cause,) = causes(30, 12)
    assert (cause.service, cause.kind) == ("email", "errors")
    assert "from metrics" in cause.evidence["summary"]


def test_noisy_service_seen_from_a_fresh_start_becomes_normal() -> None:
    # No baseline at start: a steady 40 % error rate looks like a fault at first, but it does
    # not freeze its own baseline, so once the baseline has seen it, it is no root cause.
    service, clock = make_service(1_000_000.0)
    shop = Shop(noise={"email": 0.4})
    drive(service, clock, shop, 20, evaluate=True)
    first = [c["service"] for c in service.snapshot().meta["root_causes"]]
    drive(service, clock, shop, 90, evaluate=True)
    settle(service, clock)
    assert first == ["email"]
    assert service.snapshot().meta["root_causes"] == []


def test_a_short_clean_baseline_is_not_taken_for_a_zero_error_rate() -> None:
    # 12 % errors from the start: 20 s without a baseline are no evidence of a rise (the
    # baseline's own uncertainty is counted), so nothing is named at any time.
    service, clock = make_service(1_000_000.0)
    shop = Shop(noise={"email": 0.12})
    named: set[str] = set()
    for _ in range(60):
        drive(service, clock, shop, 1, evaluate=True)
        named.update(c["service"] for c in service.snapshot().meta["root_causes"])
    assert named == set()


# --- a fault seconds old: the recent window ----------------------------------------------------
# At 40 requests/s the 20 s detection window holds ~800 visits of currency: a fault two seconds
# old is diluted below the rise thresholds there, but plain in the last bucket.


def fresh_fault(fault: Fault | None, recent_window_s: float | None = None,
                blips: tuple[int, ...] = (), requests: int = 80,
                lead: int = 0) -> list[dict[str, Any]]:
    """Causes after 80 s of baseline and ``requests`` more (40/s) with ``fault`` at currency,
    evaluated 0.6 s after the last request (its trace whole and settled). ``blips``: request
    numbers given 100 ms of extra self time at currency instead (a GC pause, say); the first
    ``lead`` of them are healthy.
    Currency serves 2 visits per request."""
    opts = {} if recent_window_s is None else {"recent_window_s": recent_window_s}
    service, clock = make_service(1_000_000.0, **opts)
    shop = Shop()
    drive(service, clock, shop, 80, rps=40)
    for i in range(requests):
        if i in blips:
            shop.faults = {"currency": Fault(latency_ms=100.0)}
        elif i < lead:
            shop.faults = {}
        else:
            shop.faults = {"currency": fault} if fault else {}
        service.ingest(shop.request(clock.t + i / 40), now=clock.t + i / 40)
    clock.t += requests / 40 + 0.6  # whole traces finish 0.25 s after their last span
    service.parts["graph"].tick(clock.t)
    service.parts["diagnosis"].evaluate()
    return [c for c in service.snapshot().meta["root_causes"] if c["service"] == "currency"]


def test_fresh_error_fault_at_a_busy_service_is_found_in_the_recent_window() -> None:
    assert fresh_fault(Fault(error_rate=0.2), recent_window_s=0) == []  # diluted in 20 s
    (cause,) = fresh_fault(Fault(error_rate=0.2))
    assert cause["kind"] == "errors"
    assert cause["evidence"]["window"] == "recent"
    assert "last few seconds" in cause["evidence"]["summary"]


def test_fresh_latency_fault_at_a_busy_service_is_found_in_the_recent_window() -> None:
    # Half a second of it: 40 slow visits among ~1,700 in the 20 s window, under its p95.
    assert fresh_fault(Fault(latency_ms=150.0), recent_window_s=0, requests=20) == []
    (cause,) = fresh_fault(Fault(latency_ms=150.0), requests=20)
    assert (cause["kind"], cause["evidence"]["window"]) == ("latency", "recent")


def test_a_few_slow_requests_in_the_recent_window_are_not_a_latency_fault() -> None:
    # 8 of 80 requests slow (a GC pause, say): they lift the short window's p95, not its
    # median, and are under 1 % of the detection window.
    assert fresh_fault(None, blips=tuple(range(0, 80, 10))) == []
    # Three in four of them, half a second in: a real rise, seen in the median at once.
    (cause,) = fresh_fault(None, blips=tuple(i for i in range(20) if i % 4), requests=20)
    assert (cause["kind"], cause["evidence"]["window"]) == ("latency", "recent")
    assert "median" in cause["evidence"]["summary"]


def test_a_busy_service_going_down_is_named_down_before_the_scrape_notices() -> None:
    # A second of refused connections after a healthy second: the service served requests
    # in both windows and no scrape says it is down, but its new failures are all unanswered.
    (cause,) = fresh_fault(Fault(down=True), requests=80, lead=40)
    assert cause["kind"] == "down"
    assert "got no answer" in cause["evidence"]["summary"]


def test_calls_timing_out_for_a_second_are_not_down() -> None:
    # The same second of unanswered calls, but each waited half a second and timed out: a
    # starved or hung process (whose server spans may yet arrive), not a stopped one. The
    # last few seconds alone never make that "down"; refused connections do (test above).
    causes = fresh_fault(Fault(down=True, timeout=True), requests=80, lead=40)
    assert all(c["kind"] != "down" for c in causes), causes


def test_a_failed_call_with_no_answer_is_a_timeout_by_its_error_type_or_its_wait() -> None:
    from collector.diagnosis.traces import timed_out
    from collector.model import SpanKind, SpanRecord

    def call(ms: float, error_type: str | None = None, message: str = "") -> SpanRecord:
        attrs = {"error.type": error_type} if error_type else {}
        return SpanRecord(b"t" * 16, b"s" * 8, b"", "checkout", "POST", int(SpanKind.CLIENT),
                          0, int(ms * 1e6), True, attrs, {}, message)

    assert timed_out(call(5, "httpx.ReadTimeout"))
    assert timed_out(call(5, message="DEADLINE_EXCEEDED"))
    assert not timed_out(call(900, "connection_refused"))  # refused, however slowly
    assert not timed_out(call(3))  # nothing said, failed at once: refused
    assert timed_out(call(600))  # nothing said, waited: timed out


def test_short_history_still_finds_a_tenfold_self_time_rise_and_nothing_else() -> None:
    # A collector six seconds old: a baseline of a few visits per service. A x10 rise of
    # shipping's own time (2 ms -> 300 ms) is named; the others, merely noisy, are not.
    service, clock = make_service(1_000_000.0)
    shop = Shop()
    drive(service, clock, shop, 6)
    shop.faults = {"shipping": Fault(latency_ms=300.0)}
    named: set[tuple[str, str]] = set()
    for _ in range(8):
        drive(service, clock, shop, 1)
        named.update((c["service"], c["kind"]) for c in service.snapshot().meta["root_causes"])
    assert named == {("shipping", "latency")}


def test_short_history_names_nothing_on_a_healthy_start() -> None:
    service, clock = make_service(1_000_000.0)
    shop = Shop(noise={"cart": 0.02})
    named: set[str] = set()
    for _ in range(30):
        drive(service, clock, shop, 1)
        named.update(c["service"] for c in service.snapshot().meta["root_causes"])
    assert named == set()


def test_a_short_history_needs_a_tenfold_rise_where_a_long_one_needs_a_double() -> None:
    # checkout's own time 40 ms -> 200 ms (x5): a fault against a minute of history; against
    # ten seconds of a demo warming up on a busy host, such rises are its warm-up noise.
    for history_s, expected in ((10, set()), (60, {("checkout", "latency")})):
        service, clock = make_service(1_000_000.0)
        shop = Shop()
        drive(service, clock, shop, history_s)
        shop.faults = {"checkout": Fault(latency_ms=160.0)}
        named: set[tuple[str, str]] = set()
        for _ in range(8):
            drive(service, clock, shop, 1)
            named.update((c["service"], c["kind"])
                         for c in service.snapshot().meta["root_causes"])
        assert named == expected, history_s


def after_baseline(rps: int, email: list[Fault | None]) -> list[str]:
    """Root causes (``service:kind``) after 320 s of the shop at ``rps`` (300 s of baseline),
    then one request per ``1/rps`` s with email's fault from ``email`` (None: healthy),
    evaluated twice between requests and once more 0.6 s after the last (whole and settled)."""
    service, clock = make_service(1_000_000.0, baseline_s=300.0)
    shop = Shop()
    drive(service, clock, shop, 320, rps=rps)

    def evaluate(step: float) -> None:
        clock.t += step
        service.parts["graph"].tick(clock.t)
        service.parts["diagnosis"].evaluate()

    for fault in email:
        shop.faults = {"email": fault} if fault else {}
        service.ingest(shop.request(clock.t), now=clock.t)
        evaluate(0.5 / rps)
        evaluate(0.5 / rps)
    evaluate(0.6)
    return [c["service"] + ":" + c["kind"] for c in service.snapshot().meta["root_causes"]]


def test_a_quiet_service_s_three_failures_seconds_apart_are_found_in_the_last_look(
        monkeypatch: Any) -> None:
    # email at 2 requests/s fails one request in five: its third failure comes 5 s after its
    # first. The 1 s and 3 s looks hold two of them, the detection window's 40 requests do
    # not make three significant against 600 clean ones; the last look (6 s) does.
    from collector.diagnosis import rootcause

    def named(look: int) -> list[str]:
        monkeypatch.setattr(rootcause, "ERRORS_LOOK", look)
        return after_baseline(2, [Fault(error_rate=1.0) if i % 5 == 0 else None
                                  for i in range(12)])

    look = rootcause.ERRORS_LOOK
    assert named(3) == []
    assert named(look) == ["email:errors"]


def test_few_slow_visits_are_a_fault_only_at_a_service_too_quiet_for_a_median() -> None:
    # email slowed by 400 ms for the last `slow` of `rps` x 3 s of requests, after 320 s of
    # baseline. Quiet (2/s): three seconds hold 6 visits, too few for a median; 4 slow of them
    # are a fault (LatencyRise.most_above), 2 are not (three at least). At 5/s a second holds
    # 5 visits, as many as its traffic ever brings to one: 3 slow of them are most, a fault,
    # named a second sooner than three seconds' median allowed. Busy (20/s): a second's 20
    # visits with 3 slow are not most of them, and 3 s (60) decide by their median.
    def named(rps: int, slow: int) -> list[str]:
        n = 3 * rps
        return after_baseline(rps, [Fault(latency_ms=400.0) if i >= n - slow else None
                                    for i in range(n)])

    assert named(2, 2) == []
    assert named(2, 4) == ["email:latency"]
    assert named(5, 2) == []
    assert named(5, 3) == ["email:latency"]
    assert named(20, 3) == []
    assert named(20, 12) == ["email:latency"]  # most of a second's 20: the median

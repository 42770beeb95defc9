"""Load-adaptive head sampling in the diagnosis: nothing changes below the span budget; above
it whole traces are kept by trace id at ``p = budget / rate``, weighted by ``1/p``, and the
diagnosis still names the fault, with what it left out counted on its counters and /metrics."""

from __future__ import annotations

import random
import time

import httpx
import pytest
from diagnosis_sim import Clock, Fault, Shop, settle
from procs import start_collector, stop
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from collector import diagnosis, graph, otlp, replay
from collector.config import DIAGNOSIS_SPAN_BUDGET, CollectorConfig, DiagnosisConfig
from collector.diagnosis.consumer import TraceDiagnosis
from collector.diagnosis.traces import keep_hash
from collector.model import SpanRecord
from collector.service import CollectorService
from collector.wiring import build_service

T0 = 1_800_000_000.0
SERVICES = ("frontend", "checkout", "cart", "payment", "currency", "orders", "redis")


class RandomIdShop(Shop):
    """The demo shop with random trace ids, as SDKs make them (the simulator counts up)."""

    def request(self, t_s: float, entry: str = "frontend") -> list[SpanRecord]:
        spans: list[SpanRecord] = []
        self._visit(entry, self.rng.randbytes(16), b"", int(t_s * 1e9), spans)
        return spans


def traffic(shop: Shop, seconds: float, rps: int, t0: float = T0) -> list[tuple[float, list]]:
    """``(arrival time, spans)`` of ``rps`` requests per second, evenly spread."""
    return [(t0 + i / rps, shop.request(t0 + i / rps)) for i in range(int(seconds * rps))]


def feed(consumers: list[TraceDiagnosis], batches: list[tuple[float, list]]) -> None:
    for t, spans in batches:
        for c in consumers:
            c.consume(spans, t)


def finish(consumers: list[TraceDiagnosis], batches: list[tuple[float, list]]) -> float:
    """Let every pending trace finish; returns the time."""
    end = batches[-1][0] + 60.0
    for c in consumers:
        c.flush(end)
    return end


def test_below_the_budget_every_trace_is_analysed_exactly() -> None:
    shop = Shop(noise={"currency": 0.05}, faults={"payment": Fault(error_rate=0.2)}, seed=3)
    batches = traffic(shop, 20, 10)  # ~400 spans/s, far below the default budget
    budgeted, unlimited = TraceDiagnosis(), TraceDiagnosis(span_budget=0)
    feed([budgeted, unlimited], batches)
    end = finish([budgeted, unlimited], batches)
    c = budgeted.counters()
    assert c["spans_sampled_out"] == 0 and c["traces_sampled_out"] == 0
    assert c["keep_fraction"] == 1.0
    assert c["traces_finished"] == len(batches)
    for name in SERVICES:
        got = budgeted.windows.aggregate(name, T0 - 10, end)
        want = unlimited.windows.aggregate(name, T0 - 10, end)
        assert got == want
    frontend = budgeted.windows.aggregate("frontend", T0 - 10, end)
    assert frontend.requests == len(batches)  # one visit per request, counted once
    assert isinstance(frontend.requests, int) and frontend.weight == 1.0


@pytest.mark.parametrize("shop_type", [Shop, RandomIdShop])
def test_above_the_budget_kept_traces_are_weighted_to_unbiased_counts(
        shop_type: type[Shop]) -> None:
    shop = shop_type(noise={"currency": 0.05}, faults={"payment": Fault(error_rate=0.3)},
                     seed=5)
    rps = 100
    batches = traffic(shop, 40, rps)
    spans_per_s = sum(len(s) for _, s in batches) / 40
    budget = spans_per_s / 4  # keep about a quarter of the traces
    sampled, exact = TraceDiagnosis(span_budget=budget), TraceDiagnosis(span_budget=0)
    feed([sampled, exact], batches)
    p = budget / spans_per_s
    # The rate held steady, so p did too: the keep fraction in force is budget / rate.
    assert sampled.counters()["keep_fraction"] == pytest.approx(p, rel=0.05)
    end = finish([sampled, exact], batches)

    c = sampled.counters()
    finished = c["traces_finished"]
    assert c["traces_sampled_out"] + finished == len(batches)  # every root is accounted for
    assert finished / len(batches) == pytest.approx(p, abs=0.03)
    assert c["spans_sampled_out"] / c["spans_seen"] == pytest.approx(1 - p, abs=0.03)

    for name in ("frontend", "checkout", "cart", "payment", "currency"):
        got = sampled.windows.aggregate(name, T0 - 10, end)
        want = exact.windows.aggregate(name, T0 - 10, end)
        assert got.weight == pytest.approx(1 / p, rel=0.1), name
        assert got.requests == pytest.approx(want.requests, abs=four_sigma(want.requests, p))
        assert got.errors == pytest.approx(want.errors, abs=four_sigma(want.errors, p)), name
        assert got.self_hist.count == got.requests
        assert got.self_hist.samples == pytest.approx(want.requests * p, rel=0.15)
    # A few percent, at these sizes (~1,000 traces kept of 4,000):
    front = sampled.windows.aggregate("frontend", T0 - 10, end)
    assert front.requests == pytest.approx(len(batches), rel=0.03)
    pay = sampled.windows.aggregate("payment", T0 - 10, end)
    pay_exact = exact.windows.aggregate("payment", T0 - 10, end)
    assert pay.origins == pytest.approx(pay_exact.origins, abs=four_sigma(pay_exact.origins, p))
    assert pay.origin_ratio == pytest.approx(pay_exact.origin_ratio, abs=0.04)
    assert pay.self_hist.quantile(0.5) == pytest.approx(pay_exact.self_hist.quantile(0.5),
                                                        rel=0.2)


def four_sigma(count: int, p: float) -> float:
    """Four standard errors of a count of ``count`` events estimated from a Bernoulli(p)
    sample weighted 1/p: what sampling honestly allows (a few percent for the requests here,
    more for the rarer errors)."""
    return 4 * (count * (1 - p) / p) ** 0.5


def test_a_burst_above_the_budget_is_sampled_and_the_fraction_recovers() -> None:
    diag = TraceDiagnosis(span_budget=1_000)
    shop = RandomIdShop(seed=11)
    burst = [s for _, spans in traffic(shop, 1, 200) for s in spans]  # all at one instant
    diag.consume(burst, T0)
    assert diag.keep_fraction == pytest.approx(1_000 / len(burst))
    kept = {s.trace_id for s in burst if keep_hash(s.trace_id) < diag.keep_fraction}
    assert len(diag.assembler) == len(kept)  # exactly the traces the hash keeps, whole
    assert diag.counters()["spans_sampled_out"] == sum(
        1 for s in burst if s.trace_id not in kept)
    diag.flush(T0 + 30)  # idle for a while: the rate decays and everything is kept again
    assert diag.counters()["keep_fraction"] == 1.0


def make_service(budget: float, clock: Clock) -> CollectorService:
    config = CollectorConfig(diagnosis=DiagnosisConfig(baseline_s=30.0, span_budget=budget))
    service = CollectorService(config=config, clock=clock)
    graph.install(service, config)
    diagnosis.install(service, config)
    return service


def test_a_fault_is_still_named_as_root_cause_when_sampled() -> None:
    clock = Clock(T0)
    service = make_service(budget=400.0, clock=clock)
    shop = RandomIdShop(noise={"currency": 0.01}, seed=21)
    rps = 40  # ~1,400 spans/s: about 30 % of the traces kept

    def run(seconds: int) -> None:
        for _ in range(seconds * rps):
            clock.t += 1 / rps
            service.ingest(shop.request(clock.t), now=clock.t)
            if int(clock.t * rps) % rps == 0:
                service.parts["graph"].tick(clock.t)

    run(40)
    shop.faults["payment"] = Fault(error_rate=0.3)
    run(20)
    settle(service, clock)
    snap = service.snapshot()
    causes = snap.meta["root_causes"]
    assert causes and causes[0]["service"] == "payment", causes
    assert causes[0]["kind"] == "errors"
    assert "sampled under load" in causes[0]["evidence"]["summary"]  # counts are estimates
    impacted = {i["service"] for i in causes[0]["impacted"]}
    assert {"checkout", "frontend"} <= impacted
    counters = service.parts["diagnosis"].counters()
    assert counters["spans_sampled_out"] > 0 and counters["traces_sampled_out"] > 0
    assert 0.2 < counters["traces_finished"] / (counters["traces_finished"]
                                                 + counters["traces_sampled_out"]) < 0.4


def test_sampled_but_healthy_noise_is_not_a_root_cause() -> None:
    clock = Clock(T0)
    service = make_service(budget=200.0, clock=clock)  # ~15 % kept: weights near 7
    shop = RandomIdShop(noise={"currency": 0.02, "cart": 0.01}, seed=4)
    rps = 40
    for _ in range(60 * rps):
        clock.t += 1 / rps
        service.ingest(shop.request(clock.t), now=clock.t)
    assert service.parts["diagnosis"].counters()["keep_fraction"] < 0.2
    settle(service, clock)
    assert service.snapshot().meta["root_causes"] == []


def shop_body(requests: int, seed: int) -> tuple[bytes, int]:
    """One OTLP request of ``requests`` shop traces timed just now, and its span count."""
    rng = random.Random(seed)
    shop = RandomIdShop(seed=seed)
    now = time.time()
    spans = [s for _ in range(requests) for s in shop.request(now - 2 + rng.random())]
    return replay.to_otlp_request(spans), len(spans)


def metrics(text: str) -> dict[str, float]:
    return {s.name: s.value for fam in text_string_to_metric_families(text)
            for s in fam.samples}


def test_metrics_show_what_was_sampled_out() -> None:
    clock = Clock(time.time())
    service = build_service(CollectorConfig(diagnosis=DiagnosisConfig(span_budget=100)),
                            clock=clock)
    body, n = shop_body(60, seed=9)
    service.ingest(otlp.decode_traces(body, otlp.PROTOBUF).spans)
    # One batch of ~2,000 spans at one instant reads as ~2,000 spans/s: ~5 % is kept.
    got = metrics(generate_latest(service.parts["metrics_registry"]).decode())
    assert got["conway_diagnosis_keep_fraction"] == pytest.approx(100 / n)
    counters = service.parts["diagnosis"].counters()
    assert got["conway_diagnosis_spans_sampled_out_total"] == counters["spans_sampled_out"]
    assert counters["spans_sampled_out"] > 0.8 * n
    assert got["conway_diagnosis_traces_sampled_out_total"] == counters["traces_sampled_out"]
    assert 40 <= counters["traces_sampled_out"] < 60


def test_cli_span_budget_reaches_the_running_collector() -> None:
    proc, url = start_collector("--diagnosis", "span_budget=50")
    try:
        body, n = shop_body(60, seed=2)
        r = httpx.post(f"{url}/v1/traces", content=body,
                       headers={"Content-Type": "application/x-protobuf"})
        assert r.status_code == 200
        got = metrics(httpx.get(f"{url}/metrics").text)
    finally:
        stop(proc)
    assert got["conway_spans_received_total"] == n  # the graph saw every span
    assert got["conway_diagnosis_spans_sampled_out_total"] > n / 2
    assert 0 < got["conway_diagnosis_traces_sampled_out_total"] < 60
    assert 0 < got["conway_diagnosis_keep_fraction"] <= 1


def test_default_budget_and_bad_values() -> None:
    assert DiagnosisConfig().span_budget == DIAGNOSIS_SPAN_BUDGET == 20_000
    for bad in (-1, float("nan"), "lots"):
        with pytest.raises(ValueError, match="span_budget"):
            DiagnosisConfig.from_options({"span_budget": bad})
    with pytest.raises(ValueError, match="unknown diagnosis option"):
        DiagnosisConfig.from_options({"span_budgt": 5})
    with pytest.raises(ValueError, match="spans/s"):
        TraceDiagnosis(span_budget=-5)

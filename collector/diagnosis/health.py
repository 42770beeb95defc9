"""Health: ``node.health`` and ``edge.health`` from error ratio, latency and ``up``.

States (``collector.vocabulary.HEALTH_STATES``), defaults in ``HealthThresholds``:

- ``down``: the scrape says ``up`` is False and callers get refused connections or timeouts
  (edge ``client_only_errors`` > 0 into the node) or there is no traffic at all; or, without
  a scrape, it served nothing and >= 90 % of the calls into it failed with no server span
  (for a database or external API, which never has a server span, that is all we can see).
- ``failing``: error ratio >= 10 % (calls that failed with no server span count as failed
  requests of the callee).
- ``degraded``: error ratio > 0.5 % (Kiali marks any 5xx degraded; the demo has background
  noise, so we allow half a percent), or p95 above 3 x the node's own baseline p95 and above
  100 ms (without a baseline yet, and always for edges: above 2 s). Fewer than 5 calls never
  make a node failing.
- ``healthy``: traffic (or a successful scrape) and none of the above.
- ``unknown``: no traffic and no scrape.

Hysteresis, so a node near a threshold does not flap: a worse state is entered at once; a
better one only when the metric is below the lower *exit* threshold (errors: 5 % to leave
failing, 0.25 % to leave degraded; latency: 2 x baseline) on every evaluation for
``recover_s`` (2 s; three ticks at a 1 s interval, nine at 0.25 s: a faster tick does not make
a node near its threshold flap faster).
The state is kept per node and edge across evaluation ticks only (``judge(..., stateful=
True)``, called by ``Diagnosis.evaluate`` once per tick); reads take the health the last tick
concluded, and judge other windows (or nodes newer than that tick) statelessly with the
entry thresholds, changing nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from collector.diagnosis.consumer import TraceDiagnosis
from collector.model import Edge, Node, Snapshot
from collector.vocabulary import HEALTH_RANK

BASELINE_S = 300.0


@dataclass(frozen=True, slots=True)
class HealthThresholds:
    degraded_ratio: float = 0.005
    degraded_exit_ratio: float = 0.0025
    failing_ratio: float = 0.10
    failing_exit_ratio: float = 0.05
    latency_factor: float = 3.0
    latency_exit_factor: float = 2.0
    latency_floor_ms: float = 100.0
    latency_no_baseline_ms: float = 2000.0
    min_calls: int = 5
    down_client_only_share: float = 0.9
    recover_s: float = 2.0


@dataclass(slots=True)
class HealthInputs:
    """What `classify` judges: the window's calls and error ratio, p95 against its baseline,
    whether the scrape reached it, and the calls into it that failed with no server span."""

    calls: float
    error_ratio: float
    p95_ms: float | None
    baseline_p95_ms: float | None
    up: bool | None
    in_calls: float
    in_client_only_errors: float
    is_service: bool


@dataclass(slots=True)
class _State:
    level: str
    below_since: float | None  # the first evaluation of a run below the exit threshold
    last_t: float


def classify(m: HealthInputs, th: HealthThresholds, exit_: bool = False) -> str:
    """The health these metrics support: entry thresholds, or the lower exit ones."""
    no_traffic = m.calls <= 0 and m.in_calls <= 0
    if m.up is False and (m.in_client_only_errors > 0 or no_traffic):
        return "down"
    if no_traffic:
        return "unknown" if m.up is None else "healthy"
    if m.calls <= 0 and m.in_calls > 0 \
            and m.in_client_only_errors >= th.down_client_only_share * m.in_calls:
        return "down"  # every call fails with no server span: refused or timed out
    failing = th.failing_exit_ratio if exit_ else th.failing_ratio
    degraded = th.degraded_exit_ratio if exit_ else th.degraded_ratio
    level = "healthy"
    if m.error_ratio >= failing and max(m.calls, m.in_calls) >= th.min_calls:
        level = "failing"
    elif m.error_ratio > degraded or m.error_ratio >= failing:
        level = "degraded"
    if level == "healthy" and m.p95_ms is not None:
        factor = th.latency_exit_factor if exit_ else th.latency_factor
        if m.baseline_p95_ms is None:
            slow = m.p95_ms > th.latency_no_baseline_ms * (factor / th.latency_factor)
        else:
            slow = m.p95_ms > max(th.latency_floor_ms, m.baseline_p95_ms * factor)
        if slow:
            level = "degraded"
    return level


class HealthJudge:
    """Judges a snapshot's nodes and edges; with ``stateful`` it also moves the hysteresis."""

    def __init__(self, diag: TraceDiagnosis,
                 thresholds: HealthThresholds | None = None, baseline_s: float = BASELINE_S,
                 detect_window_s: float = 20.0) -> None:
        self.diag = diag
        self.th = thresholds or HealthThresholds()
        self.baseline_s = baseline_s
        self.detect_window_s = detect_window_s
        self._nodes: dict[str, _State] = {}
        self._edges: dict[tuple[str, str], _State] = {}

    def judge(self, snap: Snapshot, stateful: bool = False,
              only: tuple[set[str], set[tuple[str, str]]] | None = None) -> None:
        """Set ``health`` on the snapshot's nodes and edges (only those named in ``only``,
        when given). ``stateful``: one evaluation tick, which moves the hysteresis state."""
        now = snap.generated_at
        into: dict[str, list[Edge]] = {}
        for edge in snap.edges.values():
            into.setdefault(edge.target, []).append(edge)
        for node in snap.nodes.values():
            if only is not None and node.id not in only[0]:
                continue
            m = self._node_metrics(node, into.get(node.id, []), snap)
            node.health = self._judge(self._nodes, node.id, m, now, stateful)
        for key, edge in snap.edges.items():
            if only is not None and key not in only[1]:
                continue
            target = snap.nodes.get(edge.target)
            m = _edge_metrics(edge, target)
            edge.health = self._judge(self._edges, key, m, now, stateful)
        if stateful:  # forget what is no longer in the graph: state stays bounded
            for gone in set(self._nodes) - set(snap.nodes):
                del self._nodes[gone]
            for gone_e in set(self._edges) - set(snap.edges):
                del self._edges[gone_e]

    def _judge(self, states: dict[Any, _State], key: object, m: HealthInputs, now: float,
               stateful: bool) -> str:
        enter = classify(m, self.th)
        if not stateful:
            return enter
        prev: _State | None = states.get(key)
        if prev is None or enter in ("down", "unknown") or prev.level in ("down", "unknown") \
                or HEALTH_RANK[enter] >= HEALTH_RANK[prev.level]:
            states[key] = _State(enter, None, now)
            return enter
        leave = classify(m, self.th, exit_=True)
        if HEALTH_RANK[leave] >= HEALTH_RANK[prev.level]:
            prev.below_since = None
        elif now > prev.last_t:  # several snapshots at one instant count as one evaluation
            if prev.below_since is None:
                prev.below_since = now
            elif now - prev.below_since >= self.th.recover_s - 1e-6:
                prev.level, prev.below_since = leave, None
        prev.last_t = now
        return prev.level

    def _node_metrics(self, node: Node, into: list[Edge], snap: Snapshot) -> HealthInputs:
        in_calls = sum(_num(e.meta.get("calls")) for e in into)
        in_errors = sum(_num(e.meta.get("errors")) for e in into)
        in_client_only = sum(_num(e.meta.get("client_only_errors")) for e in into)
        calls = _num(node.meta.get("calls", node.rate_rps * snap.window_s))
        ratio = node.error_ratio
        if node.kind == "virtual" and in_calls > 0:
            ratio = max(ratio, in_errors / in_calls)
        elif in_client_only > 0:
            # Calls that never reached the service failed too: count them in its ratio.
            errors = _num(node.meta.get("errors", ratio * calls))
            ratio = max(ratio, (errors + in_client_only) / (calls + in_client_only))
        baseline = None
        now = snap.generated_at
        t0 = now - min(snap.window_s, self.detect_window_s)
        base = self.diag.windows.baseline(node.id, t0 - self.diag.windows.bucket_s,
                                          self.baseline_s)
        if base.incl_hist.samples >= 20:  # values seen, whatever their sampling weight
            baseline = base.incl_hist.quantile(0.95)
        up = node.meta.get("up")
        return HealthInputs(calls, ratio, node.p95_ms, baseline,
                            up if isinstance(up, bool) else None,
                            in_calls, in_client_only, node.kind == "service")


def _edge_metrics(edge: Edge, target: Node | None) -> HealthInputs:
    calls = _num(edge.meta.get("calls"))
    client_only = _num(edge.meta.get("client_only_errors"))
    target_down = target is not None and target.health == "down"
    return HealthInputs(calls, edge.error_ratio, edge.p95_ms, None,
                        False if target_down else None, 0.0, client_only, False)


def _num(v: object) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0.0

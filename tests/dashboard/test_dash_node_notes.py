"""A service whose clock is ahead, or whose traces are head-sampled, says so in the details
panel, through the browser store."""

from __future__ import annotations

from typing import Any

from dashboard import elements as E
from dashboard import state, views


def texts(component: Any) -> list[str]:
    if isinstance(component, str | int | float):
        return [str(component)]
    children = getattr(component, "children", None)
    if children is None:
        return []
    if not isinstance(children, list | tuple):
        children = [children]
    return [t for c in children for t in texts(c)]


def test_clock_offset_and_sampling_survive_the_store_and_show_in_the_details() -> None:
    api = {"nodes": [{"id": "checkout", "kind": "service", "health": "healthy",
                      "rate_rps": 2.0, "clock_ahead_s": 4.9,
                      "sampled_share": 0.1, "scraped_rps": 21.5},
                     {"id": "payment", "kind": "service", "health": "healthy",
                      "rate_rps": 2.0}],
           "edges": []}
    kept = state.compact_graph(api)
    shown = " ".join(texts(views.details_panel(kept, E.node_el_id("checkout"))))
    assert "4.9 s ahead" in shown
    assert "10.0% of calls (sampled; rates estimated)" in shown
    assert "21.5 rps (its /metrics)" in shown
    assert "ahead" not in " ".join(texts(views.details_panel(kept, E.node_el_id("payment"))))

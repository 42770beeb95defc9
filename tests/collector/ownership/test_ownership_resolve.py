"""Who owns a service: catalog, then resource attributes, else an orphan; and the appender."""

from __future__ import annotations

from pathlib import Path

from ownership_helpers import COMPONENT_SVC, GROUP_X, TESTDATA, snapshot, span, write_catalog

from collector.config import CollectorConfig
from collector.model import Attributes
from collector.ownership.part import Ownership
from collector.ownership.resolve import ResourceTeams
from collector.service import CollectorService


def ownership(path: object = TESTDATA / "kinds.yaml") -> Ownership:
    own = Ownership(path, clock=lambda: 1000.0)  # type: ignore[arg-type]
    own.store.load_initial()
    return own


def test_group_details_and_component_overrides_per_field() -> None:
    own = ownership()
    a = own.owner_of("svc-a")
    assert a == {
        "team": "Team-A", "display_name": "Team A", "on_call": "PagerDuty service PTEAMA1",
        "channel": "#team-a", "runbook": "https://runbooks.example/team-a",
        "email": "team-a@example.com", "source": "catalog",
    }
    b = own.owner_of("svc-b")
    assert b is not None
    # svc-b's own on-call and channel win; runbook and email are still the team's
    assert (b["on_call"], b["channel"]) == ("bob (PagerDuty: P123)", "#svc-b-alerts")
    assert (b["runbook"], b["email"]) == ("https://runbooks.example/team-a", "team-a@example.com")


def test_system_owner_is_the_fallback_and_opsgenie_and_chat_annotations() -> None:
    c = ownership().owner_of("svc-c")
    assert c is not None
    assert (c["team"], c["display_name"], c["source"]) == ("infra/ops", "Operations", "catalog")
    assert c["on_call"] == "Opsgenie team ops-primary; Opsgenie components tag:billing"
    assert c["channel"] == "ops-war-room"  # conway.dev/chat-channel wins over slack.com/channel
    assert c["runbook"] is None and c["email"] is None


def test_user_owner_pages_the_user_in_their_group() -> None:
    d = ownership().owner_of("svc-d")
    assert d is not None
    assert (d["team"], d["on_call"], d["email"]) == ("Team-A", "Alice Liddell", "alice@example.com")
    assert d["channel"] == "#team-a"


def test_integration_key_is_not_shown_in_full() -> None:
    e = ownership().owner_of("svc-e")
    assert e is not None and e["on_call"] == "PagerDuty integration key ...cdef"


def test_resource_attribute_fallback_through_the_consumer() -> None:
    service = CollectorService(CollectorConfig())
    own = ownership()
    service.consumers.append(own.attrs)
    # the first names a catalog group (in another case)
    res_team: Attributes = {"service.name": "loose", "team": "team-a"}
    res_owner: Attributes = {"service.name": "other", "service.owner.name": "growth"}
    res_plain: Attributes = {"service.name": "svc-a", "team": "someone-else"}
    service.ingest([span("loose", res_team), span("loose", res_team, 2),
                    span("other", res_owner), span("svc-a", res_plain)], now=1.0)
    loose = own.owner_of("loose")
    assert loose is not None
    assert (loose["team"], loose["source"], loose["channel"]) == (
        "Team-A", "resource attribute", "#team-a")
    other = own.owner_of("other")
    assert other is not None
    assert (other["team"], other["display_name"], other["on_call"], other["source"]) == (
        "growth", "growth", None, "resource attribute")
    svc_a = own.owner_of("svc-a")
    assert svc_a is not None and svc_a["source"] == "catalog"  # the catalog wins
    # the last seen value counts: a new resource without the attribute forgets the team
    service.ingest([span("other", {"service.name": "other"})], now=2.0)
    assert own.owner_of("other") is None


def test_resource_attribute_memory_is_bounded_and_counts_drops() -> None:
    teams = ResourceTeams(max_services=2)
    teams.consume([span(f"s{i}", {"team": "t"}) for i in range(5)], now=0.0)
    assert teams.services() == {"s0": "t", "s1": "t"}
    assert teams.dropped == 3
    teams.consume([span("s1", {"team": "u"})], now=1.0)  # known services still update
    assert teams.team_of("s1") == "u"


def test_appender_sets_team_and_source_and_lists_orphans_only_for_services() -> None:
    own = ownership()
    own.attrs.consume([span("loose", {"team": "growth"})], now=0.0)
    snap = snapshot(
        {"user": "virtual", "svc-a": "service", "svc-c": "service", "loose": "service",
         "quote": "service", "db-main": "virtual", "redis": "virtual"},
        [("user", "svc-a", 10, 0, 5.0), ("svc-a", "db-main", 10, 0, 2.0)],
    )
    own.appender.append(snap)
    teams = {n.id: (n.team, n.meta["team_source"]) for n in snap.nodes.values()}
    assert teams == {
        "user": (None, None),
        "svc-a": ("Team-A", "catalog"),
        "svc-c": ("infra/ops", "catalog"),
        "loose": ("growth", "resource attribute"),
        "quote": (None, None),
        "db-main": ("Team-A", "catalog"),  # a virtual node owned by a catalog Resource
        "redis": (None, None),  # unowned virtual node: no team, but not an orphan
    }
    assert snap.meta["orphans"] == ["quote"]
    # the service page reads the full owner from the node
    assert snap.nodes["svc-a"].meta["owner"] == own.owner_of("svc-a")
    assert snap.nodes["quote"].meta["owner"] is None


def test_without_a_catalog_everything_is_resource_attribute_or_orphan() -> None:
    own = Ownership(None, clock=lambda: 0.0)
    own.store.load_initial()
    own.attrs.consume([span("a", {"team": "t"})], now=0.0)
    snap = snapshot({"a": "service", "b": "service"}, [("a", "b", 1, 0, None)])
    own.appender.append(snap)
    assert (snap.nodes["a"].team, snap.nodes["b"].team) == ("t", None)
    assert snap.meta["orphans"] == ["b"]
    assert own.catalog_status() == {"path": None, "loaded_at": None, "entities": 0,
                                    "errors": []}


def test_sub_team_inherits_missing_contact_fields_from_its_parent(tmp_path: Path) -> None:
    parent = GROUP_X.replace("spec:\n", "spec:\n  children: [team-x-sub]\n")
    sub = ("apiVersion: backstage.io/v1alpha1\nkind: Group\nmetadata:\n  name: team-x-sub\n"
           "  annotations: {opsgenie.com/team: sub-rota}\nspec:\n  parent: team-x\n")
    comp = COMPONENT_SVC.replace("owner: team-x", "owner: team-x-sub")
    own = ownership(write_catalog(tmp_path, parent, sub, comp))
    owner = own.owner_of("svc")
    assert owner is not None
    assert (owner["team"], owner["on_call"], owner["channel"]) == (
        "team-x-sub", "Opsgenie team sub-rota", "#team-x")

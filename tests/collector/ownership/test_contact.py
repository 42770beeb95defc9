"""Unit tests for ``collector.ownership.contact``: on-call text from Backstage annotations, the
runbook link, the chat channel, and per-field fallback between contacts."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from collector.ownership.contact import (
    CHAT_CHANNEL,
    ON_CALL,
    OPSGENIE_COMPONENT_SELECTOR,
    OPSGENIE_TEAM,
    PAGERDUTY_INTEGRATION_KEY,
    PAGERDUTY_SERVICE,
    SLACK_CHANNEL,
    Contact,
    contact_from,
    on_call_text,
    runbook_link,
)

KEY = "0123456789abcdef0123456789abcdef"

# -- on_call_text ---------------------------------------------------------------------------------


def test_explicit_on_call_wins_over_the_plugins_and_is_stripped() -> None:
    annotations = {ON_CALL: "  Page #sre-oncall, then call Ana  ", PAGERDUTY_SERVICE: "P123",
                   OPSGENIE_TEAM: "Ops"}
    assert on_call_text(annotations) == "Page #sre-oncall, then call Ana"


def test_blank_explicit_on_call_falls_back_to_the_plugins() -> None:
    assert on_call_text({ON_CALL: "   ", PAGERDUTY_SERVICE: "P123"}) == "PagerDuty service P123"


def test_pagerduty_service_id() -> None:
    assert on_call_text({PAGERDUTY_SERVICE: " PABC12 "}) == "PagerDuty service PABC12"


def test_pagerduty_integration_key_shows_only_its_last_four_characters() -> None:
    text = on_call_text({PAGERDUTY_INTEGRATION_KEY: KEY})
    assert text == "PagerDuty integration key ...cdef"
    assert KEY not in (text or "")


def test_pagerduty_service_id_wins_over_the_integration_key() -> None:
    text = on_call_text({PAGERDUTY_SERVICE: "P123", PAGERDUTY_INTEGRATION_KEY: KEY})
    assert text == "PagerDuty service P123"


def test_opsgenie_team_and_component_selector_are_both_shown() -> None:
    assert on_call_text({OPSGENIE_TEAM: "Ops", OPSGENIE_COMPONENT_SELECTOR: "tier=1"}) == \
        "Opsgenie team Ops; Opsgenie components tier=1"
    assert on_call_text({OPSGENIE_COMPONENT_SELECTOR: "tier=1"}) == "Opsgenie components tier=1"


def test_pagerduty_comes_before_opsgenie() -> None:
    annotations = {OPSGENIE_TEAM: "Ops", PAGERDUTY_SERVICE: "P123"}
    assert on_call_text(annotations) == "PagerDuty service P123; Opsgenie team Ops"


@pytest.mark.parametrize("annotations", [
    {},
    {SLACK_CHANNEL: "#team-x", "backstage.io/techdocs-ref": "dir:."},
    {ON_CALL: "", PAGERDUTY_SERVICE: " ", PAGERDUTY_INTEGRATION_KEY: "\t",
     OPSGENIE_TEAM: "", OPSGENIE_COMPONENT_SELECTOR: "  "},
], ids=["none", "unrelated", "all-blank"])
def test_no_on_call_annotations_give_none(annotations: dict[str, str]) -> None:
    assert on_call_text(annotations) is None


# -- runbook_link ---------------------------------------------------------------------------------


@pytest.mark.parametrize("link", [
    {"url": "https://wiki/rb", "title": "Runbook"},
    {"url": "https://wiki/rb", "title": "Payments RUNBOOKS"},
    {"url": "https://wiki/rb", "title": "Docs", "type": "runbook"},
    {"url": "https://wiki/rb", "type": "Team-Runbook"},
    {"url": "https://wiki/rb", "title": None, "type": "runbook"},
], ids=["title", "title-case", "type", "type-case", "null-title"])
def test_runbook_link_matches_title_or_type_case_insensitively(link: dict[str, Any]) -> None:
    assert runbook_link([{"url": "https://dash", "title": "Dashboard"}, link]) == \
        "https://wiki/rb"


def test_runbook_link_takes_the_first_matching_link() -> None:
    links = [{"url": "https://a", "title": "Dashboard"},
             {"url": "https://first", "title": "Runbook"},
             {"url": "https://second", "type": "runbook"}]
    assert runbook_link(links) == "https://first"


@pytest.mark.parametrize("links", [
    [],
    [{"url": "https://dash", "title": "Dashboard", "type": "grafana"}],
    [{"url": "https://x", "title": "run", "type": "book"}],  # not "runbook" once joined
    [{"url": "https://x"}],
], ids=["empty", "no-match", "split-word", "no-title-or-type"])
def test_runbook_link_with_no_runbook_is_none(links: list[dict[str, Any]]) -> None:
    assert runbook_link(links) is None


def test_runbook_link_with_a_non_string_url_is_none() -> None:
    assert runbook_link([{"url": 42, "title": "Runbook"}]) is None
    assert runbook_link([{"title": "Runbook"}]) is None


# -- contact_from -----------------------------------------------------------------------------


def test_contact_from_reads_all_four_fields() -> None:
    contact = contact_from(
        {PAGERDUTY_SERVICE: "P9", SLACK_CHANNEL: "#pay"},
        [{"url": "https://wiki/pay", "title": "Payments runbook"}],
        "pay@example.com",
    )
    assert contact == Contact(on_call="PagerDuty service P9", channel="#pay",
                              runbook="https://wiki/pay", email="pay@example.com")


def test_conway_chat_channel_wins_over_the_slack_channel() -> None:
    contact = contact_from({CHAT_CHANNEL: " #conway ", SLACK_CHANNEL: "#slack"}, [], None)
    assert contact.channel == "#conway"


def test_blank_conway_chat_channel_falls_back_to_the_slack_channel() -> None:
    contact = contact_from({CHAT_CHANNEL: "  ", SLACK_CHANNEL: " #slack "}, [], None)
    assert contact.channel == "#slack"


def test_contact_from_nothing_is_all_none() -> None:
    assert contact_from({}, [], None) == Contact()
    assert contact_from({SLACK_CHANNEL: " "}, [], "") == Contact()


# -- Contact.over -----------------------------------------------------------------------------

TEAM = Contact(on_call="PagerDuty service PTEAM", channel="#team", runbook="https://wiki/team",
               email="team@example.com")


def test_over_keeps_own_fields_and_fills_the_rest_from_the_base() -> None:
    # The docstring's example: a Component that names only its own Slack channel keeps its
    # team's on-call and runbook.
    component = contact_from({SLACK_CHANNEL: "#svc"}, [], None)
    assert component.over(TEAM) == Contact(on_call="PagerDuty service PTEAM", channel="#svc",
                                           runbook="https://wiki/team",
                                           email="team@example.com")


@pytest.mark.parametrize("field", ["on_call", "channel", "runbook", "email"])
def test_over_resolves_each_field_on_its_own(field: str) -> None:
    own = Contact(**{field: "mine"})
    merged = own.over(TEAM)
    for name in ("on_call", "channel", "runbook", "email"):
        expected = "mine" if name == field else getattr(TEAM, name)
        assert getattr(merged, name) == expected


def test_over_an_empty_base_keeps_the_contact_and_empty_over_empty_is_empty() -> None:
    assert TEAM.over(Contact()) == TEAM
    assert Contact().over(Contact()) == Contact()
    assert Contact().over(TEAM) == TEAM


def test_over_chains_through_several_levels() -> None:
    component = Contact(channel="#svc")
    team = Contact(runbook="https://wiki/team")
    parent = Contact(on_call="Opsgenie team Ops", runbook="https://wiki/parent",
                     email="org@example.com")
    assert component.over(team).over(parent) == Contact(
        on_call="Opsgenie team Ops", channel="#svc", runbook="https://wiki/team",
        email="org@example.com")


def test_contact_is_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        TEAM.channel = "#other"  # type: ignore[misc]


def test_a_blank_runbook_url_is_no_runbook_so_the_team_runbook_shows_through() -> None:
    assert runbook_link([{"title": "Runbook", "url": "  "}]) is None
    component = contact_from({}, [{"title": "Runbook", "url": ""}], None)
    team = contact_from({}, [{"title": "Runbook", "url": "https://wiki/team"}], None)
    assert component.over(team).runbook == "https://wiki/team"


def test_a_blank_email_is_no_email() -> None:
    assert contact_from({}, [], "  ").email is None
    assert contact_from({}, [], " a@b.c ").email == "a@b.c"

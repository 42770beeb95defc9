"""On-call and contact details, read from what Backstage users already write.

Sources, per entity (Group, User or Component):

- on-call: ``conway.dev/on-call`` (free text, wins when present), else built from the
  PagerDuty plugin's ``pagerduty.com/service-id`` / ``pagerduty.com/integration-key`` and the
  Opsgenie plugin's ``opsgenie.com/team`` / ``opsgenie.com/component-selector`` annotations;
- chat channel: ``conway.dev/chat-channel``, else ``slack.com/channel``;
- runbook: the first ``metadata.links`` entry whose title or type contains "runbook"
  (case-insensitive);
- email: ``spec.profile.email`` (Groups and Users).

Each field is resolved on its own, so a Component that only names its own Slack channel keeps
its team's on-call and runbook.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ON_CALL = "conway.dev/on-call"
CHAT_CHANNEL = "conway.dev/chat-channel"
SLACK_CHANNEL = "slack.com/channel"
PAGERDUTY_SERVICE = "pagerduty.com/service-id"
PAGERDUTY_INTEGRATION_KEY = "pagerduty.com/integration-key"
OPSGENIE_TEAM = "opsgenie.com/team"
OPSGENIE_COMPONENT_SELECTOR = "opsgenie.com/component-selector"

ANNOTATIONS = (
    ON_CALL,
    CHAT_CHANNEL,
    SLACK_CHANNEL,
    PAGERDUTY_SERVICE,
    PAGERDUTY_INTEGRATION_KEY,
    OPSGENIE_TEAM,
    OPSGENIE_COMPONENT_SELECTOR,
)


@dataclass(frozen=True, slots=True)
class Contact:
    """The four contact fields the API shows; ``None`` where the entity says nothing."""

    on_call: str | None = None
    channel: str | None = None
    runbook: str | None = None
    email: str | None = None

    def over(self, base: Contact) -> Contact:
        """This contact's fields, each falling back to ``base``'s when absent."""
        return Contact(
            on_call=self.on_call if self.on_call is not None else base.on_call,
            channel=self.channel if self.channel is not None else base.channel,
            runbook=self.runbook if self.runbook is not None else base.runbook,
            email=self.email if self.email is not None else base.email,
        )


def on_call_text(annotations: dict[str, str]) -> str | None:
    """A human-readable on-call string, e.g. ``PagerDuty service P123; Opsgenie team Ops``."""
    explicit = annotations.get(ON_CALL, "").strip()
    if explicit:
        return explicit
    parts: list[str] = []
    pd_service = annotations.get(PAGERDUTY_SERVICE, "").strip()
    pd_key = annotations.get(PAGERDUTY_INTEGRATION_KEY, "").strip()
    if pd_service:
        parts.append(f"PagerDuty service {pd_service}")
    elif pd_key:
        # An integration key routes events; it is not something to show in full on a dashboard.
        parts.append(f"PagerDuty integration key ...{pd_key[-4:]}")
    og_team = annotations.get(OPSGENIE_TEAM, "").strip()
    og_selector = annotations.get(OPSGENIE_COMPONENT_SELECTOR, "").strip()
    if og_team:
        parts.append(f"Opsgenie team {og_team}")
    if og_selector:
        parts.append(f"Opsgenie components {og_selector}")
    return "; ".join(parts) or None


def runbook_link(links: list[dict[str, Any]]) -> str | None:
    for link in links:
        label = f"{link.get('title') or ''} {link.get('type') or ''}".lower()
        if "runbook" in label:
            url = link.get("url")
            return url.strip() or None if isinstance(url, str) else None
    return None


def contact_from(
    annotations: dict[str, str], links: list[dict[str, Any]], email: str | None
) -> Contact:
    channel = annotations.get(CHAT_CHANNEL, "").strip() or annotations.get(
        SLACK_CHANNEL, ""
    ).strip()
    return Contact(
        on_call=on_call_text(annotations),
        channel=channel or None,
        runbook=runbook_link(links),
        email=(email or "").strip() or None,
    )

"""Alertmanager routing for Conway's alerts, written from the ownership catalog.

    python -m collector.alert_routes --catalog catalog/catalog-info.yaml > alertmanager.yml

For every team (a Backstage ``Group`` of ``spec.type: team``) it writes two routes and their
receivers, from the annotations the team already carries (``collector.ownership.contact``):

- ``<team>-page`` for ``ConwayRootCause`` (``severity="page"``, ``team="<team>"``): PagerDuty
  when the team has ``pagerduty.com/integration-key`` (the Events v2 routing key, used as is)
  or ``pagerduty.com/service-id`` (a placeholder to replace with that service's integration
  key), Opsgenie when it has ``opsgenie.com/team`` (the responder; the API key a placeholder),
  else a webhook placeholder; plus its chat channel (``slack.com/channel`` or
  ``conway.dev/chat-channel``) when it has one;
- ``<team>-chat`` for ``ConwayImpacted`` (``severity="info"``): the channel only, never a pager.

A root cause nobody owns goes to ``platform``; an inhibit rule drops an ``info`` alert for a
team already paged for the same root cause. ``deploy/alertmanager.yml`` is this output for the
demo catalog. The catalog is read by the collector's own loader first, so a catalog it would
refuse (a YAML alias bomb, a file over its size limit, a broken reference) is refused here too.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from collector.ownership.catalog import CatalogInvalid, catalog_files, load_catalog
from collector.ownership.contact import (
    CHAT_CHANNEL,
    OPSGENIE_TEAM,
    PAGERDUTY_INTEGRATION_KEY,
    PAGERDUTY_SERVICE,
    SLACK_CHANNEL,
)

HEADER = """\
# Alertmanager routing for Conway's alerts (collector --alertmanager URL), written by
#   python -m collector.alert_routes --catalog {catalog}
# from the catalog's teams and their annotations. Conway sends, per open incident (labels; the
# incident id, kind and evidence are annotations):
#   ConwayRootCause  severity="page"  team=<the root cause's owner> (absent: nobody owns it),
#                    service=root_cause=<where the failure starts>
#   ConwayImpacted   severity="info"  team=<an impacted service's owner>, service=<it>,
#                    root_cause, root_cause_team
# Routing by the `team` label pages the root cause's owner only; the victims' teams are told in
# their chat channel and never woken. Replace the REPLACE-... values with your own keys and
# check with: amtool check-config alertmanager.yml
"""
SLACK_API_URL = "https://hooks.slack.com/services/REPLACE/WITH/YOURS"
PLATFORM_WEBHOOK = "http://platform-oncall.example/conway"
SUMMARY = "{{ .CommonAnnotations.summary }}"
DESCRIPTION = "{{ .CommonAnnotations.description }}"


def teams_of(catalog: Path) -> list[tuple[str, dict[str, str]]]:
    """(team id, annotations) of each team in the catalog, sorted; raises ``CatalogInvalid``
    for a catalog the collector would refuse."""
    loaded = load_catalog(catalog)
    names = {g.team for g in loaded.groups.values() if g.type == "team"}
    annotations: dict[str, dict[str, str]] = {}
    for f in catalog_files(catalog):
        for doc in yaml.safe_load_all(f.read_text(encoding="utf-8")):
            if not isinstance(doc, dict) or doc.get("kind") != "Group":
                continue
            meta = doc.get("metadata") or {}
            ns = meta.get("namespace") or "default"
            team = meta.get("name") if ns == "default" else f"{ns}/{meta.get('name')}"
            if team in names:
                annotations[str(team)] = {str(k): str(v) for k, v in
                                          (meta.get("annotations") or {}).items()}
    return sorted((t, annotations.get(t, {})) for t in names)


def _slack(channel: str, resolved: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"channel": channel, "title": SUMMARY, "text": DESCRIPTION}
    if resolved:
        out["send_resolved"] = True
    return out


def page_receiver(team: str, ann: dict[str, str]) -> dict[str, Any]:
    rec: dict[str, Any] = {"name": f"{team}-page"}
    key = ann.get(PAGERDUTY_INTEGRATION_KEY, "").strip()
    service = ann.get(PAGERDUTY_SERVICE, "").strip()
    opsgenie = ann.get(OPSGENIE_TEAM, "").strip()
    if key or service:
        rec["pagerduty_configs"] = [{
            "routing_key": key or f"REPLACE-WITH-{service}-INTEGRATION-KEY",
            "description": SUMMARY,
            "links": [{"href": "{{ .CommonAnnotations.dashboard_url }}", "text": "Conway"}],
            "details": {"runbook": "{{ .CommonAnnotations.runbook_url }}",
                        "evidence": DESCRIPTION}}]
    if opsgenie:
        rec["opsgenie_configs"] = [{
            "api_key": "REPLACE-WITH-OPSGENIE-API-KEY", "message": SUMMARY,
            "description": DESCRIPTION, "responders": [{"name": opsgenie, "type": "team"}],
            "priority": "P2"}]
    if not (key or service or opsgenie):
        rec["webhook_configs"] = [{"url": f"http://{team}-oncall.example/conway",
                                   "send_resolved": True}]
    channel = _channel(ann)
    if channel:
        rec["slack_configs"] = [_slack(channel, resolved=True)]
    return rec


def chat_receiver(team: str, ann: dict[str, str]) -> dict[str, Any]:
    channel = _channel(ann)
    if channel:
        return {"name": f"{team}-chat", "slack_configs": [_slack(channel, resolved=False)]}
    return {"name": f"{team}-chat",
            "webhook_configs": [{"url": f"http://{team}-chat.example/conway"}]}


def _channel(ann: dict[str, str]) -> str | None:
    return (ann.get(CHAT_CHANNEL, "").strip() or ann.get(SLACK_CHANNEL, "").strip()) or None


def config(teams: Sequence[tuple[str, dict[str, str]]]) -> dict[str, Any]:
    return {
        "global": {"resolve_timeout": "5m", "slack_api_url": SLACK_API_URL},
        "route": {
            "receiver": "platform",
            "group_by": ["alertname", "team", "service"],
            "group_wait": "10s", "group_interval": "1m", "repeat_interval": "4h",
            "routes": [
                {"matchers": ['severity="info"'], "receiver": "platform-chat",
                 "routes": [{"matchers": [f'team="{t}"'], "receiver": f"{t}-chat"}
                            for t, _ in teams]},
                *({"matchers": ['severity="page"', f'team="{t}"'], "receiver": f"{t}-page"}
                  for t, _ in teams),
            ],
        },
        "inhibit_rules": [{"source_matchers": ['alertname="ConwayRootCause"'],
                           "target_matchers": ['alertname="ConwayImpacted"'],
                           "equal": ["team", "root_cause"]}],
        "receivers": [
            {"name": "platform",
             "webhook_configs": [{"url": PLATFORM_WEBHOOK, "send_resolved": True}]},
            {"name": "platform-chat", "slack_configs": [_slack("#platform", resolved=True)]},
            *(page_receiver(t, a) for t, a in teams),
            *(chat_receiver(t, a) for t, a in teams),
        ],
    }


def render(catalog: Path, shown_as: str | None = None) -> str:
    body = yaml.safe_dump(config(teams_of(catalog)), sort_keys=False, width=100,
                          default_flow_style=False)
    return HEADER.format(catalog=shown_as or catalog) + body


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--catalog", type=Path, required=True,
                   help="Backstage catalog-info.yaml (file or folder)")
    a = p.parse_args(argv)
    try:
        sys.stdout.write(render(a.catalog))
    except CatalogInvalid as exc:
        print(f"conway alert routes: the catalog is invalid:\n{exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

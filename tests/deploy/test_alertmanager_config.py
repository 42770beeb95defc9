"""``deploy/alertmanager.yml`` and the demo's generated routing, checked by Alertmanager's own
``amtool``: valid, every catalog team's page reaches its page receiver, every team's info
alert its chat (never a pager), and a root cause nobody owns the platform."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
AMTOOL = shutil.which("amtool") or "/usr/bin/amtool"
pytestmark = pytest.mark.skipif(
    not Path(AMTOOL).exists(),
    reason="amtool is not installed (Debian's prometheus-alertmanager; make system-deps)")


def route(config: Path, *labels: str) -> str:
    out = subprocess.run([AMTOOL, "config", "routes", "test", f"--config.file={config}",
                          *labels], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def teams() -> list[str]:
    docs = list(yaml.safe_load_all((ROOT / "catalog" / "catalog-info.yaml").read_text()))
    return sorted(d["metadata"]["name"] for d in docs
                  if d and d.get("kind") == "Group" and d.get("spec", {}).get("type") == "team")


def test_the_example_routing_is_valid_and_pages_only_the_root_cause_team() -> None:
    config = ROOT / "deploy" / "alertmanager.yml"
    check = subprocess.run([AMTOOL, "check-config", str(config)], capture_output=True,
                           text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    assert teams() == ["comms", "discovery", "orders", "payments", "web"]
    for team in teams():
        assert route(config, "alertname=ConwayRootCause", "severity=page",
                     f"team={team}") == f"{team}-page"
        assert route(config, "alertname=ConwayImpacted", "severity=info",
                     f"team={team}", "root_cause_team=payments") == f"{team}-chat"
    assert route(config, "alertname=ConwayRootCause", "severity=page",
                 "service=vm") == "platform"


def test_the_demo_routing_is_valid_as_compose_and_make_demo_use_it(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("demo_launcher", ROOT / "scripts" / "demo.py")
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    config = tmp_path / "alertmanager.yml"
    config.write_text(demo.alertmanager_config("http://127.0.0.1:9097"))
    assert "http://127.0.0.1:9097/page" in config.read_text()
    check = subprocess.run([AMTOOL, "check-config", str(config)], capture_output=True,
                           text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    assert route(config, "severity=page", "team=payments") == "pages"
    assert route(config, "severity=info", "team=orders") == "chat"


def test_the_example_is_what_the_generator_writes_for_the_demo_catalog() -> None:
    from collector.alert_routes import render

    assert (ROOT / "deploy" / "alertmanager.yml").read_text() == render(
        ROOT / "catalog" / "catalog-info.yaml", "catalog/catalog-info.yaml")


CATALOG = """\
apiVersion: backstage.io/v1alpha1
kind: Group
metadata:
  name: checkout-team
  annotations:
    pagerduty.com/integration-key: 0123456789abcdef0123456789abcdef
    conway.dev/chat-channel: "#checkout"
spec: {type: team, children: []}
---
apiVersion: backstage.io/v1alpha1
kind: Group
metadata: {name: quiet-team}
spec: {type: team, children: []}
"""


def test_routes_from_a_catalog_use_its_keys_and_channels(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog-info.yaml"
    catalog.write_text(CATALOG)
    out = subprocess.run([sys.executable, "-m", "collector.alert_routes", "--catalog",
                          str(catalog)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    config = tmp_path / "alertmanager.yml"
    config.write_text(out.stdout)
    doc = yaml.safe_load(out.stdout)
    receivers = {r["name"]: r for r in doc["receivers"]}
    # The integration key is the Events v2 routing key, used as it is; the channel too.
    assert receivers["checkout-team-page"]["pagerduty_configs"][0]["routing_key"] == (
        "0123456789abcdef0123456789abcdef")
    assert receivers["checkout-team-chat"]["slack_configs"][0]["channel"] == "#checkout"
    # A team that says nothing gets placeholders to fill in, never someone else's pager.
    assert "webhook_configs" in receivers["quiet-team-page"]
    assert "pagerduty_configs" not in receivers["quiet-team-page"]
    assert route(config, "severity=page", "team=checkout-team") == "checkout-team-page"
    assert route(config, "severity=info", "team=quiet-team") == "quiet-team-chat"


def test_a_catalog_the_collector_refuses_is_refused_here_too(tmp_path: Path) -> None:
    bomb = tmp_path / "catalog-info.yaml"
    bomb.write_text("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8)))
    out = subprocess.run([sys.executable, "-m", "collector.alert_routes", "--catalog",
                          str(bomb)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 2 and "the catalog is invalid" in out.stderr
    assert out.stdout == ""

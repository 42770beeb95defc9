"""``deploy/alertmanager.yml`` and the demo's generated routing, checked by Alertmanager's own
``amtool``: valid, every catalog team's page reaches its page receiver, every team's info
alert its chat (never a pager), and a root cause nobody owns the platform."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
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

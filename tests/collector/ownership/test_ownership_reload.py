"""Reloading the catalog on change; an invalid edit keeps the last good catalog in force."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from ownership_helpers import COMPONENT_SVC, GROUP_X, docs, write_catalog

from collector.config import CollectorConfig, OwnershipConfig
from collector.ownership import install
from collector.ownership.catalog import CatalogInvalid
from collector.ownership.part import Ownership
from collector.service import CollectorService

GROUP_Y = GROUP_X.replace("team-x", "team-y").replace("Team X", "Team Y")


def loaded(path: Path) -> Ownership:
    own = Ownership(path, clock=lambda: 1000.0)
    own.store.load_initial()
    return own


def team_of(own: Ownership, name: str) -> str | None:
    owner = own.owner_of(name)
    return owner["team"] if owner else None


def test_reload_picks_up_a_changed_file(tmp_path: Path) -> None:
    path = write_catalog(tmp_path, GROUP_X, COMPONENT_SVC)
    own = loaded(path)
    assert team_of(own, "svc") == "team-x"
    assert not own.store.changed()
    path.write_text(docs(GROUP_X, GROUP_Y, COMPONENT_SVC.replace("team-x", "team-y")))
    assert own.store.changed()
    assert own.reload() is True
    assert team_of(own, "svc") == "team-y"
    assert own.catalog_status()["errors"] == []


def test_a_new_file_in_a_folder_is_a_change(tmp_path: Path) -> None:
    (tmp_path / "groups.yaml").write_text(GROUP_X)
    own = loaded(tmp_path)
    assert team_of(own, "svc") is None
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "svc.yml").write_text(COMPONENT_SVC)
    assert own.store.changed()
    assert own.reload() is True
    assert team_of(own, "svc") == "team-x"


@pytest.mark.parametrize(
    ("bad", "document", "field"),
    [
        ("kind: Component\nmetadata: {name: [\n", 3, ""),
        (COMPONENT_SVC.replace("Component", "Servce").replace("svc", "svc2"), 3, "kind"),
        (COMPONENT_SVC.replace("  owner: team-x\n", "").replace("svc", "svc2"), 3, "spec.owner"),
        (COMPONENT_SVC.replace("team-x", "team-gone").replace("svc", "svc2"), 3, "spec.owner"),
        (GROUP_X, 3, "metadata.name"),
    ],
    ids=["bad-yaml", "unknown-kind", "missing-owner", "dangling-group", "duplicate"],
)
def test_invalid_edit_keeps_the_last_good_catalog_and_reports_where(
    tmp_path: Path, bad: str, document: int, field: str
) -> None:
    path = write_catalog(tmp_path, GROUP_X, COMPONENT_SVC)
    own = loaded(path)
    good = own.catalog
    path.write_text(docs(GROUP_X, COMPONENT_SVC, bad))
    assert own.reload() is False
    assert own.catalog is good
    assert team_of(own, "svc") == "team-x"
    [err] = own.catalog_status()["errors"]
    assert (err["file"], err["document"], err["field"]) == (str(path), document, field)
    assert err["message"]
    # fixing the file clears the errors
    path.write_text(docs(GROUP_X, COMPONENT_SVC))
    assert own.reload() is True and own.catalog_status()["errors"] == []


def test_deleted_catalog_keeps_the_last_good_one(tmp_path: Path) -> None:
    path = write_catalog(tmp_path, GROUP_X, COMPONENT_SVC)
    own = loaded(path)
    path.unlink()
    assert own.store.changed() and own.reload() is False
    assert team_of(own, "svc") == "team-x"
    assert "no such file" in own.catalog_status()["errors"][0]["message"]


def test_invalid_catalog_at_startup_raises_with_the_problems(tmp_path: Path) -> None:
    path = write_catalog(tmp_path, COMPONENT_SVC)
    service = CollectorService(CollectorConfig(catalog=path))
    with pytest.raises(CatalogInvalid, match=r"document 1.*spec\.owner.*team-x does not exist"):
        install(service, service.config)


def test_the_watcher_reloads_in_the_background(tmp_path: Path) -> None:
    path = write_catalog(tmp_path, GROUP_X, COMPONENT_SVC)
    config = CollectorConfig(catalog=path, ownership=OwnershipConfig(catalog_poll_s=0.05))
    service = CollectorService(config)
    install(service, config)
    own: Ownership = service.parts["ownership"]

    async def scenario() -> None:
        for hook in service.on_startup:
            await hook()
        try:
            start = own.store.generation
            path.write_text(docs(GROUP_X, GROUP_Y, COMPONENT_SVC.replace("team-x", "team-y")))
            assert await asyncio.to_thread(own.store.wait_for_generation, start + 1, 30.0)
            assert team_of(own, "svc") == "team-y"
            path.write_text("kind: [\n")
            assert await asyncio.to_thread(own.store.wait_for_generation, start + 2, 30.0)
            assert team_of(own, "svc") == "team-y"
            assert own.catalog_status()["errors"][0]["message"].startswith("not valid YAML")
        finally:
            for hook in service.on_shutdown:
                await hook()

    asyncio.run(scenario())

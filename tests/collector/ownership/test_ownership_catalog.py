"""Parsing and validating Backstage catalogs from real files."""

from __future__ import annotations

from pathlib import Path

import pytest
from ownership_helpers import COMPONENT_SVC, GROUP_X, TESTDATA, write_catalog

from collector.ownership.catalog import CatalogError, CatalogInvalid, load_catalog
from collector.ownership.refs import EntityRef, parse_ref


def errors_of(path: Path) -> list[CatalogError]:
    with pytest.raises(CatalogInvalid) as info:
        load_catalog(path)
    return info.value.errors


def test_multi_document_file_reads_every_kind_and_ignores_other_backstage_kinds() -> None:
    cat = load_catalog(TESTDATA / "kinds.yaml")
    assert {r.name for r in cat.groups} == {"team-a", "team-a-sub", "ops"}
    assert {r.name for r in cat.components} == {"svc-a", "svc-b", "svc-c", "svc-d", "svc-e"}
    assert set(cat.users) == {EntityRef("user", "default", "alice")}
    assert set(cat.systems) == {EntityRef("system", "default", "billing")}
    assert set(cat.resources) == {EntityRef("resource", "default", "db-main")}
    assert cat.ignored == 4  # API, Domain, Location, Template
    assert cat.entities == 15


def test_reference_forms_and_case_insensitivity() -> None:
    cat = load_catalog(TESTDATA / "kinds.yaml")
    team_a = EntityRef("group", "default", "team-a")
    # name only, written in another case than the Group's "Team-A"
    assert cat.components[EntityRef("component", "default", "svc-a")].owner == team_a
    # kind:namespace/name in upper case
    assert cat.components[EntityRef("component", "default", "svc-b")].owner == team_a
    # namespace/name for the System's owner; kind:namespace/name for the system
    assert cat.systems[EntityRef("system", "default", "billing")].owner == EntityRef(
        "group", "infra", "ops")
    svc_c = cat.components[EntityRef("component", "default", "svc-c")]
    assert svc_c.owner is None and svc_c.system == EntityRef("system", "default", "billing")
    # a bare name defaults to the referring entity's namespace, as in Backstage
    svc_e = cat.components[EntityRef("component", "infra", "svc-e")]
    assert svc_e.owner == EntityRef("group", "infra", "ops")
    # dependsOn: a bare name is a component; resource: refs are kept
    svc_a = cat.components[EntityRef("component", "default", "svc-a")]
    assert svc_a.depends_on == (EntityRef("component", "default", "svc-b"),
                                EntityRef("resource", "default", "db-main"))
    # user owner, and memberOf / parent / children refs
    assert cat.components[EntityRef("component", "default", "svc-d")].owner == EntityRef(
        "user", "default", "alice")
    assert cat.users[EntityRef("user", "default", "alice")].member_of == (team_a,)
    assert cat.groups[EntityRef("group", "default", "team-a-sub")].parent == team_a
    assert cat.group_named("TEAM-A") is cat.groups[team_a]
    assert cat.group_named("infra/ops") is cat.groups[EntityRef("group", "infra", "ops")]
    assert cat.component_named("SVC-A") is svc_a


def test_parse_ref_forms_and_errors() -> None:
    assert parse_ref("Group:Infra/Ops", "component") == EntityRef("group", "infra", "ops")
    assert parse_ref("infra/ops", "group") == EntityRef("group", "infra", "ops")
    assert parse_ref("ops", "group", "infra") == EntityRef("group", "infra", "ops")
    for bad in ("", "group:", "a/b/c", "group:a:b", "with space", 42):
        with pytest.raises(ValueError, match="entity reference"):
            parse_ref(bad, "group")


def test_folder_is_read_recursively_yaml_and_yml_only() -> None:
    cat = load_catalog(TESTDATA / "folder")
    assert {r.name for r in cat.components} == {"frontend", "backend", "worker"}
    assert [Path(f).name for f in cat.files] == ["frontend.yml", "groups.yaml", "backend.yaml"]


def test_bad_yaml_reports_file_document_and_line(tmp_path: Path) -> None:
    path = write_catalog(tmp_path, GROUP_X, "kind: Component\nmetadata: [unclosed\n")
    [err] = errors_of(path)
    assert err.file == str(path)
    assert err.document == 2
    assert err.line is not None and err.line > 10
    assert "not valid YAML" in err.message


def test_unknown_kind_is_an_error_naming_the_backstage_kinds(tmp_path: Path) -> None:
    path = write_catalog(tmp_path, GROUP_X, COMPONENT_SVC.replace("Component", "Service"))
    [err] = errors_of(path)
    assert (err.file, err.document, err.field) == (str(path), 2, "kind")
    assert "unknown kind 'Service'" in err.message and "Component" in err.message


def test_missing_owner_without_system_is_an_error(tmp_path: Path) -> None:
    path = write_catalog(tmp_path, GROUP_X, COMPONENT_SVC.replace("  owner: team-x\n", ""))
    [err] = errors_of(path)
    assert (err.document, err.field) == (2, "spec.owner")
    assert "has no owner" in err.message


def test_dangling_group_reference_is_an_error_with_the_field_line(tmp_path: Path) -> None:
    path = write_catalog(tmp_path, GROUP_X, COMPONENT_SVC.replace("team-x", "team-y"))
    [err] = errors_of(path)
    assert (err.document, err.field) == (2, "spec.owner")
    assert err.line == 1 + GROUP_X.count("\n") + 1 + 8  # the "owner:" line of document 2
    assert "group:default/team-y does not exist" in err.message


def test_dangling_member_of_and_system_are_errors(tmp_path: Path) -> None:
    user = ("apiVersion: backstage.io/v1alpha1\nkind: User\nmetadata:\n  name: u\n"
            "spec:\n  memberOf: [nobody]\n")
    comp = COMPONENT_SVC.replace("  owner: team-x\n", "  system: nowhere\n")
    errs = errors_of(write_catalog(tmp_path, GROUP_X, user, comp))
    assert {(e.document, e.field) for e in errs} == {(2, "spec.memberOf"), (3, "spec.system")}


def test_duplicate_entity_is_an_error_across_files_and_case(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(GROUP_X + "---\n" + COMPONENT_SVC)
    (tmp_path / "b.yaml").write_text(COMPONENT_SVC.replace("name: svc", "name: SVC"))
    [err] = errors_of(tmp_path)
    assert (err.file, err.document, err.field) == (str(tmp_path / "b.yaml"), 1, "metadata.name")
    assert "duplicate entity component:default/svc" in err.message
    assert "a.yaml, document 2" in err.message


def test_every_problem_is_listed_in_the_exception_message(tmp_path: Path) -> None:
    path = write_catalog(tmp_path, GROUP_X, COMPONENT_SVC.replace("team-x", "nobody"),
                         COMPONENT_SVC.replace("Component", "Gizmo"))
    with pytest.raises(CatalogInvalid) as info:
        load_catalog(path)
    text = str(info.value)
    assert "2 problem(s)" in text
    assert "document 2" in text and "spec.owner" in text and "document 3" in text


def test_missing_path_and_empty_folder_are_errors(tmp_path: Path) -> None:
    [err] = errors_of(tmp_path / "nope.yaml")
    assert "no such file or folder" in err.message
    (tmp_path / "empty").mkdir()
    [err] = errors_of(tmp_path / "empty")
    assert "no *.yaml" in err.message

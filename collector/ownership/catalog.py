"""Parse and validate a Backstage catalog: one ``catalog-info.yaml`` or a folder of them.

A catalog file holds many YAML documents, each one entity. Conway reads the kinds that say who
owns what (Component, Resource, System, Group, User) and accepts the other Backstage kinds
(API, Domain, Location, Template) without reading them; any other kind is an error.

Validation is all-or-nothing: ``load_catalog`` returns a complete ``Catalog`` or raises
``CatalogInvalid`` listing every problem with its file, document number (1-based), line and
field, so a watcher can keep the last good catalog in force.

Entity references default as Backstage defaults them: the kind by field (``spec.owner`` a
Group, ``spec.system`` a System, ``spec.dependsOn`` a Component, ``spec.memberOf`` a Group)
and the namespace to the referring entity's own namespace ("default" unless it says otherwise).

Hostile or half-written files are refused, never half-read: a file over ``MAX_FILE_BYTES`` (or
a folder over ``MAX_CATALOG_BYTES``); a document whose YAML aliases expand it by more than
``MAX_ALIAS_NODES`` nodes, or refer to themselves (an "alias bomb": a few hundred bytes that
expand to gigabytes once printed); and a file that is empty or only whitespace, which is what
an editor or ``> catalog-info.yaml`` leaves while the file is being written. An empty file is
an error at start-up too (start without ``--catalog`` to run with no catalog); on a reload the
message says since when the last good catalog is kept. Values quoted back in error messages
are cut to ``refs.MAX_ECHO_CHARS`` characters, and ``CatalogInvalid``'s message lists at most
``MAX_REPORTED_ERRORS`` problems (``errors`` keeps at most ``MAX_KEPT_ERRORS``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from collector.ownership.contact import Contact, contact_from
from collector.ownership.refs import (
    DEFAULT_NAMESPACE,
    EntityRef,
    clip,
    echo,
    make_ref,
    parse_ref,
    valid_name,
)

OWNERSHIP_KINDS = ("component", "resource", "system", "group", "user")
IGNORED_KINDS = ("api", "domain", "location", "template")
BACKSTAGE_KINDS = "API, Component, Domain, Group, Location, Resource, System, Template, User"

# Limits: a catalog is configuration, not data; past these something is wrong with the path.
MAX_FILES = 5000
MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_CATALOG_BYTES = 64 * 1024 * 1024  # all the files of a folder together
# Nodes that YAML aliases may add to one document once expanded (Backstage entities need no
# anchors; this leaves room for a few ``<<: *defaults`` merges and refuses alias bombs).
MAX_ALIAS_NODES = 10_000
MAX_REPORTED_ERRORS = 20  # problems listed in CatalogInvalid's message (the rest are counted)
MAX_KEPT_ERRORS = 200  # problems kept in CatalogInvalid.errors (what /api/teams shows)
EMPTY_FILE = "catalog file is empty (being written?)"
KUBERNETES_ID = "backstage.io/kubernetes-id"  # the Kubernetes app / workload a Component runs as

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class CatalogError:
    """One problem: where it is (file, 1-based document and line) and which field."""

    file: str
    document: int | None
    line: int | None
    field: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "document": self.document,
            "line": self.line,
            "field": self.field,
            "message": self.message,
        }

    def __str__(self) -> str:
        where = self.file
        if self.document is not None:
            where += f", document {self.document}"
        if self.line is not None:
            where += f", line {self.line}"
        what = f" {self.field}:" if self.field else ""
        return f"{where}:{what} {self.message}"


class CatalogInvalid(ValueError):
    """The catalog cannot be used; ``errors`` says every place that is wrong."""

    def __init__(self, path: Path | str, errors: list[CatalogError], more: int = 0) -> None:
        self.path = str(path)
        self.errors = errors
        total = len(errors) + more
        lines = "\n".join(f"  {e}" for e in errors[:MAX_REPORTED_ERRORS])
        if total > MAX_REPORTED_ERRORS:
            lines += f"\n  ... and {total - MAX_REPORTED_ERRORS} more problem(s)"
        super().__init__(
            f"invalid ownership catalog {self.path} ({total} problem(s)); "
            f"fix these and save again:\n{lines}"
        )


@dataclass(frozen=True)
class Origin:
    file: str
    document: int
    line: int | None


@dataclass(frozen=True)
class Group:
    ref: EntityRef
    name: str
    origin: Origin
    display_name: str
    contact: Contact
    parent: EntityRef | None = None
    children: tuple[EntityRef, ...] = ()
    members: tuple[EntityRef, ...] = ()
    type: str | None = None

    @property
    def team(self) -> str:
        """The team's id in the API and on snapshot nodes: the name, namespaced if not default."""
        if self.ref.namespace == DEFAULT_NAMESPACE:
            return self.name
        return f"{self.ref.namespace}/{self.name}"


@dataclass(frozen=True)
class User:
    ref: EntityRef
    name: str
    origin: Origin
    display_name: str
    contact: Contact
    member_of: tuple[EntityRef, ...] = ()


@dataclass(frozen=True)
class System:
    ref: EntityRef
    name: str
    origin: Origin
    owner: EntityRef
    contact: Contact


@dataclass(frozen=True)
class Component:
    """A Component or a Resource: something owned, named like a graph node."""

    ref: EntityRef
    name: str
    origin: Origin
    contact: Contact
    owner: EntityRef | None = None
    system: EntityRef | None = None
    lifecycle: str | None = None
    type: str | None = None
    depends_on: tuple[EntityRef, ...] = ()
    # Its ``backstage.io/kubernetes-id`` annotation: the app label / workload it runs as.
    kubernetes_id: str | None = None


@dataclass
class Catalog:
    """A validated catalog. Look-ups by reference or by (lower-cased) node name."""

    path: Path | None
    loaded_at: float
    files: tuple[str, ...] = ()
    groups: dict[EntityRef, Group] = field(default_factory=dict)
    users: dict[EntityRef, User] = field(default_factory=dict)
    systems: dict[EntityRef, System] = field(default_factory=dict)
    components: dict[EntityRef, Component] = field(default_factory=dict)
    resources: dict[EntityRef, Component] = field(default_factory=dict)
    ignored: int = 0
    # lower-cased name -> refs of Components and Resources with that name, in any namespace
    _names: dict[str, list[EntityRef]] = field(default_factory=dict, repr=False)

    def index(self) -> None:
        """Build the by-name index; called once the entities are final."""
        self._names = {}
        for ref in sorted((*self.components, *self.resources), key=str):
            self._names.setdefault(ref.name, []).append(ref)

    @property
    def entities(self) -> int:
        return (
            len(self.groups)
            + len(self.users)
            + len(self.systems)
            + len(self.components)
            + len(self.resources)
            + self.ignored
        )

    def component_named(self, name: str) -> Component | None:
        return self._by_name(self.components, name)

    def component_by_kubernetes_id(self, kid: str) -> Component | None:
        """The Component whose ``backstage.io/kubernetes-id`` annotation is ``kid`` (the
        default namespace first, then by reference order)."""
        found = sorted((c for c in self.components.values() if c.kubernetes_id == kid),
                       key=lambda c: (c.ref.namespace != DEFAULT_NAMESPACE, str(c.ref)))
        return found[0] if found else None

    def resource_named(self, name: str) -> Component | None:
        return self._by_name(self.resources, name)

    def _by_name(self, table: dict[EntityRef, Component], name: str) -> Component | None:
        """The entity named ``name``; the default namespace wins over others (then by order)."""
        refs = [r for r in self._names.get(name.lower(), ()) if r in table]
        for ref in refs:
            if ref.namespace == DEFAULT_NAMESPACE:
                return table[ref]
        return table[refs[0]] if refs else None

    def group_named(self, name: str) -> Group | None:
        """A group by its team id (``name`` or ``namespace/name``), case-insensitively."""
        key = name.lower()
        ns, _, short = key.rpartition("/")
        return self.groups.get(EntityRef("group", ns or DEFAULT_NAMESPACE, short))


def empty_catalog() -> Catalog:
    return Catalog(path=None, loaded_at=time.time())


def catalog_files(path: Path) -> list[Path]:
    """The files a catalog path names: itself, or every *.yaml/*.yml below a folder."""
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(
            p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()
        )
        if len(found) > MAX_FILES:
            raise CatalogInvalid(
                path,
                [
                    CatalogError(
                        str(path), None, None, "",
                        f"{len(found)} files is more than the limit of {MAX_FILES}; "
                        "point --catalog at the folder that holds only catalog files",
                    )
                ],
            )
        return found
    raise CatalogInvalid(
        path,
        [CatalogError(str(path), None, None, "", "no such file or folder; check --catalog")],
    )


def load_catalog(path: Path, now: float | None = None,
                 last_good_at: float | None = None) -> Catalog:
    """Read and validate the catalog at ``path``; raise ``CatalogInvalid`` on any problem.

    ``last_good_at``: when the catalog in force was loaded (a reload), for the messages that
    say it is kept; ``None`` at start-up, when there is none.
    """
    files = catalog_files(path)
    if not files:
        raise CatalogInvalid(
            path,
            [CatalogError(str(path), None, None, "", "the folder has no *.yaml or *.yml files")],
        )
    builder = _Builder(path, now if now is not None else time.time(), last_good_at)
    for file in files:
        builder.read_file(file)
    return builder.finish()


def when(epoch_s: float) -> str:
    """A time for messages: UTC, to the second, e.g. ``2024-05-01 12:00:00 UTC``."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch_s))


class _Builder:
    def __init__(self, path: Path, now: float, last_good_at: float | None = None) -> None:
        self.catalog = Catalog(path=path, loaded_at=now)
        self.last_good_at = last_good_at
        self.errors: list[CatalogError] = []
        self.more_errors = 0  # problems past MAX_KEPT_ERRORS, counted only
        self.total_bytes = 0
        self.seen: dict[EntityRef, Origin] = {}
        # Composed YAML of each document, kept until validation ends to give lines for fields.
        self.nodes: dict[tuple[str, int], yaml.Node] = {}
        self.files: list[str] = []

    # -- reading -------------------------------------------------------------------------

    def read_file(self, file: Path) -> None:
        name = str(file)
        self.files.append(name)
        try:
            size = file.stat().st_size
            if size > MAX_FILE_BYTES:
                self._err(name, None, None, "", f"{size} bytes is over the {MAX_FILE_BYTES} "
                          "byte limit for one catalog file (MAX_FILE_BYTES)")
                return
            with file.open("rb") as f:
                raw = f.read(MAX_FILE_BYTES + 1)  # it may have grown since the stat
            if len(raw) > MAX_FILE_BYTES:
                self._err(name, None, None, "", f"over the {MAX_FILE_BYTES} byte limit for "
                          "one catalog file (MAX_FILE_BYTES)")
                return
            self.total_bytes += len(raw)
            if self.total_bytes > MAX_CATALOG_BYTES:
                if self.total_bytes - len(raw) <= MAX_CATALOG_BYTES:  # said once, at this file
                    self._err(name, None, None, "", f"the catalog's files add up to more than "
                              f"{MAX_CATALOG_BYTES} bytes, the limit (MAX_CATALOG_BYTES)")
                return
            text = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self._err(name, None, None, "", f"cannot read the file: {clip(str(exc), 200)}")
            return
        if not text.strip():
            if self.last_good_at is not None:
                keep = f"keeping the last good catalog from {when(self.last_good_at)}"
            else:
                keep = ("there is no earlier catalog to keep: start again once it is written, "
                        "or start without --catalog")
            self._err(name, None, None, "", f"{EMPTY_FILE}; {keep}")
            return
        loader = _Loader(text)
        index = 0
        try:
            while loader.check_node():
                node = loader.get_node()
                index += 1
                added = _alias_nodes(node)
                if added is None or added > MAX_ALIAS_NODES:
                    self._err(name, index, node.start_mark.line + 1, "",
                              "YAML aliases refer to a node that contains them (a cycle)"
                              if added is None else
                              f"YAML aliases expand this document by more than "
                              f"{MAX_ALIAS_NODES} nodes, the limit (MAX_ALIAS_NODES); refused "
                              "as an alias bomb. Catalog entities need no anchors or aliases: "
                              "write the values out")
                    continue
                data = loader.construct_document(node)
                if data is None:
                    continue  # an empty document, e.g. a trailing '---'
                self._read_document(data, node, Origin(name, index, node.start_mark.line + 1))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            problem = getattr(exc, "problem", None) or str(exc)
            self._err(name, index + 1, line, "", f"not valid YAML: {clip(str(problem), 200)}")
        finally:
            loader.dispose()

    def _read_document(self, data: object, node: yaml.Node, origin: Origin) -> None:
        def err(fieldpath: str, message: str) -> None:
            keys = [k for k in fieldpath.replace("[", ".").replace("]", "").split(".") if k]
            line = _line_of(node, keys) or origin.line
            self._err(origin.file, origin.document, line, fieldpath, message)

        if not isinstance(data, dict):
            err("", "an entity must be a mapping with apiVersion, kind, metadata and spec")
            return
        for key in ("apiVersion", "kind"):
            if not isinstance(data.get(key), str) or not data[key].strip():
                err(key, f"missing {key}; every Backstage entity needs one")
                return
        kind = data["kind"].strip().lower()
        if kind in IGNORED_KINDS:
            self.catalog.ignored += 1
            return
        if kind not in OWNERSHIP_KINDS:
            err("kind", f"unknown kind {echo(data['kind'])}; Backstage kinds are {BACKSTAGE_KINDS}")
            return
        meta = data.get("metadata")
        if not isinstance(meta, dict):
            err("metadata", "missing metadata (a mapping with at least a name)")
            return
        name = meta.get("name")
        if not isinstance(name, str) or not valid_name(name):
            err("metadata.name", f"{echo(name)} is not a valid name: letters and digits "
                "separated by '-', '_' or '.', at most 63 characters")
            return
        namespace = meta.get("namespace", DEFAULT_NAMESPACE)
        if not isinstance(namespace, str) or not valid_name(namespace):
            err("metadata.namespace", f"{echo(namespace)} is not a valid namespace")
            return
        spec = data.get("spec", {})
        if not isinstance(spec, dict):
            err("spec", "spec must be a mapping")
            return
        ref = make_ref(kind, namespace, name)
        first = self.seen.get(ref)
        if first is not None:
            err("metadata.name", f"duplicate entity {ref}: already defined in {first.file}, "
                f"document {first.document}; remove one of them")
            return
        self.seen[ref] = origin
        self.nodes[(origin.file, origin.document)] = node
        reader = _DocReader(spec, meta, namespace, err)
        contact = reader.contact()
        if kind == "group":
            self.catalog.groups[ref] = Group(
                ref, name, origin, reader.text("spec.profile.displayName") or name, contact,
                parent=reader.ref("spec.parent", "group"),
                children=reader.refs("spec.children", "group"),
                members=reader.refs("spec.members", "user"),
                type=reader.text("spec.type"),
            )
        elif kind == "user":
            self.catalog.users[ref] = User(
                ref, name, origin, reader.text("spec.profile.displayName") or name, contact,
                member_of=reader.refs("spec.memberOf", "group"),
            )
        elif kind == "system":
            owner = reader.ref("spec.owner", "group", kinds=("group", "user"))
            if owner is None:
                err("spec.owner", "a System needs spec.owner (the Group that owns it)")
                return
            self.catalog.systems[ref] = System(ref, name, origin, owner, contact)
        else:
            entity = Component(
                ref, name, origin, contact,
                owner=reader.ref("spec.owner", "group", kinds=("group", "user")),
                system=reader.ref("spec.system", "system", kinds=("system",)),
                lifecycle=reader.text("spec.lifecycle"),
                type=reader.text("spec.type"),
                depends_on=reader.refs("spec.dependsOn", "component"),
                kubernetes_id=reader.annotation(KUBERNETES_ID),
            )
            table = self.catalog.components if kind == "component" else self.catalog.resources
            table[ref] = entity

    # -- cross references ----------------------------------------------------------------

    def finish(self) -> Catalog:
        cat = self.catalog
        known = set(cat.groups) | set(cat.users)

        def check(origin: Origin, fieldpath: str, ref: EntityRef | None, pool: set[EntityRef],
                  what: str) -> None:
            if ref is not None and ref not in pool:
                self._err(origin.file, origin.document, self._line(origin, fieldpath),
                          fieldpath, f"{ref} does not exist in the catalog; add a {what} named "
                          f"{ref.name!r} or fix the reference")

        for group in cat.groups.values():
            check(group.origin, "spec.parent", group.parent, set(cat.groups), "Group")
            for child in group.children:
                check(group.origin, "spec.children", child, set(cat.groups), "Group")
            for member in group.members:
                check(group.origin, "spec.members", member, set(cat.users), "User")
        for user in cat.users.values():
            for g in user.member_of:
                check(user.origin, "spec.memberOf", g, set(cat.groups), "Group")
        for system in cat.systems.values():
            check(system.origin, "spec.owner", system.owner, known, system.owner.kind.title())
        for entity in (*cat.components.values(), *cat.resources.values()):
            check(entity.origin, "spec.owner", entity.owner, known,
                  entity.owner.kind.title() if entity.owner else "Group")
            check(entity.origin, "spec.system", entity.system, set(cat.systems), "System")
            if entity.owner is None and entity.system is None:
                # With a System, the System's (required) owner is the fallback.
                self._err(entity.origin.file, entity.origin.document, entity.origin.line,
                          "spec.owner", f"{entity.ref} has no owner: set spec.owner to a "
                          "Group, or spec.system to a System that has one")
        owned: list[Component | System] = [*cat.components.values(), *cat.resources.values(),
                                           *cat.systems.values()]
        for item in owned:
            person = cat.users.get(item.owner) if item.owner is not None else None
            if person is not None and not person.member_of:
                self._err(item.origin.file, item.origin.document,
                          self._line(item.origin, "spec.owner"),
                          "spec.owner", f"owner {item.owner} belongs to no group, so Conway "
                          "cannot name a team; add spec.memberOf to the User or make a Group "
                          "the owner")
        if self.errors:
            raise CatalogInvalid(cat.path or "", self.errors, self.more_errors)
        cat.files = tuple(self.files)
        cat.index()
        return cat

    def _line(self, origin: Origin, fieldpath: str) -> int | None:
        node = self.nodes.get((origin.file, origin.document))
        return (_line_of(node, fieldpath.split(".")) if node is not None else None) or origin.line

    def _err(self, file: str, document: int | None, line: int | None, fieldpath: str,
             message: str) -> None:
        if len(self.errors) >= MAX_KEPT_ERRORS:
            self.more_errors += 1
            return
        self.errors.append(CatalogError(file, document, line, fieldpath, message))


class _DocReader:
    """Typed reads of one entity's fields; a wrong type is reported and read as absent."""

    def __init__(self, spec: dict[str, Any], meta: dict[str, Any], namespace: str,
                 err: Callable[[str, str], None]) -> None:
        self.doc = {"spec": spec, "metadata": meta}
        self.namespace = namespace
        self.err = err

    def _get(self, fieldpath: str) -> object:
        value: object = self.doc
        for key in fieldpath.split("."):
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value

    def text(self, fieldpath: str) -> str | None:
        value = self._get(fieldpath)
        if value is None:
            return None
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            self.err(fieldpath, f"expected a string, got {type(value).__name__}")
            return None
        return str(value)

    def ref(self, fieldpath: str, default_kind: str,
            kinds: tuple[str, ...] | None = None) -> EntityRef | None:
        value = self._get(fieldpath)
        if value is None:
            return None
        return self._parse(fieldpath, value, default_kind, kinds)

    def refs(self, fieldpath: str, default_kind: str) -> tuple[EntityRef, ...]:
        value = self._get(fieldpath)
        if value is None:
            return ()
        if not isinstance(value, list):
            self.err(fieldpath, "expected a list of entity references")
            return ()
        out = []
        for i, item in enumerate(value):
            parsed = self._parse(f"{fieldpath}[{i}]", item, default_kind, None)
            if parsed is not None:
                out.append(parsed)
        return tuple(out)

    def _parse(self, fieldpath: str, value: object, default_kind: str,
               kinds: tuple[str, ...] | None) -> EntityRef | None:
        try:
            parsed = parse_ref(value, default_kind, self.namespace)
        except ValueError as exc:
            self.err(fieldpath, str(exc))
            return None
        if kinds is not None and parsed.kind not in kinds:
            self.err(fieldpath, f"{echo(value)} must refer to a {' or '.join(kinds)}")
            return None
        return parsed

    def annotation(self, key: str) -> str | None:
        """One annotation's non-empty value (a malformed map is reported by ``contact``)."""
        annotations = self._get("metadata.annotations")
        value = annotations.get(key) if isinstance(annotations, dict) else None
        return value.strip() if isinstance(value, str) and value.strip() else None

    def contact(self) -> Contact:
        annotations = self._get("metadata.annotations") or {}
        if not isinstance(annotations, dict) or not all(
            isinstance(v, str) for v in annotations.values()
        ):
            self.err("metadata.annotations", "annotations must map strings to strings")
            annotations = {}
        links = self._get("metadata.links") or []
        if not isinstance(links, list) or not all(
            isinstance(link, dict) and isinstance(link.get("url"), str) for link in links
        ):
            self.err("metadata.links", "links must be a list of mappings, each with a url")
            links = []
        return contact_from(annotations, links, self.text("spec.profile.email"))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _alias_nodes(root: yaml.Node) -> int | None:
    """How many nodes YAML aliases add to a composed document once it is expanded (its size
    as a tree minus its distinct nodes), or None if an alias refers to a node containing it.

    An alias composes to the very node its anchor named, so the document is a graph of
    distinct nodes; each node's tree size is counted once (memoised, without recursion), so an
    alias bomb costs what its few hundred bytes cost, not what it expands to.
    """
    cap = 1 << 62  # a 9-wide bomb 20 levels deep is 9**20 nodes: keep the integers small
    size: dict[int, int] = {}
    open_: set[int] = set()  # nodes whose subtree is being counted: the path from the root
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_.discard(key)
            size[key] = min(cap, 1 + sum(size[id(c)] for c in _children(node)))
            continue
        if key in size:
            continue
        if key in open_:
            return None
        open_.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in open_:
                return None
            if id(child) not in size:
                stack.append((child, False))
    return max(0, size[id(root)] - len(size))


def _line_of(node: yaml.Node, keys: list[str]) -> int | None:
    """The 1-based line of the value at ``keys`` in a composed YAML node, if present."""
    line: int | None = None
    for key in keys:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == key:
                    node, line = v, k.start_mark.line + 1
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and key.isdigit() and int(key) < len(node.value):
            node = node.value[int(key)]
            line = node.start_mark.line + 1
        else:
            return line
    return line

"""Backstage entity references: ``[<kind>:][<namespace>/]<name>``.

Kind, namespace and name compare case-insensitively, as Backstage compares them, so a
reference is stored lower-cased; the spelling a user wrote is kept only for messages. The
kind a bare name defaults to depends on the field it is written in (``spec.owner`` means a
Group, ``spec.system`` a System...); the caller passes it.
"""

from __future__ import annotations

import re
import reprlib
from dataclasses import dataclass

DEFAULT_NAMESPACE = "default"

# A value quoted back in an error message is cut to this many characters: a catalog value may
# be megabytes long (or an alias bomb that expands to gigabytes once printed in full).
MAX_ECHO_CHARS = 80

_ECHO = reprlib.Repr()
_ECHO.maxlevel = 3
_ECHO.maxstring = _ECHO.maxother = MAX_ECHO_CHARS - 2  # room for the quotes
_ECHO.maxlist = _ECHO.maxtuple = _ECHO.maxdict = _ECHO.maxset = 6

# Backstage's rule for names and namespaces: letters and digits separated by single [-_.],
# at most 63 characters.
_NAME = re.compile(r"^([A-Za-z0-9]+[-_.])*[A-Za-z0-9]+$")
MAX_NAME_LENGTH = 63


@dataclass(frozen=True, slots=True)
class EntityRef:
    """A fully qualified, lower-cased reference to one catalog entity."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.namespace}/{self.name}"


def echo(value: object) -> str:
    """A short repr of a user's value for an error message: at most ``MAX_ECHO_CHARS``
    characters, never expanding a deep or shared structure in full."""
    text = _ECHO.repr(value)
    return text if len(text) <= MAX_ECHO_CHARS else text[: MAX_ECHO_CHARS - 1] + "…"


def clip(text: str, limit: int = MAX_ECHO_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def valid_name(text: str) -> bool:
    return len(text) <= MAX_NAME_LENGTH and _NAME.match(text) is not None


def make_ref(kind: str, namespace: str, name: str) -> EntityRef:
    return EntityRef(kind.lower(), namespace.lower(), name.lower())


def parse_ref(
    text: object, default_kind: str, default_namespace: str = DEFAULT_NAMESPACE
) -> EntityRef:
    """Parse a string reference; raise ``ValueError`` saying what is wrong with it."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(
            f"expected an entity reference like 'group:default/team-a', got {echo(text)}"
        )
    rest = text.strip()
    kind = default_kind
    namespace = default_namespace
    if ":" in rest:
        kind, rest = rest.split(":", 1)
    if "/" in rest:
        namespace, rest = rest.split("/", 1)
    for part, what in ((kind, "kind"), (namespace, "namespace"), (rest, "name")):
        if not part or ":" in part or "/" in part:
            raise ValueError(
                f"{echo(text)} is not an entity reference: the {what} is empty or malformed; "
                "write [kind:][namespace/]name"
            )
    if not valid_name(rest) or not valid_name(namespace):
        raise ValueError(
            f"{echo(text)} is not an entity reference: names are letters and digits separated "
            f"by '-', '_' or '.', at most {MAX_NAME_LENGTH} characters"
        )
    return make_ref(kind, namespace, rest)

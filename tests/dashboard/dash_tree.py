"""Walk a Dash component tree: its text, and its links."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dash.development.base_component import Component


def walk(tree: Any) -> Iterator[Any]:
    if tree is None:
        return
    if isinstance(tree, list | tuple):
        for item in tree:
            yield from walk(item)
        return
    yield tree
    if isinstance(tree, Component):
        yield from walk(getattr(tree, "children", None))


def text(tree: Any) -> str:
    parts = [str(x) for x in walk(tree) if isinstance(x, str | int | float)]
    return "".join(parts)


def hrefs(tree: Any) -> list[str]:
    found = (getattr(x, "href", None) for x in walk(tree) if isinstance(x, Component))
    return [h for h in found if isinstance(h, str)]


def components(tree: Any) -> list[Component]:
    return [x for x in walk(tree) if isinstance(x, Component)]

"""collector/README.md's "where to change what" stays true: every file it names exists and every
``module.name`` it names can be imported."""

from __future__ import annotations

import dataclasses
import importlib
import re
from pathlib import Path

from collector.service import CollectorService

REPO = Path(__file__).resolve().parents[2]
README = REPO / "collector" / "README.md"


def _code_spans() -> list[str]:
    return re.findall(r"`([^`]+)`", README.read_text(encoding="utf-8"))


def test_every_file_named_exists() -> None:
    names = {s for span in _code_spans()
             for s in re.findall(r"[\w/]+\.(?:py|c)\b", span) if "…" not in s}
    assert len(names) > 15
    missing = [n for n in sorted(names)
               if not (REPO / "collector" / n).exists() and not (REPO / n).exists()]
    assert not missing, f"collector/README.md names files that do not exist: {missing}"


def test_every_symbol_named_exists() -> None:
    # `module.Name` or `package/module.Name` (a file's module, then an attribute of it).
    found = []
    for span in _code_spans():
        m = re.fullmatch(r"([\w/]+)\.(\w+)(?:\(\))?", span)
        if m is None or m.group(2) in ("py", "c"):
            continue
        path, attr = m.group(1), m.group(2)
        if path == "service":  # `service.x`: a field of the hub every install is given
            fields = {f.name for f in dataclasses.fields(CollectorService)}
            found.append(("CollectorService", attr, attr in fields))
            continue
        module = path.replace("/", ".")
        for candidate in (f"collector.{module}", module):
            try:
                mod = importlib.import_module(candidate)
            except ImportError:
                continue
            found.append((candidate, attr, hasattr(mod, attr)))
            break
        else:
            found.append((module, attr, False))
    assert len(found) > 10
    missing = [f"{m}.{a}" for m, a, ok in found if not ok]
    assert not missing, f"collector/README.md names what does not exist: {missing}"

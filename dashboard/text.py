"""Formatting of numbers and times for display, and the link check for catalog URLs.

Everything from telemetry or the catalog is shown as plain text (Dash escapes component
children); the only place a telemetry string becomes an attribute is a link ``href``, and
``safe_url`` allows only http and https there.

Escaping HTML is not enough for text: a Unicode bidi control (``BIDI_CONTROLS``) in a service
name or version reorders what is drawn around it: "invoice\\u202efdp.exe" (with a real
U+202E) is drawn as "invoiceexe.pdf" in the incident banner. ``display_text`` is the one helper
every builder passes telemetry and catalog text through before it is drawn (components, graph
labels, tooltips, Plotly text): it shows each bidi control as visible ``\\u202e`` text instead.
Ids, hrefs and API calls keep the raw name.
"""

from __future__ import annotations

import html
import time
from urllib.parse import quote, urlsplit

SAFE_SCHEMES = ("http", "https")

# Bidi marks (ALM, LRM, RLM), embeddings and overrides (LRE, RLE, PDF, LRO, RLO) and isolates
# (LRI, RLI, FSI, PDI).
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
_BIDI_ESCAPES = {ord(c): f"\\u{ord(c):04x}" for c in BIDI_CONTROLS}


def display_text(value: object) -> str:
    """``str(value)`` ready to draw: each bidi control shown as visible text (``\\u202e``),
    so a name cannot reorder itself or the text around it."""
    return str(value).translate(_BIDI_ESCAPES)


def safe_url(url: object) -> str | None:
    """The URL if it is an absolute http(s) URL, else None (``javascript:``, ``data:``...)."""
    if not isinstance(url, str):
        return None
    candidate = url.strip()
    # Browsers ignore control characters and whitespace inside a scheme ("java\tscript:").
    if any(ord(c) < 33 for c in candidate):
        return None
    parts = urlsplit(candidate)
    if parts.scheme.lower() not in SAFE_SCHEMES or not parts.netloc:
        return None
    return candidate


def path_for_service(name: str) -> str:
    return "/services/" + quote(name, safe="")


def path_for_team(name: str) -> str:
    return "/teams/" + quote(name, safe="")


def plotly_text(value: object) -> str:
    """Plotly renders a subset of HTML in titles and annotations: escape telemetry text."""
    return html.escape(display_text(value), quote=True)


def fmt_rate(rps: object) -> str:
    if not isinstance(rps, int | float):
        return "–"
    return f"{rps:.1f} rps" if rps < 100 else f"{rps:.0f} rps"


def fmt_pct(ratio: object) -> str:
    if not isinstance(ratio, int | float):
        return "–"
    return f"{ratio * 100:.1f}%"


def fmt_ms(ms: object) -> str:
    if not isinstance(ms, int | float):
        return "–"
    return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"


def clock(epoch_s: float) -> str:
    """HH:MM:SS in the dashboard host's local time."""
    return time.strftime("%H:%M:%S", time.localtime(epoch_s))


def ago(epoch_s: object, now: float) -> str:
    """A relative time such as "42 s ago", "3 min ago", "2 h ago"."""
    if not isinstance(epoch_s, int | float):
        return "unknown time"
    delta = max(0.0, now - float(epoch_s))
    if delta < 90:
        return f"{delta:.0f} s ago"
    if delta < 90 * 60:
        return f"{delta / 60:.0f} min ago"
    return f"{delta / 3600:.1f} h ago"

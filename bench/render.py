"""Time from navigation until the live graph is drawn, and the overview's interactions.

Three graphs -- the demo shop (~15 nodes, with its catalog), Jaeger UI's 1,238-service /
4,271-edge dependency sample spread over 60 teams, and a synthetic 5,000 services in 100
teams (seeded) -- each replayed as OTLP spans into a real collector (teams through the
``team`` resource attribute), shown by a real dashboard in headless Chromium. Each run starts
a new Chromium with a fresh profile (**cold**: empty cache, new process), measures, then
navigates again in the same browser (**warm**) and measures again:

  first draw: ms from navigation start (``performance.timeOrigin``) until Cytoscape holds the
              first view (every node, or every team folded) fitted on screen;
  search:     ms from the keystroke that asks for it (Enter, or the name's last character
              when the name typed in one go is taken as a picked suggestion) until the
              service and its callers and callees alone are drawn and fitted; ``label px``
              is the searched node's label size on screen at that zoom (legible from
              about 10 px);
  back:       ms from clicking "back to whole graph" (old trees: "Show all") until the whole
              view is back, and whether the zoom before the search is restored;
  open team:  ms from a real click on a folded team until its services are drawn;
  time step:  stepping back in time with the overview's time control (n/a without one).
Clicks are timed from their mousedown in the page, keys from their keydown (until
2026-12-05 a click was timed from before WebDriver sent it, 100-300 ms earlier). The first
draw is watched from the document's start (until the second stop of 2026-12-05 the watch began
after ``driver.get`` returned, the load event and a WebDriver round trip later; the demo's
load event came ~0.4 s before its draw, so those figures stand).

The breakdown of the first cold draw says where the time went: the JS bundles (bytes, and
when the last one arrived), the Dash callback round trips before the graph's elements
arrived (count, bytes down / up), when the elements arrived and when they were on screen.

``--baseline TREE`` also runs each graph with the dashboard of another checkout (e.g. a git
worktree of the commit before a change), alternating runs, so before and after are measured
under the same conditions. Medians of ``--runs`` (default 3). Needs /usr/bin/chromium and
chromedriver. Run: .venv/bin/python bench/render.py [--runs N] [--baseline TREE]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from benchlib import free_port, stop, wait_http
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.common.actions.action_builder import ActionBuilder
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from stepback import live_ms, step_back_ms

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from collector.replay import dependencies_to_spans, to_otlp_request  # noqa: E402
from dashboard import elements as E  # noqa: E402
from dashboard import positions as P  # noqa: E402
from dashboard.state import compact_graph  # noqa: E402

# shared/ sits beside the repository; the collector's tests may keep a copy in testdata.
LARGE = ROOT.parent / "shared" / "reference-traces" / "jaeger-ui--dependencygraph-large.json"
LARGE_FALLBACK = ROOT / "tests" / "collector" / "testdata" / "jaeger-ui--dependencygraph-large.json"
SHOP_CALLS = {
    "frontend": ["product-catalog", "currency", "cart", "recommendation", "ad", "checkout"],
    "recommendation": ["product-catalog"],
    "checkout": ["cart", "currency", "payment", "shipping", "email"],
    "payment": ["fraud-detection"],
    "shipping": ["quote"],
}
CHROME_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--window-size=1400,1000")
TIMEOUT_S = 60.0
# One step that takes longer is printed as "> STEP_TIMEOUT_S" and the visit goes on.
STEP_TIMEOUT_S = 30.0
VERBOSE = False
# The window the dashboard asks for: long enough that the replayed calls stay in it for the
# whole run (the collector keeps 15 minutes).
WINDOW_S = 900
# The time control the overview will carry (time travel, issue 16's sibling): its id.
TIME_CONTROL_ID = "tt-bar"

FIND_CY = """
function findCy() {
  const root = document.getElementById('ov-graph');
  if (!root) { return null; }
  for (const el of [root, ...root.querySelectorAll('*')]) {
    if (el._cyreg && el._cyreg.cy) { return el._cyreg.cy; } }
  return null;
}
function fitted(c) {
  const bb = c.elements().renderedBoundingBox();
  return bb.x1 >= -1 && bb.y1 >= -1 && bb.x2 <= c.width() + 1 && bb.y2 <= c.height() + 1;
}
"""
# Resolves when the view holds ``want`` nodes (or, with a list, exactly those service ids)
# fitted on screen; records when elements first arrived.
VIEW_WATCH = FIND_CY + """
function watchView(want, done) {
  let firstElements = null;
  function ready(c) {
    if (Array.isArray(want)) {
      const ids = c.nodes().filter(n => n.id().startsWith('s:')).map(n => n.id()).sort();
      return ids.length === want.length && ids.every((v, i) => v === want[i]);
    }
    return c.nodes().length === want;
  }
  function poll() {
    const c = findCy();
    if (c && c.nodes().length && firstElements === null) { firstElements = performance.now(); }
    if (c && ready(c) && fitted(c)) {
      requestAnimationFrame(() => done({t: performance.now(), elements: firstElements,
        nodes: c.nodes().length, edges: c.edges().length, zoom: c.zoom(),
        pan: c.pan()}));
    } else { setTimeout(poll, 5); }
  }
  poll();
}
"""
WAIT_VIEW = VIEW_WATCH + "watchView(arguments[0], arguments[arguments.length - 1]);"
# The first draw is watched from the document's start (installed before the navigation): a
# watcher started after ``driver.get`` returns (the load event, then a WebDriver round trip)
# saw a graph drawn before then only when it started, and counted that.
EARLY_VIEW = "(function () {" + VIEW_WATCH + \
    "window.__firstDraw = null; watchView(%s, d => { window.__firstDraw = d; }); })();"
FIRST_DRAW = """
const done = arguments[arguments.length - 1];
(function wait() { if (window.__firstDraw) { done(window.__firstDraw); }
                   else { setTimeout(wait, 5); } })();
"""
# Every Dash request the page made, and its bundles: for the breakdown.
RESOURCES = """
return performance.getEntriesByType('resource').map(e => ({
  name: e.name, type: e.initiatorType, start: e.startTime, end: e.responseEnd,
  transfer: e.transferSize, encoded: e.encodedBodySize, decoded: e.decodedBodySize}));
"""
# Records the request body size of each Dash callback request (resource timing has none).
HOOK_FETCH = """
(function () {
  const orig = window.fetch;
  window.__dashPosts = [];
  window.fetch = function (url, opts) {
    if (String(url).includes('_dash-update-component') && opts && opts.body) {
      // The body starts with {"output": ...}: read that, never parse a megabyte here.
      const m = /"output":"((?:[^"\\\\]|\\\\.)*)"/.exec(opts.body.slice(0, 600));
      const outputs = m ? m[1] : '';
      window.__dashPosts.push({t: performance.now(), up: opts.body.length, outputs: outputs});
    }
    return orig.apply(this, arguments);
  };
})();
"""
NODE_AT = FIND_CY + """
const c = findCy();
const n = c.getElementById(arguments[0]);
if (!n.length) { return null; }
const p = n.renderedPosition();
const rect = c.container().getBoundingClientRect();
const font = parseFloat(n.style('font-size')) || 0;
return {x: rect.left + p.x, y: rect.top + p.y, zoom: c.zoom(), font: font * c.zoom()};
"""
VIEWPORT = FIND_CY + "const c = findCy(); return {zoom: c.zoom(), pan: c.pan()};"
SET_VIEWPORT = FIND_CY + """
const c = findCy(); c.zoom(arguments[0]); c.center(); return {zoom: c.zoom(), pan: c.pan()};
"""
MEMBERS_DRAWN = FIND_CY + """
const done = arguments[arguments.length - 1];
const gid = arguments[0], count = arguments[1];
function poll() {
  const c = findCy();
  const kids = c ? c.nodes().filter(n => n.isChild() && n.parent().id() === gid).length : 0;
  if (kids >= count) { requestAnimationFrame(() => done(performance.now())); }
  else { setTimeout(poll, 5); }
}
poll();
"""
# A click is timed from its mousedown in the page (WebDriver takes 100-300 ms to deliver one,
# which no person clicking pays).
MARK_PRESS = """
window.__pressAt = null;
document.addEventListener('mousedown', () => {
  if (window.__pressAt === null) { window.__pressAt = performance.now(); }
}, {capture: true, once: true});
"""
# Every keydown's time, and (from before the first key) the first moment the searched
# service's neighbourhood alone is drawn and fitted: a name typed in one go can be taken as a
# picked suggestion and shown before Enter, so the search is timed from the keystroke that
# asked for it (the last one before the view was there).
WATCH_SEARCH = FIND_CY + """
window.__keys = [];
window.__viewAt = null;
document.addEventListener('keydown', () => window.__keys.push(performance.now()),
                          {capture: true});
const want = arguments[0];
function watch() {
  const c = findCy();
  if (c) {
    const ids = c.nodes().filter(n => n.id().startsWith('s:')).map(n => n.id()).sort();
    if (ids.length === want.length && ids.every((v, i) => v === want[i]) && fitted(c)) {
      window.__viewAt = performance.now();
      return;
    }
  }
  requestAnimationFrame(watch);
}
watch();
"""


@dataclass
class Case:
    """One graph: its name, dependency list, catalog, a service to search for."""

    name: str
    deps: list[dict[str, Any]]
    catalog: Path | None
    search: str
    team_of: Callable[[str], str | None] | None = None


@dataclass
class Figures:
    """Measured ms (or notes) per step, for one dashboard tree and one visit kind."""

    steps: dict[str, list[float]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def add(self, step: str, value: float) -> None:
        self.steps.setdefault(step, []).append(value)

    def timed_out(self, step: str) -> None:
        self.add(step, STEP_TIMEOUT_S * 1000)
        self.notes[step + " timeouts"] = str(int(self.notes.get(step + " timeouts", "0")) + 1)


def shop_deps() -> list[dict[str, Any]]:
    return [{"parent": p, "child": c, "callCount": 1} for p, cs in SHOP_CALLS.items() for c in cs]


def spread_over(teams: int) -> Callable[[str], str]:
    """A deterministic team for each service name: its CRC-32 modulo ``teams``."""
    return lambda name: f"team-{zlib.crc32(name.encode()) % teams:02d}"


def synthetic(services: int, teams: int, seed: int = 16) -> tuple[list[dict[str, Any]],
                                                                  Callable[[str], str]]:
    """``services`` services in ``teams`` teams; each calls one service of its own team and
    one anywhere (seeded), as organisations mostly call within a team."""
    rng = random.Random(seed)
    names = [f"svc-{i:04d}" for i in range(services)]
    team = {n: f"team-{i % teams:03d}" for i, n in enumerate(names)}
    by_team: dict[str, list[str]] = {}
    for n in names:
        by_team.setdefault(team[n], []).append(n)
    deps = []
    for n in names:
        mates = by_team[team[n]]
        for child in (mates[(mates.index(n) + 1) % len(mates)], rng.choice(names)):
            if child != n:
                deps.append({"parent": n, "child": child, "callCount": 1})
    return deps, team.__getitem__


def first_view(graph: dict[str, Any]) -> tuple[int, int, str | None, int]:
    """Nodes of the overview's first view, and one folded team (element id, services)."""
    pos = P.assign(None, graph["nodes"])
    els = E.build_elements(graph, pos)
    nodes = [e for e in els if "source" not in e["data"]]
    folded = sorted((e for e in nodes if e["data"].get("kind") == "collapsed"),
                    key=lambda e: str(e["data"]["id"]))
    # A mid-sized team: the click lands on it wherever the shelf put it.
    pick = folded[len(folded) // 2] if folded else None
    return (len(nodes), len(els) - len(nodes), pick["data"]["id"] if pick else None,
            int(pick["data"]["count"]) if pick else 0)


def neighbourhood(graph: dict[str, Any], name: str) -> list[str]:
    keep = {name}
    for e in graph["edges"]:
        if e["source"] == name:
            keep.add(e["target"])
        if e["target"] == name:
            keep.add(e["source"])
    return sorted(E.node_el_id(n) for n in keep)


def new_browser(profile: Path) -> webdriver.Chrome:
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for arg in CHROME_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options)
    driver.set_script_timeout(TIMEOUT_S)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": HOOK_FETCH})
    return driver


def breakdown(driver: webdriver.Chrome, drawn: dict[str, Any]) -> str:
    """Where the first draw's time went, from the page's own timings."""
    res = driver.execute_script(RESOURCES)
    posts = driver.execute_script("return window.__dashPosts || []")
    nav = driver.execute_script(
        "const n = performance.getEntriesByType('navigation')[0];"
        "return {dcl: n.domContentLoadedEventEnd, load: n.loadEventEnd};")
    scripts = [r for r in res if r["type"] == "script" or r["name"].endswith(".js")
               or ".js?" in r["name"]]
    js_bytes = sum(r["encoded"] for r in scripts)
    js_raw = sum(r["decoded"] for r in scripts)
    js_end = max((r["end"] for r in scripts), default=0.0)
    dash = [r for r in res if "_dash-update-component" in r["name"]]
    before = [r for r in dash if r["end"] <= (drawn["elements"] or drawn["t"]) + 1]
    down = sum(r["decoded"] for r in before)
    up = sum(p["up"] for p in posts if p["t"] <= (drawn["elements"] or drawn["t"]))
    trips = ", ".join(f"{r['start']:.0f}-{r['end']:.0f}" for r in before)
    if VERBOSE:
        for r in scripts:
            print(f"        {r['name'].split('/')[-1][:60]:<60} {r['encoded'] / 1e3:7.0f} kB "
                  f"{r['start']:6.0f}-{r['end']:6.0f}")
        for post in posts:
            print(f"        POST at {post['t']:6.0f} up {post['up']:8d} B  {post['outputs'][:90]}")
    layout = [r for r in res if "_dash-layout" in r["name"]]
    lay = f"{layout[0]['end']:.0f}" if layout else "?"
    return (f"      JS {len(scripts)} files {js_bytes / 1e6:.2f} MB sent ({js_raw / 1e6:.2f} MB "
            f"unpacked), last at {js_end:.0f} ms; DOMContentLoaded {nav['dcl']:.0f}; "
            f"_dash-layout at {lay}\n"
            f"      {len(before)} callback round trips before the elements "
            f"({down / 1e3:.0f} kB down, {up / 1e3:.0f} kB up): [{trips}]\n"
            f"      elements in Cytoscape at {drawn['elements']:.0f} ms, on screen at "
            f"{drawn['t']:.0f} ms")


def time_travel_step(driver: webdriver.Chrome) -> float | str:
    """Stepping back in time with the overview's time bar ("◀ 1 min", ``bench/stepback.py``):
    ms until the past moment is shown; then "Live" again for the next visit."""
    if not driver.find_elements(By.ID, TIME_CONTROL_ID):
        return "n/a (no time control)"
    try:
        ms = step_back_ms(driver)
        live_ms(driver)
    except TimeoutException:
        bar = driver.execute_script(
            "const b = document.getElementById('tt-bar'), m = document.getElementById("
            "'tt-marker'); return [b && b.className, m && m.textContent, location.href];")
        print(f"        time step timed out: bar {bar}", flush=True)
        return f"timed out (> {TIMEOUT_S:.0f} s)"
    return ms


def visit(driver: webdriver.Chrome, url: str, case: Case, graph: dict[str, Any],
          figs: Figures, explain: bool) -> str | None:
    """One navigation and every step on it; the first draw's breakdown when ``explain``."""
    n_first, _edges, team_id, team_count = first_view(graph)
    driver.set_script_timeout(TIMEOUT_S)
    watch = driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument",
                                   {"source": EARLY_VIEW % json.dumps(n_first)})
    try:
        driver.get(url)
        drawn = driver.execute_async_script(FIRST_DRAW)
    finally:
        driver.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument",
                               {"identifier": watch["identifier"]})
    figs.add("first draw", drawn["t"])
    why = breakdown(driver, drawn) if explain else None
    try:
        steps(driver, case, graph, figs, n_first, team_id, team_count)
    except TimeoutException:
        # A step past STEP_TIMEOUT_S: counted as that long, the rest of the visit skipped.
        if VERBOSE:
            print("        step timed out; the graph then:", driver.execute_script(
                FIND_CY + "const c = findCy(); return c && {nodes: c.nodes().length, "
                "services: c.nodes().filter(n => n.id().startsWith('s:')).length, "
                "fitted: fitted(c), zoom: c.zoom(), search: "
                "document.getElementById('ov-search').value};"), flush=True)
        for step in ("search -> focus", "back", "open team"):
            if len(figs.steps.get(step, [])) < len(figs.steps["first draw"]):
                figs.timed_out(step)
    moved = time_travel_step(driver)
    if isinstance(moved, str):
        figs.notes["time step"] = moved
    else:
        figs.add("time step", moved)
    return why


def steps(driver: webdriver.Chrome, case: Case, graph: dict[str, Any], figs: Figures,
          n_first: int, team_id: str | None, team_count: int) -> None:
    """Search, back and open a team, on a drawn overview."""
    driver.set_script_timeout(STEP_TIMEOUT_S)
    # Search: type the name, press Enter, wait for its neighbourhood alone, fitted.
    before = driver.execute_script(VIEWPORT)
    want = neighbourhood(graph, case.search)
    driver.execute_script(WATCH_SEARCH, want)
    box = driver.find_element(By.ID, "ov-search")
    box.click()
    box.send_keys(case.search)
    box.send_keys(Keys.ENTER)
    driver.execute_async_script(WAIT_VIEW, want)
    seen, keys = driver.execute_script("return [window.__viewAt, window.__keys]")
    figs.add("search -> focus", seen - max(k for k in keys if k <= seen))
    where = driver.execute_script(NODE_AT, E.node_el_id(case.search))
    figs.add("label px", where["font"])
    # Back to the whole graph.
    back = driver.find_elements(By.ID, "ov-back") or driver.find_elements(By.ID, "ov-clear")
    driver.execute_script(MARK_PRESS)
    back[0].click()
    whole = driver.execute_async_script(WAIT_VIEW, n_first)
    time.sleep(0.3)  # a late fit would change the zoom: look again
    after = driver.execute_script(VIEWPORT)
    figs.add("back", whole["t"] - driver.execute_script("return window.__pressAt"))
    restored = abs(after["zoom"] - before["zoom"]) <= 1e-3 * before["zoom"]
    figs.notes["zoom restored"] = ("yes" if restored else "no") if figs.notes.get(
        "zoom restored", "yes") == "yes" else "no"
    # Open a folded team with a real click.
    if team_id is not None:
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while (at := driver.execute_script(NODE_AT, team_id)) is None:
            if time.monotonic() > deadline:
                raise TimeoutException(f"{team_id} never drawn")
            time.sleep(0.05)
        driver.execute_script(MARK_PRESS)
        actions = ActionBuilder(driver)
        actions.pointer_action.move_to_location(int(at["x"]), int(at["y"]))
        actions.pointer_action.click()
        actions.perform()
        t1 = driver.execute_async_script(MEMBERS_DRAWN, team_id, team_count)
        figs.add("open team", t1 - driver.execute_script("return window.__pressAt"))
    else:
        figs.notes["open team"] = "n/a (not folded)"


STEPS = ("first draw", "search -> focus", "label px", "back", "open team", "time step")


def show(label: str, figs: Figures) -> None:
    parts = []
    for step in STEPS:
        values = figs.steps.get(step)
        if values:
            unit = " px" if step == "label px" else " ms"
            late = figs.notes.get(step + " timeouts")
            spread = f" ({min(values):.0f}-{max(values):.0f})" if len(values) > 2 else ""
            parts.append(f"{step} {statistics.median(values):.0f}{unit}{spread}"
                         + (f" ({late} runs > {STEP_TIMEOUT_S:.0f} s)" if late else ""))
        elif step in figs.notes:
            parts.append(f"{step} {figs.notes[step]}")
    if "zoom restored" in figs.notes:
        parts.append(f"zoom restored: {figs.notes['zoom restored']}")
    print(f"    {label:<15} " + " | ".join(parts), flush=True)


def run_case(case: Case, trees: dict[str, Path], runs: int, tmp: Path,
             shots: Path | None) -> dict[str, dict[str, Figures]]:
    """Median figures per tree ("new", "baseline") and visit ("cold", "warm")."""
    cport = free_port()
    cargs = [sys.executable, "-m", "collector", "--port", str(cport)]
    if case.catalog is not None:
        cargs += ["--catalog", str(case.catalog)]
    slug = case.name.split(" (")[0].replace(" ", "-").replace(",", "")
    clog = tmp / f"{slug}-collector.log"
    procs: list[subprocess.Popen[bytes]] = []
    logs = [clog.open("wb")]
    procs.append(subprocess.Popen(cargs, cwd=ROOT, stdout=logs[0], stderr=subprocess.STDOUT))
    out: dict[str, dict[str, Figures]] = {t: {"cold": Figures(), "warm": Figures()}
                                          for t in trees}
    try:
        curl = f"http://127.0.0.1:{cport}"
        wait_http(curl + "/healthz", procs[0], log=clog)
        spans = dependencies_to_spans(case.deps, time.time_ns(), calls_per_edge=1,
                                      team_of=case.team_of)
        httpx.post(curl + "/v1/traces", content=to_otlp_request(spans), timeout=120,
                   headers={"Content-Type": "application/x-protobuf"}).raise_for_status()
        time.sleep(1.5)  # the next evaluation tick publishes the graph
        raw = httpx.get(curl + "/api/graph", params={"window": WINDOW_S}, timeout=60).json()
        graph = compact_graph(raw)
        urls = {}
        for tree_name, tree in trees.items():
            port = free_port()
            log = tmp / f"{slug}-dashboard-{tree_name}.log"
            logs.append(log.open("wb"))
            proc = subprocess.Popen(
                [sys.executable, "-m", "dashboard", "--collector", curl, "--port", str(port),
                 "--window-s", str(WINDOW_S)],
                cwd=tree, stdout=logs[-1], stderr=subprocess.STDOUT)
            procs.append(proc)
            urls[tree_name] = f"http://127.0.0.1:{port}/"
            wait_http(urls[tree_name], proc, log=log)
        teams = len({n.get("team") for n in graph["nodes"] if n.get("team")})
        print(f"{case.name}: {len(graph['nodes'])} nodes, {len(graph['edges'])} edges, "
              f"{teams} teams; search {case.search!r}", flush=True)
        for run in range(runs):
            for tree_name in trees:
                profile = Path(tempfile.mkdtemp(prefix="render-profile-", dir=tmp))
                driver = new_browser(profile)
                try:
                    why = visit(driver, urls[tree_name], case, graph,
                                out[tree_name]["cold"], explain=True)
                    if run == 0:
                        print(f"  [{tree_name}] cold first draw, run 1:\n{why}", flush=True)
                    driver.get("about:blank")
                    visit(driver, urls[tree_name], case, graph, out[tree_name]["warm"],
                          explain=False)
                    if shots is not None and run == 0:
                        shots.mkdir(parents=True, exist_ok=True)
                        driver.save_screenshot(str(shots / f"{slug}-{tree_name}.png"))
                finally:
                    driver.quit()
                    shutil.rmtree(profile, ignore_errors=True)
        for tree_name in trees:
            for kind in ("cold", "warm"):
                show(f"{tree_name} {kind}", out[tree_name][kind])
        return out
    finally:
        for proc in reversed(procs):
            stop(proc)
        for handle in logs:
            handle.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3, help="cold browsers per graph (default 3)")
    p.add_argument("--baseline", type=Path, default=None,
                   help="also run the dashboard of this checkout (before/after in one run)")
    p.add_argument("--only", choices=("demo", "1238", "5000"), action="append",
                   help="run only these graphs (repeatable)")
    p.add_argument("--screenshots", type=Path, default=None,
                   help="save a PNG of each graph at the end of the first run")
    p.add_argument("--verbose", action="store_true",
                   help="list each bundle and callback request of the breakdown")
    args = p.parse_args()
    global VERBOSE
    VERBOSE = args.verbose
    if not Path("/usr/bin/chromium").exists():
        print("render.py: /usr/bin/chromium is missing (apt-get install chromium "
              "chromium-driver)", file=sys.stderr)
        return 1
    trees = {"new": ROOT}
    if args.baseline is not None:
        trees = {"baseline": args.baseline.resolve(), "new": ROOT}
    large = LARGE if LARGE.exists() else LARGE_FALLBACK
    cases = [Case("demo shop (catalog)", shop_deps(), ROOT / "catalog" / "catalog-info.yaml",
                  "checkout")]
    if large.exists():
        cases.append(Case("jaeger large (1,238 services, 60 teams)",
                          json.loads(large.read_text()), None, "Service50", spread_over(60)))
    else:
        print(f"render.py: {LARGE} not found; the 1,238-service graph is skipped",
              file=sys.stderr)
    deps5k, team5k = synthetic(5000, 100)
    cases.append(Case("synthetic (5,000 services, 100 teams)", deps5k, None, "svc-0042",
                      team5k))
    keys = {"demo": "demo", "1238": "1,238", "5000": "5,000"}
    if args.only:
        cases = [c for c in cases if any(keys[o] in c.name for o in args.only)]
    with tempfile.TemporaryDirectory() as d:
        for case in cases:
            run_case(case, trees, args.runs, Path(d), args.screenshots)
    print("targets: cold first draw <= 1,500 ms (1,238 services), <= 800 ms (demo), "
          "<= 3,000 ms (5,000 services); search -> focus <= 500 ms; open team <= 500 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())

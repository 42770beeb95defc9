/*
 * The overview's Cytoscape elements, built in the browser from the graph store.
 *
 * The refresh sends the graph once, compactly (`state.wire_graph`: rows, edges by node
 * index); every view of it -- the whole graph with teams folded or opened, a searched
 * service's neighbourhood, the blast-radius highlight -- is built here, so opening a team or
 * searching needs no server round trip. `buildElements` mirrors dashboard/elements.py
 * `build_elements` (which draws the page's first picture on the server) and `focusElements`
 * mirrors `focus_elements` with positions.py `focus_layout`: keep them in step; a browser
 * test compares both sides element for element.
 * Service names are untrusted: they only ever become Cytoscape data (drawn on a canvas),
 * never HTML.
 */
(function () {
  'use strict';

  const HEALTH_COLORS = {
    healthy: '#2f9e44', degraded: '#f59f00', failing: '#e03131', down: '#5c0011',
    unknown: '#adb5bd',
  };
  const HEALTH_RANK = {unknown: 0, healthy: 1, degraded: 2, failing: 3, down: 4};
  const BAD_HEALTH = new Set(['failing', 'down']);
  const COLLAPSE_THRESHOLD = 150;
  const DETAILED_LABEL_LIMIT = 60;
  const BULK_EDGES = 600;
  const FOCUS_DETAILED_LIMIT = 16;
  const FOCUS_CELL = {true: [260.0, 95.0], false: [170.0, 70.0]};
  const FOCUS_CANVAS = [1000.0, 480.0], FOCUS_FIT_PADDING = 30.0, FOCUS_LEGIBLE_PX = 12.0;
  const FOCUS_FONT = 12.0, FOCUS_FONT_MAX = 60.0, FOCUS_NODE = 40.0, FOCUS_CHAR_EM = 0.62;
  const FOCUS_METRICS_CHARS = 28, FOCUS_MAX_ZOOM = 4.0;
  const CELL_W = 140.0, CELL_H = 105.0, STAGGER = 0.28;
  const ORPHAN_GROUP = '(no team)', EXTERNAL_GROUP = '(dependencies)';
  const BIDI = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

  function displayText(value) {
    return String(value).replace(BIDI, c => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'));
  }
  function num(x) { return typeof x === 'number' && isFinite(x); }
  // Python's f"{x:.{d}f}": a value exactly halfway (3.25) rounds to even there ("3.2"), where
  // toFixed rounds it up ("3.3"). The exact decimal expansion tells a true tie.
  function fixed(x, d) {
    const exact = x.toFixed(Math.min(100, d + 25));
    if (exact.endsWith('5' + '0'.repeat(24))) {
      const head = exact.slice(0, exact.length - 25).replace(/\.$/, '');
      if ('02468'.includes(head[head.length - 1])) { return head; }
    }
    return x.toFixed(d);
  }
  function fmtRate(r) { return !num(r) ? '–' : (r < 100 ? fixed(r, 1) : fixed(r, 0)) + ' rps'; }
  function fmtPct(r) { return !num(r) ? '–' : fixed(r * 100, 1) + '%'; }
  function fmtMs(ms) { return !num(ms) ? '–' : (ms >= 10 ? fixed(ms, 0) : fixed(ms, 1)) + ' ms'; }
  function metricsLine(item) {
    return [fmtRate(item.rate_rps), fmtPct(item.error_ratio), 'p95 ' + fmtMs(item.p95_ms)]
      .join(' · ');
  }
  function healthColor(h) { return HEALTH_COLORS[String(h)] || HEALTH_COLORS.unknown; }
  function edgeColor(ratio) {
    const r = num(ratio) ? ratio : 0;
    return r >= 0.05 ? '#e03131' : (r >= 0.01 ? '#f59f00' : '#868e96');
  }
  // elements.py edge_width: a fixed scale in half-pixel steps (see there why).
  const WIDTH_FULL_RPS = 1000.0;
  function edgeWidth(rate) {
    const share = Math.min(1.0, Math.log1p(Math.max(rate, 0.0)) / Math.log1p(WIDTH_FULL_RPS));
    return Math.floor((1.5 + 6.5 * share) * 2 + 0.5) / 2;
  }
  function round1(x) { return Math.round(x * 10) / 10; }
  // Python's json.dumps (ASCII only, ", " between items): the edge ids the server makes.
  function pyJson(text) {
    return JSON.stringify(text).replace(/[\u007f-\uffff]/g,
      c => c === '\u007f' ? c : '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'));
  }
  function edgeId(src, dst) { return 'e:[' + pyJson(src) + ', ' + pyJson(dst) + ']'; }
  function byText(a, b) { return a < b ? -1 : (a > b ? 1 : 0); }
  function worstHealth(healths) {
    let worst = 'unknown';
    for (const h of healths) {
      if ((HEALTH_RANK[h] || 0) > HEALTH_RANK[worst]) { worst = h; }
    }
    return worst;
  }

  function virtualKind(id, edges) {
    if (id === 'user') { return 'user'; }
    return edges.some(e => e.target === id && e.connection_type === 'database')
      ? 'database' : 'external';
  }

  // The graph store (state.wire_graph) as the API's node and edge objects, once per graph.
  const NODE_KEYS = ['id', 'kind', 'team', 'health', 'rate_rps', 'error_ratio', 'p95_ms',
    'no_traces'];
  const EDGE_KEYS = ['source', 'target', 'connection_type', 'rate_rps', 'error_ratio',
    'p95_ms', 'traced'];
  let decodedFrom = null, decoded = null;
  function decode(wire) {
    if (!wire || !wire.nodes) { return null; }
    if (wire === decodedFrom) { return decoded; }
    const groups = wire.groups || [];
    const nodes = wire.nodes.map(row => {
      const n = {};
      NODE_KEYS.forEach((k, i) => { if (row[i] !== null && row[i] !== undefined) { n[k] = row[i]; } });
      Object.defineProperty(n, 'group', {value: groups[row[NODE_KEYS.length]], enumerable: false});
      return n;
    });
    const name = x => typeof x === 'number' ? wire.nodes[x][0] : x;
    const edges = (wire.edges || []).map(row => {
      const e = {};
      EDGE_KEYS.forEach((k, i) => {
        const v = i < 2 ? name(row[i]) : row[i];
        if (v !== null && v !== undefined) { e[k] = v; }
      });
      return e;
    });
    decodedFrom = wire;
    decoded = {generated_at: wire.generated_at, window_s: wire.window_s, nodes: nodes,
      edges: edges};
    return decoded;
  }

  function nodeNames(graph) {
    return ((graph && graph.nodes) || []).filter(n => n.id !== undefined && n.id !== null)
      .map(n => String(n.id));
  }

  function serviceNode(n, name, group, gid, isOrphan, edges, detailed, selected) {
    const health = String(n.health === undefined ? 'unknown' : n.health);
    const classes = [health];
    if (n.kind === 'virtual') {
      classes.push('virtual', virtualKind(name, edges));
    } else {
      classes.push('service');
      if (isOrphan) { classes.push('orphan'); }
    }
    if (n.no_traces) { classes.push('no-traces'); }
    const id = 's:' + name;
    if (selected === id) { classes.push('picked'); }
    const label = displayText(name) + (n.no_traces ? '\n(no traces)' : '')
      + (detailed ? '\n' + metricsLine(n) : '');
    return {
      data: {id: id, parent: gid, name: name, label: label,
        kind: String(n.kind === undefined ? 'service' : n.kind),
        team: n.team === undefined ? null : n.team, health: health, color: healthColor(health),
        group: group},
      classes: classes.join(' '),
    };
  }

  // elements.py _edges: calls between what each service is drawn as, aggregated, and how many
  // calls between folded team boxes were left out.
  const FOLDED_EDGE_LIMIT = 300;
  function edgeElements(edges, shownAs, detailed, selected, lit, folded) {
    const agg = new Map();
    for (const e of edges) {
      const src = shownAs.get(String(e.source)), dst = shownAs.get(String(e.target));
      if (src === undefined || dst === undefined || (src === dst && src.startsWith('g:'))) {
        continue;
      }
      const key = src + '\u0000' + dst;
      const rate = num(e.rate_rps) ? e.rate_rps : 0;
      const ratio = num(e.error_ratio) ? e.error_ratio : 0;
      const cur = agg.get(key);
      if (cur === undefined) {
        agg.set(key, {src: src, dst: dst, rate: rate, errors: rate * ratio,
          p95: e.p95_ms === undefined ? null : e.p95_ms,
          pairs: [[String(e.source), String(e.target)]], meshOnly: e.traced === false});
      } else {
        cur.meshOnly = cur.meshOnly && e.traced === false;
        cur.rate += rate;
        cur.errors += rate * ratio;
        if (num(e.p95_ms) && (cur.p95 === null || e.p95_ms > cur.p95)) { cur.p95 = e.p95_ms; }
        cur.pairs.push([String(e.source), String(e.target)]);
      }
    }
    let drawn = [];
    for (const key of [...agg.keys()].sort(byText)) {
      const a = agg.get(key);
      const ratio = a.rate > 0 ? a.errors / a.rate : 0;
      let sName, tName, id;
      if (a.pairs.length === 1) {
        [sName, tName] = a.pairs[0];
        id = edgeId(sName, tName);
      } else {
        sName = a.src; tName = a.dst;
        id = 'e:[' + pyJson(a.src) + ', ' + pyJson(a.dst) + ', "agg"]';
      }
      drawn.push({a: a, ratio: ratio, id: id, sName: sName, tName: tName});
    }
    let hidden = 0;
    const between = drawn.filter(d => folded.has(d.a.src) && folded.has(d.a.dst));
    if (between.length > FOLDED_EDGE_LIMIT) {
      const kept = d => d.ratio >= 0.01 || d.id === selected
        || (lit.size > 0 && lit.has(d.sName) && lit.has(d.tName));
      const must = between.filter(kept);
      const rest = between.filter(d => !kept(d))
        .sort((x, y) => (y.a.rate - x.a.rate) || byText(x.id, y.id));
      const dropped = new Set(rest.slice(Math.max(0, FOLDED_EDGE_LIMIT - must.length))
        .map(d => d.id));
      hidden = dropped.size;
      drawn = drawn.filter(d => !dropped.has(d.id));
    }
    const bulk = drawn.length > BULK_EDGES;
    const out = [];
    for (const {a, ratio, id, sName, tName} of drawn) {
      const classes = bulk ? ['bulk'] : [];
      if (a.meshOnly) { classes.push('mesh-only'); }
      if (selected === id) { classes.push('picked'); }
      if (lit.size) { classes.push(lit.has(sName) && lit.has(tName) ? 'blast' : 'faded'); }
      out.push({
        data: {id: id, source: a.src, target: a.dst,
          label: detailed ? metricsLine({rate_rps: a.rate, error_ratio: ratio, p95_ms: a.p95})
            : '',
          width: edgeWidth(a.rate), color: edgeColor(ratio), calls: a.pairs.length},
        classes: classes.join(' '),
      });
    }
    return [out, hidden];
  }

  // positions.py focus_layout: the positions and the label size that keeps them legible.
  function focusLayout(focus, callers, callees, detailed) {
    const left = [...callers].filter(n => n !== focus).sort(byText);
    const leftSet = new Set(left);
    const right = [...callees].filter(n => n !== focus && !leftSet.has(n)).sort(byText);
    let chars = Math.min(40, Math.max(...[focus, ...left, ...right].map(n => [...n].length)));
    let lines = 1;
    if (detailed) { chars = Math.max(chars, FOCUS_METRICS_CHARS); lines = 2; }
    const [baseDx, baseDy] = FOCUS_CELL[detailed];
    const longest = Math.max(left.length, right.length, 1);
    let font = FOCUS_FONT, rows = 1, dx = baseDx, dy = baseDy, shown = 0.0;
    for (let k = 0; k < 8; k++) {
      const labelW = FOCUS_CHAR_EM * font * chars;
      const textH = 1.25 * font * lines;
      dx = Math.max(baseDx, labelW + 30.0);
      dy = Math.max(baseDy, FOCUS_NODE + 12.0 + textH);
      let bestZoom = -1.0, bestR = 0;
      for (let r = 1; r <= longest; r++) {
        const cols = Math.ceil(left.length / r) + Math.ceil(right.length / r);
        const width = cols * dx + Math.max(FOCUS_NODE, labelW);
        const height = (Math.min(r, longest) - 1) * dy + FOCUS_NODE + 4.0 + textH;
        const zoom = Math.min(FOCUS_MAX_ZOOM, (FOCUS_CANVAS[0] - 2 * FOCUS_FIT_PADDING) / width,
          (FOCUS_CANVAS[1] - 2 * FOCUS_FIT_PADDING) / height);
        if (zoom > bestZoom || (zoom === bestZoom && r > bestR)) { bestZoom = zoom; bestR = r; }
      }
      rows = bestR;
      if (font * bestZoom >= 0.97 * FOCUS_LEGIBLE_PX || font >= FOCUS_FONT_MAX
          || font * bestZoom < 1.05 * shown) {
        break;
      }
      shown = font * bestZoom;
      font = Math.min(FOCUS_FONT_MAX, FOCUS_LEGIBLE_PX / bestZoom);
    }
    const out = {[focus]: {x: 0, y: 0}};
    for (const [side, names] of [[-1, left], [1, right]]) {
      names.forEach((name, i) => {
        const col = Math.floor(i / rows), row = i % rows;
        const inCol = Math.min(rows, names.length - col * rows);
        out[name] = {x: side * dx * (col + 1), y: (row - (inCol - 1) / 2) * dy};
      });
    }
    return [out, Math.round(font * 10) / 10];
  }

  // elements.py focus_elements: a searched service with its callers and callees only, each
  // in its box kept as an invisible "ghost" parent (see there why). ``graph`` is decoded.
  function focusElements(graph, focus, selected) {
    const nodes = (graph.nodes || []).filter(n => n.id !== undefined && n.id !== null);
    const edges = (graph.edges || []).filter(e => e.source !== undefined && e.target !== undefined);
    const callers = new Set(), callees = new Set();
    for (const e of edges) {
      if (e.target === focus) { callers.add(String(e.source)); }
      if (e.source === focus) { callees.add(String(e.target)); }
    }
    const all = new Set([...callers, ...callees, focus]);
    const detailed = all.size <= FOCUS_DETAILED_LIMIT;
    const [place, font] = focusLayout(focus, callers, callees, detailed);
    const kept = nodes.filter(n => Object.prototype.hasOwnProperty.call(place, String(n.id)))
      .sort((a, b) => byText(String(a.id), String(b.id)));
    const ghosts = new Map();
    const out = [];
    const shownAs = new Map();
    for (const n of kept) {
      const name = String(n.id);
      const group = n.group, gid = 'g:' + group;
      const el = serviceNode(n, name, group, gid, group.startsWith(ORPHAN_GROUP), edges,
        detailed, selected);
      if (group === EXTERNAL_GROUP) {
        delete el.data.parent;
      } else if (!ghosts.has(gid)) {
        ghosts.set(gid, {data: {id: gid, group: group, kind: 'ghost', label: ''},
          classes: 'ghost', selectable: false});
      }
      if (name === focus) { el.classes += ' focus'; }
      if (font > FOCUS_FONT) { el.classes += ' in-focus'; el.data.font = font; }
      el.position = place[name];
      out.push(el);
      shownAs.set(name, 's:' + name);
    }
    const near = edges.filter(e => (e.source === focus || e.target === focus)
      && shownAs.has(String(e.source)) && shownAs.has(String(e.target)));
    return [...ghosts.keys()].sort(byText).map(g => ghosts.get(g)).concat(out,
      edgeElements(near, shownAs, detailed, selected, new Set(), new Set())[0]);
  }

  function groupRank(group) {
    if (group.startsWith('team:')) { return 0; }
    return group.startsWith(ORPHAN_GROUP) ? 1 : 2;
  }
  function boxSize(box) { return [box.cols * CELL_W, (box.rows + STAGGER) * CELL_H]; }
  function memberPosition(pos, group, id) {
    const box = (pos.groups || {})[group];
    const slots = (pos.members || {})[group] || {};
    if (!box || !Object.prototype.hasOwnProperty.call(slots, id)) { return null; }
    const slot = slots[id];
    const col = slot % box.cols, row = Math.floor(slot / box.cols);
    return {x: box.x + (col + 0.5) * CELL_W,
      y: box.y + (row + 0.5 + (col % 2 ? STAGGER : 0.0)) * CELL_H};
  }

  function collapsedNode(group, gid, title, groupNodes, pos, selected, lit) {
    const healths = groupNodes.map(n => String(n.health === undefined ? 'unknown' : n.health));
    const health = worstHealth(healths);
    const bad = healths.filter(h => BAD_HEALTH.has(h)).length;
    const label = displayText(title) + '\n' + groupNodes.length + ' services'
      + (bad ? ' · ' + bad + ' failing' : '');
    const classes = ['collapsed', health];
    if (group.startsWith(ORPHAN_GROUP)) { classes.push('orphan'); }
    if (selected === gid) { classes.push('picked'); }
    if (lit.size && groupNodes.some(n => lit.has(String(n.id)))) {
      classes.push('impacted');
    } else if (lit.size) {
      classes.push('faded');
    }
    const el = {
      data: {id: gid, label: label, group: group, kind: 'collapsed', health: health,
        color: healthColor(health), count: groupNodes.length},
      classes: classes.join(' '),
    };
    const box = (pos.groups || {})[group];
    if (box) {
      const [w, h] = boxSize(box);
      const size = round1(Math.max(60.0, 0.7 * Math.min(w, h)));
      el.position = {x: box.x + w / 2, y: box.y + h / 2};
      el.data.size = size;
      el.data.font = round1(Math.max(14.0, size / 7));
    }
    return el;
  }

  function applyHighlight(elements, highlight) {
    if (!highlight || !highlight.root) { return; }
    const root = String(highlight.root);
    const impacted = new Set((highlight.impacted || []).map(String));
    for (const el of elements) {
      const d = el.data;
      if (d.source !== undefined || d.kind === 'group' || d.kind === 'collapsed') { continue; }
      const role = d.name === root ? 'root-cause' : (impacted.has(d.name) ? 'impacted' : 'faded');
      el.classes = el.classes ? el.classes + ' ' + role : role;
    }
  }

  // elements.py build_view, for a graph store (wire form): [elements, calls not drawn].
  function buildView(wire, pos, opts) {
    const graph = decode(wire);
    if (!graph) { return [[], 0]; }
    const o = opts || {};
    pos = pos || {groups: {}, members: {}};
    const nodes = graph.nodes.filter(n => n.id !== undefined && n.id !== null);
    const edges = graph.edges;
    const selected = o.selected === undefined ? null : o.selected;
    if (o.focus !== undefined && o.focus !== null
        && nodes.some(n => String(n.id) === o.focus)) {
      return [focusElements(graph, o.focus, selected), 0];
    }
    const collapse = nodes.length > COLLAPSE_THRESHOLD;
    const open = new Set(o.expanded || []);
    const highlight = o.highlight || null;
    const root = highlight && highlight.root ? String(highlight.root) : null;
    const lit = new Set(root ? [root, ...(highlight.impacted || []).map(String)] : []);
    const detailed = nodes.length <= DETAILED_LABEL_LIMIT;
    const names = o.teamNames || {};
    const members = new Map();
    for (const n of nodes) {
      if (!members.has(n.group)) { members.set(n.group, []); }
      members.get(n.group).push(n);
    }
    const groups = [...members.keys()].sort((a, b) => (groupRank(a) - groupRank(b))
      || byText(a, b));
    const outNodes = [];
    const shownAs = new Map();
    for (const group of groups) {
      const groupNodes = members.get(group).slice()
        .sort((a, b) => byText(String(a.id), String(b.id)));
      const gid = 'g:' + group;
      const isOrphans = group.startsWith(ORPHAN_GROUP);
      const team = group.startsWith('team:') ? group.slice(5) : group;
      const title = group.startsWith('team:') && Object.prototype.hasOwnProperty.call(names, team)
        ? names[team] : team;
      if (collapse && !open.has(group)) {
        outNodes.push(collapsedNode(group, gid, title, groupNodes, pos, selected, lit));
        for (const n of groupNodes) { shownAs.set(String(n.id), gid); }
        continue;
      }
      if (group !== EXTERNAL_GROUP) {
        const classes = ['team'];
        if (isOrphans) { classes.push('orphans'); }
        if (collapse) { classes.push('expanded'); }
        outNodes.push({
          data: {id: gid, label: displayText(title) + (collapse ? ' (tap the box to fold)' : ''),
            group: group, kind: 'group'},
          classes: classes.join(' '),
          selectable: true,
        });
      }
      for (const n of groupNodes) {
        const name = String(n.id);
        const place = memberPosition(pos, group, name);
        const el = serviceNode(n, name, group, gid, isOrphans, edges, detailed, selected);
        if (group === EXTERNAL_GROUP) { delete el.data.parent; }
        if (place !== null) { el.position = place; }
        outNodes.push(el);
        shownAs.set(name, 's:' + name);
      }
    }
    applyHighlight(outNodes, highlight);
    const folded = new Set(outNodes.filter(n => n.data.kind === 'collapsed').map(n => n.data.id));
    const [outEdges, hidden] = edgeElements(edges, shownAs, detailed, selected, lit, folded);
    return [outNodes.concat(outEdges), hidden];
  }
  function buildElements(wire, pos, opts) { return buildView(wire, pos, opts)[0]; }

  // elements.py on_tap: select what was tapped; a folded team opens, an opened one folds.
  function onTap(view, data) {
    const v = Object.assign({}, view || {selected: null, expanded: [], focus: null, fit: 0});
    if (!data) { return v; }
    const expanded = (v.expanded || []).slice();
    if (data.kind === 'collapsed') {
      if (!expanded.includes(String(data.group))) { expanded.push(String(data.group)); }
      v.expanded = expanded;
    } else if (data.kind === 'group' && expanded.includes(String(data.group))) {
      v.expanded = expanded.filter(g => g !== data.group);
    }
    v.selected = String(data.id);
    return v;
  }

  // overview.py render: a highlight lasts while its incident is open, and opens the folded
  // team its root cause is in.
  function viewOptions(wire, state, view, highlight) {
    const v = view || {};
    const roots = new Set(((state && state.incidents) || [])
      .map(i => String((i.root_cause || {}).service)));
    const hl = highlight && roots.has(String(highlight.root)) ? highlight : null;
    const expanded = (v.expanded || []).slice();
    if (hl) {
      const graph = decode(wire);
      const groups = new Set(graph.nodes.filter(n => String(n.id) === String(hl.root))
        .map(n => n.group));
      expanded.push(...[...groups].sort(byText));
    }
    return {expanded: expanded, focus: v.focus === undefined ? null : v.focus,
      selected: v.selected === undefined ? null : v.selected, highlight: hl,
      teamNames: (state && state.team_names) || {}};
  }

  // overview.py hidden_note: what the folded view leaves out, said under the graph.
  function hiddenNote(hidden) {
    return hidden > 0 ? hidden.toLocaleString('en-US') + ' quieter calls between folded '
      + 'teams not drawn (open a team to see its calls)' : '';
  }

  window.conwayGraph = {
    decode: decode, nodeNames: nodeNames, displayText: displayText, byText: byText,
    focusElements: focusElements, buildElements: buildElements, buildView: buildView,
    onTap: onTap, hiddenNote: hiddenNote,
    viewOptions: viewOptions,
  };
})();

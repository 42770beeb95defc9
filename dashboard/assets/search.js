/*
 * The overview's search, answered in the browser: the graph is already in the state store,
 * so suggestions and the focused view need no server round trip.
 *
 * focusElements mirrors dashboard/elements.py focus_elements and dashboard/positions.py
 * focus_layout (a refresh rebuilds the same view on the server): keep them in step.
 * Service names are untrusted: they only ever become Cytoscape data (drawn on a canvas),
 * <option value> attributes and text children, never HTML.
 */
(function () {
  'use strict';

  const HEALTH_COLORS = {
    healthy: '#2f9e44', degraded: '#f59f00', failing: '#e03131', down: '#5c0011',
    unknown: '#adb5bd',
  };
  const DETAILED_LABEL_LIMIT = 60;
  const BULK_EDGES = 600;
  const FOCUS_CELL = {true: [260.0, 95.0], false: [170.0, 70.0]};
  const FOCUS_MIN_ROWS = 8;
  const FIT = {name: 'preset', fit: true, padding: 30, animate: false};
  const SUGGESTIONS = 12;
  const BIDI = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

  // Where the whole graph was when a search left it (elements are large: kept here, not in
  // a store that would be copied on every change).
  let wholeElements = null;
  let wholeViewport = null;
  let lastTyped = '';
  // A search made before the first refresh brought the graph: answered when it does.
  let pending = null;

  function displayText(value) {
    return String(value).replace(BIDI, c => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'));
  }
  function num(x) { return typeof x === 'number' && isFinite(x); }
  function fmtRate(r) { return !num(r) ? '–' : (r < 100 ? r.toFixed(1) : r.toFixed(0)) + ' rps'; }
  function fmtPct(r) { return !num(r) ? '–' : (r * 100).toFixed(1) + '%'; }
  function fmtMs(ms) { return !num(ms) ? '–' : (ms >= 10 ? ms.toFixed(0) : ms.toFixed(1)) + ' ms'; }
  function metricsLine(item) {
    return [fmtRate(item.rate_rps), fmtPct(item.error_ratio), 'p95 ' + fmtMs(item.p95_ms)]
      .join(' · ');
  }
  function healthColor(h) { return HEALTH_COLORS[String(h)] || HEALTH_COLORS.unknown; }
  function edgeColor(ratio) {
    const r = num(ratio) ? ratio : 0;
    return r >= 0.05 ? '#e03131' : (r >= 0.01 ? '#f59f00' : '#868e96');
  }
  function edgeWidth(rate, maxRate) {
    if (maxRate <= 0) { return 1.5; }
    return Math.round((1.5 + 6.5 * Math.log1p(Math.max(rate, 0)) / Math.log1p(maxRate)) * 100)
      / 100;
  }
  // Python's json.dumps (ASCII only, ", " between items): the edge ids the server makes.
  function pyJson(text) {
    return JSON.stringify(text).replace(/[\u007f-\uffff]/g,
      c => c === '\u007f' ? c : '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'));
  }
  function edgeId(src, dst) { return 'e:[' + pyJson(src) + ', ' + pyJson(dst) + ']'; }
  function byText(a, b) { return a < b ? -1 : (a > b ? 1 : 0); }

  function virtualKind(id, edges) {
    if (id === 'user') { return 'user'; }
    return edges.some(e => e.target === id && e.connection_type === 'database')
      ? 'database' : 'external';
  }

  function nodeNames(graph) {
    return ((graph && graph.nodes) || []).filter(n => n.id !== undefined && n.id !== null)
      .map(n => String(n.id));
  }

  // Exact name first, then the shortest name containing the query (case-insensitive).
  function findService(graph, query) {
    const q = query.trim().toLowerCase();
    if (!q) { return null; }
    const names = nodeNames(graph).sort(byText);
    const exact = names.find(n => n.toLowerCase() === q);
    if (exact !== undefined) { return exact; }
    const hits = names.filter(n => n.toLowerCase().includes(q));
    hits.sort((a, b) => (a.length - b.length) || byText(a, b));
    return hits.length ? hits[0] : null;
  }

  function focusLayout(focus, callers, callees, detailed) {
    const [dx, dy] = FOCUS_CELL[detailed];
    const out = {[focus]: {x: 0, y: 0}};
    const left = [...callers].filter(n => n !== focus).sort(byText);
    const leftSet = new Set(left);
    const right = [...callees].filter(n => n !== focus && !leftSet.has(n)).sort(byText);
    for (const [side, names] of [[-1, left], [1, right]]) {
      const rows = Math.max(FOCUS_MIN_ROWS, Math.ceil(Math.sqrt(names.length * dx / dy)));
      names.forEach((name, i) => {
        const col = Math.floor(i / rows), row = i % rows;
        const inCol = Math.min(rows, names.length - col * rows);
        out[name] = {x: side * dx * (col + 1), y: (row - (inCol - 1) / 2) * dy};
      });
    }
    return out;
  }

  function focusElements(graph, focus, selected) {
    const nodes = (graph.nodes || []).filter(n => n.id !== undefined && n.id !== null);
    const edges = (graph.edges || []).filter(e => e.source !== undefined && e.target !== undefined);
    const callers = new Set(), callees = new Set();
    for (const e of edges) {
      if (e.target === focus) { callers.add(String(e.source)); }
      if (e.source === focus) { callees.add(String(e.target)); }
    }
    const all = new Set([...callers, ...callees, focus]);
    const detailed = all.size <= DETAILED_LABEL_LIMIT;
    const place = focusLayout(focus, callers, callees, detailed);
    const kept = nodes.filter(n => String(n.id) in place)
      .sort((a, b) => byText(String(a.id), String(b.id)));
    const out = [];
    for (const n of kept) {
      const name = String(n.id);
      const health = String(n.health === undefined ? 'unknown' : n.health);
      const classes = [health];
      if (n.kind === 'virtual') {
        classes.push('virtual', virtualKind(name, edges));
      } else {
        classes.push('service');
        if (!n.team) { classes.push('orphan'); }
      }
      if (n.no_traces) { classes.push('no-traces'); }
      const id = 's:' + name;
      if (selected === id) { classes.push('picked'); }
      if (name === focus) { classes.push('focus'); }
      const label = displayText(name) + (n.no_traces ? '\n(no traces)' : '')
        + (detailed ? '\n' + metricsLine(n) : '');
      out.push({
        data: {id: id, name: name, label: label, kind: String(n.kind === undefined ? 'service'
          : n.kind), team: n.team === undefined ? null : n.team, health: health,
          color: healthColor(health)},
        classes: classes.join(' '),
        position: place[name],
      });
    }
    const near = edges.filter(e => (e.source === focus || e.target === focus)
      && String(e.source) in place && String(e.target) in place);
    const agg = new Map();
    for (const e of near) {
      const key = 's:' + e.source + '\u0000s:' + e.target;
      if (!agg.has(key)) { agg.set(key, []); }
      agg.get(key).push(e);
    }
    const rate = e => num(e.rate_rps) ? e.rate_rps : 0;
    const maxRate = Math.max(0, ...near.map(rate));
    const bulk = agg.size > BULK_EDGES;
    const keys = [...agg.keys()].sort(byText);
    for (const key of keys) {
      const group = agg.get(key);
      const e = group[0];
      const r = group.reduce((s, x) => s + rate(x), 0);
      const errors = group.reduce((s, x) => s + rate(x) * (num(x.error_ratio) ? x.error_ratio
        : 0), 0);
      const ratio = r > 0 ? errors / r : 0;
      const id = edgeId(String(e.source), String(e.target));
      const classes = bulk ? ['bulk'] : [];
      if (group.every(x => x.traced === false)) { classes.push('mesh-only'); }
      if (selected === id) { classes.push('picked'); }
      out.push({
        data: {id: id, source: 's:' + e.source, target: 's:' + e.target,
          label: detailed ? metricsLine({rate_rps: r, error_ratio: ratio, p95_ms: e.p95_ms})
            : '',
          width: edgeWidth(r, maxRate), color: edgeColor(ratio), calls: group.length},
        classes: classes.join(' '),
      });
    }
    return out;
  }

  function findCy() {
    const root = document.getElementById('ov-graph');
    if (!root) { return null; }
    for (const el of [root, ...root.querySelectorAll('*')]) {
      if (el._cyreg && el._cyreg.cy) { return el._cyreg.cy; }
    }
    return null;
  }

  // Run ``action`` on the graph once ``ready`` says the new elements are in (Dash applies a
  // callback's outputs a moment after it returns, and a late refresh can come between).
  function whenDrawn(ready, action) {
    let frames = 0;
    function step() {
      const cy = findCy();
      if (cy && ready(cy)) { action(cy); return; }
      if (++frames < 600) { requestAnimationFrame(step); }
    }
    requestAnimationFrame(step);
  }

  function noUpdate(n) { return Array(n).fill(window.dash_clientside.no_update); }

  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    conway: {
      // The focus view for a graph (also read by the tests, against elements.focus_elements).
      focusElements: focusElements,

      // The server's elements, unless the view changed while they were being built.
      serverElements: function (data, view) {
        if (!data) { return window.dash_clientside.no_update; }
        const v = view || {};
        const now = [v.focus === undefined ? null : v.focus, v.expanded || [],
          v.selected === undefined ? null : v.selected];
        return JSON.stringify(now) === JSON.stringify(data.view) ? data.elements
          : window.dash_clientside.no_update;
      },

      suggest: function (value, state) {
        const q = (value || '').trim().toLowerCase();
        if (!q || !state || !state.graph) { return []; }
        const names = nodeNames(state.graph).filter(n => n.toLowerCase().includes(q));
        names.sort((a, b) => (b.toLowerCase().startsWith(q) - a.toLowerCase().startsWith(q))
          || (a.length - b.length) || byText(a, b));
        return names.slice(0, SUGGESTIONS).map(name => ({
          type: 'Option', namespace: 'dash_html_components', props: {value: name}}));
      },

      focus: function (_submit, value, state, elements, view, backTo) {
        const triggered = (window.dash_clientside.callback_context.triggered || [])
          .map(t => t.prop_id);
        const submitted = triggered.includes('ov-search.n_submit');
        const graph = state && state.graph;
        if (!submitted && !triggered.includes('ov-search.value')) {
          // A refresh: only a search waiting for the graph has anything to do.
          if (pending === null || !graph) { return noUpdate(5); }
        }
        const typed = value || '';
        const previous = lastTyped;
        lastTyped = typed;
        let q = typed.trim();
        if (!graph) {
          if (submitted) { pending = q; }
          return noUpdate(5);
        }
        if (pending !== null && !submitted && !triggered.includes('ov-search.value')) {
          q = pending;
        } else if (!submitted) {
          // Typing adds a character at a time; a whole name at once is a suggestion picked.
          const picked = Math.abs(q.length - previous.trim().length) > 1
            && nodeNames(graph).includes(q);
          if (!picked) { return noUpdate(5); }
        }
        pending = null;
        if (!q) { return noUpdate(5); }
        const name = findService(graph, q);
        if (name === null) {
          return [...noUpdate(4), 'no service matches “' + displayText(q) + '”'];
        }
        const current = Object.assign({selected: null, expanded: [], focus: null, fit: 0},
          view || {});
        // Remember the whole view when leaving it. Decided from what is drawn, not from the
        // view store: two searches in one moment both see the store without a focus.
        const showingFocus = (elements || []).some(
          e => typeof e.classes === 'string' && e.classes.split(' ').includes('focus'));
        let back = window.dash_clientside.no_update;
        if (!showingFocus || wholeElements === null) {
          const cy = findCy();
          wholeElements = elements || [];
          wholeViewport = cy ? {zoom: cy.zoom(), pan: cy.pan()} : {zoom: 1, pan: {x: 0, y: 0}};
          back = wholeViewport;
        }
        const fit = (current.fit || 0) + 1;
        const selected = 's:' + name;
        const next = Object.assign({}, current, {focus: name, selected: selected, fit: fit});
        const els = focusElements(graph, name, selected);
        const ids = new Set(els.filter(e => !e.data.source).map(e => e.data.id));
        // Fitted here, once exactly these nodes are drawn (not by a layout prop, which can
        // run before the elements change). ov-fitted = fit: the server will not fit again.
        whenDrawn(cy => cy.nodes().length === ids.size && cy.nodes().every(n => ids.has(n.id())),
          cy => cy.fit(cy.elements(), FIT.padding));
        return [els, next, fit, back, ''];
      },

      back: function (_n, view, backTo) {
        const to = wholeViewport || backTo;
        if (!to || wholeElements === null) { return noUpdate(4); }
        const current = Object.assign({}, view || {});
        current.focus = null;
        const whole = wholeElements;
        wholeElements = null;
        wholeViewport = null;
        const ids = new Set((whole || []).filter(e => !e.data.source).map(e => e.data.id));
        whenDrawn(cy => cy.nodes().length === ids.size && cy.nodes().every(n => ids.has(n.id())),
          cy => cy.viewport({zoom: to.zoom, pan: to.pan}));
        return [whole || window.dash_clientside.no_update, current, current.fit || 0, null];
      },
    },
  });
})();

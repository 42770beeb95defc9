/*
 * The overview's search and drawing, answered in the browser: the graph is already in the
 * graph store, so suggestions, the focused view, opening a folded team and each refresh's
 * redraw need no server round trip. The elements are built by assets/graph.js.
 * Service names are untrusted: they only ever become Cytoscape data (drawn on a canvas),
 * <option value> attributes and text children, never HTML.
 */
(function () {
  'use strict';

  const FIT = {name: 'preset', fit: true, padding: 30, animate: false};
  const SUGGESTIONS = 12;
  const G = () => window.conwayGraph;

  // Where the whole graph was when a search left it (elements are large: kept here, not in
  // a store that would be copied on every change).
  let wholeElements = null;
  let wholeViewport = null;
  let lastTyped = '';
  // A search made before the first refresh brought the graph: answered when it does.
  let pending = null;
  // What the graph on screen was built from (see draw).
  let drawnKey = null;

  // Exact name first, then the shortest name containing the query (case-insensitive).
  function findService(graph, query) {
    const q = query.trim().toLowerCase();
    if (!q) { return null; }
    const names = G().nodeNames(graph).sort(G().byText);
    const exact = names.find(n => n.toLowerCase() === q);
    if (exact !== undefined) { return exact; }
    const hits = names.filter(n => n.toLowerCase().includes(q));
    hits.sort((a, b) => (a.length - b.length) || G().byText(a, b));
    return hits.length ? hits[0] : null;
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

  function num(x) { return typeof x === 'number' && isFinite(x); }
  function noUpdate(n) { return Array(n).fill(window.dash_clientside.no_update); }

  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    conway: {
      // The focus view for a graph (also read by the tests, against elements.focus_elements).
      focusElements: (...a) => G().focusElements(...a),

      // The whole overview for the graph store, the layout state (positions, team names,
      // open incidents), the view and the highlight: every refresh, tap and highlight is
      // drawn here. ``drawn`` is the snapshot the page's layout drew on the server: an older
      // store (from before this visit) is not drawn over it, and the same one is not drawn
      // again.
      draw: function (wire, state, view, highlight, drawn) {
        if (!wire || !wire.nodes || !state) { return window.dash_clientside.no_update; }
        if (num(drawn) && num(wire.generated_at) && wire.generated_at < drawn) {
          return window.dash_clientside.no_update;
        }
        const opts = G().viewOptions(wire, state, view, highlight);
        const key = JSON.stringify([wire.generated_at, opts, state.at === undefined ? null
          : state.at, Object.keys((state.positions || {}).groups || {}).length]);
        const first = drawnKey === null;
        if (key === drawnKey) { return window.dash_clientside.no_update; }
        drawnKey = key;
        if (first && num(drawn) && wire.generated_at === drawn && !opts.focus
            && !opts.selected && !opts.highlight && !opts.expanded.length) {
          return window.dash_clientside.no_update; // the layout drew this very picture
        }
        return G().buildElements(wire, state.positions, opts);
      },

      // A tap selects; on a folded team it opens it, on an opened one folds it.
      tap: function (node, edge, view) {
        const triggered = (window.dash_clientside.callback_context.triggered || [])
          .map(t => t.prop_id);
        const data = triggered.includes('ov-graph.tapEdgeData') ? edge : node;
        return G().onTap(view, data);
      },

      suggest: function (value, wire) {
        const q = (value || '').trim().toLowerCase();
        const graph = G().decode(wire);
        if (!q || !graph) { return []; }
        const names = G().nodeNames(graph).filter(n => n.toLowerCase().includes(q));
        names.sort((a, b) => (b.toLowerCase().startsWith(q) - a.toLowerCase().startsWith(q))
          || (a.length - b.length) || G().byText(a, b));
        return names.slice(0, SUGGESTIONS).map(name => ({
          type: 'Option', namespace: 'dash_html_components', props: {value: name}}));
      },

      focus: function (_submit, value, wire, elements, view, backTo) {
        const triggered = (window.dash_clientside.callback_context.triggered || [])
          .map(t => t.prop_id);
        const submitted = triggered.includes('ov-search.n_submit');
        const graph = G().decode(wire);
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
            && G().nodeNames(graph).includes(q);
          if (!picked) { return noUpdate(5); }
        }
        pending = null;
        if (!q) { return noUpdate(5); }
        const name = findService(graph, q);
        if (name === null) {
          return [...noUpdate(4), 'no service matches “' + G().displayText(q) + '”'];
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
        const els = G().focusElements(graph, name, selected);
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

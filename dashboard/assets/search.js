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
      // The whole overview for the graph store, the layout state (positions, team names,
      // open incidents), the view and the highlight: every refresh, tap and highlight is
      // drawn here. ``drawn`` is the snapshot the page's layout drew on the server: an older
      // store (from before this visit) is not drawn over it, and the same one is not drawn
      // again.
      draw: function (wire, state, view, highlight, drawn) {
        if (!wire || !wire.nodes || !state) { return noUpdate(2); }
        if (num(drawn) && num(wire.generated_at) && wire.generated_at < drawn) {
          return noUpdate(2);
        }
        const opts = G().viewOptions(wire, state, view, highlight);
        const key = JSON.stringify([wire.generated_at, opts, state.at === undefined ? null
          : state.at, Object.keys((state.positions || {}).groups || {}).length]);
        const first = drawnKey === null;
        if (key === drawnKey) { return noUpdate(2); }
        drawnKey = key;
        if (first && num(drawn) && wire.generated_at === drawn && !opts.focus
            && !opts.selected && !opts.highlight && !opts.expanded.length) {
          return noUpdate(2); // the layout drew this very picture
        }
        const [elements, hidden] = G().buildView(wire, state.positions, opts);
        return [elements, G().hiddenNote(hidden)];
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

      // Enter (or a picked suggestion) focuses a service: the new view goes to ov-view, and
      // ``draw`` (the one writer of the elements) draws it; fitted here once it is drawn.
      focus: function (_submit, value, wire, view, backTo) {
        const triggered = (window.dash_clientside.callback_context.triggered || [])
          .map(t => t.prop_id);
        const submitted = triggered.includes('ov-search.n_submit');
        const graph = G().decode(wire);
        if (!submitted && !triggered.includes('ov-search.value')) {
          // A refresh: only a search waiting for the graph has anything to do.
          if (pending === null || !graph) { return noUpdate(4); }
        }
        const typed = value || '';
        const previous = lastTyped;
        lastTyped = typed;
        let q = typed.trim();
        if (!graph) {
          if (submitted) { pending = q; }
          return noUpdate(4);
        }
        if (pending !== null && !submitted && !triggered.includes('ov-search.value')) {
          q = pending;
        } else if (!submitted) {
          // Typing adds a character at a time; a whole name at once is a suggestion picked.
          const picked = Math.abs(q.length - previous.trim().length) > 1
            && G().nodeNames(graph).includes(q);
          if (!picked) { return noUpdate(4); }
        }
        pending = null;
        if (!q) { return noUpdate(4); }
        const name = findService(graph, q);
        if (name === null) {
          return [...noUpdate(3), 'no service matches “' + G().displayText(q) + '”'];
        }
        const current = Object.assign({selected: null, expanded: [], focus: null, fit: 0},
          view || {});
        // Leaving the whole graph: remember where it was (``ov-back-to`` is cleared on the
        // way back, by "Back" or "Show all").
        let back = window.dash_clientside.no_update;
        if (!backTo) {
          const cy = findCy();
          back = cy ? {zoom: cy.zoom(), pan: cy.pan()} : {zoom: 1, pan: {x: 0, y: 0}};
        }
        const fit = (current.fit || 0) + 1;
        const selected = 's:' + name;
        const next = Object.assign({}, current, {focus: name, selected: selected, fit: fit});
        const want = new Set(G().focusElements(graph, name, selected)
          .filter(e => !e.data.source && e.data.kind !== 'ghost').map(e => e.data.id));
        // Fitted here, once exactly these services are drawn (not by a layout prop, which can
        // run before the elements change). ov-fitted = fit: the server will not fit again.
        whenDrawn(cy => {
          const shown = cy.nodes().filter(n => !n.hasClass('ghost'));
          return shown.length === want.size && shown.every(n => want.has(n.id()));
        }, cy => cy.fit(cy.elements(), FIT.padding));
        return [next, fit, back, ''];
      },

      // Back to the whole graph, at the zoom and pan it had when the search left it.
      back: function (_n, view, backTo) {
        if (!backTo) { return noUpdate(3); }
        const current = Object.assign({}, view || {});
        current.focus = null;
        whenDrawn(cy => cy.nodes('.focus, .ghost').length === 0 && cy.nodes().length > 0,
          cy => cy.viewport({zoom: backTo.zoom, pan: backTo.pan}));
        return [current, current.fit || 0, null];
      },
    },
  });
})();

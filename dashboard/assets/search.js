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

  // Cytoscape caches where its canvas is on the page and re-reads it only on a window resize
  // or scroll; a banner, the Back button or the note under the toolbar moving the graph down
  // made every click land that far off (a team box's click took the call below it). Before
  // Cytoscape sees a press or a wheel, check where the canvas is and tell it if it moved.
  let seenCy = null, seenAt = null;
  function checkPlace() {
    const cy = findCy();
    if (!cy) { return; }
    const r = cy.container().getBoundingClientRect();
    const at = [r.left, r.top, r.width, r.height].join(',');
    if (cy !== seenCy || at !== seenAt) { cy.resize(); } // the first press: not known yet
    seenCy = cy;
    seenAt = at;
  }
  for (const type of ['mousedown', 'touchstart', 'wheel']) {
    document.addEventListener(type, e => {
      const root = document.getElementById('ov-graph');
      if (root && root.contains(e.target)) { checkPlace(); }
    }, {capture: true, passive: true});
  }

  function num(x) { return typeof x === 'number' && isFinite(x); }
  function noUpdate(n) { return Array(n).fill(window.dash_clientside.no_update); }

  // What ``draw`` last saw (graph store, state, highlight, the layout's snapshot): a tap, a
  // search and Back draw from it at once. A callback taking the graph or state store as an
  // input waits while a refresh is in flight (up to a second at 5,000 services), so those
  // three take neither: they draw with set_props, and ``draw`` (after the refresh) then
  // finds the same picture, or draws the new snapshot.
  let last = null;

  // The first graph, for a callback on it that may run before ``draw`` does.
  function seed(wire, state) {
    if (!last && wire && wire.nodes && state) {
      last = {wire: wire, state: state, highlight: null};
    }
  }

  // The picture for these inputs, or null when it is the one on screen.
  function paint(wire, state, view, highlight) {
    const opts = G().viewOptions(wire, state, view, highlight);
    const key = JSON.stringify([wire.generated_at, opts, state.at === undefined ? null
      : state.at, Object.keys((state.positions || {}).groups || {}).length]);
    if (key === drawnKey) { return null; }
    const first = drawnKey === null;
    drawnKey = key;
    return {opts: opts, first: first};
  }
  function build(wire, state, picture) {
    const [elements, hidden] = G().buildView(wire, state.positions, picture.opts);
    return [elements, G().hiddenNote(hidden)];
  }
  function drawNow(view) {
    if (!last) { return; }
    const picture = paint(last.wire, last.state, view, last.highlight);
    if (picture === null) { return; }
    const [elements, note] = build(last.wire, last.state, picture);
    window.dash_clientside.set_props('ov-graph', {elements: elements});
    window.dash_clientside.set_props('ov-hidden', {children: note});
  }

  // A search: the view for the service ``q`` names (with Back's viewport when leaving the
  // whole graph), drawn at once and fitted once drawn; outputs [view, fitted, back-to, msg].
  function focusOn(q, view) {
    const graph = G().decode(last.wire);
    const name = findService(graph, q);
    if (name === null) {
      return [...noUpdate(3), 'no service matches “' + G().displayText(q) + '”'];
    }
    const current = Object.assign({selected: null, expanded: [], focus: null, fit: 0},
      view || {});
    const cy = findCy();
    const selected = 's:' + name;
    if (cy && current.focus === name && current.selected === selected
        && cy.getElementById(selected).hasClass('focus')) {
      // Already shown (a name picked as typed, then its Enter): fit it again; a rebuild
      // would restyle every element (~0.3 s around a service with 100 neighbours).
      cy.fit(cy.elements(), FIT.padding);
      return [...noUpdate(3), ''];
    }
    // Leaving the whole graph: remember where it was. Decided from what is drawn, not
    // from the stores: a name typed in one go and its Enter are two searches in one
    // moment, and the second must not take the first one's fitted focus for the whole.
    let back = window.dash_clientside.no_update;
    if (cy && cy.nodes('.focus, .ghost').length === 0) {
      back = {zoom: cy.zoom(), pan: cy.pan()};
    }
    const fit = (current.fit || 0) + 1;
    const next = Object.assign({}, current, {focus: name, selected: selected, fit: fit});
    const want = new Set(G().focusElements(graph, name, selected)
      .filter(e => !e.data.source && e.data.kind !== 'ghost').map(e => e.data.id));
    // Fitted here, once exactly these services are drawn (not by a layout prop, which can
    // run before the elements change). ov-fitted = fit: the server will not fit again.
    whenDrawn(cy => {
      const shown = cy.nodes().filter(n => !n.hasClass('ghost'));
      return shown.length === want.size && shown.every(n => want.has(n.id()));
    }, cy => cy.fit(cy.elements(), FIT.padding));
    drawNow(next);
    return [next, fit, back, ''];
  }

  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    conway: {
      // The whole overview for the graph store, the layout state (positions, team names,
      // open incidents), the view and the highlight: every refresh and highlight is drawn
      // here (taps and searches too, unless they drew it already). ``drawn`` is the snapshot
      // the page's layout drew on the server: an older store (from before this visit) is
      // not drawn over it, and the same one is not drawn again.
      draw: function (wire, state, view, highlight, drawn) {
        if (!wire || !wire.nodes || !state) { return noUpdate(2); }
        seed(wire, state); // a search or a tap can use even an older graph than the layout's
        if (num(drawn) && num(wire.generated_at) && wire.generated_at < drawn) {
          return noUpdate(2);
        }
        last = {wire: wire, state: state, highlight: highlight};
        const picture = paint(wire, state, view, highlight);
        if (picture === null) { return noUpdate(2); }
        const o = picture.opts;
        if (picture.first && num(drawn) && wire.generated_at === drawn && !o.focus
            && !o.selected && !o.highlight && !o.expanded.length) {
          return noUpdate(2); // the layout drew this very picture
        }
        return build(wire, state, picture);
      },

      // A tap selects; on a folded team it opens it, on an opened one folds it.
      tap: function (node, edge, view) {
        const triggered = (window.dash_clientside.callback_context.triggered || [])
          .map(t => t.prop_id);
        const data = triggered.includes('ov-graph.tapEdgeData') ? edge : node;
        const next = G().onTap(view, data);
        drawNow(next);
        return next;
      },

      // The graph the page's layout drew (``ov-first``): searches and taps use it until
      // the first refresh brings the stores.
      seedFirst: function (first) {
        if (first && first.wire && first.state) {
          seed(first.wire, first.state);
          // Held here now: the page need not keep a second copy (0.8 MB at 5,000 services).
          window.dash_clientside.set_props('ov-first', {data: null});
        }
        return window.dash_clientside.no_update;
      },

      // Suggestions typed before the first graph came, made when it does.
      suggestPending: function (wire, state, value) {
        seed(wire, state);
        return (value || '').trim() ? window.dash_clientside.conway.suggest(value)
          : window.dash_clientside.no_update;
      },

      suggest: function (value) {
        const q = (value || '').trim().toLowerCase();
        const graph = last && G().decode(last.wire);
        if (!q || !graph) { return []; }
        const names = G().nodeNames(graph).filter(n => n.toLowerCase().includes(q));
        names.sort((a, b) => (b.toLowerCase().startsWith(q) - a.toLowerCase().startsWith(q))
          || (a.length - b.length) || G().byText(a, b));
        return names.slice(0, SUGGESTIONS).map(name => ({
          type: 'Option', namespace: 'dash_html_components', props: {value: name}}));
      },

      // Enter (or a picked suggestion) focuses a service.
      focus: function (_submit, value, view) {
        const triggered = (window.dash_clientside.callback_context.triggered || [])
          .map(t => t.prop_id);
        const submitted = triggered.includes('ov-search.n_submit');
        const typed = value || '';
        const previous = lastTyped;
        lastTyped = typed;
        const q = typed.trim();
        if (!last) {
          if (submitted) { pending = q; } // answered when the first graph comes
          return noUpdate(4);
        }
        if (!submitted) {
          // Typing adds a character at a time; a whole name at once is a suggestion picked.
          const picked = Math.abs(q.length - previous.trim().length) > 1
            && G().nodeNames(G().decode(last.wire)).includes(q);
          if (!picked) { return noUpdate(4); }
        }
        pending = null;
        return q ? focusOn(q, view) : noUpdate(4);
      },

      // A search made before the first graph came, answered when it does.
      focusPending: function (wire, state, view) {
        seed(wire, state);
        if (pending === null || !last) { return noUpdate(4); }
        const q = pending;
        pending = null;
        return q ? focusOn(q, view) : noUpdate(4);
      },

      // Back to the whole graph, at the zoom and pan it had when the search left it.
      back: function (_n, view, backTo) {
        if (!backTo) { return noUpdate(3); }
        const current = Object.assign({}, view || {});
        current.focus = null;
        whenDrawn(cy => cy.nodes('.focus, .ghost').length === 0 && cy.nodes().length > 0,
          cy => cy.viewport({zoom: backTo.zoom, pan: backTo.pan}));
        drawNow(current);
        return [current, current.fit || 0, null];
      },
    },
  });
})();

// Time travel (dashboard/timetravel.py): the address bar follows the moment the overview
// shows (?at=EPOCH_SECONDS), with history.replaceState, so a reload or a shared link opens
// the same moment and Dash's router does not re-render the page (zoom and pan stay).
window.dash_clientside = window.dash_clientside || {};
window.dash_clientside.timetravel = {
  url: function (at) {
    if (!document.getElementById("tt-bar")) {
      return window.dash_clientside.no_update; // only the overview travels
    }
    const url = new URL(window.location.href);
    if (at === null || at === undefined) {
      url.searchParams.delete("at");
    } else {
      url.searchParams.set("at", String(Math.round(at)));
    }
    const next = url.pathname + url.search + url.hash;
    const here = window.location.pathname + window.location.search + window.location.hash;
    if (next !== here) {
      window.history.replaceState(window.history.state, "", next);
    }
    return next;
  },
};

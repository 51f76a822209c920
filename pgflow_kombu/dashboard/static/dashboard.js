// pgflow-kombu dashboard: live updates over server-sent events (no library, no CDN).
// A step event recolours the run's DAG at once; any event then re-reads the page (at most once
// a second) and swaps in the sections marked data-live.
(function () {
  "use strict";
  var body = document.body;
  var runId = body.dataset.run || "";
  var refreshPending = false;
  var lastRefresh = 0;

  function setStatus(el, status) {
    el.setAttribute("class", el.getAttribute("class").replace(/status-\S+/, "status-" + status));
  }

  // One re-read at a time, at most one a second; an event arriving during a re-read asks for
  // another one after it, so the page always ends up showing the state after the last event.
  var dirty = false;
  function refresh() {
    dirty = true;
    if (refreshPending) return;
    refreshPending = true;
    var wait = Math.max(0, 1000 - (Date.now() - lastRefresh));
    setTimeout(function () {
      dirty = false;
      fetch(window.location.href, { credentials: "same-origin", headers: { "X-Live": "1" } })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (text) {
          if (text) swap(text);
        })
        .catch(function () { /* the next event tries again */ })
        .then(function () {
          refreshPending = false;
          lastRefresh = Date.now();
          if (dirty) refresh();
        });
    }, wait);
  }

  function swap(text) {
    var doc = new DOMParser().parseFromString(text, "text/html");
    document.querySelectorAll("[data-live]").forEach(function (el) {
      var fresh = doc.getElementById(el.id);
      if (fresh && fresh.innerHTML !== el.innerHTML) {
        var open = [];
        el.querySelectorAll("details").forEach(function (d, i) { if (d.open) open.push(i); });
        el.innerHTML = fresh.innerHTML;
        var details = el.querySelectorAll("details");
        open.forEach(function (i) { if (details[i]) details[i].open = true; });
      }
    });
  }

  function onEvent(e) {
    var data = {};
    try { data = JSON.parse(e.data); } catch (err) { /* keep {} */ }
    if (runId && data.run_id && data.run_id !== runId) return;
    if (e.type === "step" && runId) {
      var node = document.getElementById("step-" + data.step_slug);
      if (node) setStatus(node, data.status);
    }
    if (e.type === "run" && runId) {
      var pill = document.getElementById("run-status");
      if (pill) { pill.textContent = data.status; setStatus(pill, data.status); }
    }
    if (body.dataset.refresh === "0") return;
    refresh();
  }

  document.addEventListener("submit", function (e) {
    var message = e.target.dataset && e.target.dataset.confirm;
    if (message && !window.confirm(message)) e.preventDefault();
  });

  if (!window.EventSource || !body.dataset.events) return;
  var url = body.dataset.events + (runId ? "?run_id=" + encodeURIComponent(runId) : "");
  var source = new EventSource(url);
  var dot = document.getElementById("live");
  // On (re)opening, re-read the page once: it covers what changed since the page was rendered
  // (or while the stream was down); the stream brings every change after that.
  source.onopen = function () {
    if (dot) dot.classList.add("on");
    if (body.dataset.refresh !== "0") refresh();
  };
  source.onerror = function () { if (dot) dot.classList.remove("on"); };
  ["step", "run", "lagged"].forEach(function (kind) { source.addEventListener(kind, onEvent); });
})();

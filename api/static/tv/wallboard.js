/* The wallboard: tiles per queue, live over Server-Sent Events (no framework, no build step).
   The token comes from this page's own URL (?token=...). EventSource reconnects by itself; a watchdog
   restarts a stream silent for longer than the server's heartbeat. Longest waits tick locally from the
   server's clock ("at"), so the board moves every second without traffic. */
(function () {
  "use strict";
  var token = new URLSearchParams(location.search).get("token") || "";
  var queues = {};          // id -> record
  var skew = 0;             // server epoch - local epoch, seconds
  var source = null, lastMessage = 0, ended = false;
  var board = document.getElementById("board"), statusEl = document.getElementById("status");

  function nowServer() { return Date.now() / 1000 + skew; }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function mmss(s) {
    s = Math.max(0, Math.round(s || 0));
    var m = Math.floor(s / 60), r = s % 60;
    return m + ":" + (r < 10 ? "0" : "") + r;
  }
  function pct(v) { return v === null || v === undefined ? "–" : Math.round(v) + "%"; }
  function safeColor(c) { return typeof c === "string" && /^(#[0-9a-fA-F]{3,8}|[a-zA-Z]{3,20}|rgba?\([0-9., %]+\))$/.test(c) ? c : null; }

  function fig(label, value, cls) {
    var f = el("div", "fig" + (cls ? " " + cls : ""));
    f.appendChild(el("div", "v", value)); f.appendChild(el("div", "l", label));
    return f;
  }
  function item(label, value) {
    var s = el("span"); s.appendChild(document.createTextNode(label + " ")); s.appendChild(el("b", "", value));
    return s;
  }
  function tile(q) {
    var t = el("section", "tile"), today = q.today || {}, a = q.agents || {};
    t.setAttribute("data-queue", q.id);
    var bg = safeColor(q.background_color), fg = safeColor(q.font_color);
    if (bg) t.style.background = bg;
    if (fg) t.style.color = fg;
    if (q.waiting > 0) t.classList.add("alert");
    t.appendChild(el("div", "name", q.tv_name || q.name));
    var main = el("div", "main");
    main.appendChild(fig("waiting", String(q.waiting), "waiting"));
    var wait = el("div", "fig longest");
    wait.appendChild(el("div", "v", q.oldest_joined_at ? mmss(nowServer() - q.oldest_joined_at) : "0:00"));
    wait.appendChild(el("div", "l", "longest wait"));
    if (q.oldest_joined_at) wait.setAttribute("data-since", q.oldest_joined_at);
    main.appendChild(wait);
    main.appendChild(fig("service level", pct(today.service_level), "sl"));
    t.appendChild(main);
    var agents = el("div", "row agents");
    agents.appendChild(item("Free", String(a.available || 0)));
    agents.appendChild(item("Ringing", String(a.ringing || 0)));
    agents.appendChild(item("Talking", String(a.on_call || 0)));
    agents.appendChild(item("Wrap-up", String(a.wrap_up || 0)));
    agents.appendChild(item("Paused", String(a.paused || 0)));
    t.appendChild(agents);
    var day = el("div", "row today");
    day.appendChild(item("Offered", String(today.offered || 0)));
    day.appendChild(item("Answered", String(today.answered || 0)));
    day.appendChild(item("Abandoned", String(today.abandoned || 0)));
    day.appendChild(item("Avg wait", mmss(today.avg_wait_rolling !== null && today.avg_wait_rolling !== undefined ? today.avg_wait_rolling : today.avg_wait)));
    t.appendChild(day);
    return t;
  }
  function render() {
    var groups = {}, order = [];
    Object.keys(queues).map(function (k) { return queues[k]; })
      .sort(function (x, y) { return x.id - y.id; })
      .forEach(function (q) {
        var key = (q.labels && q.labels.length) ? "Label " + q.labels.slice().sort(function (x, y) { return x - y; }).join(", ") : "";
        if (!(key in groups)) { groups[key] = []; order.push(key); }
        groups[key].push(q);
      });
    order.sort();
    var count = Object.keys(queues).length || 1;
    var cols = Math.max(1, Math.min(count, Math.ceil(Math.sqrt(count * 16 / 9 / 1.6))));
    var rows = order.reduce(function (n, key) { return n + Math.ceil(groups[key].length / cols); }, 0) +
      (order.length > 1 ? order.length * 0.15 : 0);
    document.documentElement.style.setProperty("--cols", cols);
    document.documentElement.style.setProperty("--rows", Math.max(1, rows));
    var frag = document.createDocumentFragment();
    order.forEach(function (key) {
      var g = el("div", "group");
      if (key && order.length > 1) g.appendChild(el("h2", "", key));
      var tiles = el("div", "tiles");
      groups[key].forEach(function (q) { tiles.appendChild(tile(q)); });
      g.appendChild(tiles);
      frag.appendChild(g);
    });
    board.replaceChildren(frag);
  }
  function tick() {
    document.getElementById("clock").textContent = new Date((nowServer()) * 1000).toLocaleTimeString();
    var waits = board.querySelectorAll(".fig.longest[data-since]");
    for (var i = 0; i < waits.length; i++) {
      waits[i].querySelector(".v").textContent = mmss(nowServer() - Number(waits[i].getAttribute("data-since")));
    }
    if (!ended && source && Date.now() - lastMessage > 40000) connect();  // silent too long: start again
  }
  function online(on) { statusEl.textContent = on ? "live" : "reconnecting"; statusEl.className = on ? "" : "offline"; }
  function seen(data) { lastMessage = Date.now(); if (data && data.at) skew = data.at - Date.now() / 1000; }
  function connect() {
    if (source) source.close();
    lastMessage = Date.now();
    source = new EventSource("/tv/stream?token=" + encodeURIComponent(token));
    source.onopen = function () { online(true); lastMessage = Date.now(); };
    source.onerror = function () { online(false); };
    source.addEventListener("snapshot", function (e) {
      var d = JSON.parse(e.data); seen(d); queues = {};
      d.queues.forEach(function (q) { queues[q.id] = q; });
      online(true); render();
    });
    source.addEventListener("queue", function (e) {
      var q = JSON.parse(e.data); seen(q); queues[q.id] = q; render();
    });
    source.addEventListener("end", function () {
      ended = true; source.close(); statusEl.textContent = "link revoked"; statusEl.className = "offline";
    });
    source.addEventListener("ping", function (e) { seen(JSON.parse(e.data)); });
  }
  connect();
  setInterval(tick, 1000);
})();

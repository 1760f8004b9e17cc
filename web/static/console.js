// parc console, progressive enhancement only: every page works without this file. It follows
// the appliance's live stream (/live, server-sent events) to move progress bars and add
// journal rows as they happen; text goes in with textContent, never as HTML.
(function () {
  "use strict";
  var lang = document.documentElement.lang === "en" ? "en" : "fr";
  var units = lang === "en" ? ["B", "KiB", "MiB", "GiB", "TiB"] : ["o", "Kio", "Mio", "Gio", "Tio"];
  function bytes(n) {
    var u = 0;
    while (n >= 1024 && u < units.length - 1) { n /= 1024; u++; }
    var s = u === 0 ? String(n) : n.toFixed(1);
    if (lang === "fr") s = s.replace(".", ",");
    return s + "\u00a0" + units[u];
  }
  function duration(s) {
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
    var pad = function (x) { return (x < 10 ? "0" : "") + x; };
    if (h > 0) return h + "\u00a0h " + pad(m) + "\u00a0min";
    if (m > 0) return m + "\u00a0min " + pad(sec) + "\u00a0s";
    return sec + "\u00a0s";
  }
  function pad2(x) { return (x < 10 ? "0" : "") + x; }
  // The server writes times in UTC (it has no time-zone database); here they become the
  // browser's local time, in the same format.
  function when(ms) {
    var d = new Date(ms);
    var date = lang === "en"
      ? d.getFullYear() + "-" + pad2(d.getMonth() + 1) + "-" + pad2(d.getDate())
      : pad2(d.getDate()) + "/" + pad2(d.getMonth() + 1) + "/" + d.getFullYear();
    return date + " " + pad2(d.getHours()) + ":" + pad2(d.getMinutes());
  }
  document.querySelectorAll("time[data-ms]").forEach(function (t) { t.textContent = when(Number(t.dataset.ms)); });
  var tz = document.getElementById("tz");
  if (tz) {
    var zone = window.Intl && Intl.DateTimeFormat().resolvedOptions().timeZone;
    tz.textContent = tz.dataset.local + (zone ? " (" + zone + ")" : "");
  }
  function progress(t) {
    document.querySelectorAll('[data-task-row="' + t.id + '"]').forEach(function (row) {
      var pct = t.bytes_total > 0 ? Math.min(100, Math.floor(t.bytes_done * 100 / t.bytes_total)) : 0;
      row.querySelectorAll(".progress .bar span").forEach(function (b) { b.style.width = pct + "%"; });
      row.querySelectorAll(".progress .pct").forEach(function (p) { p.textContent = pct + "\u00a0%"; });
      row.querySelectorAll('[data-field="phase"]').forEach(function (p) { p.textContent = t.phase || ""; });
      row.querySelectorAll('[data-field="rate"]').forEach(function (p) { p.textContent = t.rate_bps > 0 ? bytes(t.rate_bps) + "/s" : ""; });
      row.querySelectorAll('[data-field="eta"]').forEach(function (p) {
        p.textContent = t.rate_bps > 0 && t.bytes_total > t.bytes_done ? duration((t.bytes_total - t.bytes_done) / t.rate_bps) : "";
      });
      // The machine page's own status follows its running task.
      var status = document.getElementById("machine-status");
      if (status && t.state === "running" && row.id === "active-task") {
        status.className = "badge big s-installing";
        status.textContent = document.body.dataset.wInstalling || status.textContent;
      }
      row.querySelectorAll('[data-field="state"]').forEach(function (p) {
        var word = document.body.dataset["w" + t.state.charAt(0).toUpperCase() + t.state.slice(1)];
        p.className = "badge s-" + t.state;
        if (word) p.textContent = word;
      });
    });
  }
  var reloadTimer = null;
  function reloadSoon() {
    if (reloadTimer === null) reloadTimer = setTimeout(function () { location.reload(); }, 1500);
  }
  function journal(e) {
    // The dashboard's counts and lists change with every task queued, started or ended.
    if (document.querySelector("[data-live-reload]") && /^(machine\.|task\.)/.test(e.kind)) reloadSoon();
    document.querySelectorAll("table[data-live-journal]").forEach(function (table) {
      var only = table.getAttribute("data-live-journal");
      if (only && e.mac !== only) return;
      var tbody = table.tBodies[0];
      if (!tbody) return;
      var tr = document.createElement("tr");
      var cells = [when(e.at), e.actor, e.kind];
      if (!only) cells.push(e.mac || "");
      cells.push(e.message);
      cells.forEach(function (text, i) {
        var td = document.createElement("td");
        td.textContent = text;
        if (i === 0) td.className = "nowrap";
        if (i === cells.length - 1) td.className = "wrap";
        tr.appendChild(td);
      });
      tbody.insertBefore(tr, tbody.firstChild);
    });
    // A task that ended changes more than a bar (status, history, counters): the page is
    // re-read once, quietly, if it shows that task.
    if (e.task_id && /^task\.(done|fail|cancel)/.test(e.kind) &&
        document.querySelector('[data-task-row="' + e.task_id + '"]')) {
      setTimeout(function () { location.reload(); }, 800);
    }
  }
  if (window.EventSource && document.querySelector("[data-task-row], table[data-live-journal], [data-live-reload]")) {
    var es = new EventSource("/live");
    es.addEventListener("progress", function (m) { progress(JSON.parse(m.data)); });
    es.addEventListener("event", function (m) { journal(JSON.parse(m.data)); });
    es.addEventListener("lagged", function () { location.reload(); });
  }
  // The bulk form's file picker fills the CSV text area (without JavaScript: paste the CSV).
  document.querySelectorAll("input[type=file][data-fills]").forEach(function (input) {
    input.closest("label").hidden = false;
    input.addEventListener("change", function () {
      var f = input.files && input.files[0];
      if (!f) return;
      f.text().then(function (text) { document.getElementById(input.dataset.fills).value = text; });
    });
  });
})();

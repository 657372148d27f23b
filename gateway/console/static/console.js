// The console's only script (the Content-Security-Policy allows scripts from 'self' only,
// no inline script anywhere): live updates of the fleet overview, drag-to-zoom on charts.
"use strict";
(function () {
  // A figure as the server renders it (gateway/console/figures.py): whole, or one decimal.
  const shown = function (x) {
    return Number.isInteger(x) ? String(x) : x.toFixed(1);
  };

  // Live updates from /console/events (server-sent events), for the filter shown.
  const table = document.getElementById("networks");
  if (table && window.EventSource) {
    const source = new EventSource("/console/events" + window.location.search);
    source.addEventListener("status", function (event) {
      const update = JSON.parse(event.data);
      let online = 0, offline = 0;
      for (const n of update.networks) {
        const row = table.querySelector('tr[data-network="' + n.uuid + '"]');
        if (row) {
          const cell = row.children[1];
          cell.textContent = n.status;
          cell.className = "status " + n.status;
          row.children[2].textContent = n.last_seen || "never";
          if (n.activity) {
            row.querySelector(".reports-per-minute").textContent =
              shown(n.activity.reports_per_minute);
          }
        }
        if (n.status === "online") online++; else offline++;
      }
      document.getElementById("online").textContent = online;
      document.getElementById("offline").textContent = offline;
      const figures = update.activity;
      if (figures && document.getElementById("activity")) {
        document.getElementById("reports-per-minute").textContent =
          shown(figures.reports_per_minute);
        const refused = document.getElementById("refused-per-minute");
        if (refused) refused.textContent = shown(figures.refused_per_minute);
      }
    });
  }

  // Drag across a chart to show that time span (the server redraws it: ?from=&to=).
  for (const svg of document.querySelectorAll("svg.chart[data-from]")) {
    const t0 = parseFloat(svg.dataset.from), t1 = parseFloat(svg.dataset.to);
    const box = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    box.setAttribute("class", "zoom");
    box.setAttribute("y", "0");
    box.setAttribute("height", "100%");
    box.setAttribute("width", "0");
    svg.appendChild(box);
    let start = null;
    const at = function (event) {
      const r = svg.getBoundingClientRect();
      return Math.min(1, Math.max(0, (event.clientX - r.left) / r.width));
    };
    const width = svg.viewBox.baseVal.width;
    svg.addEventListener("pointerdown", function (event) {
      start = at(event);
      svg.setPointerCapture(event.pointerId);
      event.preventDefault();
    });
    svg.addEventListener("pointermove", function (event) {
      if (start === null) return;
      const x = at(event);
      box.setAttribute("x", String(Math.min(start, x) * width));
      box.setAttribute("width", String(Math.abs(x - start) * width));
    });
    svg.addEventListener("pointerup", function (event) {
      if (start === null) return;
      const a = Math.min(start, at(event)), b = Math.max(start, at(event));
      start = null;
      box.setAttribute("width", "0");
      if (b - a < 0.01) return; // a click, not a drag
      const from = t0 + a * (t1 - t0), to = t0 + b * (t1 - t0);
      window.location.search = "?from=" + from.toFixed(3) + "&to=" + to.toFixed(3);
    });
  }
})();

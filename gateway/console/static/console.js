// Live updates of the fleet overview from /console/events (server-sent events).
// No inline script anywhere: the Content-Security-Policy allows scripts from 'self' only.
"use strict";
(function () {
  const table = document.getElementById("networks");
  if (!table || !window.EventSource) return;
  const source = new EventSource("/console/events");
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
      }
      if (n.status === "online") online++; else offline++;
    }
    document.getElementById("online").textContent = online;
    document.getElementById("offline").textContent = offline;
  });
})();

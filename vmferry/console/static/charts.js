/* The VM page's profile chart (uPlot) from the stored profile series. */
(function () {
  "use strict";
  var box = document.getElementById("profile-chart");
  var data = document.getElementById("profile-data");
  if (!box || !data) { return; }
  var s = JSON.parse(data.textContent);
  if (!s.t.length) { return; }
  var width = Math.max(280, Math.min(box.clientWidth || 800, 1100));
  new uPlot({
    width: width,
    height: 240,
    axes: [
      {},
      { label: "CPU %", scale: "pct" },
      { label: "MiB/s, GiB", scale: "amount", side: 1, grid: { show: false } }
    ],
    series: [
      {},
      { label: "CPU (%)", scale: "pct", stroke: "#1f5fa8", width: 2 },
      { label: "memory used (GiB)", scale: "amount", stroke: "#2d7d46", width: 2 },
      { label: "dirty rate (MiB/s)", scale: "amount", stroke: "#b3461d", width: 2 },
      { label: "disk writes (MiB/s)", scale: "amount", stroke: "#6a3d9a", width: 1 }
    ]
  }, [s.t, s.cpu_pct, s.memory_used_gib, s.dirty_mib_s, s.disk_write_mib_s], box);
  box.dataset.drawn = "true";
})();

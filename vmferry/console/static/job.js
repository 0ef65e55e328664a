/* The job page: its chart (uPlot) and, while the job runs, its Server-Sent Events. */
(function () {
  "use strict";
  var root = document.getElementById("job");
  if (!root) { return; }
  var jobId = root.dataset.job;
  var shown = parseInt(root.dataset.events, 10) || 0;
  var pointsBox = document.getElementById("job-points");  /* absent on a host's job */
  var points = JSON.parse((pointsBox && pointsBox.textContent) || "[]");
  var chartBox = document.getElementById("job-chart");
  var plot = null;

  function columns() {
    return [
      points.map(function (p) { return p.t; }),
      points.map(function (p) { return p.remaining_mib; }),
      points.map(function (p) { return p.dirty_mib_s; })
    ];
  }

  function draw() {
    if (!chartBox) { return; }
    chartBox.dataset.points = String(points.length);
    if (!points.length) { return; }
    document.getElementById("chart-empty").hidden = true;
    if (plot) { plot.setData(columns()); return; }
    var width = Math.max(280, Math.min(chartBox.clientWidth || 800, 1100));
    plot = new uPlot({
      width: width,
      height: 260,
      scales: { x: { time: false } },
      axes: [
        { label: "seconds since the job began" },
        { label: "MiB remaining", scale: "mib" },
        { label: "dirty MiB/s", scale: "rate", side: 1, grid: { show: false } }
      ],
      series: [
        { label: "s" },
        { label: "remaining (MiB)", scale: "mib", stroke: "#1f5fa8", width: 2 },
        { label: "dirty rate (MiB/s)", scale: "rate", stroke: "#b3461d", width: 2, dash: [6, 4] }
      ]
    }, columns(), chartBox);
    chartBox.dataset.drawn = "true";
  }

  function text(value, unit) {
    return value === null || value === undefined ? "–" : String(value) + unit;
  }

  function update(msg) {
    var status = document.getElementById("job-status");
    status.textContent = msg.status;
    status.className = "status status-" + msg.status;
    msg.steps.forEach(function (step) {
      var li = document.querySelector('#pipeline [data-step="' + step.name + '"]');
      if (!li) { return; }
      li.className = "step step-" + step.state;
      li.querySelector(".step-state").textContent = step.state;
    });
    var live = msg.live;
    var units = { iteration: "", remaining_mib: " MiB", rate_mib_s: " MiB/s", dirty_mib_s: " MiB/s",
                  eta_s: " s", projected_downtime_ms: " ms" };
    Object.keys(units).forEach(function (key) {
      var dd = document.querySelector('#figures [data-fig="' + key + '"]');
      if (dd) { dd.textContent = text(live[key], units[key]); }
    });
    var esc = document.getElementById("escalations");
    if (esc && live.escalations.length) {
      esc.replaceChildren.apply(esc, live.escalations.map(function (line) {
        var li = document.createElement("li"); li.textContent = line; return li;
      }));
    }
    if (msg.index >= shown) {
      var li = document.createElement("li");
      li.className = "ev ev-" + msg.kind;
      var time = document.createElement("time"); time.textContent = msg.at;
      var kind = document.createElement("span"); kind.className = "kind"; kind.textContent = msg.kind;
      li.append(time, " ", kind, " " + msg.message);
      document.getElementById("events").append(li);
      shown = msg.index + 1;
      if (msg.point) { points.push(msg.point); draw(); }
    }
  }

  draw();
  if (root.dataset.finished === "true" || !window.EventSource) { return; }
  var source = new EventSource("/jobs/" + encodeURIComponent(jobId) + "/events?from=" + shown);
  source.addEventListener("job", function (e) { update(JSON.parse(e.data)); });
  source.addEventListener("end", function () {
    source.close();
    window.location.reload();  /* the finished job's outcome, verification and actions */
  });
})();

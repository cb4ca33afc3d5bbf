// The Overview's four charts (uPlot), fed from /ui/charts.json every 5 s: the API server's sampler keeps
// the last 15 minutes (console/web/sampler.py says what each figure is computed from). Each chart also
// writes its latest figure as text next to its title, so the numbers are readable without the plot.
(function () {
  "use strict";
  var section = document.getElementById("charts");
  if (!section || !window.uPlot) { return; }
  var url = section.dataset.seriesUrl;

  var specs = {
    rows: { series: [["row changes/s", "#2563eb", "rows_per_s"]], unit: "/s" },
    invocations: { series: [["created by rules/s", "#7c3aed", "created_per_s"], ["finished/s", "#059669", "finished_per_s"]], unit: "/s" },
    failures: { series: [["failures/min", "#dc2626", "failures_per_min"]], unit: "/min" },
    durations: { series: [["p50 ms", "#0891b2", "p50_ms"], ["p99 ms", "#ea580c", "p99_ms"]], unit: " ms" }
  };
  var charts = {};

  function width(figure) { return Math.max(240, figure.querySelector(".plot").clientWidth || figure.clientWidth - 16); }

  function options(name, figure) {
    var spec = specs[name];
    return {
      width: width(figure), height: 160,
      scales: { x: { time: true }, y: { range: function (u, min, max) { return [0, Math.max(1, max * 1.1)]; } } },
      axes: [{}, { size: 50 }],
      legend: { show: true, live: false },
      series: [{}].concat(spec.series.map(function (s) { return { label: s[0], stroke: s[1], width: 2, spanGaps: false }; }))
    };
  }

  function columns(name, data) {
    return [data.at].concat(specs[name].series.map(function (s) { return data[s[2]]; }));
  }

  function latestText(name, data) {
    var n = data.at.length;
    return specs[name].series.map(function (s) {
      var values = data[s[2]], v = null;
      for (var i = n - 1; i >= 0 && v === null; i--) { v = values[i]; }
      return s[0] + " " + (v === null || v === undefined ? "-" : (Math.round(v * 10) / 10) + "");
    }).join(", ");
  }

  function draw(data) {
    section.querySelectorAll("figure[data-chart]").forEach(function (figure) {
      var name = figure.dataset.chart;
      var cols = columns(name, data);
      if (!charts[name]) {
        charts[name] = new window.uPlot(options(name, figure), cols, figure.querySelector(".plot"));
      } else {
        charts[name].setData(cols);
      }
      var latest = figure.querySelector(".latest");
      if (latest) { latest.textContent = "— now: " + latestText(name, data); }
      figure.querySelector(".plot").setAttribute("aria-label", figure.querySelector("figcaption").textContent);
    });
  }

  async function refresh() {
    try {
      var response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (response.ok) { draw(await response.json()); }
    } catch (e) { /* the next poll tries again */ }
  }

  window.addEventListener("resize", function () {
    section.querySelectorAll("figure[data-chart]").forEach(function (figure) {
      var chart = charts[figure.dataset.chart];
      if (chart) { chart.setSize({ width: width(figure), height: 160 }); }
    });
  });
  refresh();
  setInterval(refresh, 5000);
})();

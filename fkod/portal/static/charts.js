// Draws each <canvas data-chart="ID"> with Chart.js from the JSON in the element with that ID.
// The data element contains {kind, title, unit, labels, series: [{label, values}]}; the page
// shows the same numbers in a table, so a failure here loses no information.
(() => {
  "use strict";

  // Colors with at least 3:1 contrast against the white page background.
  const COLORS = ["#1d4ed8", "#b91c1c", "#047857", "#7c3aed"];

  function readData(canvas) {
    const element = document.getElementById(canvas.dataset.chart);
    if (!element) return null;
    try {
      return JSON.parse(element.textContent);
    } catch (error) {
      console.error("chart data is not valid JSON", canvas.id, error);
      return null;
    }
  }

  function draw(canvas) {
    const data = readData(canvas);
    if (!data) return;
    const reduceMotion = window.matchMedia("(prefers-reduced-motion: reduce)").matches;
    // eslint-disable-next-line no-undef
    new Chart(canvas, {
      type: data.kind === "line" ? "line" : "bar",
      data: {
        labels: data.labels,
        datasets: data.series.map((series, index) => ({
          label: series.label,
          data: series.values,
          backgroundColor: COLORS[index % COLORS.length],
          borderColor: COLORS[index % COLORS.length],
        })),
      },
      options: {
        // data-drawn="true" marks a chart whose first drawing has finished.
        animation: reduceMotion ? false : {
          duration: 300,
          onComplete: () => { canvas.dataset.drawn = "true"; },
        },
        maintainAspectRatio: false,
        scales: {
          y: { beginAtZero: true, title: { display: Boolean(data.unit), text: data.unit } },
        },
        plugins: { legend: { display: data.series.length > 1 } },
      },
    });
    if (reduceMotion) canvas.dataset.drawn = "true";
  }

  function drawAll() {
    if (typeof Chart === "undefined") return;
    document.querySelectorAll("canvas[data-chart]").forEach(draw);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", drawAll);
  } else {
    drawAll();
  }
})();

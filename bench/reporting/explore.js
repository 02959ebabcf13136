/* explore.html's controls (written by bench/reporting/explore.py): the runs shown are those whose family, setting,
   precision and seed are ticked and that have a value on both chosen axes; the dashed line is the Pareto front of
   exactly those points (no shown point is better on both axes, "better" as the column's arrow says). The drawing is
   plotly's: every change hands the traces to Plotly.react. */
"use strict";

const Explore = (() => {
  const DATA = JSON.parse(document.getElementById("explore-data").textContent);
  const FILTERS = ["family", "setting", "precision", "seed"];

  function ticked(name) {
    return new Set([...document.querySelectorAll(`input[name="${name}"]:checked`)].map((box) => box.value));
  }

  function value(id) {
    return document.getElementById(id).value;
  }

  function shownRuns(x, y) {
    const wanted = FILTERS.map((name) => [name, ticked(name)]);
    return DATA.runs.filter((run) => wanted.every(([name, values]) => values.has(String(run[name])))
      && run.values[x] !== null && run.values[y] !== null);
  }

  // Points no other shown point beats on both axes, in increasing x (the Python twin: plots.pareto_front).
  function paretoFront(points, xBetter, yBetter) {
    const sx = xBetter === "higher" ? -1 : 1;  // as "lower is better" on both axes
    const sy = yBetter === "higher" ? -1 : 1;
    const order = points.slice().sort((a, b) => sx * (a.x - b.x) || sy * (a.y - b.y));
    const front = [];
    let best = Infinity;
    for (const point of order) {
      if (sy * point.y < best) {
        front.push(point);
        best = sy * point.y;
      }
    }
    return front.sort((a, b) => a.x - b.x);
  }

  function strategyTraces(runs, x, y) {
    return DATA.strategies.map((strategy) => {
      const mine = runs.filter((run) => run.strategy === strategy.name);
      return {
        type: "scatter", mode: "markers", name: strategy.name, legendgroup: strategy.family,
        x: mine.map((run) => run.values[x]), y: mine.map((run) => run.values[y]),
        hovertext: mine.map((run) => run.hover), customdata: mine.map((run) => run.run_id),
        hovertemplate: `%{hovertext}<br>${DATA.columns[x].label}: %{x}<br>${DATA.columns[y].label}: %{y}<extra></extra>`,
        marker: { color: strategy.colour, symbol: strategy.symbol, size: 11, line: { color: "black", width: 0.6 } },
      };
    }).filter((trace) => trace.x.length > 0);
  }

  function frontTrace(runs, x, y) {
    const xBetter = DATA.columns[x].better;
    const yBetter = DATA.columns[y].better;
    const points = runs.map((run) => ({ x: run.values[x], y: run.values[y] }));
    const front = xBetter && yBetter ? paretoFront(points, xBetter, yBetter) : [];
    return {
      type: "scatter", mode: "lines", name: "Pareto front (shown runs)", hoverinfo: "skip",
      x: front.map((p) => p.x), y: front.map((p) => p.y),
      line: { color: "#666", dash: "dash", shape: xBetter === "higher" ? "vh" : "hv" },
    };
  }

  function axis(gd, name, column, log) {
    const title = `${DATA.columns[column].label} ${DATA.columns[column].arrow}`;
    return { ...gd.layout[name], title: { text: title }, type: log ? "log" : "linear", autorange: true };
  }

  function draw(gd) {
    const x = value("x-axis");
    const y = value("y-axis");
    if (!(x in DATA.columns) || !(y in DATA.columns)) {
      document.getElementById("shown").textContent = "No run measured any of the columns.";
      return;
    }
    const runs = shownRuns(x, y);
    const layout = { ...gd.layout, xaxis: axis(gd, "xaxis", x, document.getElementById("x-log").checked),
      yaxis: axis(gd, "yaxis", y, document.getElementById("y-log").checked) };
    Plotly.react(gd, [...strategyTraces(runs, x, y), frontTrace(runs, x, y)], layout);
    document.getElementById("shown").textContent = `${runs.length} of ${DATA.runs.length} runs shown`
      + " (ticked, and with a value on both axes).";
  }

  function start(gd) {
    document.querySelectorAll(".controls select, .controls input").forEach((control) => {
      control.addEventListener("change", () => draw(gd));
    });
    draw(gd);
  }

  return { start, paretoFront };
})();

// Line charts drawn as SVG by hand from a job's JSON: a training's loss per step, and auto whitening's
// held-out Spearman against dim (one line per (β, γ), raw vectors as a level, the choice starred).

const NS = "http://www.w3.org/2000/svg";
const W = 680;
const H = 320;
const PAD = { left: 60, right: 20, top: 16, bottom: 46 };
/** One colour per γ (a colour-blind-safe set), one dash per β. */
const COLOURS = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#d55e00"];
const DASHES = ["", "8 4", "3 3", "10 3 2 3", "1 3"];
const GRID = [0, 0.25, 0.5, 0.75, 1];

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined && value !== "") node.setAttribute(key, String(value));
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Round tick values inside [lo, hi], at most `most` of them. */
export function ticks(lo, hi, most = 8) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / most;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

function label(value) {
  return Math.abs(value) >= 1000 ? value.toLocaleString("en") : String(Number(value.toPrecision(4)));
}

/**
 * A chart of `series` ([{name, points: [[x, y]], colour, dash, width}]) with optional `levels`
 * ([{y, name}], dashed horizontal lines) and `marks` ([{x, y, name}], stars). `xLog`: x on a log₂ scale
 * with a tick at each x of the data.
 */
export function lineChart({ series, levels = [], marks = [], xLabel, yLabel, title, xLog = false }) {
  const xs = series.flatMap((s) => s.points.map((p) => p[0])).concat(marks.map((m) => m.x));
  const ys = series.flatMap((s) => s.points.map((p) => p[1])).concat(marks.map((m) => m.y), levels.map((l) => l.y));
  const fx = xLog ? Math.log2 : (v) => v;
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (x0 === x1) [x0, x1] = xLog ? [x0 / 2, x1 * 2] : [x0 - 1, x1 + 1];
  const margin = y1 > y0 ? (y1 - y0) * 0.06 : Math.max(Math.abs(y0) * 0.1, 1);
  [y0, y1] = [y0 - margin, y1 + margin];
  const innerW = W - PAD.left - PAD.right;
  const innerH = H - PAD.top - PAD.bottom;
  const sx = (x) => PAD.left + ((fx(x) - fx(x0)) / (fx(x1) - fx(x0))) * innerW;
  const sy = (y) => PAD.top + (1 - (y - y0) / (y1 - y0)) * innerH;

  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title, class: "chart" });
  root.append(svg("title", {}, title));
  const axes = svg("g", { class: "axes" });
  for (const y of ticks(y0, y1)) {
    axes.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: sy(y), y2: sy(y), class: "grid" }),
      svg("text", { x: PAD.left - 6, y: sy(y) + 4, "text-anchor": "end" }, label(y)));
  }
  const xTicks = xLog ? [...new Set(xs)].sort((a, b) => a - b) : ticks(x0, x1);
  let labelled = -Infinity; // x of the last tick labelled: a label too close to it is left out
  for (const x of xTicks) {
    axes.append(svg("line", { x1: sx(x), x2: sx(x), y1: H - PAD.bottom, y2: H - PAD.bottom + 4, class: "tick" }));
    if (sx(x) - labelled < 30) continue;
    labelled = sx(x);
    axes.append(svg("text", { x: sx(x), y: H - PAD.bottom + 17, "text-anchor": "middle" }, label(x)));
  }
  axes.append(
    svg("line", { x1: PAD.left, x2: W - PAD.right, y1: H - PAD.bottom, y2: H - PAD.bottom, class: "axis" }),
    svg("line", { x1: PAD.left, x2: PAD.left, y1: PAD.top, y2: H - PAD.bottom, class: "axis" }),
    svg("text", { x: PAD.left + innerW / 2, y: H - 8, "text-anchor": "middle", class: "axis-label" }, xLabel),
    svg("text", { x: 14, y: PAD.top + innerH / 2, "text-anchor": "middle", class: "axis-label",
      transform: `rotate(-90 14 ${PAD.top + innerH / 2})` }, yLabel));
  root.append(axes);

  for (const level of levels) {
    root.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: sy(level.y), y2: sy(level.y), class: "level",
      "stroke-dasharray": "6 4" }),
    svg("text", { x: W - PAD.right - 4, y: sy(level.y) - 5, "text-anchor": "end", class: "level-label" }, level.name));
  }
  for (const s of series) {
    const group = svg("g", { class: "series" });
    group.append(svg("title", {}, s.name));
    const points = s.points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ");
    if (s.points.length === 1) {
      group.append(svg("circle", { cx: sx(s.points[0][0]), cy: sy(s.points[0][1]), r: 3, fill: s.colour }));
    } else {
      group.append(svg("polyline", { points, fill: "none", stroke: s.colour, "stroke-width": s.width || 1.5,
        "stroke-dasharray": s.dash, "stroke-linejoin": "round" }));
    }
    root.append(group);
  }
  for (const mark of marks) {
    const [cx, cy] = [sx(mark.x), sy(mark.y)];
    const star = Array.from({ length: 10 }, (_, i) => {
      const r = i % 2 ? 4 : 10;
      const a = (Math.PI / 5) * i - Math.PI / 2;
      return `${(cx + r * Math.cos(a)).toFixed(1)},${(cy + r * Math.sin(a)).toFixed(1)}`;
    }).join(" ");
    const right = cx > PAD.left + innerW * 0.6; // a label near the right edge goes to the star's left
    root.append(svg("polygon", { points: star, class: "mark" }),
      svg("text", { x: right ? cx - 12 : cx + 12, y: cy - 8, "text-anchor": right ? "end" : "start",
        class: "mark-label" }, mark.name));
  }
  return root;
}

/** A small legend entry: a line drawn as the series is. */
function swatch(colour, dash) {
  const s = svg("svg", { viewBox: "0 0 28 8", width: 28, height: 8, class: "swatch" });
  s.append(svg("line", { x1: 0, x2: 28, y1: 4, y2: 4, stroke: colour, "stroke-width": 2, "stroke-dasharray": dash }));
  return s;
}

/** A training's loss per step (`points`: [[step, loss]]). */
export function lossChart(points, note) {
  return lineChart({ series: [{ name: "loss per step", points, colour: COLOURS[0], width: 1.5 }],
    xLabel: "step", yLabel: "loss", title: `Training loss, ${points.length} points${note ? `, ${note}` : ""}` });
}

/** Held-out hit@1 against the weighted fusion's alpha from an auto-search report, with dense, lexical and rrf
 * as levels and the choice starred. */
export function searchTuningChart(tuning) {
  const held = new Map(tuning.table.map((r) => [r.candidate, r.report.hit_at_1]));
  const weighted = tuning.table.filter((r) => r.candidate.startsWith("weighted"))
    .map((r) => [r.fusion.alpha, r.report.hit_at_1]).sort((a, b) => a[0] - b[0]);
  const fusion = tuning.choice.fusion || {};
  const x = fusion.alpha ?? (tuning.candidate === "dense" ? 1 : tuning.candidate === "lexical" ? 0 : 0.5);
  const figure = document.createElement("figure");
  figure.className = "plot search-plot";
  figure.append(lineChart({
    series: [{ name: "weighted (alpha = dense weight)", points: weighted, colour: COLOURS[0], width: 2 }],
    levels: ["dense", "lexical", "rrf"].map((name) => ({ y: held.get(name), name: `${name} ${label(held.get(name))}` })),
    marks: [{ x, y: held.get(tuning.candidate), name: `chosen: ${tuning.candidate}` }],
    xLabel: "alpha (0: lexical only, 1: dense only)", yLabel: "held-out hit@1 %",
    title: "Held-out hit@1 against the fusion's alpha" }));
  return figure;
}

/** Held-out Spearman against dim from an auto-whitening report (`tuning`: its table, choice and held_out). */
export function tuningChart(tuning) {
  const rows = tuning.table.filter((r) => !r.raw && r.report !== null);
  const groups = new Map();
  for (const r of rows) {
    const key = `${r.beta}|${r.gamma}`;
    if (!groups.has(key)) groups.set(key, { beta: r.beta, gamma: r.gamma, points: [] });
    groups.get(key).points.push([r.dim, r.report]);
  }
  const chosen = tuning.choice;
  const series = [...groups.values()].map((g) => ({
    name: `β ${g.beta} · γ ${g.gamma}`,
    points: g.points.sort((a, b) => a[0] - b[0]),
    colour: COLOURS[Math.max(0, GRID.indexOf(g.gamma))],
    dash: DASHES[Math.max(0, GRID.indexOf(g.beta))],
    width: g.beta === chosen.beta && g.gamma === chosen.gamma ? 3 : 1.25,
  }));
  const held = tuning.held_out || {};
  const levels = held.raw !== null && held.raw !== undefined ? [{ y: held.raw, name: `raw vectors ${label(held.raw)}` }] : [];
  const marks = held.chosen !== null && held.chosen !== undefined
    ? [{ x: chosen.dim, y: held.chosen, name: `chosen: β ${chosen.beta} γ ${chosen.gamma} dim ${chosen.dim}` }] : [];
  const chart = lineChart({ series, levels, marks, xLog: true, xLabel: "dim (log scale)",
    yLabel: "held-out Spearman ×100", title: "Held-out Spearman against dim, one line per (β, γ)" });
  const legend = document.createElement("div");
  legend.className = "legend";
  for (const [i, g] of GRID.entries()) {
    const item = document.createElement("span");
    item.append(swatch(COLOURS[i], ""), ` γ ${g}`);
    legend.append(item);
  }
  for (const [i, b] of GRID.entries()) {
    const item = document.createElement("span");
    item.append(swatch("#555", DASHES[i]), ` β ${b}`);
    legend.append(item);
  }
  const figure = document.createElement("figure");
  figure.className = "plot tuning-plot";
  figure.append(chart, legend);
  return figure;
}

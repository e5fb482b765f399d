// EPD.LossChart: a live training chart on EPD training nodes.
// Python sends websocket events "epd.train" {node, type, step, total, loss, reward?} to the client that
// queued the prompt while it trains; the node with that id and type gets a DOM widget with loss (left
// axis) and a second value (right axis) against step: reward, or else the first other number in the
// event (EPD Distill sends "val"). The last curve is kept, downsampled, in node.properties so a
// reloaded workflow shows it again (onConfigure).
// Only the display depends on this file; Python never waits for or reads anything from it.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";
import { chartLayout, downsample, formatTick } from "./epd_chart_math.js";
import { chainCallback, trainEventNode } from "./epd_util.js";

const EVENT = "epd.train";
const PROPERTY = "epd_train_curve";
const MAX_KEPT = 4000; // rows held per node while training
const MAX_SAVED = 200; // rows written into the workflow
const MAX_DRAWN = 400;
const HEIGHT = 170;
const COLORS = ["#4e9af1", "#f0a04b"]; // loss, second value
const FIXED_KEYS = new Set(["node", "type", "step", "total", "loss"]);
const BOX = { width: 320, height: HEIGHT - 22, pad: { left: 44, right: 44, top: 8, bottom: 18 } };
const SVG_NS = "http://www.w3.org/2000/svg";
const charts = new WeakMap(); // node -> {title, svg, rows: [[step, loss, second|null]], second, total, queued}

function svgEl(tag, attrs, text) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

function ensureChart(node) {
  let chart = charts.get(node);
  if (chart) return chart;
  const root = document.createElement("div");
  root.style.cssText = "display:flex;flex-direction:column;font:11px sans-serif;";
  const title = document.createElement("div");
  title.style.cssText = "padding:0 4px;opacity:0.85;white-space:nowrap;overflow:hidden;";
  const svg = svgEl("svg", { viewBox: `0 0 ${BOX.width} ${BOX.height}`, preserveAspectRatio: "none" });
  svg.style.cssText = "width:100%;flex:1;min-height:0;";
  root.append(title, svg);
  const widget = node.addDOMWidget("epd_train_chart", "epd_train_chart", root, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: () => HEIGHT,
  });
  widget.serialize = false; // never part of widgets_values
  const size = node.computeSize?.() ?? node.size;
  node.setSize?.([Math.max(node.size[0], 340), Math.max(node.size[1], size[1])]);
  chart = { title, svg, rows: [], second: null, total: null, queued: false };
  charts.set(node, chart);
  return chart;
}

function seriesOf(chart) {
  const kept = downsample(chart.rows, MAX_DRAWN);
  const series = [{ name: "loss", points: kept.map((r) => [r[0], r[1]]) }];
  if (kept.some((r) => Number.isFinite(r[2]))) series.push({ name: chart.second, points: kept.map((r) => [r[0], r[2]]) });
  return series;
}

/** The second value's name: reward when sent, else the first other number (e.g. EPD Distill's "val"). */
function secondKey(detail) {
  if (Number.isFinite(detail?.reward)) return "reward";
  return Object.keys(detail ?? {}).find((k) => !FIXED_KEYS.has(k) && Number.isFinite(detail[k])) ?? null;
}

function draw(node) {
  const chart = charts.get(node);
  if (!chart) return;
  chart.queued = false;
  const last = chart.rows.at(-1);
  const parts = last ? [`step ${last[0]}${chart.total ? `/${chart.total}` : ""}`, `loss ${formatTick(last[1])}`] : ["waiting for data"];
  if (last && Number.isFinite(last[2])) parts.push(`${chart.second} ${formatTick(last[2])}`);
  chart.title.textContent = parts.join(" · ");
  const layout = chartLayout(seriesOf(chart), BOX);
  const { width, height, pad } = BOX;
  const bottom = height - pad.bottom;
  const kids = [svgEl("rect", { x: pad.left, y: pad.top, width: width - pad.left - pad.right, height: bottom - pad.top, fill: "none", stroke: "#8884" })];
  layout.x.ticks.forEach((t, i) => {
    kids.push(svgEl("text", { x: layout.x.at[i], y: height - 4, "text-anchor": "middle", "font-size": 9, fill: "#aaa" }, formatTick(t)));
  });
  layout.lines.forEach((line, n) => {
    const left = line.side === "left";
    line.ticks.forEach((t, i) => {
      const attrs = { x: left ? pad.left - 3 : width - pad.right + 3, y: line.at[i] + 3, "font-size": 9 };
      kids.push(svgEl("text", { ...attrs, "text-anchor": left ? "end" : "start", fill: COLORS[n] }, formatTick(t)));
    });
    kids.push(svgEl("path", { d: line.d, fill: "none", stroke: COLORS[n], "stroke-width": 1.5 }));
  });
  chart.svg.replaceChildren(...kids);
  node.setDirtyCanvas?.(true, false);
}

function scheduleDraw(node) {
  const chart = charts.get(node);
  if (!chart || chart.queued) return;
  chart.queued = true;
  requestAnimationFrame(() => draw(node));
}

function save(node) {
  const chart = charts.get(node);
  if (!chart?.rows.length || !node.properties) return;
  node.properties[PROPERTY] = { total: chart.total, second: chart.second, rows: downsample(chart.rows, MAX_SAVED) };
}

function toRow(item, second) {
  const value = second ? Number(item?.[second]) : NaN;
  return [Number(item?.step), Number(item?.loss), Number.isFinite(value) ? value : null];
}

function onTrainEvent({ detail }) {
  const node = trainEventNode(app.graph, detail);
  if (!node) return;
  const chart = ensureChart(node);
  const last = chart.rows.at(-1);
  if (last && Number(detail.step) <= last[0]) [chart.rows, chart.second] = [[], null]; // a new run started
  chart.second ??= secondKey(detail); // a value may only start arriving after the first steps
  const row = toRow(detail, chart.second);
  chart.rows.push(row);
  if (chart.rows.length > MAX_KEPT) chart.rows = downsample(chart.rows, MAX_KEPT / 2);
  chart.total = Number.isFinite(Number(detail.total)) ? Number(detail.total) : null;
  if (chart.total && row[0] >= chart.total) save(node);
  scheduleDraw(node);
}

app.registerExtension({
  name: "EPD.LossChart",
  setup() {
    api.addEventListener(EVENT, onTrainEvent);
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.name?.startsWith("EPD_")) return;
    chainCallback(nodeType.prototype, "onConfigure", function () {
      const saved = this.properties?.[PROPERTY];
      if (!Array.isArray(saved?.rows) || !saved.rows.length) return;
      const chart = ensureChart(this);
      chart.rows = saved.rows.map((r) => [Number(r[0]), Number(r[1]), r[2] === null ? null : Number(r[2])]);
      chart.total = saved.total ?? null;
      chart.second = typeof saved.second === "string" ? saved.second : null;
      scheduleDraw(this);
    });
  },
});

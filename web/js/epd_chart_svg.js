// EPD chart drawing: the training chart's DOM (a legend over an SVG plot with axis titles) and its rendering.
// Sizes are graph pixels: the frontend scales the widget with the canvas zoom, so SVG text stays sharp, and the
// SVG's viewBox always matches its element, so widening the node never stretches the text. No app access here.
import { chartBox, chartLayout, formatTick } from "./epd_chart_math.js";

export const COLORS = ["#4e9af1", "#f0a04b"];
const SVG_NS = "http://www.w3.org/2000/svg";
const MUTED = "#aaa";

function svgEl(tag, attrs, text) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

/** {root, legend, svg}: root fills the widget; the SVG takes what the legend leaves. */
export function createChartView() {
  const root = document.createElement("div");
  root.className = "epd-train-chart";
  root.style.cssText = "display:flex;flex-direction:column;width:100%;height:100%;font-family:sans-serif;color:#ddd;";
  const legend = document.createElement("div");
  legend.className = "epd-chart-legend";
  legend.style.cssText = "flex:none;display:flex;flex-wrap:wrap;column-gap:1em;padding:0 4px;line-height:1.3;";
  const svg = svgEl("svg", { "aria-label": "training chart" });
  svg.style.cssText = "display:block;width:100%;flex:1;min-height:0;";
  root.append(legend, svg);
  return { root, legend, svg };
}

function legendItem(name, value, color) {
  const item = document.createElement("span");
  item.className = "epd-chart-series";
  const swatch = document.createElement("span");
  swatch.style.cssText = `display:inline-block;width:1.4em;height:0.25em;margin-right:0.35em;vertical-align:middle;background:${color};`;
  item.append(swatch, `${name}${value === null ? "" : ` ${formatTick(value)}`}`);
  return item;
}

/**
 * Draws `series` ([{legend, axis, points: [[x, y]], last}], at most two) with x-axis title `xTitle`, text of size
 * `font` graph pixels. Does nothing while the element has no size (a hidden widget).
 */
export function renderChart(view, series, { font, xTitle, empty }) {
  view.root.style.fontSize = `${font}px`;
  view.legend.replaceChildren(...series.map((s, i) => legendItem(s.legend, s.last, COLORS[i])));
  const width = view.svg.clientWidth;
  const height = view.svg.clientHeight;
  if (!(width > 0 && height > 0)) return;
  view.svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const longest = (line) => Math.max(0, ...(line?.ticks ?? []).map((t) => formatTick(t).length));
  const first = chartLayout(series, chartBox(width, height, font)); // its ticks size the margins
  const chars = { left: longest(first.lines[0]), right: series.length > 1 ? longest(first.lines[1]) : 0 };
  const box = chartBox(width, height, font, chars);
  const { pad } = box;
  const bottom = height - pad.bottom;
  const right = width - pad.right;
  const text = (attrs, s) => svgEl("text", { "font-size": font, fill: MUTED, ...attrs }, s);
  const kids = [svgEl("rect", { x: pad.left, y: pad.top, width: right - pad.left, height: bottom - pad.top, fill: "none", stroke: "#8886" })];
  kids.push(text({ x: (pad.left + right) / 2, y: height - font * 0.3, "text-anchor": "middle", class: "epd-axis-title" }, xTitle));
  if (!series.some((s) => s.points.length)) {
    kids.push(text({ x: (pad.left + right) / 2, y: (pad.top + bottom) / 2, "text-anchor": "middle" }, empty));
    view.svg.replaceChildren(...kids);
    return;
  }
  const layout = chartLayout(series, box);
  layout.x.ticks.forEach((t, i) => kids.push(text({ x: layout.x.at[i], y: bottom + font * 1.1, "text-anchor": "middle" }, formatTick(t))));
  layout.lines.forEach((line, n) => {
    const left = line.side === "left";
    const color = COLORS[n];
    line.ticks.forEach((t, i) => {
      const x = left ? pad.left - font * 0.25 : right + font * 0.25;
      kids.push(text({ x, y: line.at[i] + font * 0.35, "text-anchor": left ? "end" : "start", fill: color }, formatTick(t)));
    });
    const tx = left ? font * 0.9 : width - font * 0.4;
    const ty = (pad.top + bottom) / 2;
    const title = { x: tx, y: ty, "text-anchor": "middle", fill: color, class: "epd-axis-title", transform: `rotate(-90 ${tx} ${ty})` };
    kids.push(text(title, series[n].axis));
    kids.push(svgEl("path", { d: line.d, fill: "none", stroke: color, "stroke-width": Math.max(1.5, font / 8) }));
  });
  view.svg.replaceChildren(...kids);
}

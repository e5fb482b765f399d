// EPD.LossChart: a live training chart on EPD Distill and EPD RL Tune, with a legend and axis titles.
// Python sends "epd.train" {node, type, step, total, loss, val|reward} to the client that queued the prompt.
// A curve belongs to the workflow this page queued the prompt from (its root graph id) and to the node id and
// type in it: another tab never gets it, and it shows again when its tab comes back. The chart sits on the node
// from creation at a fixed height. Its rows are kept in node.properties; when a run ends (done, error or
// Cancel) the change tracker is told, so the saved workflow and an immediate reload keep the final curve.
// While a run goes on, a session copy lets a reloaded page show the whole curve. Python never reads any of it.
import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";
import { chartFont, downsample, seriesName } from "./epd_chart_math.js";
import { createChartView, renderChart } from "./epd_chart_svg.js";
import { addTrainEvent, curveKey, finishPrompt, restoreCurve, savedCurve } from "./epd_curves.js";
import { chainCallback, notifyGraphChange, trainEventNode } from "./epd_util.js";

const EVENT = "epd.train";
const ENDS = ["execution_success", "execution_error", "execution_interrupted"];
const PROPERTY = "epd_train_curve";
const SECOND = { EPD_Distill: "val", EPD_RLTune: "reward" }; // the training nodes and their second line
const CHART_HEIGHT = 230; // graph pixels, fixed: the chart never grows its node
const MAX_DRAWN = 400;
const SESSION_MS = 1000;
const book = new Map(); // curveKey -> curve (epd_curves.js)
const workflowOf = new Map(); // prompt id -> root graph id of the workflow this page queued it from
const charts = new WeakMap(); // node -> {view, curve, queued, sessionAt}
const live = new Set(); // nodes with a chart, redrawn when the zoom changes the text size
let running = null; // the prompt the server runs now
let font = chartFont(1);

const sessionKey = (curve) => `epd.train.${curveKey(curve.workflow, curve.node)}`;
const rootId = (node) => node?.graph?.rootGraph?.id ?? node?.graph?.id ?? null;
const typeOf = (node) => node.comfyClass ?? node.type;

function ensureChart(node) {
  let chart = charts.get(node);
  if (chart) return chart;
  const view = createChartView();
  const size = () => CHART_HEIGHT;
  const widget = node.addDOMWidget("epd_train_chart", "epd_train_chart", view.root, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: size,
    getMaxHeight: size,
  });
  widget.serialize = false; // never part of widgets_values
  chart = { view, curve: null, queued: false, sessionAt: 0 };
  charts.set(node, chart);
  live.add(node);
  new ResizeObserver(() => scheduleDraw(node)).observe(view.root);
  return chart;
}

function draw(node) {
  const chart = charts.get(node);
  if (!chart) return;
  chart.queued = false;
  const { curve } = chart;
  const type = typeOf(node);
  const rows = downsample(curve?.rows ?? [], MAX_DRAWN);
  const last = curve?.rows.at(-1);
  const second = curve?.second ?? SECOND[type];
  const value = (v) => (Number.isFinite(v) ? v : null);
  const series = [{ ...seriesName(type, "loss"), points: rows.map((r) => [r[0], r[1]]), last: value(last?.[1]) }];
  if (second) series.push({ ...seriesName(type, second), points: rows.map((r) => [r[0], r[2]]), last: value(last?.[2]) });
  let progress = last ? ` ${last[0]}${curve.total ? ` / ${curve.total}` : ""}` : "";
  if (curve?.done && curve.total && last[0] < curve.total) progress += " (stopped)";
  renderChart(chart.view, series, { font, xTitle: `iteration${progress}`, empty: "no run yet" });
}

function scheduleDraw(node) {
  const chart = charts.get(node);
  if (!chart || chart.queued) return;
  chart.queued = true;
  requestAnimationFrame(() => draw(node));
}

/** Puts `curve` on `node`: drawn, kept in its properties and, while it runs, in a session copy. */
function show(node, curve) {
  const chart = ensureChart(node);
  chart.curve = curve;
  node.properties ??= {};
  node.properties[PROPERTY] = savedCurve(curve);
  if (curve.done) sessionStorage.removeItem(sessionKey(curve));
  else if (Date.now() - chart.sessionAt > SESSION_MS) {
    chart.sessionAt = Date.now();
    sessionStorage.setItem(sessionKey(curve), JSON.stringify(node.properties[PROPERTY]));
  }
  scheduleDraw(node);
}

function visibleNode(curve) {
  if (curve.workflow !== (app.rootGraph?.id ?? null)) return null;
  return trainEventNode(app.rootGraph, curve);
}

function onTrainEvent({ detail }) {
  if (!detail || (detail.type && !(detail.type in SECOND))) return;
  const workflow = workflowOf.get(running) ?? app.rootGraph?.id ?? null; // unknown after a reload: the one on screen
  const curve = addTrainEvent(book, workflow, running, detail);
  const node = visibleNode(curve);
  if (node) show(node, curve); // else its tab is not on screen: the book keeps it for when it comes back
}

function onRunEnd({ detail }) {
  for (const curve of finishPrompt(book, detail?.prompt_id)) {
    sessionStorage.removeItem(sessionKey(curve));
    const node = visibleNode(curve);
    if (node) {
      show(node, curve);
      notifyGraphChange(app);
    }
  }
  if (detail?.prompt_id === running) running = null;
}

/** On load (file, tab switch, reload): the book's curve, else a session copy of a run in progress, else the saved one. */
function restore(node) {
  const workflow = rootId(node);
  const key = curveKey(workflow, node.id);
  const saved = node.properties?.[PROPERTY];
  let curve = book.get(key);
  if (curve?.type && curve.type !== typeOf(node)) curve = null;
  if (!curve) {
    const session = JSON.parse(sessionStorage.getItem(`epd.train.${key}`) ?? "null");
    curve = restoreCurve(session, workflow, node.id, typeOf(node)) ?? restoreCurve(saved, workflow, node.id, typeOf(node));
    if (!curve) return;
    if (session) curve.done = false;
    book.set(key, curve);
  }
  const changed = JSON.stringify(savedCurve(curve)) !== JSON.stringify(saved ?? null);
  show(node, curve);
  if (curve.done && changed) setTimeout(() => notifyGraphChange(app), 300); // after the load, which ignores changes
}

function watchZoom() {
  const now = chartFont(app.canvas?.ds?.scale);
  if (now === font) return;
  font = now;
  for (const node of live) {
    if (node.graph && charts.get(node)?.view.root.isConnected) scheduleDraw(node);
    else live.delete(node);
  }
}

app.registerExtension({
  name: "EPD.LossChart",
  setup() {
    const queue = api.queuePrompt;
    api.queuePrompt = async function (number, data, ...rest) {
      const result = await queue.call(this, number, data, ...rest);
      if (result?.prompt_id && data?.workflow?.id) workflowOf.set(result.prompt_id, data.workflow.id);
      return result;
    };
    const started = ({ detail }) => {
      if (detail?.prompt_id) running = detail.prompt_id;
    };
    for (const name of ["execution_start", "executing", "progress"]) api.addEventListener(name, started);
    for (const name of ENDS) api.addEventListener(name, onRunEnd);
    api.addEventListener(EVENT, onTrainEvent);
    setInterval(watchZoom, 250);
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!(nodeData?.name in SECOND)) return;
    chainCallback(nodeType.prototype, "onNodeCreated", function () {
      ensureChart(this);
      scheduleDraw(this);
    });
    chainCallback(nodeType.prototype, "onConfigure", function () {
      restore(this);
    });
  },
});

// EPD training curves, kept by workflow and node apart from the node objects: a tab switch or a reload
// rebuilds the nodes, and the curve must go on with its own workflow. Pure data, no DOM; tests in tests/web/.
import { downsample } from "./epd_chart_math.js";

const FIXED_KEYS = new Set(["node", "type", "step", "total", "loss"]);
export const MAX_KEPT = 4000; // rows held per curve while training
export const MAX_SAVED = 200; // rows written into the workflow

/** The second value's key in an event: reward when sent, else the first other number (EPD Distill's "val"). */
export function secondKey(detail) {
  if (Number.isFinite(detail?.reward)) return "reward";
  return Object.keys(detail ?? {}).find((k) => !FIXED_KEYS.has(k) && Number.isFinite(detail[k])) ?? null;
}

export function curveKey(workflow, node) {
  return `${workflow ?? ""}|${node}`;
}

function emptyCurve(workflow, prompt, detail) {
  return { workflow, node: String(detail.node), type: detail.type ?? null, prompt, rows: [], second: null, total: null, done: false };
}

/**
 * Adds one "epd.train" event to `book` (a Map) and returns its curve. A new prompt, or a step that does
 * not advance, or a finished curve, starts a new curve; a run in progress restored without its prompt (a
 * reload) adopts the first prompt it sees.
 */
export function addTrainEvent(book, workflow, prompt, detail) {
  const key = curveKey(workflow, detail.node);
  let curve = book.get(key);
  const step = Number(detail.step);
  const last = curve?.rows.at(-1);
  const otherPrompt = Boolean(prompt && curve?.prompt && curve.prompt !== prompt);
  const ended = Boolean(curve?.done && curve.prompt !== prompt); // a finished or saved curve: this is a new run
  if (!curve || otherPrompt || ended || (last && step <= last[0])) {
    curve = emptyCurve(workflow, prompt, detail);
    book.set(key, curve);
  }
  curve.prompt ??= prompt ?? null;
  curve.done = false;
  curve.second ??= secondKey(detail); // a value may only start arriving after the first steps
  const value = curve.second ? Number(detail[curve.second]) : NaN;
  curve.rows.push([step, Number(detail.loss), Number.isFinite(value) ? value : null]);
  if (curve.rows.length > MAX_KEPT) curve.rows = downsample(curve.rows, MAX_KEPT / 2);
  curve.total = Number.isFinite(Number(detail.total)) ? Number(detail.total) : null;
  return curve;
}

/** Marks the curves of `prompt` done (it ended: success, error or Cancel) and returns them. */
export function finishPrompt(book, prompt) {
  const done = [...book.values()].filter((c) => c.prompt === prompt && !c.done);
  for (const curve of done) curve.done = true;
  return done;
}

/** The form kept in node.properties: at most MAX_SAVED rows. */
export function savedCurve(curve) {
  return { total: curve.total, second: curve.second, done: curve.done, rows: downsample(curve.rows, MAX_SAVED) };
}

/** A curve from its saved form, or null when there is nothing to show. */
export function restoreCurve(saved, workflow, node, type) {
  if (!Array.isArray(saved?.rows) || !saved.rows.length) return null;
  const rows = saved.rows.map((r) => [Number(r[0]), Number(r[1]), r[2] === null ? null : Number(r[2])]);
  const second = typeof saved.second === "string" ? saved.second : null;
  const total = Number.isFinite(saved.total) ? saved.total : null;
  return { workflow, node: String(node), type, prompt: null, rows, second, total, done: saved.done !== false };
}

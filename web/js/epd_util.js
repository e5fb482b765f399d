// EPD shared helpers for the web extensions. Registers nothing and imports nothing,
// so the pure parts (tableSummary, findNodeByExecutionId) also run under `node --test`.

/** Wrap `object[property]` so `callback` runs after the original; the original's result is returned. */
export function chainCallback(object, property, callback) {
  const original = object[property];
  object[property] = function (...args) {
    const result = original?.apply(this, args);
    callback.apply(this, args);
    return result;
  };
}

/**
 * Tells the open workflow's change tracker (ComfyUI frontend 1.x) that code changed the graph (a widget value,
 * node.properties), so the modified mark, undo and the draft that a reload restores include the change.
 */
export function notifyGraphChange(app) {
  const tracker = app?.extensionManager?.workflow?.activeWorkflow?.changeTracker;
  if (typeof tracker?.checkState === "function") tracker.checkState();
  else app?.graph?.setDirtyCanvas?.(true, true);
}

/** The widget called `name` on `node`, or undefined (widgets are found by name, never by index). */
export function findWidget(node, name) {
  return node?.widgets?.find((w) => w.name === name);
}

/**
 * The node for a server-side id: "12" on the root graph, "12:5:3" through nested subgraph nodes.
 * `graph` needs getNodeById; a subgraph node exposes its inner graph as `subgraph`.
 */
export function findNodeByExecutionId(graph, id) {
  let node = null;
  for (const part of String(id ?? "").split(":")) {
    if (!graph || part === "") return null;
    node = graph.getNodeById(Number(part)) ?? graph.getNodeById(part);
    graph = node?.subgraph;
  }
  return node ?? null;
}

/**
 * The node a training event belongs to: found by its execution id AND of the node type the event
 * names, so an event never lands on another workflow's node that happens to share the id (a
 * switched tab shows a different graph). Events without a type (older servers) match by id only.
 */
export function trainEventNode(graph, detail) {
  const node = findNodeByExecutionId(graph, detail?.node);
  if (!node || (detail?.type && (node.comfyClass ?? node.type) !== detail.type)) return null;
  return node;
}

/** The first string of a node's ui "text" output ({"text": [s]}), or null. */
export function firstText(message) {
  const text = message?.text;
  if (typeof text === "string") return text;
  return Array.isArray(text) && typeof text[0] === "string" ? text[0] : null;
}

/**
 * Summary of an EPD table JSON (epd_core.table_io.table_to_json):
 * {ok: true, steps, points, provenance, form, sigmaMax, sigmaMin, afs} or {ok: false, error}.
 */
export function tableSummary(text) {
  if (typeof text !== "string" || !text.trim()) return { ok: false, error: "empty" };
  let obj;
  try {
    obj = JSON.parse(text);
  } catch (err) {
    return { ok: false, error: `not JSON (${err.message})` };
  }
  if (!obj || typeof obj !== "object" || obj.format !== "epd-table") {
    return { ok: false, error: "not an EPD table (format is not 'epd-table')" };
  }
  const meta = obj.metadata && typeof obj.metadata === "object" ? obj.metadata : {};
  const sigmas = Array.isArray(obj.sigmas) ? obj.sigmas.filter(Number.isFinite) : [];
  return {
    ok: true,
    steps: Number(obj.num_steps),
    points: Number(obj.num_points),
    provenance: String(meta.provenance ?? "unknown"),
    form: meta.form ? String(meta.form) : null,
    afs: Boolean(obj.afs),
    sigmaMax: sigmas.length ? Math.max(...sigmas) : null,
    sigmaMin: sigmas.length ? Math.min(...sigmas) : null,
  };
}

/** One line for a summary: "5 steps · K 2 · default · data · σ 14.6→0.029". */
export function formatTableSummary(summary) {
  if (!summary?.ok) return summary?.error ?? "no table";
  const parts = [`${summary.steps} steps`, `K ${summary.points}`, summary.provenance];
  if (summary.form) parts.push(summary.form);
  if (summary.afs) parts.push("AFS");
  if (summary.sigmaMax !== null) {
    parts.push(`σ ${formatSigma(summary.sigmaMax)}→${formatSigma(summary.sigmaMin)}`);
  }
  return parts.join(" · ");
}

function formatSigma(value) {
  return Number(value.toPrecision(3)).toString();
}

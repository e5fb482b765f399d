// Pure helpers of the web extension (web/js/epd_util.js); run with `node --test tests/web/`.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  chainCallback,
  findNodeByExecutionId,
  findWidget,
  firstText,
  formatTableSummary,
  notifyGraphChange,
  tableSummary,
  trainEventNode,
} from "../../web/js/epd_util.js";

// The JSON of a 5-step, K=2 default table, as epd_core.table_io.table_to_json writes it (arrays trimmed).
const TABLE = JSON.stringify({
  afs: false,
  format: "epd-table",
  format_version: "1",
  metadata: { form: "data", provenance: "default", table_kind: "uniform" },
  num_points: 2,
  num_steps: 5,
  sigmas: [14.6, 6.08, 2.23, 0.69, 0.17, 0.029],
});

test("tableSummary reads steps, K, provenance, form and the sigma range", () => {
  const s = tableSummary(TABLE);
  assert.deepEqual(s, {
    ok: true,
    steps: 5,
    points: 2,
    provenance: "default",
    form: "data",
    afs: false,
    sigmaMax: 14.6,
    sigmaMin: 0.029,
  });
  assert.equal(formatTableSummary(s), "5 steps · K 2 · default · data · σ 14.6→0.029");
});

test("tableSummary refuses empty text, bad JSON and other objects", () => {
  assert.deepEqual(tableSummary("  "), { ok: false, error: "empty" });
  assert.match(tableSummary("{oops").error, /^not JSON/);
  assert.match(tableSummary('{"format": "other"}').error, /not an EPD table/);
  assert.equal(formatTableSummary(tableSummary("null")), "not an EPD table (format is not 'epd-table')");
});

test("a table without metadata reports provenance unknown", () => {
  const s = tableSummary(JSON.stringify({ format: "epd-table", num_steps: 3, num_points: 1, afs: true }));
  assert.equal(formatTableSummary(s), "3 steps · K 1 · unknown · AFS");
});

test("firstText takes the first string of a ui text output", () => {
  assert.equal(firstText({ text: ["a", "b"] }), "a");
  assert.equal(firstText({ text: "a" }), "a");
  assert.equal(firstText({ images: [] }), null);
  assert.equal(firstText(undefined), null);
});

test("chainCallback runs the original first and returns its result", () => {
  const calls = [];
  const obj = { hook: (x) => (calls.push(["orig", x]), "result") };
  chainCallback(obj, "hook", (x) => calls.push(["ours", x]));
  assert.equal(obj.hook(1), "result");
  assert.deepEqual(calls, [["orig", 1], ["ours", 1]]);
  const bare = {};
  chainCallback(bare, "hook", () => calls.push(["only"]));
  assert.equal(bare.hook(), undefined);
});

test("findWidget finds by name", () => {
  const node = { widgets: [{ name: "a" }, { name: "table_json", value: "x" }] };
  assert.equal(findWidget(node, "table_json").value, "x");
  assert.equal(findWidget(node, "missing"), undefined);
  assert.equal(findWidget({}, "a"), undefined);
});

test("findNodeByExecutionId walks subgraph ids like 12:5", () => {
  const graphOf = (nodes) => ({ getNodeById: (id) => nodes.find((n) => n.id === id) ?? null });
  const inner = { id: 5, title: "inner" };
  const outer = { id: 12, subgraph: graphOf([inner]) };
  const root = graphOf([outer, { id: 3, title: "plain" }]);
  assert.equal(findNodeByExecutionId(root, "3").title, "plain");
  assert.equal(findNodeByExecutionId(root, 3).title, "plain");
  assert.equal(findNodeByExecutionId(root, "12:5"), inner);
  assert.equal(findNodeByExecutionId(root, "3:1"), null); // 3 has no subgraph
  assert.equal(findNodeByExecutionId(root, "99"), null);
  assert.equal(findNodeByExecutionId(root, ""), null);
  assert.equal(findNodeByExecutionId(null, "3"), null);
});

test("trainEventNode needs the event's node type as well as its id", () => {
  const graphOf = (nodes) => ({ getNodeById: (id) => nodes.find((n) => n.id === id) ?? null });
  const distill = { id: 4, comfyClass: "EPD_Distill" };
  const guider = { id: 4, type: "CFGGuider" }; // the same id in another workflow's graph
  assert.equal(trainEventNode(graphOf([distill]), { node: "4", type: "EPD_Distill" }), distill);
  assert.equal(trainEventNode(graphOf([guider]), { node: "4", type: "EPD_Distill" }), null);
  assert.equal(trainEventNode(graphOf([guider]), { node: "4" }), guider); // an older server sends no type
  assert.equal(trainEventNode(graphOf([distill]), { node: "9", type: "EPD_Distill" }), null);
});

test("notifyGraphChange asks the active workflow's change tracker to check the graph", () => {
  let checked = 0;
  const app = { extensionManager: { workflow: { activeWorkflow: { changeTracker: { checkState: () => checked++ } } } } };
  notifyGraphChange(app);
  assert.equal(checked, 1);
  let dirty = null;
  notifyGraphChange({ graph: { setDirtyCanvas: (...a) => (dirty = a) } }); // no tracker: redraw only
  assert.deepEqual(dirty, [true, true]);
  notifyGraphChange(undefined); // nothing to tell: no throw
});

// Training curves by workflow and node (web/js/epd_curves.js); run with `node --test tests/web/`.
import assert from "node:assert/strict";
import { test } from "node:test";

import { addTrainEvent, curveKey, finishPrompt, restoreCurve, savedCurve, secondKey } from "../../web/js/epd_curves.js";

const event = (step, extra = {}) => ({ node: "4", type: "EPD_Distill", step, total: 3, loss: 1 / step, val: 0.5, ...extra });

test("secondKey prefers reward, else the first other number", () => {
  assert.equal(secondKey({ node: "1", step: 1, loss: 2, reward: 0.3, val: 1 }), "reward");
  assert.equal(secondKey({ node: "1", step: 1, loss: 2, val: 1 }), "val");
  assert.equal(secondKey({ node: "1", step: 1, loss: 2 }), null);
});

test("events of one prompt fill one curve per workflow and node", () => {
  const book = new Map();
  addTrainEvent(book, "wfA", "p1", event(1));
  const curve = addTrainEvent(book, "wfA", "p1", event(2));
  addTrainEvent(book, "wfB", "p2", event(1)); // another workflow: another curve
  assert.equal(book.size, 2);
  assert.deepEqual(curve.rows, [[1, 1, 0.5], [2, 0.5, 0.5]]);
  assert.equal(curve.second, "val");
  assert.equal(book.get(curveKey("wfA", "4")), curve);
});

test("a new prompt or a step that does not advance starts a new curve", () => {
  const book = new Map();
  addTrainEvent(book, "wf", "p1", event(1));
  addTrainEvent(book, "wf", "p1", event(2));
  assert.equal(addTrainEvent(book, "wf", "p2", event(3)).rows.length, 1); // new prompt
  assert.equal(addTrainEvent(book, "wf", "p2", event(1)).rows.length, 1); // step went back
});

test("finishPrompt marks only that prompt's curves done; a finished curve is not continued", () => {
  const book = new Map();
  const a = addTrainEvent(book, "wf", "p1", event(1));
  const b = addTrainEvent(book, "wf2", "p2", event(1));
  assert.deepEqual(finishPrompt(book, "p1"), [a]);
  assert.equal(a.done, true);
  assert.equal(b.done, false);
  assert.deepEqual(finishPrompt(book, "p1"), []); // once
  assert.notEqual(addTrainEvent(book, "wf", null, event(2)), a); // after a reload, a saved run is not extended
});

test("a run in progress restored after a reload adopts the next prompt and goes on", () => {
  const book = new Map();
  const saved = savedCurve({ total: 3, second: "val", done: false, rows: [[1, 1, 0.5]] });
  const curve = restoreCurve(saved, "wf", "4", "EPD_Distill");
  assert.equal(curve.done, false);
  book.set(curveKey("wf", "4"), curve);
  assert.equal(addTrainEvent(book, "wf", "p9", event(2)), curve);
  assert.equal(curve.prompt, "p9");
  assert.deepEqual(curve.rows.map((r) => r[0]), [1, 2]);
});

test("savedCurve keeps at most 200 rows; restoreCurve reads old saves as finished", () => {
  const rows = Array.from({ length: 1000 }, (_, i) => [i + 1, 1, null]);
  const saved = savedCurve({ total: 1000, second: null, done: true, rows });
  assert.equal(saved.rows.length, 200);
  assert.deepEqual(saved.rows.at(-1), [1000, 1, null]);
  const old = restoreCurve({ total: 5, second: "val", rows: [[1, 2, 3]] }, "wf", 4, "EPD_Distill");
  assert.equal(old.done, true);
  assert.equal(old.node, "4");
  assert.equal(restoreCurve({ rows: [] }, "wf", 4, "EPD_Distill"), null);
});

// Pure chart maths of the web extension (web/js/epd_chart_math.js); run with `node --test tests/web/`.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  chartBox,
  chartFont,
  chartLayout,
  downsample,
  extent,
  formatTick,
  niceStep,
  niceTicks,
  pathData,
  scaleLinear,
  seriesName,
} from "../../web/js/epd_chart_math.js";

test("extent skips non-finite values and widens flat or empty series", () => {
  assert.deepEqual(extent([3, NaN, -1, Infinity, 2, null]), [-1, 3]);
  assert.deepEqual(extent([]), [0, 1]);
  assert.deepEqual(extent([4, 4]), [2, 6]); // half of |4| each side
  assert.deepEqual(extent([0]), [-0.5, 0.5]);
});

test("niceStep rounds span/count up to 1, 2 or 5 times a power of ten", () => {
  assert.equal(niceStep(10, 4), 5); // 2.5 -> 5
  assert.equal(niceStep(1, 10), 0.1); // 0.1 -> 1 * 0.1
  assert.equal(niceStep(0.9, 6), 0.2); // 0.15 -> 2 * 0.1
  assert.equal(niceStep(700, 2), 500); // 350 -> 5 * 100
});

test("niceTicks covers the range with nice, evenly spaced ticks", () => {
  const t = niceTicks(0.013, 0.92, 4); // span 0.907 / 4 = 0.227 -> step 0.5
  assert.deepEqual(t, { min: 0, max: 1, step: 0.5, ticks: [0, 0.5, 1] });
  const u = niceTicks(-3, 7, 5); // span 10 / 5 = 2 -> step 2
  assert.deepEqual(u.ticks, [-4, -2, 0, 2, 4, 6, 8]);
  assert.ok(u.min <= -3 && u.max >= 7);
  const v = niceTicks(0.1, 0.3, 2); // span 0.2 / 2 = 0.1 -> step 0.1
  assert.deepEqual(v, { min: 0.1, max: 0.3, step: 0.1, ticks: [0.1, 0.2, 0.3] }); // no 0.30000000000000004
});

test("niceTicks of an empty range falls back to a unit-wide one", () => {
  const t = niceTicks(5, 5, 4); // extent([5, 5]) = [2.5, 7.5], step 2.5/... -> 2
  assert.ok(t.min <= 2.5 && t.max >= 7.5 && t.ticks.length >= 2);
});

test("scaleLinear maps ends to ends and flips for screen y", () => {
  const sy = scaleLinear([0, 10], [100, 0]);
  assert.equal(sy(0), 100);
  assert.equal(sy(10), 0);
  assert.equal(sy(2.5), 75);
  assert.equal(scaleLinear([3, 3], [0, 50])(3), 25); // zero-width domain -> middle
});

test("downsample keeps first and last and at most maxPoints", () => {
  const pts = Array.from({ length: 101 }, (_, i) => [i, i * i]);
  const out = downsample(pts, 11); // stride (101 - 1) / 10 = 10
  assert.equal(out.length, 11);
  assert.deepEqual(out[0], [0, 0]);
  assert.deepEqual(out[10], [100, 10000]);
  assert.deepEqual(out[3], [30, 900]);
  assert.notEqual(downsample(pts, 500), pts); // a copy even when nothing is dropped
  assert.equal(downsample(pts, 500).length, 101);
});

test("pathData starts a new sub-path after a gap", () => {
  const id = (v) => v;
  assert.equal(pathData([[0, 1], [1, 2], [2, null], [3, 4]], id, id), "M0.0,1.0L1.0,2.0M3.0,4.0");
  assert.equal(pathData([], id, id), "");
});

test("formatTick gives short labels", () => {
  assert.equal(formatTick(0), "0");
  assert.equal(formatTick(0.25), "0.25");
  assert.equal(formatTick(1234), "1234");
  assert.equal(formatTick(0.00123), "1.23e-3");
  assert.equal(formatTick(0.001), "1e-3");
  assert.equal(formatTick(250000), "2.5e5");
  assert.equal(formatTick(-0.5), "-0.5");
});

test("chartLayout puts loss on the left, reward on the right, ticks inside the box", () => {
  const box = { width: 320, height: 148, pad: { left: 44, right: 44, top: 8, bottom: 18 } };
  const loss = { name: "loss", points: [[1, 0.8], [2, 0.4], [3, 0.2], [4, 0.1]] };
  const reward = { name: "reward", points: [[1, 10], [2, 20], [3, null], [4, 40]] };
  const layout = chartLayout([loss, reward], box);
  assert.deepEqual(layout.lines.map((l) => [l.name, l.side]), [["loss", "left"], ["reward", "right"]]);
  // x spans [1, 4] -> [44, 276]: step 1 at 44, step 4 at 276
  assert.ok(layout.lines[0].d.startsWith("M44.0,") && layout.lines[0].d.includes("L276.0,"));
  assert.equal(layout.lines[1].d.split("M").length - 1, 2); // the null reward splits the line
  for (const line of layout.lines) {
    for (const y of line.at) assert.ok(y >= box.pad.top - 1e-9 && y <= box.height - box.pad.bottom + 1e-9);
  }
  for (const x of layout.x.at) assert.ok(x >= 44 && x <= 276);
  assert.equal(layout.x.ticks[0], 1);
});

test("chartLayout of an empty series draws nothing and does not throw", () => {
  const layout = chartLayout([{ name: "loss", points: [] }], { width: 100, height: 50, pad: { left: 0, right: 0, top: 0, bottom: 0 } });
  assert.equal(layout.lines[0].d, "");
});

test("chartFont keeps text near 9 screen pixels within 11-16 graph pixels", () => {
  assert.equal(chartFont(1), 11); // 9 / 1 -> at least 11
  assert.equal(chartFont(0.6), 15); // the examples open at 0.6: 15 * 0.6 = 9 screen pixels
  assert.equal(chartFont(0.3), 16); // capped
  assert.equal(chartFont(undefined), 11);
});

test("chartBox leaves room for the longest tick labels and the axis titles", () => {
  const box = chartBox(300, 180, 10, { left: 4, right: 0 });
  // labels ceil(10 * (0.58 * 4 + 0.4)) = 28, title ceil(10 * 1.4) = 14; no right axis: one em
  assert.deepEqual(box.pad, { left: 28 + 14, right: 10, top: 7, bottom: 28 });
  assert.equal(chartBox(300, 180, 10, { left: 1, right: 7 }).pad.right, 45 + 14); // ceil(10 * 4.46) = 45
});

test("seriesName names each line on each training node", () => {
  assert.deepEqual(seriesName("EPD_Distill", "val"), { legend: "best validation error", axis: "validation error" });
  assert.deepEqual(seriesName("EPD_RLTune", "reward"), { legend: "mean reward", axis: "reward" });
  assert.deepEqual(seriesName("EPD_Distill", "loss"), { legend: "train loss", axis: "train loss" });
  assert.deepEqual(seriesName("Other", "x"), { legend: "x", axis: "x" });
});

// EPD chart maths: pure scaling, ticks and SVG path data for the training chart.
// No DOM and no imports; the DOM side lives in epd_loss_chart.js, tests in tests/web/.

/** [min, max] of the finite values; a flat or empty series gets a unit-wide range around its value. */
export function extent(values) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (Number.isFinite(v)) {
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
  }
  if (lo === Infinity) return [0, 1];
  if (lo === hi) {
    const half = Math.abs(lo) > 0 ? Math.abs(lo) * 0.5 : 0.5;
    return [lo - half, hi + half];
  }
  return [lo, hi];
}

/** A "nice" step (1, 2 or 5 times a power of ten) near span / count. */
export function niceStep(span, count) {
  const raw = span / Math.max(1, count);
  const power = 10 ** Math.floor(Math.log10(raw));
  const unit = raw / power;
  const nice = unit <= 1 ? 1 : unit <= 2 ? 2 : unit <= 5 ? 5 : 10;
  return nice * power;
}

/** Ticks covering [lo, hi] with about `count` nice steps: {min, max, step, ticks}. */
export function niceTicks(lo, hi, count = 4) {
  if (!(hi > lo)) [lo, hi] = extent([lo, hi]);
  const step = niceStep(hi - lo, count);
  const clean = (v) => Number(v.toPrecision(12)); // 0.30000000000000004 -> 0.3
  const min = clean(Math.floor(lo / step) * step);
  const max = clean(Math.ceil(hi / step) * step);
  const ticks = [];
  for (let i = 0; min + i * step <= max + step * 1e-9; i++) ticks.push(clean(min + i * step));
  return { min, max, step, ticks };
}

/** A linear map from [d0, d1] to [r0, r1]; a zero-width domain maps to the middle of the range. */
export function scaleLinear([d0, d1], [r0, r1]) {
  const span = d1 - d0;
  return (v) => (span === 0 ? (r0 + r1) / 2 : r0 + ((v - d0) / span) * (r1 - r0));
}

/** At most `maxPoints` of [x, y] points, evenly strided, always keeping the first and the last. */
export function downsample(points, maxPoints) {
  if (points.length <= maxPoints || maxPoints < 2) return points.slice();
  const out = [];
  const stride = (points.length - 1) / (maxPoints - 1);
  for (let i = 0; i < maxPoints; i++) out.push(points[Math.round(i * stride)]);
  return out;
}

/** SVG path data through the points with finite x and y; a gap starts a new sub-path. */
export function pathData(points, sx, sy) {
  let d = "";
  let pen = false;
  for (const [x, y] of points) {
    if (!Number.isFinite(x) || !Number.isFinite(y)) {
      pen = false;
      continue;
    }
    d += `${pen ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`;
    pen = true;
  }
  return d;
}

/** Short tick label: 0.00123 -> "1.23e-3", 1234 -> "1234", 0.25 -> "0.25". */
export function formatTick(v) {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-2) return v.toExponential(2).replace(/\.?0+e/, "e").replace("e+", "e");
  if (a >= 100) return String(Math.round(v));
  return String(Number(v.toPrecision(3)));
}

/**
 * Layout of a chart with up to two series on their own y scales (left, right) over a shared x axis.
 * series: [{name, points: [[x, y], ...]}]; box: {width, height, pad: {left, right, top, bottom}, font?}.
 * Returns {x: {ticks, at}, lines: [{name, d, ticks, at, side}]} with pixel positions for the ticks.
 */
export function chartLayout(series, box) {
  const { width, height, pad } = box;
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const [x0, x1] = xs.length ? extent(xs) : [0, 1];
  const gap = box.font ? box.font * 4.5 : 60; // room for one x tick label
  const xt = niceTicks(x0, x1, Math.max(2, Math.floor((width - pad.left - pad.right) / gap)));
  const sx = scaleLinear([x0, x1], [pad.left, width - pad.right]);
  const lines = series.slice(0, 2).map((s, i) => {
    const [y0, y1] = extent(s.points.map((p) => p[1]));
    const yt = niceTicks(y0, y1, 3);
    const sy = scaleLinear([yt.min, yt.max], [height - pad.bottom, pad.top]);
    return { name: s.name, d: pathData(s.points, sx, sy), ticks: yt.ticks, at: yt.ticks.map(sy), side: i ? "right" : "left" };
  });
  const xTicks = xt.ticks.filter((t) => t >= x0 && t <= x1);
  return { x: { ticks: xTicks, at: xTicks.map(sx) }, lines };
}

/** Text size in graph pixels at a canvas zoom: about 9 screen pixels, kept within 11-16 graph pixels. */
export function chartFont(scale) {
  const zoom = Number.isFinite(scale) && scale > 0 ? scale : 1;
  return Math.min(16, Math.max(11, Math.round(9 / zoom)));
}

/**
 * The box of a `width` x `height` chart with text of size `font`: room for the tick labels (`chars`, the
 * longest label's length on the left and right; 0 for no right axis) and for the axis titles.
 */
export function chartBox(width, height, font, chars = { left: 4, right: 4 }) {
  const label = (n) => Math.ceil(font * (0.58 * n + 0.4));
  const title = Math.ceil(font * 1.4);
  const right = chars.right > 0 ? label(chars.right) + title : Math.ceil(font);
  return { width, height, font, pad: { left: label(chars.left) + title, right, top: Math.ceil(font * 0.7), bottom: Math.ceil(font * 2.8) } };
}

const NAMES = {
  EPD_Distill: { loss: ["train loss", "train loss"], val: ["best validation error", "validation error"] },
  EPD_RLTune: { loss: ["policy loss", "policy loss"], reward: ["mean reward", "reward"] },
};

/** {legend, axis}: the names of an event value (`loss`, `val`, `reward`, ...) on a node type. */
export function seriesName(type, key) {
  const [legend, axis] = NAMES[type]?.[key] ?? [key, key];
  return { legend, axis };
}

// Charts drawn as SVG by hand (no library): vertical bars, horizontal bars and a time line.
// Each chart fills a viewBox and scales with its container; an empty chart says so in words.
// Every chart sets data-* attributes (points, total) so tests and people can read what it shows.

const NS = 'http://www.w3.org/2000/svg';
const W = 600;
const H = 220;
const PAD = { l: 44, r: 12, t: 12, b: 34 };

export function s(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

function reset(svg, w = W, h = H) {
  svg.replaceChildren();
  svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
  svg.setAttribute('preserveAspectRatio', 'xMidYMid meet');
  svg.classList.add('chart');
  return svg;
}

function empty(svg, message, w = W, h = H) {
  svg.append(s('text', { x: w / 2, y: h / 2, 'text-anchor': 'middle', class: 'chart-empty' }, message));
}

// A "nice" axis maximum and tick step for values up to `max`.
export function niceScale(max, ticks = 4) {
  if (!(max > 0)) return { max: 1, step: 0.25 };
  const raw = max / ticks;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((st) => st >= raw);
  return { max: Math.ceil(max / step) * step, step };
}

function yAxis(svg, scale, y, x0, x1, fmt) {
  for (let v = 0; v <= scale.max + 1e-9; v += scale.step) {
    const yy = y(v);
    svg.append(s('line', { x1: x0, x2: x1, y1: yy, y2: yy, class: 'grid' }));
    svg.append(s('text', { x: x0 - 6, y: yy + 4, 'text-anchor': 'end', class: 'tick' }, fmt(v)));
  }
}

const fmtTick = (v) => (Math.abs(v) >= 1000 ? (v / 1000).toFixed(1) + 'k' : String(+v.toFixed(2)));

// items: [{label, value, color?, title?}]; opts: {empty, fmt, refLines: [{value, label}]}
export function barChart(svg, items, opts = {}) {
  reset(svg);
  const total = items.reduce((a, it) => a + (Number(it.value) || 0), 0);
  svg.dataset.points = String(items.length);
  svg.dataset.total = String(+total.toFixed(3));
  if (!items.length) return empty(svg, opts.empty || 'no data yet');
  const refMax = Math.max(0, ...(opts.refLines || []).map((r) => r.value));
  const scale = niceScale(Math.max(refMax, ...items.map((it) => Number(it.value) || 0)));
  const x0 = PAD.l, x1 = W - PAD.r, y0 = H - PAD.b, y1 = PAD.t;
  const y = (v) => y0 - (v / scale.max) * (y0 - y1);
  yAxis(svg, scale, y, x0, x1, opts.fmt || fmtTick);
  const slot = (x1 - x0) / items.length;
  const bw = Math.max(2, Math.min(60, slot * 0.7));
  const every = Math.ceil(items.length / 12);  // label at most ~12 bars
  items.forEach((it, i) => {
    const v = Number(it.value) || 0;
    const cx = x0 + slot * (i + 0.5);
    const rect = s('rect', { x: cx - bw / 2, y: y(v), width: bw, height: Math.max(0, y0 - y(v)),
      fill: it.color || 'var(--accent)', class: 'bar' });
    rect.append(s('title', {}, it.title || `${it.label}: ${v}`));
    svg.append(rect);
    if (i % every === 0) svg.append(s('text', { x: cx, y: y0 + 16, 'text-anchor': 'middle', class: 'tick' }, it.label));
    if (opts.values && v) svg.append(s('text', { x: cx, y: y(v) - 4, 'text-anchor': 'middle', class: 'value' }, String(v)));
  });
  for (const r of opts.refLines || []) {
    svg.append(s('line', { x1: x0, x2: x1, y1: y(r.value), y2: y(r.value), class: 'ref' }));
    svg.append(s('text', { x: x1 - 2, y: y(r.value) - 3, 'text-anchor': 'end', class: 'ref-label' }, r.label));
  }
  svg.append(s('line', { x1: x0, x2: x1, y1: y0, y2: y0, class: 'axis' }));
}

// Horizontal bars, one row per category (grade distribution): label, bar, count and share.
export function hbarChart(svg, items, opts = {}) {
  const rowH = 28;
  const h = Math.max(60, items.length * rowH + 16);
  reset(svg, W, h);
  const total = items.reduce((a, it) => a + (Number(it.value) || 0), 0);
  svg.dataset.points = String(items.length);
  svg.dataset.total = String(total);
  if (!total) return empty(svg, opts.empty || 'no data yet', W, h);
  const max = Math.max(...items.map((it) => Number(it.value) || 0));
  const x0 = 70, x1 = W - 110;
  items.forEach((it, i) => {
    const v = Number(it.value) || 0;
    const yy = 8 + i * rowH;
    const w = max ? ((x1 - x0) * v) / max : 0;
    svg.append(s('text', { x: x0 - 8, y: yy + 17, 'text-anchor': 'end', class: 'label' }, it.label));
    const rect = s('rect', { x: x0, y: yy + 3, width: Math.max(v ? 2 : 0, w), height: rowH - 8, fill: it.color, class: 'bar',
      'data-label': it.label, 'data-value': v });
    rect.append(s('title', {}, `${it.label}: ${v}`));
    svg.append(rect);
    const pct = total ? ((100 * v) / total).toFixed(1) : '0';
    svg.append(s('text', { x: x0 + w + 6, y: yy + 17, class: 'value' }, `${v} (${pct} %)`));
  });
}

// points: [{t: epoch ms, v: number}], one series; opts: {empty, color, fmt, span}
export function lineChart(svg, points, opts = {}) {
  reset(svg);
  svg.dataset.points = String(points.length);
  svg.dataset.last = points.length ? String(points[points.length - 1].v) : '';
  const pts = points.filter((p) => p.v !== null && p.v !== undefined && !Number.isNaN(p.v));
  if (!pts.length) return empty(svg, opts.empty || 'no data yet');
  const x0 = PAD.l, x1 = W - PAD.r, y0 = H - PAD.b, y1 = PAD.t;
  let tMin = pts[0].t, tMax = pts[pts.length - 1].t;
  if (tMax - tMin < 60000) tMin = tMax - 60000;  // at least one minute wide
  const lo = opts.zero === false ? Math.min(...pts.map((p) => p.v)) : 0;
  const scale = niceScale(Math.max(...pts.map((p) => p.v)) - lo);
  const x = (t) => x0 + ((t - tMin) / (tMax - tMin)) * (x1 - x0);
  const y = (v) => y0 - ((v - lo) / scale.max) * (y0 - y1);
  yAxis(svg, scale, y, x0, x1, (v) => (opts.fmt || fmtTick)(v + lo));
  for (let i = 0; i <= 3; i++) {
    const t = tMin + ((tMax - tMin) * i) / 3;
    svg.append(s('text', { x: x(t), y: y0 + 16, 'text-anchor': i === 0 ? 'start' : i === 3 ? 'end' : 'middle', class: 'tick' },
      new Date(t).toLocaleTimeString([], { hour12: false, hour: '2-digit', minute: '2-digit' })));
  }
  const d = pts.map((p, i) => (i ? 'L' : 'M') + x(p.t).toFixed(1) + ',' + y(p.v).toFixed(1)).join(' ');
  svg.append(s('path', { d, class: 'line', stroke: opts.color || 'var(--accent)' }));
  const last = pts[pts.length - 1];
  svg.append(s('circle', { cx: x(last.t), cy: y(last.v), r: 4, fill: opts.color || 'var(--accent)' }));
  svg.append(s('line', { x1: x0, x2: x1, y1: y0, y2: y0, class: 'axis' }));
}

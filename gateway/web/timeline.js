// A lot's life drawn as a timeline: one lane per stage (registry, gavage, SQAL, consumer) on a
// shared wall-clock axis, a band for the span of each stage, a dot per event, the key steps as
// labelled markers, and the mean duck weight of the feedings as a curve in the gavage lane.

import { s } from './charts.js';

const LANES = ['registry', 'gavage', 'sqal', 'consumer'];
const LANE_LABEL = { registry: 'Registry', gavage: 'Gavage', sqal: 'SQAL', consumer: 'Consumer' };
const COLOR = { registry: '#6d6d6d', gavage: '#b8860b', sqal: '#3367d6', consumer: '#8e44ad' };
const MILESTONES = {
  lot_created: 'created', mark_ready: 'ready', assign: 'on the line', close_inspection: 'inspected',
  product_created: 'product', consumer_feedback: 'first feedback', suspend: 'suspended', close: 'closed',
};
const W = 1000;
const LANE_H = 46;
const TOP = 40;
const LEFT = 92;
const RIGHT = 16;

function fmtClock(t, span) {
  const d = new Date(t);
  const opts = span > 86400000 ? { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' }
    : { hour: '2-digit', minute: '2-digit', second: span < 600000 ? '2-digit' : undefined };
  return d.toLocaleString([], { ...opts, hour12: false });
}

export function drawTimeline(svg, events, opts = {}) {
  const height = TOP + LANES.length * LANE_H + 30;
  svg.replaceChildren();
  svg.setAttribute('viewBox', `0 0 ${W} ${height}`);
  svg.classList.add('chart', 'timeline');
  svg.dataset.events = String(events.length);
  const times = events.map((e) => Date.parse(e.at)).filter((t) => !Number.isNaN(t));
  if (!times.length) {
    svg.append(s('text', { x: W / 2, y: height / 2, 'text-anchor': 'middle', class: 'chart-empty' }, 'no event yet'));
    return;
  }
  let t0 = Math.min(...times);
  let t1 = Math.max(...times, opts.until || 0);
  if (t1 - t0 < 10000) t1 = t0 + 10000;
  const pad = (t1 - t0) * 0.02;
  t0 -= pad;
  t1 += pad;
  const x = (t) => LEFT + ((t - t0) / (t1 - t0)) * (W - LEFT - RIGHT);
  const laneY = (stage) => TOP + Math.max(0, LANES.indexOf(stage)) * LANE_H;

  // lanes
  for (const lane of LANES) {
    const y = laneY(lane);
    svg.append(s('rect', { x: LEFT, y: y + 4, width: W - LEFT - RIGHT, height: LANE_H - 8, class: 'lane' }));
    svg.append(s('text', { x: LEFT - 10, y: y + LANE_H / 2 + 4, 'text-anchor': 'end', class: 'label' }, LANE_LABEL[lane]));
  }
  // axis
  const axisY = TOP + LANES.length * LANE_H + 4;
  svg.append(s('line', { x1: LEFT, x2: W - RIGHT, y1: axisY, y2: axisY, class: 'axis' }));
  for (let i = 0; i <= 4; i++) {
    const t = t0 + ((t1 - t0) * i) / 4;
    svg.append(s('text', { x: x(t), y: axisY + 16, 'text-anchor': i === 0 ? 'start' : i === 4 ? 'end' : 'middle', class: 'tick' },
      fmtClock(t, t1 - t0)));
  }
  // stage bands: from the stage's first to its last event
  const counts = {};
  for (const lane of LANES) {
    const ts = events.filter((e) => e.stage === lane).map((e) => Date.parse(e.at));
    counts[lane] = ts.length;
    if (ts.length < 2 || lane === 'registry') continue;
    const a = Math.min(...ts), b = Math.max(...ts);
    svg.append(s('rect', { x: x(a), y: laneY(lane) + 10, width: Math.max(2, x(b) - x(a)), height: LANE_H - 20, rx: 4,
      fill: COLOR[lane], 'fill-opacity': 0.18, class: 'band', 'data-stage': lane }));
  }
  // gavage weight curve
  const feedings = events.filter((e) => e.type === 'gavage_feeding' && e.data && e.data.mean_weight_g);
  if (feedings.length > 1) {
    const ws = feedings.map((e) => e.data.mean_weight_g);
    const lo = Math.min(...ws), hi = Math.max(...ws);
    const y0 = laneY('gavage') + LANE_H - 10, y1 = laneY('gavage') + 10;
    const y = (w) => (hi > lo ? y0 - ((w - lo) / (hi - lo)) * (y0 - y1) : (y0 + y1) / 2);
    const d = feedings.map((e, i) => (i ? 'L' : 'M') + x(Date.parse(e.at)).toFixed(1) + ',' + y(e.data.mean_weight_g).toFixed(1)).join(' ');
    const path = s('path', { d, class: 'line', stroke: COLOR.gavage });
    path.append(s('title', {}, `mean duck weight ${Math.round(lo)} → ${Math.round(hi)} g`));
    svg.append(path);
  }
  // one dot per event (thinned when there are very many: one per pixel column and lane)
  const seen = new Set();
  for (const e of events) {
    const t = Date.parse(e.at);
    const cx = Math.round(x(t));
    const key = e.stage + ':' + cx;
    if (seen.has(key)) continue;
    seen.add(key);
    const dot = s('circle', { cx, cy: laneY(e.stage) + LANE_H / 2, r: 3.5, fill: COLOR[e.stage] || '#555', class: 'event' });
    dot.append(s('title', {}, `${new Date(t).toLocaleString()} — ${e.type}: ${e.description}`));
    svg.append(dot);
  }
  // milestones: the first event of each key type, labels staggered so neighbours do not collide
  const done = new Set();
  let row = 0;
  for (const e of events) {
    const label = MILESTONES[e.type];
    if (!label || done.has(e.type)) continue;
    done.add(e.type);
    const mx = x(Date.parse(e.at));
    svg.append(s('line', { x1: mx, x2: mx, y1: 14 + (row % 2) * 12, y2: axisY, class: 'milestone', 'data-type': e.type }));
    const anchor = mx > W - 80 ? 'end' : mx < LEFT + 40 ? 'start' : 'middle';
    svg.append(s('text', { x: mx, y: 12 + (row % 2) * 12, 'text-anchor': anchor, class: 'milestone-label' }, label));
    row += 1;
  }
  svg.dataset.stages = LANES.filter((l) => counts[l]).join(',');
  svg.dataset.milestones = Array.from(done).join(',');
}

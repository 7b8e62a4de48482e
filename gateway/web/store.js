// What the page knows, in one place, and who is told when it changes. The live parts come from
// streams (realtime samples and grade counts; simulator log lines); the slow lists (devices,
// simulators, lots, stats) from a light periodic refresh, since the gateway has no stream for them.

import { GRADES, parseLogLine } from './util.js';

export const state = {
  gradeCounts: {},
  gradeTotal: 0,
  sampleKeys: new Set(),
  readingTimes: [],        // epoch ms of each reading received (last hour)
  lastByDevice: {},        // device_id -> latest realtime sample summary
  alerts: [],              // latest alerts, newest first
  devices: [],             // /api/devices
  orch: null,              // /api/control-panel/orchestrate/status
  stats: null,             // /api/control-panel/stats
  activeLots: [],          // /api/lots/active
  lots: [],                // /api/lots (newest first)
  activeSeries: [],        // [{t, v}] active lots over time (this session)
  itmSeries: [],           // [{t, v}] registry avg ITM over time (this session)
  feedbacks: [],           // consumer feedback seen in the consumer simulator's log, newest first
  feedbackKeys: new Set(),
  gavageByLot: {},         // lot id -> latest feeding line of the gavage simulator
  realtime: 'connecting',
  readAuth: false,
};

const bus = new EventTarget();

export function on(what, fn) {
  bus.addEventListener(what, fn);
}

export function emit(what) {
  bus.dispatchEvent(new Event(what));
}

const HOUR = 3600 * 1000;

export function addReading(summary) {
  const key = `${summary.device_id}:${summary.boot}:${summary.seq}`;
  if (state.sampleKeys.has(key)) return false;
  state.sampleKeys.add(key);
  const t = Date.parse(summary.received_at) || Date.now();
  state.readingTimes.push(t);
  const cutoff = Date.now() - HOUR;
  if (state.readingTimes.length > 5000 || state.readingTimes[0] < cutoff) {
    state.readingTimes = state.readingTimes.filter((x) => x >= cutoff).sort((a, b) => a - b);
  }
  if (state.sampleKeys.size > 20000) state.sampleKeys.clear();  // bounded; dedupe only matters near now
  const prev = state.lastByDevice[summary.device_id];
  if (!prev || (Date.parse(prev.received_at) || 0) <= t) state.lastByDevice[summary.device_id] = summary;
  return true;
}

export function setGradeCounts(counts) {
  state.gradeCounts = { ...counts };
  state.gradeTotal = Object.values(counts).reduce((a, b) => a + b, 0);
}

export function gradeItems() {
  const keys = [...GRADES, ...Object.keys(state.gradeCounts).filter((g) => !GRADES.includes(g))];
  return keys.map((g) => ({ label: g === 'none' ? 'no grade' : g, key: g, value: state.gradeCounts[g] || 0 }));
}

// Readings per minute over the last `minutes`, oldest first, current minute included.
export function readingsPerMinute(minutes = 15) {
  const now = Date.now();
  const cur = Math.floor(now / 60000);
  const buckets = new Array(minutes).fill(0);
  for (const t of state.readingTimes) {
    const idx = minutes - 1 - (cur - Math.floor(t / 60000));
    if (idx >= 0 && idx < minutes) buckets[idx] += 1;
  }
  return buckets.map((v, i) => {
    const m = new Date((cur - (minutes - 1 - i)) * 60000);
    return { label: m.toLocaleTimeString([], { hour12: false, hour: '2-digit', minute: '2-digit' }), value: v };
  });
}

export function pushSeries(series, v, max = 720) {
  const last = series[series.length - 1];
  const t = Date.now();
  if (last && last.v === v && t - last.t < 60000 && series.length > 1) {
    last.t = t;  // unchanged: move the end point instead of piling up equal points
  } else {
    series.push({ t, v });
  }
  if (series.length > max) series.splice(0, series.length - max);
}

// A line of the consumer simulator's log; keeps the `feedback` ones.
export function addConsumerLine(entry) {
  const key = `${entry.run_id}:${entry.n}`;
  if (state.feedbackKeys.has(key)) return false;
  state.feedbackKeys.add(key);
  const p = parseLogLine(entry.line);
  if (p.event !== 'feedback') return false;
  state.feedbacks.unshift({ ...p, at: p.at || entry.at, rating: Number(p.rating) });
  if (state.feedbacks.length > 1000) state.feedbacks.length = 1000;
  return true;
}

// A line of the gavage simulator's log; keeps the latest feeding per lot.
export function addGavageLine(entry) {
  const p = parseLogLine(entry.line);
  if (p.event !== 'feeding' || !p.lot) return false;
  state.gavageByLot[p.lot] = { ...p, at: p.at || entry.at };
  return true;
}

// Feedback count per hour of the day they were given (the last `hours` hours).
export function feedbackPerHour(hours = 12) {
  const cur = Math.floor(Date.now() / HOUR);
  const buckets = new Array(hours).fill(0);
  for (const f of state.feedbacks) {
    const t = Date.parse(f.at);
    if (!t) continue;
    const idx = hours - 1 - (cur - Math.floor(t / HOUR));
    if (idx >= 0 && idx < hours) buckets[idx] += 1;
  }
  return buckets.map((v, i) => ({
    label: new Date((cur - (hours - 1 - i)) * HOUR).toLocaleTimeString([], { hour12: false, hour: '2-digit', minute: '2-digit' }),
    value: v,
  }));
}

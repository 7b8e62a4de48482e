// What the page knows, in one place, and who is told when it changes. Devices and lots come from
// the realtime stream (`device` and `lot` messages, one whole row each) on top of one read at start,
// after each (re)connection and on a slow safety refresh; the consumer feedback and gavage feedings
// tables from their API lists, read again when a `lot` message says they changed; simulators and
// statistics from a light periodic refresh (no stream for them).

import { GRADES } from './util.js';

export const ACTIVE_STATES = new Set(['created', 'gavage', 'ready', 'inspecting']);
export const LOTS_SHOWN = 100;

export const state = {
  gradeCounts: {},
  gradeTotal: 0,
  sampleKeys: new Set(),
  readingTimes: [],        // epoch ms of each reading received (last hour)
  lastByDevice: {},        // device_id -> latest realtime sample summary
  alerts: [],              // latest alerts, newest first
  devices: [],             // /api/devices, then `device` messages (by id)
  orch: null,              // /api/control-panel/orchestrate/status
  stats: null,             // /api/control-panel/stats
  activeLots: [],          // /api/lots/active, then `lot` messages (oldest first)
  lots: [],                // /api/lots (newest first, LOTS_SHOWN), then `lot` messages
  activeSeries: [],        // [{t, v}] active lots over time (this session)
  itmSeries: [],           // [{t, v}] registry avg ITM over time (this session)
  feedback: null,          // GET /api/consumer/feedback (latest page)
  feedbackDay: null,       // GET /api/consumer/feedback since 12 h (the per-hour chart)
  feedings: null,          // GET /api/gavage/feedings (latest page)
  pushes: { devices: 0, lots: 0 },  // `device` / `lot` messages applied so far
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

// ---- devices and lots: pushed rows over read lists ----

// When each device / lot was last pushed (epoch ms). A list read that was sent before a push may
// answer with the older row: the pushed one wins (see mergeRead).
const pushedAt = { device: new Map(), lot: new Map() };

const byId = (a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
const created = (x) => Date.parse(x.created_at) || 0;
const oldestFirst = (a, b) => created(a) - created(b) || byId(a, b);
const newestFirst = (a, b) => created(b) - created(a) || byId(b, a);

function upsert(list, item, keep, order) {
  const out = list.filter((x) => x.id !== item.id);
  if (keep) out.push(item);
  return out.sort(order);
}

function prune(map) {
  if (map.size < 2000) return;
  const old = Date.now() - 10 * 60000;
  for (const [id, t] of map) if (t < old) map.delete(id);
}

export function pushDevice(device) {
  pushedAt.device.set(device.id, Date.now());
  prune(pushedAt.device);
  state.devices = upsert(state.devices, device, true, byId);
}

export function pushLot(lot) {
  pushedAt.lot.set(lot.id, Date.now());
  prune(pushedAt.lot);
  state.lots = upsert(state.lots, lot, true, newestFirst).slice(0, LOTS_SHOWN);
  state.activeLots = upsert(state.activeLots, lot, ACTIVE_STATES.has(lot.state), oldestFirst);
}

// A list read from the API (sent at `sentAt`), merged with what was pushed since: an entity pushed
// after the request went out keeps its pushed row (in or out of the list as `belongs` says).
function mergeRead(kind, current, fresh, sentAt, belongs, order) {
  const mine = new Map(current.map((x) => [x.id, x]));
  const out = new Map();
  for (const x of fresh) {
    const newer = (pushedAt[kind].get(x.id) || 0) > sentAt ? mine.get(x.id) : null;
    if (!newer) out.set(x.id, x);
    else if (belongs(newer)) out.set(x.id, newer);
  }
  for (const [id, t] of pushedAt[kind]) {
    const x = mine.get(id);
    if (t > sentAt && x && !out.has(id) && belongs(x)) out.set(id, x);
  }
  return [...out.values()].sort(order);
}

export function setDevices(devices, sentAt) {
  state.devices = mergeRead('device', state.devices, devices, sentAt, () => true, byId);
}

export function setLots(active, lots, sentAt) {
  state.activeLots = mergeRead('lot', state.activeLots, active, sentAt, (l) => ACTIVE_STATES.has(l.state), oldestFirst);
  state.lots = mergeRead('lot', state.lots, lots, sentAt, () => true, newestFirst).slice(0, LOTS_SHOWN);
}

// Feedback count per hour of the last `hours` hours (from the feedback read since then).
export function feedbackPerHour(hours = 12) {
  const cur = Math.floor(Date.now() / HOUR);
  const buckets = new Array(hours).fill(0);
  for (const f of (state.feedbackDay && state.feedbackDay.feedback) || []) {
    const t = Date.parse(f.created_at);
    if (!t) continue;
    const idx = hours - 1 - (cur - Math.floor(t / HOUR));
    if (idx >= 0 && idx < hours) buckets[idx] += 1;
  }
  return buckets.map((v, i) => ({
    label: new Date((cur - (hours - 1 - i)) * HOUR).toLocaleTimeString([], { hour12: false, hour: '2-digit', minute: '2-digit' }),
    value: v,
  }));
}

// Entry point: token entry, tab routing (#/sqal, #/gavage, #/consumer, #/orchestration,
// #/lots/LOT_...), the realtime stream, the background log streams of the gavage and consumer
// simulators, and the light refresh of the lists that have no stream.

import { get, getToken, setToken } from './api.js';
import { LiveSocket } from './live.js';
import { LogStream, tokenProtocols } from './logpane.js';
import { notify } from './notices.js';
import { addConsumerLine, addGavageLine, addReading, emit, pushSeries, setGradeCounts, state } from './store.js';
import { $, $$ } from './util.js';
import * as sqal from './view_sqal.js';
import * as gavage from './view_gavage.js';
import * as consumer from './view_consumer.js';
import * as orchestration from './view_orch.js';
import * as lot from './view_lot.js';

const VIEWS = { sqal, gavage, consumer, orchestration, lot };
const FAST_MS = 5000;   // simulators, devices, stats, lots in progress
const SLOW_MS = 15000;  // every lot, inspected lots' ITM

let current = null;

// ---- token ----

function showTokenState() {
  const set = Boolean(getToken());
  const el = $('#token-state');
  el.textContent = set ? 'token set' : 'no token';
  el.className = 'pill ' + (set ? 'ok' : 'warn');
  $('#token-input').placeholder = set ? 'API token (saved)' : 'API token';
}

function bindToken() {
  $('#token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = $('#token-input');
    setToken(input.value);
    input.value = '';
    showTokenState();
    notify(getToken() ? 'API token saved in this browser.' : 'API token removed.', 'ok');
  });
  window.addEventListener('sqal:token', () => {
    if (state.readAuth) realtime.restart();
    startSimLogs(true);
    if (current && current.onToken) current.onToken();
    refreshFast();
  });
  showTokenState();
}

// ---- routing ----

function route() {
  const hash = location.hash || '#/sqal';
  const m = hash.match(/^#\/lots\/([A-Za-z0-9_]+)$/);
  const name = m ? 'lot' : hash.replace(/^#\//, '');
  const view = VIEWS[name] ? name : 'sqal';
  for (const sec of $$('.view')) sec.hidden = sec.dataset.view !== view;
  for (const a of $$('.tabs a')) {
    const on = a.dataset.tab === view || (view === 'lot' && a.dataset.tab === 'orchestration');
    a.classList.toggle('active', on);
    if (on) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  if (current && current !== VIEWS[view] && current.hide) current.hide();
  current = VIEWS[view];
  if (current.show) current.show(m ? m[1] : undefined);
}

// ---- realtime stream (/ws/realtime/) ----

let realtime = null;

function liveState(st, detail) {
  state.realtime = st;
  const el = $('#live-state');
  el.textContent = 'realtime: ' + (st === 'open' ? 'live' : st === 'reconnecting' ? `reconnecting in ${Math.round(detail / 1000)} s` : st);
  el.className = 'pill live ' + (st === 'open' ? 'ok' : 'warn');
  el.dataset.state = st;
}

function onRealtime(m) {
  if (m.type === 'snapshot' || m.type === 'grade_counts') {
    setGradeCounts(m.grade_counts || {});
    emit('grades');
  } else if (m.type === 'sample') {
    if (addReading(m)) emit('reading');
  } else if (m.type === 'alert') {
    state.alerts.unshift(m);
    if (state.alerts.length > 50) state.alerts.length = 50;
    emit('alert');
  }
}

// Does reading need the token (SQAL_READ_AUTH)? Then the realtime stream must offer it; otherwise it
// must not: the server would not echo the subprotocol and the browser would drop the connection.
async function probeReadAuth() {
  try {
    const r = await fetch('/api/control-panel/health', { headers: { Accept: 'application/json' } });
    state.readAuth = r.status === 401;
  } catch {
    state.readAuth = false;
  }
}

// ---- background log streams of the gavage and consumer simulators ----

const simLogs = {};

function startSimLogs(force = false) {
  const orch = state.orch;
  if (!orch || !getToken()) return;
  const handlers = { gavage: (e) => addGavageLine(e) && emit('gavage-log'), consumer: (e) => addConsumerLine(e) && emit('feedback') };
  for (const name of ['gavage', 'consumer']) {
    const info = orch[name];
    if (!info || info.status === 'not_found') continue;
    const s = simLogs[name];
    const stale = s && (s.runId !== info.run_id || s.state === 'refused');
    if (s && !stale && !force) continue;
    if (s) s.close();
    const stream = new LogStream(name, {
      tail: 1000,
      onEntry: handlers[name],
      onState: (st, detail) => { state[name + 'Log'] = detail ? `${st}: ${detail}` : st; emit('simlog'); },
    });
    stream.runId = info.run_id;
    simLogs[name] = stream;
  }
}

export function simLogState(name) {
  return state[name + 'Log'] || (getToken() ? 'not started' : 'enter the API token to follow it');
}

// ---- periodic refresh of what has no stream ----

let fastBusy = false;
let lastFastError = '';

async function refreshFast() {
  if (fastBusy) return;
  fastBusy = true;
  try {
    const [orch, stats, devices, active] = await Promise.all([
      get('/api/control-panel/orchestrate/status'), get('/api/control-panel/stats'), get('/api/devices'),
      get('/api/lots/active'),
    ]);
    state.orch = orch;
    state.stats = stats;
    const first = !state.devices.length && devices.devices.length;
    state.devices = devices.devices;
    state.activeLots = active;
    pushSeries(state.activeSeries, stats.lots.active_lots);
    if (stats.lots.avg_itm !== null && stats.lots.avg_itm !== undefined) pushSeries(state.itmSeries, stats.lots.avg_itm);
    startSimLogs();
    if (first) backfillReadings();
    lastFastError = '';
    emit('status');
  } catch (exc) {
    if (exc.message !== lastFastError) notify(exc.message, 'error');  // once per distinct failure
    lastFastError = exc.message;
  } finally {
    fastBusy = false;
  }
}

async function refreshSlow() {
  try {
    state.lots = await get('/api/lots?limit=100');
    emit('lots');
  } catch (exc) {
    notify(exc.message, 'error');
  }
}

// The readings chart covers the last minutes: fill it from the stored samples once, then the stream.
async function backfillReadings() {
  const ids = state.devices.slice(0, 20).map((d) => d.id);
  const answers = await Promise.allSettled(ids.map((id) => get(`/api/devices/${encodeURIComponent(id)}/samples?limit=300`)));
  for (const a of answers) {
    if (a.status !== 'fulfilled') continue;
    for (const smp of a.value.samples) {
      addReading({ ...smp, received_at: smp.received_at });
    }
  }
  emit('reading');
}

export function refreshNow() {
  refreshFast();
  refreshSlow();
}

// ---- boot ----

async function boot() {
  bindToken();
  for (const v of Object.values(VIEWS)) if (v.init) v.init({ refreshNow });
  window.addEventListener('hashchange', route);
  route();
  await probeReadAuth();
  realtime = new LiveSocket('/ws/realtime/', {
    protocols: () => (state.readAuth ? tokenProtocols() : undefined),
    onMessage: onRealtime,
    onState: liveState,
  });
  refreshNow();
  setInterval(() => { if (!document.hidden) refreshFast(); }, FAST_MS);
  setInterval(() => { if (!document.hidden) refreshSlow(); }, SLOW_MS);
  setInterval(() => emit('tick'), 30000);  // the per-minute chart moves on even when nothing arrives
}

boot();

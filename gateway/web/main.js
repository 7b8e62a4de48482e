// Entry point: token entry, tab routing (#/sqal, #/gavage, #/consumer, #/orchestration, #/updates,
// #/lots/LOT_...), the realtime stream (samples, grades, devices, lots), the periodic refresh of
// what has no stream (simulators, statistics) and the slow safety refresh of devices and lots.

import { get, getToken, setToken } from './api.js';
import { LiveSocket } from './live.js';
import { tokenProtocols } from './logpane.js';
import { notify } from './notices.js';
import {
  ACTIVE_STATES, LOTS_SHOWN, addReading, emit, pushDevice, pushLot, pushSeries, setDevices, setGradeCounts, setLots, state,
} from './store.js';
import { $, $$, coalesce } from './util.js';
import * as sqal from './view_sqal.js';
import * as gavage from './view_gavage.js';
import * as consumer from './view_consumer.js';
import * as orchestration from './view_orch.js';
import * as lot from './view_lot.js';
import * as updates from './view_ota.js';

const VIEWS = { sqal, gavage, consumer, orchestration, lot, updates };
const FAST_MS = 5000;          // simulators and statistics: no stream for them
const SAFETY_S = 60;           // devices and lots are pushed; read again this often all the same
const LOT_PAGE_MS = 3000;      // an open lot page that changes is read again at most this often

let current = null;
let openLotId = null;

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
    for (const v of Object.values(VIEWS)) if (v.onToken) v.onToken();
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
  openLotId = m ? m[1] : null;
  for (const sec of $$('.view')) sec.hidden = sec.dataset.view !== view;
  for (const a of $$('.tabs a')) {
    const on = a.dataset.tab === view || (view === 'lot' && a.dataset.tab === 'orchestration');
    a.classList.toggle('active', on);
    if (on) {
      a.setAttribute('aria-current', 'page');
      scrollTabIntoView(a);
    } else {
      a.removeAttribute('aria-current');
    }
  }
  if (document.body.dataset.view !== view || name === 'lot') window.scrollTo(0, 0);  // another page starts at its top
  document.body.dataset.view = view;
  if (current && current !== VIEWS[view] && current.hide) current.hide();
  current = VIEWS[view];
  if (current.show) current.show(m ? m[1] : undefined);
}

// On a phone the tabs scroll sideways: keep the current one in sight (not the page, only the strip).
function scrollTabIntoView(a) {
  const strip = a.parentElement;
  if (strip.scrollWidth <= strip.clientWidth) return;
  const left = a.offsetLeft - strip.offsetLeft;
  if (left < strip.scrollLeft || left + a.offsetWidth > strip.scrollLeft + strip.clientWidth) {
    strip.scrollLeft = Math.max(0, left - (strip.clientWidth - a.offsetWidth) / 2);
  }
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

// The open lot's page is read again (throttled) when a `lot` message is about it.
const reloadLotPage = coalesce(() => emit('lots'), LOT_PAGE_MS);

function onRealtime(m) {
  if (m.type === 'snapshot' || m.type === 'grade_counts') {
    setGradeCounts(m.grade_counts || {});
    emit('grades');
    // a snapshot starts every connection, and comes again after lost messages: what was pushed
    // meanwhile is unknown, so devices and lots are read once more
    if (m.type === 'snapshot') refreshLists();
  } else if (m.type === 'sample') {
    if (addReading(m)) emit('reading');
  } else if (m.type === 'alert') {
    state.alerts.unshift(m);
    if (state.alerts.length > 50) state.alerts.length = 50;
    emit('alert');
  } else if (m.type === 'device' && m.device) {
    pushDevice(m.device);
    $('#live-state').dataset.devices = String(++state.pushes.devices);
    emit('devices');
  } else if (m.type === 'lot' && m.lot) {
    const wasActive = state.activeLots.some((l) => l.id === m.lot.id);
    pushLot(m.lot);
    $('#live-state').dataset.lots = String(++state.pushes.lots);
    emit('lot-change');
    const events = m.events || [];
    if (events.includes('consumer_feedback')) emit('feedback-change');
    // the feedings list is of the lots in progress: a new feeding, or a lot in or out of progress
    if (events.includes('gavage_feeding') || wasActive !== ACTIVE_STATES.has(m.lot.state)) emit('feeding-change');
    if (m.lot_id === openLotId) reloadLotPage();
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

// ---- simulators and statistics: a light periodic refresh ----

let fastBusy = false;
let lastFastError = '';

async function refreshFast() {
  if (fastBusy) return;
  fastBusy = true;
  try {
    const [orch, stats] = await Promise.all([get('/api/control-panel/orchestrate/status'), get('/api/control-panel/stats')]);
    state.orch = orch;
    state.stats = stats;
    pushSeries(state.activeSeries, stats.lots.active_lots);
    if (stats.lots.avg_itm !== null && stats.lots.avg_itm !== undefined) pushSeries(state.itmSeries, stats.lots.avg_itm);
    lastFastError = '';
    emit('status');
  } catch (exc) {
    if (exc.message !== lastFastError) notify(exc.message, 'error');  // once per distinct failure
    lastFastError = exc.message;
  } finally {
    fastBusy = false;
  }
}

// ---- devices and lots: read at start, after each (re)connection, and on the safety refresh ----

let listsBusy = false;
let listsAgain = false;
let lastLists = 0;

async function refreshLists() {
  if (listsBusy) { listsAgain = true; return; }
  listsBusy = true;
  lastLists = Date.now();
  try {
    const sentAt = Date.now();
    const [devices, active, lots] = await Promise.all([get('/api/devices'), get('/api/lots/active'),
      get(`/api/lots?limit=${LOTS_SHOWN}`)]);
    const first = !state.devices.length && devices.devices.length;
    setDevices(devices.devices, sentAt);
    setLots(active, lots, sentAt);
    if (first) backfillReadings();
    emit('devices');
    emit('lot-change');
    emit('lots');
    emit('safety');
  } catch (exc) {
    notify(exc.message, 'error');
  } finally {
    listsBusy = false;
    if (listsAgain) { listsAgain = false; refreshLists(); }
  }
}

// The safety refresh: every <body data-safety-refresh-s> seconds (read each time, so it can be changed).
function safetySeconds() {
  const s = Number(document.body.dataset.safetyRefreshS);
  return Number.isFinite(s) && s > 0 ? s : SAFETY_S;
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

// After a start or stop from the page: the simulators' states now (devices and lots follow by push).
export function refreshNow() {
  refreshFast();
}

// ---- boot ----

async function boot() {
  bindToken();
  for (const v of Object.values(VIEWS)) if (v.init) v.init({ refreshNow });
  window.addEventListener('hashchange', route);
  window.addEventListener('resize', () => { const a = $('.tabs a[aria-current=page]'); if (a) scrollTabIntoView(a); });
  route();
  await probeReadAuth();
  realtime = new LiveSocket('/ws/realtime/', {
    protocols: () => (state.readAuth ? tokenProtocols() : undefined),
    onMessage: onRealtime,
    onState: liveState,
  });
  refreshFast();
  refreshLists();
  setInterval(() => { if (!document.hidden) refreshFast(); }, FAST_MS);
  setInterval(() => {
    if (!document.hidden && Date.now() - lastLists >= safetySeconds() * 1000) refreshLists();
  }, 1000);
  setInterval(() => emit('tick'), 30000);  // the per-minute chart moves on even when nothing arrives
}

boot();

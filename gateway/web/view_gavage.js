// Gavage tab: start/stop the gavage simulator; the lots in progress (day, weight, ducks, mortality),
// moved by the realtime stream's `lot` messages; the recent feedings, read from the registry
// (GET /api/gavage/feedings) again whenever a `lot` message brings one; the simulator's live log.

import { get, post } from './api.js';
import { lineChart } from './charts.js';
import { LogPane } from './logpane.js';
import { act, notify } from './notices.js';
import { on, state } from './store.js';
import { $, coalesce, fmtDateTime, fmtNum, fmtTime, formValues, h, lotLink, stateBadge } from './util.js';

const ROWS = 50;
let visible = false;
let stale = true;   // changed while hidden: read again when shown
let ctx = null;
let pane = null;
let seq = 0;
let renders = 0;

function simState(name) {
  const info = state.orch && state.orch[name];
  return info ? info.status : '—';
}

export function setSimPill(el, name) {
  const st = simState(name);
  el.textContent = st === 'not_found' ? 'never started' : st;
  el.className = 'pill state-' + st;
  el.dataset.state = st;
}

async function loadFeedings() {
  if (!visible) { stale = true; return; }
  stale = false;
  const mine = ++seq;
  try {
    const page = await get(`/api/gavage/feedings?limit=${ROWS}`);
    if (mine !== seq) return;
    state.feedings = page;
    renderFeedings();
  } catch (exc) {
    notify(exc.message, 'error');
  }
}

const loadSoon = coalesce(loadFeedings, 1000);

function renderLots() {
  lineChart($('#chart-active-gavage'), state.activeSeries, { empty: 'no lot statistics yet', color: '#3367d6' });
  const rows = state.activeLots.map((l) => h('tr', { dataset: { lot: l.id, state: l.state, day: l.current_day } },
    h('td', {}, lotLink(l.id)), h('td', { text: l.farmer_name }),
    h('td', { text: l.site_code }), h('td', { text: l.genetics }), h('td', {}, stateBadge(l.state)),
    h('td', { text: `${l.current_day}/${l.planned_duration_days}` }), h('td', { text: fmtNum(l.mean_weight_g, 0, ' g') }),
    h('td', { text: `${fmtNum(l.live_ducks ?? l.nb_ducks)} / ${l.nb_ducks}` }),
    h('td', { text: fmtNum(l.mortality_pct, 1, ' %') }), h('td', { text: fmtNum(l.maize_total_per_duck_g, 0, ' g') })));
  if (!rows.length) rows.push(h('tr', {}, h('td', { colspan: 10, class: 'muted', text: 'No lot in progress.' })));
  $('#gavage-lots tbody').replaceChildren(...rows);
}

function renderFeedings() {
  if (!visible || !state.feedings) return;
  const page = state.feedings;
  $('#feedings-count').textContent = page.total > page.feedings.length
    ? `(latest ${page.feedings.length} of ${page.total})` : `(${page.total})`;
  const rows = page.feedings.map((f) => h('tr', { dataset: { feeding: `${f.lot_id}/${f.day}/${f.moment}` } },
    h('td', { text: fmtTime(f.received_at), title: `recorded ${fmtDateTime(f.received_at)}` +
      (f.simulated_at ? `; feeding time ${fmtDateTime(f.simulated_at)}` : '') }),
    h('td', {}, lotLink(f.lot_id)), h('td', { text: `${f.day}/${f.planned_duration_days}` }), h('td', { text: f.moment }),
    h('td', { text: `${fmtNum(f.actual_dose_g, 1)} / ${fmtNum(f.planned_dose_g, 1)} g` }),
    h('td', { text: fmtNum(f.mean_weight_g, 0, ' g') }),
    h('td', { text: `${fmtNum(f.live_ducks)} / ${f.nb_ducks}` }), h('td', { text: fmtNum(f.mortality_pct, 1, ' %') })));
  if (!rows.length) rows.push(h('tr', { class: 'empty' }, h('td', { colspan: 8, class: 'muted',
    text: 'No feeding of a lot in progress yet.' })));
  $('#feedings-table tbody').replaceChildren(...rows);
  Object.assign($('#feedings-table').dataset, { total: page.total, renders: ++renders });
}

function render() {
  if (!visible) return;
  setSimPill($('#gavage-state'), 'gavage');
  renderLots();
  renderFeedings();
  const exists = state.orch && state.orch.gavage && state.orch.gavage.status !== 'not_found';
  if (exists) pane.show('gavage');
  else pane.setState('the gavage simulator was never started');
}

export function init(c) {
  ctx = c;
  pane = new LogPane($('#gavage-log'), $('#gavage-log-state'));
  $('#form-gavage').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const body = formValues(ev.target);
    act($('#gavage-start'), () => post('/api/control-panel/gavage/start', body),
      (r) => `Gavage: ${r.status.replace('_', ' ')} (${body.nb_lots} lots, acceleration ${body.acceleration}).`).then(ctx.refreshNow);
  });
  $('#gavage-stop').addEventListener('click', (ev) => act(ev.target, () => post('/api/control-panel/gavage/stop'),
    (r) => `Gavage: ${r.status.replace('_', ' ')}.`).then(ctx.refreshNow));
  for (const what of ['status', 'lot-change', 'tick']) on(what, render);
  on('feeding-change', loadSoon);  // a `lot` message brought a feeding
  on('lot-change', () => { if (!visible) stale = true; });
  on('safety', loadSoon);
}

export function onToken() {
  if (pane) { pane.close(); pane.name = null; }
  render();
}

export function show() {
  visible = true;
  render();
  if (stale || !state.feedings) loadFeedings();
}

export function hide() {
  visible = false;
}

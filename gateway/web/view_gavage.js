// Gavage tab: start/stop the gavage simulator, the lots in progress (day, weight, mortality) and
// the simulator's live log; the lot rows move with each feeding line of that log.

import { post } from './api.js';
import { lineChart } from './charts.js';
import { LogPane } from './logpane.js';
import { act } from './notices.js';
import { on, state } from './store.js';
import { $, fmtNum, formValues, h, lotLink, stateBadge } from './util.js';

let visible = false;
let ctx = null;
let pane = null;

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

function render() {
  if (!visible) return;
  setSimPill($('#gavage-state'), 'gavage');
  lineChart($('#chart-active-gavage'), state.activeSeries, { empty: 'no lot statistics yet', color: '#3367d6' });
  const rows = state.activeLots.map((l) => {
    const live = state.gavageByLot[l.id];  // fresher than the last refresh when the log streams
    const day = live && live.day ? live.day : `${l.current_day}/${l.planned_duration_days}`;
    const weight = live && live.weight ? live.weight : fmtNum(l.mean_weight_g, 0, ' g');
    const liveDucks = live && live.live ? live.live : fmtNum(l.live_ducks);
    const mort = live && live.mortality ? live.mortality : fmtNum(l.mortality_pct, 1, ' %');
    return h('tr', { dataset: { lot: l.id } }, h('td', {}, lotLink(l.id)), h('td', { text: l.farmer_name }),
      h('td', { text: l.site_code }), h('td', { text: l.genetics }), h('td', {}, stateBadge(l.state)),
      h('td', { text: day }), h('td', { text: weight }), h('td', { text: `${liveDucks} / ${l.nb_ducks}` }),
      h('td', { text: mort }), h('td', { text: fmtNum(l.maize_total_per_duck_g, 0, ' g') }));
  });
  if (!rows.length) rows.push(h('tr', {}, h('td', { colspan: 10, class: 'muted', text: 'No lot in progress.' })));
  $('#gavage-lots tbody').replaceChildren(...rows);
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
  for (const what of ['status', 'gavage-log', 'tick']) on(what, render);
}

export function onToken() {
  if (pane) { pane.close(); pane.name = null; }
  render();
}

export function show() {
  visible = true;
  render();
}

export function hide() {
  visible = false;
}

// Orchestration tab: pick a scenario and its settings, start it, stop every simulator; global
// status (simulators, lot statistics), active lots and ITM charts, and every lot with a link to
// its timeline.

import { post } from './api.js';
import { barChart, lineChart } from './charts.js';
import { act, notify } from './notices.js';
import { on, state } from './store.js';
import { $, $$, fmtDateTime, fmtDuration, fmtNum, formValues, gradeBadge, h, lotLink, stateBadge } from './util.js';
import { renderGrades } from './view_sqal.js';

// Which settings each scenario takes (gateway/scenarios.py USES): the API refuses the others, so
// the form only shows and sends these.
const GAVAGE = ['nb_lots', 'acceleration'];
const SQAL = ['nb_sqal_devices', 'interval', 'profile'];
const CONSUMER = ['feedbacks_per_hour', 'min_rating', 'max_rating', 'use_active_lots'];
export const USES = {
  complete_demo: [...GAVAGE, ...SQAL, ...CONSUMER],
  quality_focus: [...SQAL, ...CONSUMER],
  gavage_realtime: GAVAGE,
  consumer_analysis: CONSUMER,
};
const ITM_GRADES = [{ value: 15, label: 'A+ < 15' }, { value: 17, label: 'A < 17' }, { value: 20, label: 'B < 20' }];

let visible = false;
let ctx = null;

function syncFields() {
  const uses = USES[$('#orch-scenario').value] || [];
  for (const label of $$('#form-orch [data-uses]')) label.hidden = !uses.includes(label.dataset.uses);
  const max = $('#orch-scenario').value === 'quality_focus' ? 6 : 4;
  $('#form-orch [name=nb_sqal_devices]').max = String(max);
}

function dl(el, pairs) {
  el.replaceChildren(...pairs.flatMap(([k, v]) => [h('dt', { text: k }), h('dd', {}, v instanceof Node ? v : String(v))]));
}

function renderStatus() {
  const o = state.orch;
  const lots = state.stats ? state.stats.lots : null;
  if (!o) return;
  dl($('#orch-status'), [
    ['Scenario', o.scenario || 'none started'],
    ['Started', fmtDateTime(o.started_at)],
    ['Simulators running', o.running_count],
    ['Gavage', stateBadge(o.gavage.status === 'not_found' ? 'never started' : o.gavage.status)],
    ['Consumer', stateBadge(o.consumer.status === 'not_found' ? 'never started' : o.consumer.status)],
    ['SQAL devices', `${o.sqal_devices.filter((d) => d.status === 'running').length} running / ${o.sqal_devices.length}`],
    ['Lots (total / active / completed)', lots ? `${lots.total_lots} / ${lots.active_lots} / ${lots.completed_lots}` : '—'],
    ['Ducks', lots ? fmtNum(lots.total_ducks) : '—'],
    ['Average ITM', lots ? fmtNum(lots.avg_itm, 2) : '—'],
    ['Average gavage days', lots ? fmtNum(lots.average_gavage_days, 1) : '—'],
    ['Average consumer rating', lots ? fmtNum(lots.average_consumer_rating, 2) : '—'],
  ]);
  $('#orch-status').dataset.running = String(o.running_count);
  const sims = [o.gavage, ...o.sqal_devices, o.consumer].filter((x) => x && x.status !== 'not_found');
  const rows = sims.map((x) => h('tr', { dataset: { sim: x.name } }, h('td', { class: 'mono', text: x.name }),
    h('td', { text: x.kind }), h('td', {}, stateBadge(x.status)),
    h('td', { text: x.status === 'running' ? fmtDuration(x.uptime_seconds) : '—' }), h('td', { text: fmtNum(x.restarts) })));
  if (!rows.length) rows.push(h('tr', {}, h('td', { colspan: 5, class: 'muted', text: 'No simulator started yet.' })));
  $('#orch-sims tbody').replaceChildren(...rows);
}

function renderCharts() {
  lineChart($('#chart-active'), state.activeSeries, { empty: 'no lot statistics yet', color: '#3367d6' });
  const inspected = state.lots.filter((l) => l.itm !== null && l.itm !== undefined).slice(0, 24).reverse();
  barChart($('#chart-itm'), inspected.map((l) => ({ label: l.id.slice(-4), value: +l.itm.toFixed(2),
    title: `${l.id}: ITM ${l.itm.toFixed(2)} (${l.itm_grade || '—'})`,
    color: l.itm < 15 ? '#1b7f3b' : l.itm < 17 ? '#4caf50' : l.itm < 20 ? '#f0b429' : '#e8772e' })),
  { empty: 'no lot inspected yet', refLines: inspected.length ? ITM_GRADES : [] });
  const avg = state.stats && state.stats.lots.avg_itm;
  $('#itm-avg').textContent = avg ? `· average ${fmtNum(avg, 2)} (lower is better)` : '';
  renderGrades($('#chart-grades-orch'));
}

function gradeSummary(dist) {
  if (!dist) return '—';
  return Object.entries(dist).filter(([, n]) => n).map(([g, n]) => `${g} ${n}`).join(' · ') || '—';
}

function renderLots() {
  const rows = state.lots.map((l) => h('tr', { dataset: { lot: l.id } }, h('td', {}, lotLink(l.id)), h('td', {}, stateBadge(l.state)),
    h('td', { text: l.farmer_name }), h('td', { text: l.site_code }), h('td', { text: `${l.current_day}/${l.planned_duration_days}` }),
    h('td', { text: fmtNum(l.sample_count) }), h('td', { text: gradeSummary(l.grade_distribution) }),
    h('td', {}, l.itm ? h('span', {}, fmtNum(l.itm, 2) + ' ', gradeBadge(l.itm_grade)) : '—'),
    h('td', { text: fmtDateTime(l.created_at) })));
  if (!rows.length) rows.push(h('tr', {}, h('td', { colspan: 9, class: 'muted', text: 'No lot yet: start gavage or a scenario.' })));
  $('#lots-table tbody').replaceChildren(...rows);
}

function render() {
  if (!visible) return;
  renderStatus();
  renderCharts();
  renderLots();
}

export function init(c) {
  ctx = c;
  $('#orch-scenario').addEventListener('change', syncFields);
  syncFields();
  $('#form-orch').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const body = formValues(ev.target);  // hidden (unused) settings are left out
    if (body.min_rating !== undefined && body.min_rating > body.max_rating) {
      notify(`Minimum rating (${body.min_rating}) must not exceed maximum rating (${body.max_rating}).`, 'error');
      return;
    }
    act($('#orch-start'), () => post('/api/control-panel/orchestrate/start', body), (r) => {
      const parts = [];
      if (r.gavage) parts.push(`gavage ${r.gavage.status}`);
      if (r.sqal_devices && r.sqal_devices.length) parts.push(`${r.sqal_devices.length} SQAL device(s)`);
      if (r.consumer) parts.push(`consumer ${r.consumer.status}`);
      $('#orch-last').textContent = `Last start: ${r.scenario} ${r.status} at ${fmtDateTime(r.started_at)} — ${parts.join(', ')}.`;
      if (r.errors && r.errors.length) notify(`${r.scenario}: ${r.errors.join('; ')}`, 'error');
      return `${r.scenario}: ${r.status}, ${r.running_count} simulator(s) running.`;
    }).then(ctx.refreshNow);
  });
  $('#orch-stop-all').addEventListener('click', (ev) => act(ev.target, () => post('/api/control-panel/orchestrate/stop-all'),
    (r) => `Stopped ${r.total_stopped} simulator(s).`).then(ctx.refreshNow));
  for (const what of ['status', 'lots', 'lot-change', 'grades']) on(what, render);
}

export function show() {
  visible = true;
  render();
}

export function hide() {
  visible = false;
}

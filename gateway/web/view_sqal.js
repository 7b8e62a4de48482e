// SQAL devices tab: counters, readings per minute and grade charts, start/stop one device or a
// SQAL scenario, the devices table (link state from the ingest, process state from the supervisor),
// and a live log pane per device.

import { post } from './api.js';
import { barChart, hbarChart } from './charts.js';
import { LogPane } from './logpane.js';
import { act, notify } from './notices.js';
import { gradeItems, on, readingsPerMinute, state } from './store.js';
import { $, GRADE_COLORS, fmtNum, fmtTime, formValues, gradeBadge, h, stateBadge } from './util.js';

export const PROFILES = ['default', 'premium', 'good', 'acceptable', 'low', 'defective'];
let visible = false;
let pane = null;
let ctx = null;

export function fillProfiles() {
  for (const sel of document.querySelectorAll('select.profiles')) {
    if (sel.options.length) continue;
    for (const p of PROFILES) sel.append(h('option', { value: p, text: p }));
  }
}

export function renderGrades(svg) {
  hbarChart(svg, gradeItems().map((it) => ({ ...it, color: GRADE_COLORS[it.key] || GRADE_COLORS.none })),
    { empty: 'no samples graded yet' });
}

function sqalSims() {
  return (state.orch && state.orch.sqal_devices) || [];
}

function renderCards() {
  // the devices' own rows (pushed as they change), as /api/control-panel/stats counts them
  const devs = state.devices;
  const online = devs.filter((d) => d.state === 'online').length;
  const stored = devs.reduce((n, d) => n + (Number(d.samples_stored) || 0), 0);
  const sims = sqalSims();
  const cards = [
    ['Devices online', `${online} / ${devs.length}`],
    ['Samples stored', stored],
    ['Simulated devices running', `${sims.filter((x) => x.status === 'running').length} / ${sims.length}`],
    ['Graded samples', state.gradeTotal],
  ];
  $('#sqal-cards').replaceChildren(...cards.map(([k, v]) => h('div', { class: 'card' },
    h('div', { class: 'card-value', text: String(v) }), h('div', { class: 'card-label', text: k }))));
}

function renderCharts() {
  barChart($('#chart-rpm'), readingsPerMinute(15), { empty: 'no readings yet', values: true });
  renderGrades($('#chart-grades'));
  $('#grade-total').textContent = state.gradeTotal ? `(${state.gradeTotal})` : '';
}

function renderTable() {
  const sims = Object.fromEntries(sqalSims().map((x) => [x.device_id, x]));
  const ids = [...new Set([...state.devices.map((d) => d.id), ...Object.keys(sims)])].sort();
  const devs = Object.fromEntries(state.devices.map((d) => [d.id, d]));
  const rows = ids.map((id) => {
    const d = devs[id] || {};
    const sim = sims[id];
    const last = state.lastByDevice[id];
    const running = sim && (sim.status === 'running' || sim.status === 'restarting');
    const stop = h('button', { type: 'button', class: 'small danger', text: 'Stop', disabled: !running,
      onclick: (ev) => act(ev.target, () => post('/api/control-panel/simulators/stop', { device_id: id }),
        `Stopped ${id}.`).then(ctx.refreshNow) });
    const logs = h('button', { type: 'button', class: 'small', text: 'Logs', disabled: !sim,
      onclick: () => { $('#log-device').value = id; pane.show(id); $('#log-pane').scrollIntoView({ block: 'nearest' }); } });
    return h('tr', { dataset: { device: id, state: d.state || 'unknown' } },
      h('td', { class: 'mono', text: id }), h('td', { text: d.site_code || '—' }), h('td', { text: d.location || (sim && sim.config && sim.config.location) || '—' }),
      h('td', {}, stateBadge(d.state || 'unknown')), h('td', {}, sim ? stateBadge(sim.status) : h('span', { class: 'muted', text: 'external' })),
      h('td', { text: fmtTime((last && last.received_at) || d.last_sample_at) }),
      h('td', {}, gradeBadge(last && last.grade)), h('td', { text: last ? fmtNum(last.score, 3) : '—' }),
      h('td', { text: last ? fmtNum(last.weight_g, 0, ' g') : '—' }),
      h('td', { text: fmtNum(d.samples_stored) }), h('td', { text: fmtNum(d.duplicates) }), h('td', { text: fmtNum(d.rejects) }),
      h('td', { class: 'actions' }, logs, stop));
  });
  if (!rows.length) rows.push(h('tr', {}, h('td', { colspan: 13, class: 'muted', text: 'No device yet: start one, or a scenario.' })));
  $('#devices-table tbody').replaceChildren(...rows);
  // the log picker lists every simulator the supervisor knows (devices, gavage, consumer)
  const sel = $('#log-device');
  const names = ['', ...Object.keys(sims).sort()];
  for (const k of ['gavage', 'consumer']) if (state.orch && state.orch[k] && state.orch[k].status !== 'not_found') names.push(k);
  const have = Array.from(sel.options).map((o) => o.value).join('|');
  if (have !== names.join('|')) {
    const keep = sel.value;
    sel.replaceChildren(...names.map((n) => h('option', { value: n, text: n || '— pick a simulator —' })));
    sel.value = names.includes(keep) ? keep : '';
  }
}

function render() {
  if (!visible) return;
  renderCards();
  renderCharts();
  renderTable();
}

export function init(c) {
  ctx = c;
  fillProfiles();
  pane = new LogPane($('#log-pane'), $('#log-state'));
  $('#log-device').addEventListener('change', (ev) => pane.show(ev.target.value));
  $('#form-device').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const body = formValues(ev.target);
    act($('#device-start'), () => post('/api/control-panel/simulators/start', body),
      (r) => `${body.device_id}: ${r.status.replace('_', ' ')} (pid ${r.pid}).`).then(ctx.refreshNow);
  });
  $('#form-sqal-scenario').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const body = formValues(ev.target);
    act($('#sqal-scenario-start'), () => post('/api/control-panel/scenarios/start', body), (r) => {
      if (r.errors && r.errors.length) notify(`${r.scenario}: ${r.errors.join('; ')}`, 'error');
      return `${r.scenario}: ${r.status}, ${r.running_count} device(s) running.`;
    }).then(ctx.refreshNow);
  });
  $('#sqal-stop-all').addEventListener('click', (ev) => act(ev.target,
    () => post('/api/control-panel/simulators/stop-all'), (r) => `Stopped ${r.total_stopped} SQAL device(s).`).then(ctx.refreshNow));
  for (const what of ['status', 'devices', 'reading', 'grades', 'tick']) on(what, render);
}

export function onToken() {
  if (pane && pane.name) {
    const name = pane.name;
    pane.close();
    pane.name = null;
    pane.show(name);
  }
}

export function show() {
  visible = true;
  render();
}

export function hide() {
  visible = false;
}

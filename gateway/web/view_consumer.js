// Consumer tab: start/stop the consumer simulator with its rate and rating bounds; feedback per hour
// and the recent feedback, both read from the registry (GET /api/consumer/feedback), again whenever a
// `lot` message brings consumer feedback; the consumer simulator's live log.

import { get, post } from './api.js';
import { barChart } from './charts.js';
import { LogPane } from './logpane.js';
import { act, notify } from './notices.js';
import { feedbackPerHour, on, state } from './store.js';
import { $, coalesce, fmtNum, fmtTime, formValues, gradeBadge, h, lotLink, stars } from './util.js';
import { setSimPill } from './view_gavage.js';

const ROWS = 50;
const DAY_ROWS = 1000;  // the chart's read: the last 12 hours, up to this many
let visible = false;
let stale = true;       // changed while hidden: read again when shown
let ctx = null;
let pane = null;
let seq = 0;
let renders = 0;

async function load() {
  if (!visible) { stale = true; return; }
  stale = false;
  const mine = ++seq;
  const since = new Date(Math.floor(Date.now() / 3600000 - 11) * 3600000).toISOString();
  try {
    const [page, day] = await Promise.all([get(`/api/consumer/feedback?limit=${ROWS}`),
      get(`/api/consumer/feedback?since=${encodeURIComponent(since)}&limit=${DAY_ROWS}`)]);
    if (mine !== seq) return;  // a newer read is on its way
    state.feedback = page;
    state.feedbackDay = day;
    render();
  } catch (exc) {
    notify(exc.message, 'error');
  }
}

const loadSoon = coalesce(load, 1000);

const sub = (v) => (v === null || v === undefined ? '—' : `${v}/5`);

function render() {
  if (!visible) return;
  setSimPill($('#consumer-state'), 'consumer');
  const day = state.feedbackDay;
  barChart($('#chart-feedback'), feedbackPerHour(12), { empty: 'no feedback in the last 12 hours', values: true });
  const avg = state.stats && state.stats.lots.average_consumer_rating;
  const partial = day && day.total > day.feedback.length ? ` (latest ${day.feedback.length} of ${day.total})` : '';
  $('#rating-avg').textContent = (avg ? `· registry average rating ${fmtNum(avg, 2)} / 5` : '') + partial;
  const exists = state.orch && state.orch.consumer && state.orch.consumer.status !== 'not_found';
  if (exists) pane.show('consumer');
  else pane.setState('the consumer simulator was never started');
  const page = state.feedback;
  if (!page) return;
  $('#feedback-count').textContent = page.total > page.feedback.length
    ? `(latest ${page.feedback.length} of ${page.total})` : `(${page.total})`;
  const rows = page.feedback.map((f) => h('tr', { dataset: { feedback: f.id, lot: f.lot_id } },
    h('td', { text: fmtTime(f.created_at), title: f.created_at }), h('td', {}, lotLink(f.lot_id)),
    h('td', { class: 'mono', text: f.product_id === null ? '—' : `#${f.product_id}`, title: f.product_gtin || '' }),
    h('td', {}, gradeBadge(f.sqal_grade)), h('td', { class: 'rating' }, stars(f.rating), ` ${f.rating}/5`),
    h('td', { text: sub(f.texture) }), h('td', { text: sub(f.flavor) }), h('td', { text: sub(f.freshness) }),
    h('td', { text: f.context || '—' }),
    // consumer text: set as textContent by h(), never parsed as markup
    h('td', { class: 'comment', text: f.comment || '—' })));
  if (!rows.length) rows.push(h('tr', { class: 'empty' }, h('td', { colspan: 10, class: 'muted',
    text: 'No feedback yet: consumers rate the products of inspected lots.' })));
  $('#feedback-table tbody').replaceChildren(...rows);
  Object.assign($('#feedback-table').dataset, { total: page.total, renders: ++renders });
}

export function init(c) {
  ctx = c;
  pane = new LogPane($('#consumer-log'), $('#consumer-log-state'));
  $('#form-consumer').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const body = formValues(ev.target);
    if (body.min_rating > body.max_rating) {
      notify(`Minimum rating (${body.min_rating}) must not exceed maximum rating (${body.max_rating}).`, 'error');
      return;
    }
    act($('#consumer-start'), () => post('/api/control-panel/consumer/start', body),
      (r) => `Consumer: ${r.status.replace('_', ' ')} (one feedback every ${r.interval_seconds} s).`).then(ctx.refreshNow);
  });
  $('#consumer-stop').addEventListener('click', (ev) => act(ev.target, () => post('/api/control-panel/consumer/stop'),
    (r) => `Consumer: ${r.status.replace('_', ' ')}.`).then(ctx.refreshNow));
  for (const what of ['status', 'tick']) on(what, render);
  on('feedback-change', loadSoon);  // a `lot` message brought consumer feedback
  on('safety', loadSoon);
}

export function onToken() {
  if (pane) { pane.close(); pane.name = null; }
  render();
}

export function show() {
  visible = true;
  render();
  if (stale || !state.feedback) load();
}

export function hide() {
  visible = false;
}

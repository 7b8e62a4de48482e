// Consumer tab: start/stop the consumer simulator with its rate and rating bounds, feedback per
// hour, and the recent feedback as the simulator posts it (its log stream: the API has no list).

import { post } from './api.js';
import { barChart } from './charts.js';
import { act, notify } from './notices.js';
import { feedbackPerHour, on, state } from './store.js';
import { $, fmtNum, fmtTime, formValues, gradeBadge, h, lotLink, stars } from './util.js';
import { setSimPill } from './view_gavage.js';

let visible = false;
let ctx = null;

function render() {
  if (!visible) return;
  setSimPill($('#consumer-state'), 'consumer');
  barChart($('#chart-feedback'), feedbackPerHour(12), { empty: 'no feedback yet', values: true });
  const avg = state.stats && state.stats.lots.average_consumer_rating;
  $('#rating-avg').textContent = avg ? `· registry average rating ${fmtNum(avg, 2)} / 5` : '';
  const logState = state.consumerLog || '';
  $('#feedback-state').textContent = logState === 'open' ? 'live' : logState;
  const rows = state.feedbacks.slice(0, 50).map((f) => h('tr', {},
    h('td', { text: fmtTime(f.at) }), h('td', {}, lotLink(f.lot)), h('td', { text: f.product || '—' }),
    h('td', {}, gradeBadge(f.grade && f.grade !== 'None' ? f.grade : null)), h('td', {}, stars(f.rating)),
    h('td', { text: f.texture || '—' }), h('td', { text: f.flavor || '—' }), h('td', { text: f.freshness || '—' }),
    h('td', { text: f.consumer || '—' }), h('td', { text: f.context || '—' })));
  if (!rows.length) rows.push(h('tr', {}, h('td', { colspan: 10, class: 'muted',
    text: 'No feedback yet: the consumer rates products of inspected lots only.' })));
  $('#feedback-table tbody').replaceChildren(...rows);
}

export function init(c) {
  ctx = c;
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
  for (const what of ['status', 'feedback', 'simlog', 'tick']) on(what, render);
}

export function show() {
  visible = true;
  render();
}

export function hide() {
  visible = false;
}

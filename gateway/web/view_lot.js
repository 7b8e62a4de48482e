// One lot (#/lots/LOT_...): its registry record and its timeline from gavage to consumer feedback.

import { get } from './api.js';
import { notify } from './notices.js';
import { on } from './store.js';
import { drawTimeline } from './timeline.js';
import { $, LOT_ID, fmtDateTime, fmtDuration, fmtNum, gradeBadge, h, stateBadge } from './util.js';

const PAGE = 1000;
const MAX_EVENTS = 10000;
const SHOWN_ROWS = 300;
let lotId = null;
let loading = false;

async function allEvents(id) {
  let offset = 0;
  let events = [];
  let head = null;
  do {
    head = await get(`/api/lots/${id}/timeline?limit=${PAGE}&offset=${offset}`);
    events = events.concat(head.events);
    offset += head.events.length;
  } while (head.events.length && offset < head.total && offset < MAX_EVENTS);
  return { head, events };
}

function dl(el, pairs) {
  el.replaceChildren(...pairs.flatMap(([k, v]) => [h('dt', { text: k }), h('dd', {}, v instanceof Node ? v : String(v))]));
}

async function load() {
  if (!lotId || loading) return;
  const id = lotId;
  loading = true;
  try {
    const [lot, { head, events }] = await Promise.all([get(`/api/lots/${id}`), allEvents(id)]);
    if (id !== lotId) return;
    $('#lot-title').replaceChildren(h('span', { class: 'mono', text: lot.id }), ' ', stateBadge(lot.state));
    const dist = lot.grade_distribution ? Object.entries(lot.grade_distribution).filter(([, n]) => n).map(([g, n]) => `${g} ${n}`).join(' · ') : '—';
    dl($('#lot-summary'), [
      ['Farmer', `${lot.farmer_name} (${lot.farmer_id})`], ['Site', lot.site_code], ['Genetics', lot.genetics],
      ['Ducks', `${fmtNum(lot.live_ducks ?? lot.nb_ducks)} live / ${lot.nb_ducks}`],
      ['Gavage day', `${lot.current_day} / ${lot.planned_duration_days}`],
      ['Mean weight', fmtNum(lot.mean_weight_g, 0, ' g')], ['Mortality', fmtNum(lot.mortality_pct, 1, ' %')],
      ['Maize per duck', fmtNum(lot.maize_total_per_duck_g, 0, ' g')],
      ['SQAL samples', fmtNum(lot.sample_count)], ['Grades', dist],
      ['Mean liver weight', fmtNum(lot.mean_liver_weight_g, 0, ' g')],
      ['ITM', lot.itm ? h('span', {}, fmtNum(lot.itm, 2) + ' ', gradeBadge(lot.itm_grade)) : '—'],
      ['Events', `${head.total} (feedings ${head.feedings}, samples ${head.samples}, feedback ${head.feedbacks})`],
      ['First → last event', `${fmtDateTime(head.first_at)} → ${fmtDateTime(head.last_at)} (${fmtDuration(head.duration_s)})`],
    ]);
    const active = !['inspected', 'closed'].includes(lot.state);
    drawTimeline($('#lot-timeline'), events, { until: active ? Date.now() : 0 });
    $('#lot-event-count').textContent = events.length > SHOWN_ROWS ? `(latest ${SHOWN_ROWS} of ${head.total})` : `(${head.total})`;
    const rows = events.slice(-SHOWN_ROWS).reverse().map((e) => h('tr', { dataset: { stage: e.stage } },
      h('td', { text: fmtDateTime(e.at) }), h('td', {}, h('span', { class: 'pill stage-' + e.stage, text: e.stage })),
      h('td', { class: 'mono', text: e.type }), h('td', { text: e.description })));
    $('#lot-events tbody').replaceChildren(...rows);
  } catch (exc) {
    notify(exc.message, 'error');
    $('#lot-title').textContent = `Lot ${id}: not available`;
  } finally {
    loading = false;
  }
}

export function init() {
  on('lots', load);  // the slow refresh also refreshes an open lot
}

export function show(id) {
  if (!LOT_ID.test(id || '')) {
    notify(`"${id}" is not a lot id (LOT_YYYYMMDD_XXXX).`, 'error');
    return;
  }
  if (id !== lotId) {
    $('#lot-title').textContent = `Lot ${id}`;
    $('#lot-summary').replaceChildren();
    $('#lot-timeline').replaceChildren();
    $('#lot-events tbody').replaceChildren();
  }
  lotId = id;
  load();
}

export function hide() {
  lotId = null;
}

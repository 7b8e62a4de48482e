// One lot (#/lots/LOT_...): its registry record, its timeline from gavage to consumer feedback, its
// SQAL samples (grade filter, pages of 50) and its consumer feedback; once inspected, links to its
// printable certificate (HTML and PDF, docs/traceability.md).

import { get, getToken } from './api.js';
import { notify } from './notices.js';
import { on } from './store.js';
import { drawTimeline } from './timeline.js';
import { $, LOT_ID, fmtDateTime, fmtDuration, fmtNum, gradeBadge, h, stars, stateBadge } from './util.js';

const PAGE = 1000;
const MAX_EVENTS = 10000;
const SHOWN_ROWS = 300;
const FEEDBACK_ROWS = 200;
let lotId = null;
let loading = false;
// The user's sample filter and page: kept across refreshes, reset when another lot is opened.
let samplesView = { grade: '', offset: 0 };
let samplesSeq = 0;   // only the answer to the latest samples request is drawn
let samplesRenders = 0;
let feedbackRenders = 0;

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

// The certificate opens in a new tab. Reads need no token unless the gateway runs with
// SQAL_READ_AUTH: with a token stored, fetch it with the token and open what came back.
async function openWithToken(ev) {
  const token = getToken();
  if (!token) return;
  ev.preventDefault();
  const url = ev.currentTarget.href;
  const win = window.open('', '_blank');
  try {
    const res = await fetch(url, { headers: { Authorization: 'Bearer ' + token } });
    if (!res.ok) throw new Error(`GET ${url} failed (${res.status}): ${(await res.text()).slice(0, 200)}`);
    const blobUrl = URL.createObjectURL(await res.blob());
    if (win) win.location = blobUrl; else window.location.assign(blobUrl);
  } catch (exc) {
    if (win) win.close();
    notify(exc.message, 'error');
  }
}

function certificateLinks(lot) {
  if (!lot.inspected_at) return null;
  const base = `/api/traceability/lots/${encodeURIComponent(lot.id)}/certificate`;
  const link = (href, text, title) => h('a', { href, text, title, target: '_blank', rel: 'noopener',
    class: 'cert-link', onclick: openWithToken });
  return h('span', { id: 'lot-certificate', class: 'muted', style: 'font-size: .75em; font-weight: normal' }, ' ',
    link(base, 'Certificate', 'The lot certificate, one printable page'), ' · ',
    link(base + '.pdf', 'PDF', 'The lot certificate as a PDF'));
}

function dl(el, pairs) {
  el.replaceChildren(...pairs.flatMap(([k, v]) => [h('dt', { text: k }), h('dd', {}, v instanceof Node ? v : String(v))]));
}

// 50 rows a page; read from the markup (data-page-size) so that the browser test can page through
// the few samples an accelerated demo lot gets.
function pageSize() {
  return Math.max(1, Math.min(1000, Number($('#lot-samples').dataset.pageSize) || 50));
}

// Samples are listed in the API's order, oldest measurement first (newest last): pages are offsets
// into that order, so a refresh while samples still arrive only grows the last page instead of
// shifting every row of the page being read.
async function fetchSamples(id) {
  const seq = ++samplesSeq;
  const view = { ...samplesView, limit: pageSize() };
  const q = new URLSearchParams({ limit: view.limit, offset: view.offset });
  if (view.grade) q.set('grade', view.grade);
  const data = await get(`/api/lots/${id}/samples?${q}`);
  return { seq, view, data };
}

function renderSamples(id, { seq, view, data }) {
  if (seq !== samplesSeq || id !== lotId) return;  // the filter or page changed meanwhile: a newer answer comes
  if (data.total && view.offset >= data.total) {
    // fewer samples than the page shown (another filter): go to the last page that exists
    samplesView.offset = Math.floor((data.total - 1) / view.limit) * view.limit;
    refreshSamples();
    return;
  }
  const panel = $('#lot-samples');
  const rows = data.samples.map((s) => {
    const measured = s.measured_at
      ? h('td', { text: fmtDateTime(s.measured_at) })
      : h('td', {}, fmtDateTime(s.received_at) + ' ', h('span', { class: 'pill warn', text: 'clock not trusted',
        title: 'The device clock was not synchronised: this is when the gateway received the sample.' }));
    const differs = s.device_grade && s.device_grade !== s.grade;
    return h('tr', { dataset: { sample: s.id, device: s.device_id, grade: s.grade || '' } },
      measured,
      h('td', { class: 'mono', text: s.device_id, title: `linked to the lot by ${s.link_kind === 'explicit' ? 'the device (lot id in the sample)' : 'the line assignment'}` }),
      h('td', { class: 'mono', text: `${s.boot}/${s.seq}` }),
      h('td', {}, gradeBadge(s.grade)),
      h('td', { text: fmtNum(s.score, 3) }),
      h('td', { class: 'device-grade' }, differs ? [gradeBadge(s.device_grade), ' ', fmtNum(s.device_score, 3)] : null),
      h('td', { text: fmtNum(s.weight_g, 0, ' g') }),
      h('td', { class: s.alerts.length ? 'alerts' : 'muted', text: s.alerts.length ? s.alerts.join(', ') : '—' }));
  });
  if (!rows.length) {
    const text = view.grade ? `No sample graded ${view.grade}.`
      : 'No SQAL samples yet: they arrive once the lot is on an inspection line.';
    rows.push(h('tr', { class: 'empty' }, h('td', { colspan: 8, class: 'muted', text })));
  }
  $('#lot-samples-table tbody').replaceChildren(...rows);
  const first = data.samples.length ? view.offset + 1 : 0;
  const last = view.offset + data.samples.length;
  $('#lot-samples-range').textContent = data.total ? `${first}–${last} of ${data.total}` : '';
  $('#lot-samples-count').textContent = view.grade ? `(${data.total} graded ${view.grade})` : `(${data.total})`;
  $('#lot-samples-prev').disabled = view.offset <= 0;
  $('#lot-samples-next').disabled = last >= data.total;
  $('#lot-samples-grade').value = view.grade;
  Object.assign(panel.dataset, { total: data.total, grade: view.grade, offset: view.offset, renders: ++samplesRenders });
}

async function refreshSamples() {
  const id = lotId;
  if (!id) return;
  try {
    renderSamples(id, await fetchSamples(id));
  } catch (exc) {
    notify(exc.message, 'error');
  }
}

// Feedback comes oldest first and unpaginated; shown newest first (what changed since the last look),
// the latest FEEDBACK_ROWS of them.
function renderFeedback(data) {
  const n = data.total;
  $('#lot-feedback-summary').textContent = n
    ? `(${n} · mean rating ${fmtNum(data.mean_rating, 2)} / 5${n > FEEDBACK_ROWS ? ` · latest ${FEEDBACK_ROWS} shown` : ''})`
    : '(none)';
  const sub = (v) => (v === null || v === undefined ? '—' : `${v}/5`);
  const rows = data.feedback.slice(-FEEDBACK_ROWS).reverse().map((f) => h('tr', { dataset: { feedback: f.id } },
    h('td', { text: fmtDateTime(f.created_at) }),
    h('td', { class: 'rating' }, stars(f.rating), ` ${f.rating}/5`),
    h('td', { text: sub(f.texture) }), h('td', { text: sub(f.flavor) }), h('td', { text: sub(f.freshness) }),
    h('td', { text: f.context || '—' }),
    h('td', { class: 'mono', text: f.product_id === null || f.product_id === undefined ? '—' : `#${f.product_id}` }),
    // consumer text: set as textContent by h(), never parsed as markup
    h('td', { class: 'comment', text: f.comment || '—' })));
  if (!rows.length) {
    rows.push(h('tr', { class: 'empty' }, h('td', { colspan: 8, class: 'muted',
      text: 'No consumer feedback on this lot yet: consumers rate the products of inspected lots.' })));
  }
  $('#lot-feedback-table tbody').replaceChildren(...rows);
  Object.assign($('#lot-feedback').dataset, { total: n, mean: data.mean_rating ?? '', renders: ++feedbackRenders });
}

async function load() {
  if (!lotId || loading) return;
  const id = lotId;
  loading = true;
  try {
    const [lot, { head, events }, samples, feedback] = await Promise.all([get(`/api/lots/${id}`), allEvents(id),
      fetchSamples(id), get(`/api/lots/${id}/feedback`)]);
    if (id !== lotId) return;
    renderSamples(id, samples);
    renderFeedback(feedback);
    $('#lot-title').replaceChildren(h('span', { class: 'mono', text: lot.id }), ' ', stateBadge(lot.state),
      certificateLinks(lot));
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
  on('lots', load);  // the slow refresh also refreshes an open lot (samples and feedback included)
  $('#lot-samples-grade').addEventListener('change', (ev) => {
    samplesView = { grade: ev.target.value, offset: 0 };
    refreshSamples();
  });
  $('#lot-samples-prev').addEventListener('click', () => {
    samplesView.offset = Math.max(0, samplesView.offset - pageSize());
    refreshSamples();
  });
  $('#lot-samples-next').addEventListener('click', () => {
    samplesView.offset += pageSize();
    refreshSamples();
  });
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
    samplesView = { grade: '', offset: 0 };
    $('#lot-samples-grade').value = '';
    for (const el of ['#lot-samples-count', '#lot-samples-range', '#lot-feedback-summary']) $(el).textContent = '';
    $('#lot-samples-table tbody').replaceChildren();
    $('#lot-feedback-table tbody').replaceChildren();
  }
  lotId = id;
  load();
}

export function hide() {
  lotId = null;
}

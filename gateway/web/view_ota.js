// Updates tab (docs/ota.md): registered releases, a form that starts a rollout (a release to the
// devices of a site, of a version or of a list, in waves, with a failure threshold), the rollouts,
// and the selected rollout's devices with their wave, state, download progress, attempts and the
// board's own reason, its actions (retry the failed devices, roll back, cancel) and its history.
// No stream carries rollouts: the tab reads them every 2 s while it is shown.

import { get, post } from './api.js';
import { act, notify } from './notices.js';
import { $, coalesce, fmtDateTime, formValues, h } from './util.js';

const POLL_MS = 2000;
const EVENTS_SHOWN = 40;
let visible = false;
let timer = null;
let selected = null;
let seq = 0;

const STATE_CLASS = {
  confirmed: 'ok', completed: 'ok', running: 'info', downloading: 'info', verifying: 'info', pending: 'info',
  queued: 'muted', skipped: 'muted', failed: 'bad', rolled_back: 'warn', lost: 'bad', stopped: 'bad',
  cancelled: 'warn', interrupted: 'warn',
};

function badge(st) {
  return h('span', { class: 'pill ' + (STATE_CLASS[st] || ''), text: st, dataset: { state: st } });
}

function progressBar(p) {
  return h('progress', { max: '100', value: String(p), title: `${p} %`, 'aria-label': `${p} %` });
}

function renderReleases(list) {
  const rows = list.releases.map((r) => h('tr', { dataset: { version: r.version } },
    h('td', { class: 'mono', text: r.version }), h('td', { text: String(r.files) }),
    h('td', { text: `${Math.round(r.size / 1024)} KiB` }), h('td', { text: fmtDateTime(r.registered_at) })));
  $('#ota-releases tbody').replaceChildren(...rows);
  const sel = $('#form-rollout [name=version]');
  const keep = sel.value;
  sel.replaceChildren(...list.releases.map((r) => h('option', { value: r.version, text: r.version })));
  if (keep && list.releases.some((r) => r.version === keep)) sel.value = keep;
}

function renderRollouts(list) {
  const rows = list.rollouts.map((r) => {
    const tr = h('tr', { class: r.id === selected ? 'selected' : '', dataset: { rollout: String(r.id) } },
      h('td', { class: 'mono', text: `#${r.id}` }), h('td', { class: 'mono', text: r.version }),
      h('td', {}, badge(r.state)), h('td', { text: r.reason || '' }),
      h('td', { text: `${r.waves.length} (${r.waves.join(' / ')})` }), h('td', { text: fmtDateTime(r.created_at) }));
    tr.addEventListener('click', () => { selected = r.id; load(); });
    return tr;
  });
  $('#ota-rollouts tbody').replaceChildren(...rows);
  if (selected === null && list.rollouts.length) selected = list.rollouts[0].id;
}

function renderDetail(r, events) {
  const panel = $('#ota-detail');
  panel.hidden = !r;
  if (!r) return;
  $('#ota-detail-title').textContent = `Rollout #${r.id}: release ${r.version}`;
  $('#ota-detail-state').replaceChildren(badge(r.state));
  $('#ota-counts').textContent = Object.entries(r.counts).map(([k, v]) => `${v} ${k}`).join(' · ')
    + (r.reason ? ` — ${r.reason}` : '');
  const rows = r.devices.map((d) => h('tr', { dataset: { device: d.device_id, state: d.state } },
    h('td', { class: 'mono', text: d.device_id }), h('td', { text: d.wave === null ? '—' : String(d.wave) }),
    h('td', {}, badge(d.state)), h('td', {}, progressBar(d.progress), ` ${d.progress} %`),
    h('td', { text: String(d.attempts) }), h('td', { text: d.reason || '' })));
  $('#ota-devices tbody').replaceChildren(...rows);
  const running = r.state === 'running' || r.state === 'created';
  $('#ota-retry').disabled = running || !r.devices.some((d) => ['failed', 'rolled_back', 'lost'].includes(d.state));
  $('#ota-rollback').disabled = !r.devices.some((d) => d.state === 'confirmed');
  $('#ota-cancel').disabled = !running;
  const shown = events.slice(-EVENTS_SHOWN).reverse();
  $('#ota-events').replaceChildren(...shown.map((e) => h('li', {},
    h('span', { class: 'muted', text: fmtDateTime(e.at) + ' ' }), h('span', { class: 'mono', text: e.device_id || 'rollout' }),
    ' ', e.kind.replace(/_/g, ' '), e.data && e.data.reason ? `: ${e.data.reason}` : '')));
}

async function load() {
  if (!visible) return;
  const mine = ++seq;
  try {
    const [releases, rollouts] = await Promise.all([get('/api/ota/releases'), get('/api/ota/rollouts')]);
    if (mine !== seq) return;
    renderReleases(releases);
    renderRollouts(rollouts);
    if (selected !== null) {
      const [detail, ev] = await Promise.all([get(`/api/ota/rollouts/${selected}`),
        get(`/api/ota/rollouts/${selected}/events?limit=5000`)]);
      if (mine === seq) renderDetail(detail, ev.events);
    } else {
      renderDetail(null, []);
    }
  } catch (exc) {
    notify(exc.message, 'error');
  }
}

const loadSoon = coalesce(load, 300);

function rolloutBody(form) {
  const v = formValues(form);
  const body = { version: v.version, waves: String(v.waves || '1,10%,100%').split(',').map((w) => w.trim()).filter(Boolean) };
  if (v.site) body.site = v.site;
  if (v.from_version) body.from_version = v.from_version;
  if (v.devices) body.devices = v.devices.split(/[\s,]+/).filter(Boolean);
  if (v.max_failures !== undefined) body.max_failures = v.max_failures;
  if (v.probation_s !== undefined) body.probation_s = v.probation_s;
  return body;
}

export function init() {
  $('#form-rollout').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const out = await act($('#ota-start'), () => post('/api/ota/rollouts', rolloutBody(ev.target)),
      (r) => `rollout #${r.id} started: ${r.devices.length} device(s) in ${r.waves.length} wave(s)`);
    if (out) { selected = out.id; loadSoon(); }
  });
  $('#form-release').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const out = await act($('#ota-register'), () => post('/api/ota/releases', formValues(ev.target)),
      (r) => `release ${r.version} verified and registered`);
    if (out) loadSoon();
  });
  for (const [id, action, said] of [['#ota-retry', 'retry', 'failed devices sent the release again'],
    ['#ota-rollback', 'rollback', 'rollback sent'], ['#ota-cancel', 'cancel', 'no further device will start']]) {
    $(id).addEventListener('click', async () => {
      if (selected === null) return;
      if (await act($(id), () => post(`/api/ota/rollouts/${selected}/${action}`), said)) loadSoon();
    });
  }
}

export function show() {
  visible = true;
  load();
  if (!timer) timer = setInterval(load, POLL_MS);
}

export function hide() {
  visible = false;
  if (timer) { clearInterval(timer); timer = null; }
}

// Small DOM and formatting helpers shared by the views. Text always goes in as textContent:
// lot names, log lines and API messages are data, never markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = v;
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

export function fmtTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? '—' : d.toLocaleTimeString([], { hour12: false });
}

export function fmtDateTime(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '—';
  return d.toLocaleDateString() + ' ' + d.toLocaleTimeString([], { hour12: false });
}

export function fmtNum(v, digits = 0, unit = '') {
  if (v === null || v === undefined || Number.isNaN(Number(v))) return '—';
  return Number(v).toFixed(digits) + unit;
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return '—';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return s + ' s';
  if (s < 3600) return Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
  return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
}

// Run `fn` at most once every `ms`: a call while it waits is folded into the next run (which
// happens), so a burst of changes costs one read, and the last change is never left out.
export function coalesce(fn, ms) {
  let timer = null;
  let last = 0;
  return () => {
    if (timer) return;
    timer = setTimeout(() => {
      timer = null;
      last = Date.now();
      fn();
    }, Math.max(0, last + ms - Date.now()));
  };
}

export const GRADES = ['A+', 'A', 'B', 'C', 'REJECT'];
export const GRADE_COLORS = { 'A+': '#1b7f3b', A: '#4caf50', B: '#f0b429', C: '#e8772e', REJECT: '#c62828', none: '#9e9e9e' };

export function gradeBadge(grade) {
  const g = grade || 'none';
  return h('span', { class: 'grade', style: `background:${GRADE_COLORS[g] || GRADE_COLORS.none}`, text: grade || '—' });
}

export function stateBadge(state) {
  return h('span', { class: 'pill state-' + String(state || 'unknown').replace(/[^a-z_]/gi, ''), text: state || 'unknown' });
}

export const LOT_ID = /^LOT_\d{8}_\d{4,6}$/;

export function lotLink(id) {
  if (!id || !LOT_ID.test(id)) return document.createTextNode(id || '—');
  return h('a', { href: '#/lots/' + id, class: 'lot-link', text: id });
}

// Read a form into a plain object: numbers for number inputs, booleans for checkboxes, empty optional
// fields left out (the API then applies its own default instead of a guessed one).
export function formValues(form) {
  const out = {};
  for (const el of form.elements) {
    if (!el.name || el.disabled || el.closest('[hidden]')) continue;
    if (el.type === 'checkbox') out[el.name] = el.checked;
    else if (el.value === '') continue;
    else if (el.type === 'number') out[el.name] = Number(el.value);
    else out[el.name] = el.value;
  }
  return out;
}

// A 1-5 rating as five stars; the number stays readable in the title (and for screen readers).
export function stars(n) {
  const v = Math.max(0, Math.min(5, Math.round(Number(n) || 0)));
  return h('span', { class: 'stars', title: `${v} / 5`, 'aria-label': `${v} out of 5`, text: '★'.repeat(v) + '☆'.repeat(5 - v) });
}

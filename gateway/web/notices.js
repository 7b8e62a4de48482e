// The message area under the header: errors stay until dismissed, confirmations fade out.

import { h, $ } from './util.js';

const MAX = 6;

export function notify(message, kind = 'info') {
  const box = $('#notices');
  if (!box) return;
  const close = h('button', { type: 'button', class: 'close', 'aria-label': 'Dismiss', text: '×' });
  const item = h('div', { class: 'notice notice-' + kind, role: kind === 'error' ? 'alert' : 'status' },
    h('span', { class: 'notice-text', text: message }), close);
  close.addEventListener('click', () => item.remove());
  box.prepend(item);
  while (box.children.length > MAX) box.lastElementChild.remove();
  if (kind !== 'error') setTimeout(() => item.remove(), 6000);
}

// Run an API action from a button: disable it meanwhile, show the outcome in words.
export async function act(button, fn, okText) {
  if (button) button.disabled = true;
  try {
    const out = await fn();
    if (okText) notify(typeof okText === 'function' ? okText(out) : okText, 'ok');
    return out;
  } catch (exc) {
    notify(exc.message || String(exc), 'error');
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

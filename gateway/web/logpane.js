// A live log of one simulator over /api/control-panel/ws/logs/{name}: the last lines first, then
// each new line as the simulator prints it. Needs the API token (a control stream).

import { getToken } from './api.js';
import { LiveSocket } from './live.js';

const MAX_LINES = 400;

export function tokenProtocols() {
  const t = getToken();
  return t ? ['sqal.bearer', t] : undefined;
}

export class LogStream {
  // opts: {tail, onEntry(entry), onState(state, detail)}
  constructor(name, opts) {
    this.name = name;
    this.runId = null;
    this.socket = new LiveSocket(`/api/control-panel/ws/logs/${encodeURIComponent(name)}?tail=${opts.tail || 100}`, {
      protocols: tokenProtocols,
      onState: opts.onState || (() => {}),
      onMessage: (m) => {
        if (m.type === 'log') opts.onEntry(m);
        else if (m.type === 'error' && opts.onState) opts.onState('refused', m.detail);
      },
    });
  }

  get state() { return this.socket.state; }

  restart() { this.socket.restart(); }

  close() { this.socket.close(); }
}

// Shows a LogStream in a <pre>, newest line at the bottom, following the end unless scrolled up.
export class LogPane {
  constructor(pre, stateEl) {
    this.pre = pre;
    this.stateEl = stateEl;
    this.stream = null;
    this.name = null;
    this.seen = new Set();
  }

  show(name) {
    if (this.stream && this.name === name && this.stream.state !== 'refused') return;
    this.close();
    this.name = name;
    this.pre.textContent = '';
    this.seen.clear();
    if (!name) return this.setState('');
    if (!getToken()) return this.setState('enter the API token to see live logs');
    this.stream = new LogStream(name, {
      tail: 200,
      onEntry: (e) => this.append(e),
      onState: (st, detail) => this.setState(st === 'open' ? 'live' : detail ? `${st}: ${detail}` : st),
    });
  }

  append(e) {
    const key = `${e.run_id}:${e.n}`;
    if (this.seen.has(key)) return;  // a reconnect replays the tail
    this.seen.add(key);
    const follow = this.pre.scrollTop + this.pre.clientHeight >= this.pre.scrollHeight - 24;
    const line = document.createElement('div');
    line.textContent = e.line;
    if (/\b(error|fail|refused|exception|traceback)/i.test(e.line)) line.className = 'log-error';
    this.pre.append(line);
    while (this.pre.childElementCount > MAX_LINES) this.pre.firstElementChild.remove();
    if (follow) this.pre.scrollTop = this.pre.scrollHeight;
  }

  setState(text) {
    if (this.stateEl) this.stateEl.textContent = text;
    this.pre.dataset.state = text;
  }

  close() {
    if (this.stream) this.stream.close();
    this.stream = null;
  }
}

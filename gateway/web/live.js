// A WebSocket that comes back by itself: exponential backoff with jitter (0.5 s doubling to 15 s),
// reset once a connection has stayed open. Browsers cannot set headers on a WebSocket, so the API
// token goes as the subprotocol pair ['sqal.bearer', token] (gateway/auth.py); the server echoes
// 'sqal.bearer'. Close codes that retrying cannot fix (bad token 1008, unknown simulator 4404)
// stop the retries and are reported.

const MIN_DELAY = 500;
const MAX_DELAY = 15000;
const FINAL_CODES = new Set([1008, 4401, 4403, 4404]);

export function wsUrl(path) {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return proto + '//' + location.host + path;
}

export class LiveSocket {
  // opts: {protocols: () => string[] | undefined, onMessage(data), onState(state, detail)}
  constructor(path, opts) {
    this.path = path;
    this.opts = opts;
    this.delay = MIN_DELAY;
    this.ws = null;
    this.timer = null;
    this.closed = false;
    this.state = 'idle';
    this.connect();
  }

  setState(state, detail) {
    this.state = state;
    if (this.opts.onState) this.opts.onState(state, detail);
  }

  connect() {
    if (this.closed) return;
    const protocols = this.opts.protocols ? this.opts.protocols() : undefined;
    this.setState('connecting');
    let ws;
    try {
      ws = protocols && protocols.length ? new WebSocket(wsUrl(this.path), protocols) : new WebSocket(wsUrl(this.path));
    } catch (exc) {
      this.setState('failed', exc.message);
      return;
    }
    this.ws = ws;
    let openedAt = 0;
    ws.onopen = () => {
      openedAt = Date.now();
      this.setState('open');
    };
    ws.onmessage = (ev) => {
      let data;
      try { data = JSON.parse(ev.data); } catch { return; }  // the gateway only sends JSON
      this.opts.onMessage(data);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.closed) return;
      if (FINAL_CODES.has(ev.code)) {
        this.setState('refused', ev.reason || 'closed by the gateway (code ' + ev.code + ')');
        return;
      }
      if (openedAt && Date.now() - openedAt > 10000) this.delay = MIN_DELAY;  // it worked for a while
      const wait = Math.round(this.delay * (0.75 + Math.random() * 0.5));
      this.delay = Math.min(MAX_DELAY, this.delay * 2);
      this.setState('reconnecting', wait);
      this.timer = setTimeout(() => this.connect(), wait);
    };
  }

  // Reconnect now (the token changed, or the user asked).
  restart() {
    clearTimeout(this.timer);
    this.delay = MIN_DELAY;
    const ws = this.ws;
    this.ws = null;
    quietClose(ws);
    this.connect();
  }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    quietClose(this.ws);
    this.ws = null;
    this.setState('closed');
  }
}

// Closing a socket still in its handshake makes Chromium log an error; wait for the open instead.
function quietClose(ws) {
  if (!ws) return;
  if (ws.readyState === WebSocket.CONNECTING) {
    ws.onopen = () => ws.close(1000);
    ws.onmessage = null;
  } else if (ws.readyState === WebSocket.OPEN) {
    ws.close(1000);
  }
}

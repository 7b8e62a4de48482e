// HTTP access to the gateway API: the bearer token from localStorage on every request, and every
// refusal turned into a sentence for the user (the `detail` the API sends with 401/404/409/422).

const TOKEN_KEY = 'sqal.apiToken';

export function getToken() {
  try { return localStorage.getItem(TOKEN_KEY) || ''; } catch { return ''; }
}

export function setToken(token) {
  const t = String(token || '').trim();
  if (t) localStorage.setItem(TOKEN_KEY, t); else localStorage.removeItem(TOKEN_KEY);
  window.dispatchEvent(new CustomEvent('sqal:token', { detail: { set: Boolean(t) } }));
}

export class ApiError extends Error {
  constructor(status, message, method, path) {
    super(message);
    this.status = status;
    this.method = method;
    this.path = path;
  }
}

// A 422 detail is a list of {loc, msg}; others a string. Name the field that was wrong (once: the
// gateway's own rules already start their message with it, "nb_lots do(es) not apply ...").
export function detailText(detail) {
  if (detail === null || detail === undefined) return '';
  if (typeof detail === 'string') return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => {
      const loc = Array.isArray(d.loc) ? d.loc.filter((p) => p !== 'body').join('.') : '';
      const msg = d.msg || JSON.stringify(d);
      return (loc && !msg.startsWith(loc) ? loc + ': ' : '') + msg;
    }).join('; ');
  }
  return typeof detail === 'object' ? JSON.stringify(detail) : String(detail);
}

const HINTS = {
  401: 'enter the API token (top right): ',
  404: 'not found: ',
  409: 'refused in the current state: ',
  422: 'invalid settings: ',
  503: 'gateway not ready: ',
};

export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  const token = getToken();
  if (token) headers.Authorization = 'Bearer ' + token;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (exc) {
    throw new ApiError(0, `${method} ${path}: the gateway is unreachable (${exc.message})`, method, path);
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = text; }
  }
  if (!res.ok) {
    const detail = data && typeof data === 'object' ? detailText(data.detail) : String(data || res.statusText);
    const msg = `${method} ${path} failed (${res.status}): ${HINTS[res.status] || ''}${detail || res.statusText}`;
    throw new ApiError(res.status, msg, method, path);
  }
  return data;
}

export const get = (path) => api('GET', path);
export const post = (path, body) => api('POST', path, body === undefined ? {} : body);

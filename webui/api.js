// The admin API client: JSON over fetch, the session cookie (HttpOnly, set by the server)
// and the CSRF token (kept in memory only, sent as X-CSRF-Token on every change).

const BASE = "/api/v1/admin";
let csrf = null;
let session = null;

/** An answer that was not 2xx: `problem` is the server's problem+json document. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

/** Calls the API; `body` is sent as JSON. Resolves to the JSON answer, text, or the
 * Response itself when `opts.raw`. */
export async function api(method, path, body, opts = {}) {
  const headers = { Accept: opts.accept || "application/json" };
  if (method !== "GET" && method !== "HEAD" && csrf) headers["X-CSRF-Token"] = csrf;
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(BASE + path, init);
  } catch (e) {
    throw new ApiError(0, { title: "The box did not answer", detail: String(e.message || e) });
  }
  if (!r.ok) {
    let p;
    try { p = await r.json(); } catch { p = {}; }
    if (!p || typeof p !== "object") p = {};
    p.title = p.title || r.statusText || `HTTP ${r.status}`;
    p.status = r.status;
    // A session that ended (idle, restart, password changed elsewhere): log in again.
    if (r.status === 401 && session && path !== "/session" && path !== "/setup") {
      setSession(null);
      window.dispatchEvent(new CustomEvent("sealgate:session-ended"));
    }
    throw new ApiError(r.status, p);
  }
  if (opts.raw) return r;
  if (r.status === 204) return null;
  const ct = r.headers.get("content-type") || "";
  return ct.includes("json") ? r.json() : r.text();
}

/** The logged-in account ({username, role, csrf_token, ...}) or null. */
export async function currentSession(refresh = false) {
  if (session && !refresh) return session;
  try {
    setSession(await api("GET", "/session"));
  } catch (e) {
    if (e.status === 401) setSession(null);
    else throw e;
  }
  return session;
}

export function setSession(s) {
  session = s;
  csrf = s ? s.csrf_token : null;
}

export function isAdmin() {
  return !!session && session.role === "admin";
}

/** Reads a File as base64 (for JSON bodies such as PKCS#12 imports). */
export function fileBase64(file) {
  return new Promise((resolve, reject) => {
    const fr = new FileReader();
    fr.onerror = () => reject(fr.error);
    fr.onload = () => {
      const s = String(fr.result);
      resolve(s.slice(s.indexOf(",") + 1));
    };
    fr.readAsDataURL(file);
  });
}

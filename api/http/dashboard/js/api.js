// Every call of the dashboard goes through the public REST API with the signed-in key in an
// Authorization header. The key lives in this tab's sessionStorage only: never in a URL, a cookie
// or localStorage, so it is gone when the tab closes.

const KEY = "missions.apiKey";

export function apiKey() {
  return sessionStorage.getItem(KEY);
}

export function signIn(key) {
  sessionStorage.setItem(KEY, key);
}

export function signOut() {
  sessionStorage.removeItem(KEY);
}

/** An answer outside 2xx, in the API's error shape ({error, code, details}). */
export class ApiError extends Error {
  constructor(status, body) {
    super(body && typeof body.error === "string" ? body.error : `HTTP ${status}`);
    this.status = status;
    this.code = (body && body.code) || "internal_error";
    this.details = (body && body.details) || {};
  }

  /** {"tasks[0].title": ["..."]} for a validation error, else {}. */
  get fields() {
    const fields = this.details && this.details.fields;
    return fields && typeof fields === "object" ? fields : {};
  }
}

const listeners = new Set();

/** Called with the error when the server refuses the key (401): the app shows the sign-in form. */
export function onUnauthorized(listener) {
  listeners.add(listener);
}

/** Tell the shell the server refused the key (also used by the event streams). */
export function unauthorized(error) {
  listeners.forEach((listener) => listener(error));
}

export function headers(extra = {}, key = apiKey()) {
  return { Authorization: `Bearer ${key}`, Accept: "application/json", ...extra };
}

/** ``method`` ``/v1{path}`` with an optional JSON body: ``{response, parsed}`` (the fetch Response
 *  and its JSON, null for a 204 or an empty body), or throws ApiError. What ``api`` and ``apiPages`` share. */
async function request(method, path, body, key) {
  const init = { method, headers: headers({}, key || apiKey()), cache: "no-store", credentials: "omit" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(`/v1${path}`, init);
  } catch (exc) {
    throw new ApiError(0, { error: `the server cannot be reached (${exc.message})`, code: "unavailable" });
  }
  let parsed = null;
  const text = response.status === 204 ? "" : await response.text();
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = { error: `HTTP ${response.status}: the answer was not JSON` };
    }
  }
  if (!response.ok) {
    const error = new ApiError(response.status, parsed);
    if (response.status === 401 && !key) unauthorized(error);
    throw error;
  }
  return { response, parsed };
}

/** ``method`` ``/v1{path}`` with an optional JSON body; the parsed answer, or throws ApiError. */
export async function api(method, path, body, { key } = {}) {
  return (await request(method, path, body, key)).parsed;
}

/** Every item of a keyset-paged list (``GET /v1{path}``, a JSON array per page): follows each
 *  page's ``X-Next-Cursor`` as ``?after=`` until a page has none; throws ApiError like ``api``. */
export async function apiPages(path) {
  const items = [];
  const separator = path.includes("?") ? "&" : "?";
  let after = null;
  for (;;) {
    const { response, parsed } = await request("GET", after === null ? path : `${path}${separator}after=${encodeURIComponent(after)}`);
    if (!Array.isArray(parsed)) throw new ApiError(response.status, { error: `GET ${path}: the answer was not a list` });
    items.push(...parsed);
    after = response.headers.get("X-Next-Cursor");
    if (!after) return items;
  }
}

/** ``/path?a=1&b=2`` leaving out empty values. */
export function withQuery(path, query) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") params.set(name, String(value));
  }
  const qs = params.toString();
  return qs ? `${path}?${qs}` : path;
}

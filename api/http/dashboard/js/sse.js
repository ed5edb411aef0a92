// A run's event stream read with fetch() and a stream reader: EventSource cannot send the
// Authorization header, and a key in the URL would end up in logs. The parser follows the
// WHATWG event-stream format (fields, multi-line data, comments, id, retry, CR/LF/CRLF); on a
// dropped connection the stream is opened again with Last-Event-ID, so the server sends exactly
// the events after the last one seen: none missed, none twice.

import { ApiError, headers, unauthorized } from "./api.js";

const DEFAULT_RETRY_MS = 2000;
const MAX_RETRY_MS = 15000;

export class EventStreamParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = "";
    this.reset();
    this.lastEventId = null;
    this.retry = null;
  }

  reset() {
    this.data = [];
    this.type = "";
    this.id = null;
  }

  push(text) {
    this.buffer += text;
    let start = 0;
    for (;;) {
      const match = /\r\n|\r|\n/g;
      match.lastIndex = start;
      const found = match.exec(this.buffer);
      if (!found) break;
      // A lone CR at the very end may be the first half of CRLF: wait for the next chunk.
      if (found[0] === "\r" && found.index === this.buffer.length - 1) break;
      this.line(this.buffer.slice(start, found.index));
      start = found.index + found[0].length;
    }
    this.buffer = this.buffer.slice(start);
  }

  line(line) {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return undefined; // a comment (the server's heartbeat)
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.type = value;
    else if (field === "id" && !value.includes("\0")) this.id = value;
    else if (field === "retry" && /^\d+$/.test(value)) this.retry = Number(value);
    return undefined;
  }

  dispatch() {
    if (this.id !== null) this.lastEventId = this.id;
    if (this.data.length) {
      const raw = this.data.join("\n");
      let data;
      try {
        data = JSON.parse(raw);
      } catch {
        data = { raw };
      }
      this.onEvent({ type: this.type || "message", id: this.lastEventId, data });
    }
    this.reset();
  }
}

/**
 * Follow ``path`` (a /v1 events URL) until the run's ``mission:done`` or ``close()``.
 * ``onEvent({type, id, data})`` for each event; ``onState("open"|"reconnecting"|"ended"|"error", detail)``.
 */
export function follow(path, { onEvent, onState = () => {}, lastEventId = null, method = "GET" } = {}) {
  const controller = new AbortController();
  let closed = false;
  let lastId = lastEventId;
  let retryMs = DEFAULT_RETRY_MS;
  let failures = 0;

  async function connect() {
    while (!closed) {
      let ended = false;
      try {
        const extra = { Accept: "text/event-stream" };
        if (lastId !== null) extra["Last-Event-ID"] = lastId;
        const response = await fetch(`/v1${path}`, {
          method,
          headers: headers(extra),
          cache: "no-store",
          credentials: "omit",
          signal: controller.signal,
        });
        if (response.status === 204) {
          onState("ended");
          return; // the run had ended at or before the last event seen
        }
        if (!response.ok) {
          let body = null;
          try {
            body = await response.json();
          } catch {
            body = null;
          }
          onState("error", { status: response.status, body });
          if (response.status === 401) unauthorized(new ApiError(401, body));
          if (response.status < 500 && response.status !== 429) return; // a key or id problem: retrying will not help
          throw new Error(`HTTP ${response.status}`);
        }
        method = "GET"; // a stream opened by POST .../execute is resumed from /events
        path = path.replace(/\/execute$/, "/events");
        onState("open");
        failures = 0;
        const parser = new EventStreamParser((event) => {
          if (event.id !== null) lastId = event.id; // kept at once: the connection may drop mid-read
          if (event.type === "mission:done") ended = true;
          onEvent(event);
        });
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          parser.push(value);
          if (parser.retry !== null) retryMs = parser.retry;
        }
        if (ended) {
          onState("ended");
          return;
        }
      } catch (exc) {
        if (closed || exc.name === "AbortError") return;
        failures += 1;
      }
      if (closed) return;
      onState("reconnecting", { lastEventId: lastId });
      const wait = Math.min(MAX_RETRY_MS, retryMs * Math.max(1, failures));
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  }

  connect();
  return {
    close() {
      closed = true;
      controller.abort();
    },
    get lastEventId() {
      return lastId;
    },
  };
}

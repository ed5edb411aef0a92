// A timeline of attempts, in the manner of Temporal's: one row per task, one bar per attempt,
// split into its phases (queued → running → assessing) and coloured by how it ended; retries are
// the second and later bars of a row, escalations (a fallback agent or a stronger model) are
// marked. Drawn in SVG from the run's attempts in brief (GET .../runs/{runId}?include=attempts:
// one request for the whole run), in rows of the tasks that have attempts, 40 at a time.

import { h, s } from "./dom.js";
import { seconds } from "./format.js";

const ROW = 26;
const LABEL = 170;
const PAGE_ROWS = 40;

const t = (iso) => (iso ? Date.parse(iso) : null);

/** ``tasks`` [{id, title}] in the order to show; ``attemptsByTask`` {taskId: [attempt, ...]}. */
export function timeline(tasks, attemptsByTask, { link }) {
  let attempts = new Map(Object.entries(attemptsByTask || {}));
  let limit = PAGE_ROWS;
  const wrap = h("div", { class: "timeline-wrap" });
  const more = h("button", { type: "button", id: "timeline-more", hidden: true }, "Show more tasks");
  const legend = h(
    "p",
    { class: "legend small" },
    h("span", { class: "key queued" }, "queued"),
    h("span", { class: "key running" }, "running"),
    h("span", { class: "key assessing" }, "assessing"),
    h("span", { class: "key completed" }, "completed"),
    h("span", { class: "key failed" }, "failed"),
    h("span", { class: "key escalated" }, "▲ escalated"),
  );
  const root = h("section", { class: "timeline", id: "timeline", "aria-label": "Attempts timeline" }, legend, wrap, more);
  more.addEventListener("click", () => {
    limit += PAGE_ROWS;
    draw();
  });

  function draw() {
    const all = tasks.filter((task) => (attempts.get(task.id) || []).length);
    const rows = all.slice(0, limit);
    more.hidden = all.length <= limit;
    if (!rows.length) {
      wrap.replaceChildren(h("p", { class: "empty" }, "No attempt yet."));
      return;
    }
    const now = Date.now();
    let start = Infinity;
    let end = 0;
    for (const task of rows) {
      for (const a of attempts.get(task.id)) {
        start = Math.min(start, t(a.queuedAt) ?? t(a.startedAt) ?? now);
        end = Math.max(end, t(a.finishedAt) ?? now);
      }
    }
    const span = Math.max(1, end - start);
    const width = Math.max(600, wrap.clientWidth || 900) - 4;
    const plot = width - LABEL - 8;
    const x = (ms) => LABEL + ((ms - start) / span) * plot;
    const svg = s("svg", { class: "timeline-svg", width, height: rows.length * ROW + 24, role: "list" });
    rows.forEach((task, i) => {
      const y = i * ROW + 4;
      const title = String(task.title ?? task.id);
      const row = s(
        "g",
        { class: "tl-row", role: "listitem", "data-task-id": task.id },
        s("a", { href: link(task.id) }, s("text", { x: 4, y: y + 15, class: "tl-label" }, title.length > 24 ? `${title.slice(0, 23)}…` : title)),
      );
      for (const a of attempts.get(task.id)) {
        const q = t(a.queuedAt) ?? t(a.startedAt) ?? now;
        const st = t(a.startedAt);
        const as = t(a.assessingAt);
        const fin = t(a.finishedAt);
        const stop = fin ?? now;
        const escalated = a.escalation && a.escalation.escalated;
        const tip =
          `attempt ${a.attempt} · ${a.agent || "?"} · ${a.model || "?"} · ${a.status}` +
          (a.durationSeconds !== null && a.durationSeconds !== undefined ? ` · ${seconds(a.durationSeconds)}` : "") +
          (escalated ? " · escalated" : "") +
          (a.error ? ` · ${a.error}` : "");
        const bar = s("g", { class: `tl-bar a-${a.status}${escalated ? " escalated" : ""}`, "data-attempt": a.attempt }, s("title", {}, tip));
        const seg = (from, to, cls) => {
          if (from === null || to === null) return;
          bar.append(s("rect", { x: x(from).toFixed(1), y: y + 4, width: Math.max(2, x(to) - x(from)).toFixed(1), height: ROW - 10, class: cls }));
        };
        seg(q, st ?? stop, "seg queued");
        if (st !== null) seg(st, as ?? stop, as === null && fin === null ? "seg running" : "seg ran");
        if (as !== null) seg(as, stop, fin === null ? "seg assessing" : "seg assessed");
        if (escalated) bar.append(s("text", { x: x(q).toFixed(1), y: y + 3, class: "tl-esc" }, "▲"));
        row.append(bar);
      }
      svg.append(row);
    });
    const axisY = rows.length * ROW + 18;
    svg.append(
      s("text", { x: LABEL, y: axisY, class: "tl-axis" }, "0 s"),
      s("text", { x: width - 4, y: axisY, class: "tl-axis", "text-anchor": "end" }, seconds(span / 1000)),
    );
    wrap.replaceChildren(svg);
  }

  /** New attempts for the whole run ({taskId: [attempt, ...]}). */
  function update(attemptsByTaskNow) {
    attempts = new Map(Object.entries(attemptsByTaskNow || {}));
    draw();
  }

  /** Running bars grow with the clock. */
  function tick() {
    if ([...attempts.values()].some((list) => list.some((a) => !a.finishedAt))) draw();
  }

  draw();
  return { root, update, tick };
}

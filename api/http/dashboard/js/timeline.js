// A timeline of attempts, in the manner of Temporal's: one row per task, one bar per attempt,
// split into its phases (queued → running → assessing) and coloured by how it ended; retries are
// the second and later bars of a row, escalations (a fallback agent or a stronger model) are
// marked. Drawn in SVG from the API's attempts of each task (GET .../tasks/{id}/attempts).

import { api } from "./api.js";
import { h, s } from "./dom.js";
import { seconds } from "./format.js";

const ROW = 26;
const LABEL = 170;
const PAGE_ROWS = 40;
const PARALLEL = 6;

const t = (iso) => (iso ? Date.parse(iso) : null);

export function timeline(missionId, runId, tasks, { link }) {
  const base = `/missions/${encodeURIComponent(missionId)}/runs/${encodeURIComponent(runId)}/tasks/`;
  const attempts = new Map(); // taskId -> attempts
  const shown = [];
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
  const pending = new Set();
  let drawQueued = false;

  async function fetchAttempts(taskId) {
    const all = [];
    let after = 0;
    for (;;) {
      const page = await api("GET", `${base}${encodeURIComponent(taskId)}/attempts?after=${after}&limit=100`);
      all.push(...page.attempts);
      if (page.nextAfter === null || page.nextAfter === undefined) break;
      after = page.nextAfter;
    }
    attempts.set(taskId, all);
  }

  async function refresh(ids) {
    const queue = [...ids];
    const run = async () => {
      while (queue.length) {
        const id = queue.shift();
        try {
          await fetchAttempts(id);
        } catch {
          attempts.set(id, attempts.get(id) || []);
        }
      }
    };
    await Promise.all(Array.from({ length: PARALLEL }, run));
    draw();
  }

  function showMore() {
    const next = tasks.slice(shown.length, shown.length + PAGE_ROWS);
    shown.push(...next);
    more.hidden = shown.length >= tasks.length;
    return refresh(next.map((task) => task.id));
  }
  more.addEventListener("click", showMore);

  function draw() {
    const rows = shown.filter((task) => (attempts.get(task.id) || []).length);
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
      const row = s(
        "g",
        { class: "tl-row", role: "listitem", "data-task-id": task.id },
        s("a", { href: link(task.id) }, s("text", { x: 4, y: y + 15, class: "tl-label" }, task.title.length > 24 ? `${task.title.slice(0, 23)}…` : task.title)),
      );
      for (const a of attempts.get(task.id)) {
        const q = t(a.queuedAt) ?? t(a.startedAt) ?? now;
        const st = t(a.startedAt);
        const as = t(a.assessingAt);
        const fin = t(a.finishedAt);
        const stop = fin ?? now;
        const escalated = a.escalation && a.escalation.escalated;
        const tip = `attempt ${a.attempt} · ${a.agent || "?"} · ${a.model || "?"} · ${a.status}` +
          (a.durationSeconds !== null && a.durationSeconds !== undefined ? ` · ${seconds(a.durationSeconds)}` : "") +
          (escalated ? " · escalated" : "") + (a.error ? ` · ${a.error}` : "");
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

  /** The attempts of ``taskId`` changed (a task:status event): read them again, at most once a second. */
  function changed(taskId) {
    if (!shown.some((task) => task.id === taskId)) return;
    pending.add(taskId);
    if (drawQueued) return;
    drawQueued = true;
    setTimeout(() => {
      drawQueued = false;
      const ids = [...pending];
      pending.clear();
      refresh(ids);
    }, 1000);
  }

  /** Running bars grow with the clock. */
  function tick() {
    if ([...attempts.values()].some((list) => list.some((a) => !a.finishedAt))) draw();
  }

  showMore();
  return { root, changed, tick };
}

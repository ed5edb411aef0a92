// A run, live: the header (status, pause reason, elapsed time, tokens, cost; execute, abort,
// resume), the task graph coloured by each task's status, the attempts timeline and the latest
// events, all updated from the run's SSE stream as events arrive. A finished run is shown
// read-only as it ended.

import { api } from "./api.js";
import { h, replace } from "./dom.js";
import { ACTIVE, elapsed, money, pauseLabel, score } from "./format.js";
import { taskGraph } from "./graph.js";
import { app } from "./shell.js";
import { follow } from "./sse.js";
import { timeline } from "./timeline.js";
import { actionButton, command, resumeChoices, statusBadge } from "./widgets.js";

const RECENT_EVENTS = 60;
// The header's tokens and cost (the run's report) and the timeline's attempts (the run with its
// attempts in brief), one row per task each, are read again at most this often while events arrive.
const REPORT_EVERY_MS = 2000;
const REPORT_EVERY_MS_LARGE = 10000; // (past 300 tasks)

export async function runPage(main, missionId, runId) {
  const path = `/missions/${encodeURIComponent(missionId)}`;
  const runPath = `${path}/runs/${encodeURIComponent(runId)}`;
  const [mission, run] = await Promise.all([api("GET", path), api("GET", `${runPath}?include=attempts,graph`)]);
  const href = `#/missions/${encodeURIComponent(missionId)}`;
  const runHref = `${href}/runs/${encodeURIComponent(runId)}`;
  const taskLink = (taskId) => `${runHref}/tasks/${encodeURIComponent(taskId)}`;
  const isLatest = mission.latestRunId === run.id;

  // The graph is the run's own (its spec, as it ran: the mission may have been edited since).
  const runTasks = run.tasks || [];
  const states = {};
  for (const task of runTasks) states[task.id] = task.status;
  const attemptsOf = (body) => Object.fromEntries((body.tasks || []).map((t) => [t.id, t.attempts || []]));
  const graphMission = runTasks.length
    ? {
        name: mission.name,
        tasks: runTasks.map((t) => ({ id: t.id, title: t.title || t.id, assignTo: t.assignTo || t.agent || "", dependsOn: t.dependsOn || [], status: t.status })),
        qualityGates: run.qualityGates || [],
        checkpoints: run.checkpoints || [],
      }
    : { ...mission, tasks: mission.tasks.map((t) => ({ ...t, status: "pending" })) };
  const graph = taskGraph(graphMission, states, taskLink);

  const status = h("span", { id: "run-status" });
  const pause = h("p", { class: "pause-banner", id: "pause", hidden: true });
  const elapsedEl = h("dd", { id: "elapsed" });
  const tokensEl = h("dd", { id: "tokens" }, "–");
  const costEl = h("dd", { id: "cost" }, "–");
  const scoreEl = h("dd", { id: "avg-score" }, "–");
  const counts = h("p", { class: "counts", id: "counts", "aria-live": "polite" });
  const live = h("span", { class: "live", id: "live" });
  const actions = h("div", { class: "actions", id: "run-actions" });
  const errorBox = h("p", { class: "error", role: "alert" });
  const recent = h("ol", { class: "events", id: "events", reversed: true });

  let current = { status: run.status, pauseReason: run.pauseReason, pauseMessage: run.pauseMessage, startedAt: run.startedAt, finishedAt: run.finishedAt };
  const onError = (exc) => {
    errorBox.textContent = exc.message;
  };

  function drawHeader() {
    replace(status, statusBadge(current.status));
    if (current.status === "paused") {
      pause.hidden = false;
      replace(pause, h("strong", {}, pauseLabel(current.pauseReason)), current.pauseMessage ? [": ", current.pauseMessage] : null, " ", h("a", { href: "#/inbox" }, "inbox"));
    } else {
      pause.hidden = true;
    }
    elapsedEl.textContent = elapsed(current.startedAt, current.finishedAt);
    drawActions();
  }

  function drawActions() {
    actions.replaceChildren();
    const active = ACTIVE.has(current.status);
    if (isLatest && current.status === "paused") {
      for (const [i, choice] of resumeChoices(current.pauseReason).entries()) {
        actions.append(
          actionButton(choice.label, async () => setFrom(await command(missionId, "resume", { retryFailed: choice.retryFailed })), {
            kind: choice.primary ? "primary" : "",
            id: i === 0 ? "resume" : "resume-other",
            title: choice.help || undefined,
            onError,
          }),
        );
      }
    }
    if (isLatest && active) {
      actions.append(
        actionButton(
          "Abort",
          async () => {
            if (!window.confirm(`Abort “${mission.name}”? Running tasks are cancelled.`)) return;
            setFrom(await command(missionId, "abort"));
          },
          { kind: "danger", id: "abort", onError },
        ),
      );
    }
    if (!active && isLatest) {
      actions.append(
        actionButton(
          "Execute again",
          async () => {
            const next = await command(missionId, "execute");
            location.hash = `${href}/runs/${encodeURIComponent(next.id)}`;
          },
          { kind: "primary", id: "execute", onError },
        ),
      );
    }
  }

  function setFrom(answer) {
    // A command answers with the mission; the stream brings the details.
    current = { ...current, status: answer.status, pauseReason: answer.pauseReason, pauseMessage: answer.pauseMessage };
    drawHeader();
    app.refreshAttention();
  }

  function drawCounts() {
    const by = {};
    for (const value of Object.values(states)) by[value] = (by[value] || 0) + 1;
    replace(
      counts,
      Object.entries(by)
        .sort()
        .map(([k, v]) => h("span", { class: ["count", `s-${k}`], "data-status": k }, `${k} ${v}`)),
    );
  }

  let reportTimer = null;
  async function readReport() {
    reportTimer = null;
    api("GET", `${runPath}?include=attempts`)
      .then((body) => tl.update(attemptsOf(body)))
      .catch(() => {});
    try {
      const report = await api("GET", `${runPath}/report`);
      const totals = report.totals || {};
      tokensEl.textContent = ((totals.tokensIn || 0) + (totals.tokensOut || 0)).toLocaleString();
      costEl.textContent = money(totals.costUsd);
      scoreEl.textContent = score(report.averageScore);
    } catch {
      // (the header keeps its last figures; the next event asks again)
    }
  }
  function reportSoon() {
    if (reportTimer === null) reportTimer = setTimeout(readReport, graphMission.tasks.length > 300 ? REPORT_EVERY_MS_LARGE : REPORT_EVERY_MS);
  }

  const line = (event) => {
    const d = event.data || {};
    const who = d.title || (d.taskId ? d.taskId : "");
    let what = "";
    if (event.type === "task:status") what = `${who} → ${d.status}${d.attempt > 1 ? ` (attempt ${d.attempt})` : ""}${d.error ? `: ${d.error}` : ""}`;
    else if (event.type === "task:assessment") what = `${who} scored ${score(d.score)} (threshold ${score(d.threshold)})${d.passed ? "" : ": failed"}`;
    else if (event.type === "mission:status") what = `mission ${d.status}${d.pauseReason ? ` (${pauseLabel(d.pauseReason)})` : ""}`;
    else if (event.type === "gate:blocked") what = `gate ${d.name || d.gate} blocked: ${d.reason || ""}`;
    else if (event.type === "checkpoint:waiting") what = `checkpoint ${d.name || d.checkpoint}: ${d.message || ""}`;
    else if (event.type === "mission:done") what = `done: ${d.status}`;
    else what = d.error || d.message || "";
    return h("li", { class: `ev ev-${event.type.replace(":", "-")}`, "data-event-id": event.id }, h("code", {}, event.type), " ", what);
  };

  const titles = new Map(graphMission.tasks.map((t) => [t.id, t.title]));
  const tl = timeline(graphMission.tasks, attemptsOf(run), { link: taskLink });

  // Events are applied once per animation frame: at hundreds a second the page draws each
  // task's latest status once, and the recent-events list only its newest lines.
  let queue = [];
  let frame = null;
  const held = new Map(); // the gates and checkpoints holding the run
  for (const [kind, list] of [["gate", graphMission.qualityGates || []], ["checkpoint", graphMission.checkpoints || []]]) {
    list.forEach((mark, i) => {
      const index = mark.index ?? i;
      if (!mark.status) return;
      graph.setMark(kind, index, mark.status);
      if (mark.status === "blocked" || mark.status === "waiting") held.set(`${kind}:${index}`, [kind, index]);
    });
  }
  function apply() {
    frame = null;
    const batch = queue;
    queue = [];
    const statuses = new Map();
    let header = false;
    for (const event of batch) {
      const d = event.data || {};
      if (event.type === "task:status") {
        statuses.set(d.taskId, d.status);
      } else if (event.type === "mission:status") {
        current = { ...current, status: d.status, pauseReason: d.pauseReason, pauseMessage: d.pauseMessage };
        if (d.status === "active" && !current.startedAt) current.startedAt = new Date().toISOString();
        header = true;
        if (d.status === "active") {
          // A resumed run has passed what held it (approved, or retried past a gate).
          for (const [kind, index] of held.values()) graph.setMark(kind, index, "resumed");
          held.clear();
        }
      } else if (event.type === "gate:blocked") {
        graph.setMark("gate", d.gate, "blocked");
        held.set(`gate:${d.gate}`, ["gate", d.gate]);
      } else if (event.type === "checkpoint:waiting") {
        graph.setMark("checkpoint", d.checkpoint, "waiting");
        held.set(`checkpoint:${d.checkpoint}`, ["checkpoint", d.checkpoint]);
      } else if (event.type === "mission:done") {
        current = { ...current, status: d.status, finishedAt: current.finishedAt || new Date().toISOString() };
        header = true;
      }
    }
    for (const [taskId, value] of statuses) {
      states[taskId] = value;
      graph.setStatus(taskId, value);
    }
    if (statuses.size) drawCounts();
    if (header) {
      drawHeader();
      app.refreshAttention();
    }
    const lines = batch.filter((e) => e.type !== "task:output").slice(-RECENT_EVENTS).map((e) => {
      if (e.data && !e.data.title && e.data.taskId) e.data.title = titles.get(e.data.taskId);
      return line(e);
    });
    recent.prepend(...lines.reverse());
    while (recent.children.length > RECENT_EVENTS) recent.lastElementChild.remove();
    if (batch.some((e) => e.type !== "task:output")) reportSoon();
  }

  const stream = follow(`${path}/events?runId=${encodeURIComponent(runId)}`, {
    onEvent(event) {
      queue.push(event);
      if (frame === null) frame = requestAnimationFrame(apply);
    },
    onState(state, detail) {
      live.dataset.state = state;
      live.textContent =
        state === "open" ? "● live" : state === "reconnecting" ? "reconnecting…" : state === "ended" ? "ended" : `stream error ${detail && detail.status}`;
      if (state === "ended") readReport();
    },
  });

  const zoom = h("div", { class: "zoom" });
  const graphBox = h("div", { class: "graph-wrap", id: "graph-wrap", tabindex: 0, "aria-label": "Task graph (scroll to pan)" }, graph.svg);
  let scale = 1;
  const setScale = (value) => {
    scale = Math.min(2, Math.max(0.1, value));
    const [, , w, hgt] = graph.svg.getAttribute("viewBox").split(" ").map(Number);
    graph.svg.setAttribute("width", Math.ceil(w * scale));
    graph.svg.setAttribute("height", Math.ceil(hgt * scale));
  };
  graph.ready.then(() => setScale(scale));
  zoom.append(
    h("button", { type: "button", "aria-label": "Zoom out", onclick: () => setScale(scale / 1.25) }, "−"),
    h("button", { type: "button", "aria-label": "Zoom in", onclick: () => setScale(scale * 1.25) }, "+"),
    h("button", { type: "button", onclick: () => setScale(1) }, "100%"),
  );

  replace(
    main,
    h("p", { class: "crumbs" }, h("a", { href: "#/missions" }, "Missions"), " / ", h("a", { href }, mission.name), " /"),
    h("div", { class: "page-head" }, h("h1", {}, `${mission.name} · run #${run.number}`), status, live),
    pause,
    h(
      "dl",
      { class: "kv run-head" },
      h("dt", {}, "Elapsed"),
      elapsedEl,
      h("dt", {}, "Tokens"),
      tokensEl,
      h("dt", {}, "Cost"),
      costEl,
      h("dt", {}, "Average score"),
      scoreEl,
    ),
    actions,
    errorBox,
    isLatest ? null : h("p", { class: "muted" }, "An earlier run, shown as it ended. ", h("a", { href: `${href}/runs/${encodeURIComponent(mission.latestRunId)}` }, "Latest run")),
    h("h2", {}, "Tasks"),
    counts,
    zoom,
    graphBox,
    h("h2", {}, "Attempts"),
    tl.root,
    h("h2", {}, "Latest events"),
    recent,
  );
  drawHeader();
  drawCounts();
  readReport();
  const ticker = setInterval(() => {
    if (!current.finishedAt && ACTIVE.has(current.status)) elapsedEl.textContent = elapsed(current.startedAt, null);
    tl.tick();
  }, 1000);
  return {
    close() {
      stream.close();
      clearInterval(ticker);
      if (reportTimer !== null) clearTimeout(reportTimer);
      if (frame !== null) cancelAnimationFrame(frame);
    },
  };
}

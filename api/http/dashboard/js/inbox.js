// The needs-attention inbox: every paused mission, what it waits for (the checkpoint's message,
// the blocked gate's scores against its minScore, the task awaiting approval and why), and the
// actions the API offers: approve/resume, resume with retryFailed, abort. One click each.

import { api } from "./api.js";
import { app } from "./shell.js";
import { h, replace } from "./dom.js";
import { pauseLabel, score, when } from "./format.js";
import { follow } from "./sse.js";
import { actionButton, command, resumeChoices, statusBadge } from "./widgets.js";

const streams = new Set(); // the runs followed after an action, closed with the page

export async function inboxPage(main) {
  const list = h("ul", { class: "inbox", id: "inbox" });
  const empty = h("p", { class: "empty", id: "inbox-empty", hidden: true }, "Nothing waits for a person. ");
  replace(
    main,
    h("div", { class: "page-head" }, h("h1", {}, "Needs attention")),
    h(
      "p",
      { class: "help" },
      "Missions paused for a checkpoint, a blocked quality gate or a side effect whose outcome is unknown.",
    ),
    list,
    empty,
  );
  const paused = await api("GET", "/missions/resumable?include=waitingFor");
  for (const mission of paused) list.append(item(mission));
  empty.hidden = paused.length > 0;
  return {
    close() {
      for (const stream of streams) stream.close();
      streams.clear();
    },
  };
}

function waitingItems(mission, runHref) {
  const items = mission.waitingFor || [];
  return items.map((cause) => {
    if (cause.kind === "checkpoint") {
      return h(
        "li",
        { class: "cause checkpoint" },
        h("strong", {}, "Checkpoint", cause.name ? ` “${cause.name}”` : ""),
        cause.message ? [": ", h("span", { class: "message" }, cause.message)] : null,
        cause.afterTasks && cause.afterTasks.length ? h("div", { class: "muted small" }, "after ", cause.afterTasks.join(", ")) : null,
      );
    }
    if (cause.kind === "quality_gate") {
      return h(
        "li",
        { class: "cause gate" },
        h("strong", {}, "Quality gate", cause.name ? ` “${cause.name}”` : ""),
        `: score ${score(cause.score)} against minScore ${score(cause.minScore)}`,
        cause.requireAllPassed ? " (every task must pass)" : "",
        h(
          "table",
          { class: "scores" },
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Task"), h("th", { scope: "col" }, "Status"), h("th", { scope: "col" }, "Score"))),
          h(
            "tbody",
            {},
            (cause.afterTasks || []).map((t) =>
              h(
                "tr",
                { class: t.score !== null && cause.minScore !== null && t.score < cause.minScore ? "low" : "" },
                h("td", {}, t.title),
                h("td", {}, statusBadge(t.status)),
                h("td", { class: "num" }, score(t.score)),
              ),
            ),
          ),
        ),
        cause.blocksTasks && cause.blocksTasks.length ? h("div", { class: "muted small" }, "blocks ", cause.blocksTasks.join(", ")) : null,
      );
    }
    if (cause.kind === "approval") {
      return h(
        "li",
        { class: "cause approval" },
        h("strong", {}, "Approval: "),
        cause.task && runHref
          ? h("a", { href: `${runHref}/tasks/${encodeURIComponent(cause.task.id)}` }, cause.task.title)
          : h("span", {}, (cause.task && cause.task.title) || "a task"),
        cause.reason ? [" — ", h("span", { class: "message" }, cause.reason)] : null,
      );
    }
    return h("li", { class: "cause" }, cause.kind || "unknown");
  });
}

function item(mission) {
  const errorBox = h("p", { class: "error", role: "alert" });
  const state = h("p", { class: "state" });
  const onError = (exc) => {
    errorBox.textContent = exc.message;
  };
  const href = `#/missions/${encodeURIComponent(mission.id)}`;
  const runHref = mission.runId ? `${href}/runs/${encodeURIComponent(mission.runId)}` : null;
  const actions = h("div", { class: "actions" });
  const done = (answer, verb) => {
    actions.replaceChildren();
    const run = answer.latestRunId ? `${href}/runs/${encodeURIComponent(answer.latestRunId)}` : href;
    const badge = h("span", { class: "now" }, statusBadge(answer.status));
    const progress = h("span", { class: "muted small progress" });
    replace(state, `${verb}: now `, badge, " ", progress, " ", h("a", { href: run, class: "watch" }, "watch the run"));
    li.classList.add("handled");
    app.toast(`${mission.name}: ${verb.toLowerCase()}`);
    app.refreshAttention();
    if (answer.latestRunId && (answer.status === "active" || answer.status === "paused")) {
      // The mission moving again, on this page: its status and tasks as the run's events arrive.
      const tasks = new Map();
      const stream = follow(`/missions/${encodeURIComponent(mission.id)}/events?runId=${encodeURIComponent(answer.latestRunId)}`, {
        onEvent(event) {
          const d = event.data || {};
          if (event.type === "mission:status" || event.type === "mission:done") replace(badge, statusBadge(d.status));
          if (event.type === "task:status") {
            tasks.set(d.taskId, d.status);
            const finished = [...tasks.values()].filter((s) => s === "completed").length;
            progress.textContent = `${finished} of ${tasks.size} tasks seen completed; latest: ${d.title} → ${d.status}`;
          }
          if (event.type === "mission:status" && d.status === "paused") app.refreshAttention();
        },
        onState(value) {
          if (value === "ended") streams.delete(stream);
        },
      });
      streams.add(stream);
    }
  };
  actions.append(
    ...resumeChoices(mission.pauseReason).map((choice) =>
      actionButton(
        choice.label,
        async () => done(await command(mission.id, "resume", { retryFailed: choice.retryFailed }), choice.label),
        { kind: choice.primary ? "primary" : "", onError, title: choice.help || undefined },
      ),
    ),
    actionButton(
      "Abort",
      async () => {
        if (!window.confirm(`Abort “${mission.name}”? Running tasks are cancelled.`)) return;
        done(await command(mission.id, "abort"), "Aborted");
      },
      { kind: "danger", onError },
    ),
  );
  const causes = waitingItems(mission, runHref);
  const li = h(
    "li",
    { class: "card inbox-item", "data-mission-id": mission.id, "data-pause-reason": mission.pauseReason },
    h("h2", {}, h("a", { href }, mission.name)),
    runHref ? h("p", { class: "small" }, h("a", { href: runHref, class: "paused-run" }, `Run #${mission.runNumber}`)) : null,
    h(
      "p",
      {},
      h("span", { class: ["pause", `p-${mission.pauseReason}`] }, pauseLabel(mission.pauseReason)),
      mission.pausedAt ? h("span", { class: "muted small waiting-since" }, ` · waiting since ${when(mission.pausedAt)}`) : null,
    ),
    mission.pauseMessage ? h("p", { class: "pause-message" }, mission.pauseMessage) : null,
    causes.length ? h("ul", { class: "causes" }, causes) : null,
    actions,
    h(
      "p",
      { class: "help small choices" },
      resumeChoices(mission.pauseReason)
        .filter((c) => c.help)
        .map((c) => [h("strong", {}, c.label), `: ${c.help} `]),
    ),
    state,
    errorBox,
  );
  return li;
}

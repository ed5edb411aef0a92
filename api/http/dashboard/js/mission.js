// A mission: its status and actions, its tasks, and its history (runs with status, duration,
// cost and average score; schedule fires, started or skipped with the reason).

import { api, withQuery } from "./api.js";
import { h, replace } from "./dom.js";
import { ACTIVE, elapsed, money, pauseLabel, score, seconds, when } from "./format.js";
import { app } from "./shell.js";
import { actionButton, command, keyValue, resumeChoices, statusBadge } from "./widgets.js";

export async function missionPage(main, missionId) {
  const path = `/missions/${encodeURIComponent(missionId)}`;
  const [mission, runs, fires] = await Promise.all([
    api("GET", path),
    api("GET", withQuery(`${path}/runs`, { limit: 50, include: "summary" })),
    api("GET", withQuery(`${path}/fires`, { limit: 50 })),
  ]);
  const href = `#/missions/${encodeURIComponent(mission.id)}`;
  const errorBox = h("p", { class: "error", role: "alert" });
  const onError = (exc) => {
    errorBox.textContent = exc.message;
  };
  const reload = () => {
    app.toast("Done");
    return missionPage(main, missionId);
  };

  const actions = h("div", { class: "actions" });
  if (!ACTIVE.has(mission.status)) {
    actions.append(
      actionButton(
        "Execute",
        async () => {
          const run = await command(mission.id, "execute");
          location.hash = `${href}/runs/${encodeURIComponent(run.id)}`;
        },
        { kind: "primary", id: "execute", onError },
      ),
      h("a", { class: "button", href: `${href}/edit`, id: "edit" }, "Edit"),
      actionButton(
        "Delete",
        async () => {
          if (!window.confirm(`Delete “${mission.name}” and its run history?`)) return;
          await api("DELETE", path);
          app.toast(`Deleted ${mission.name}`);
          location.hash = "#/missions";
        },
        { kind: "danger", id: "delete", onError },
      ),
    );
  }
  if (mission.status === "paused") {
    for (const [i, choice] of resumeChoices(mission.pauseReason).entries()) {
      actions.append(
        actionButton(choice.label, async () => (await command(mission.id, "resume", { retryFailed: choice.retryFailed }), reload()), {
          kind: choice.primary ? "primary" : "",
          id: i === 0 ? "resume" : "resume-other",
          title: choice.help || undefined,
          onError,
        }),
      );
    }
  }
  if (ACTIVE.has(mission.status)) {
    actions.append(
      actionButton(
        "Abort",
        async () => {
          if (!window.confirm(`Abort “${mission.name}”?`)) return;
          await command(mission.id, "abort");
          reload();
        },
        { kind: "danger", id: "abort", onError },
      ),
    );
  }
  if (mission.latestRunId) {
    actions.append(h("a", { class: "button", href: `${href}/runs/${encodeURIComponent(mission.latestRunId)}`, id: "latest-run" }, "Latest run"));
  }

  const runRows = runs.map((run) =>
    h(
      "tr",
      { "data-run-id": run.id },
      h("td", {}, h("a", { href: `${href}/runs/${encodeURIComponent(run.id)}` }, `#${run.number}`)),
      h("td", {}, statusBadge(run.status), run.pauseReason ? h("span", { class: "muted small" }, " ", pauseLabel(run.pauseReason)) : null),
      h("td", {}, when(run.startedAt || run.createdAt)),
      h("td", { class: "num" }, run.durationSeconds !== undefined ? seconds(run.durationSeconds) : run.startedAt ? elapsed(run.startedAt, run.finishedAt) : "–"),
      h("td", { class: "num" }, money(run.usage ? run.usage.costUsd : null)),
      h("td", { class: "num avg-score" }, run.averageScore !== undefined ? score(run.averageScore) : "…"),
    ),
  );
  // The average score comes with ?include=summary; a server without it is asked per run (its report).
  for (const [i, run] of runs.entries()) {
    if (run.averageScore !== undefined) continue;
    api("GET", `${path}/runs/${encodeURIComponent(run.id)}/report`)
      .then((report) => {
        runRows[i].querySelector(".avg-score").textContent = score(report.averageScore);
      })
      .catch(() => {
        runRows[i].querySelector(".avg-score").textContent = "–";
      });
  }

  const taskRows = mission.tasks.map((task) =>
    h(
      "tr",
      {},
      h("td", {}, task.title),
      h("td", {}, task.assignTo),
      h("td", {}, (task.dependsOn || []).join(", ") || "–"),
      h("td", {}, statusBadge(task.status)),
      h("td", { class: "num" }, score(task.score)),
    ),
  );

  replace(
    main,
    h("p", { class: "crumbs" }, h("a", { href: "#/missions" }, "Missions"), " / "),
    h("div", { class: "page-head" }, h("h1", {}, mission.name), statusBadge(mission.status)),
    mission.status === "paused"
      ? h("p", { class: "pause-banner" }, h("strong", {}, pauseLabel(mission.pauseReason)), mission.pauseMessage ? [": ", mission.pauseMessage] : null)
      : null,
    mission.failureReason ? h("p", { class: "muted" }, "Ended: ", mission.failureReason) : null,
    actions,
    errorBox,
    keyValue([
      ["Runs", String(mission.executionCount)],
      ["Quality threshold", score(mission.qualityThreshold)],
      mission.schedule ? ["Schedule", `${mission.schedule}${mission.timezone ? ` (${mission.timezone})` : ""}`] : null,
      mission.nextRunAt ? ["Next run", when(mission.nextRunAt)] : null,
      mission.deadline ? ["Deadline", when(mission.deadline)] : null,
      mission.usage ? ["Cost, all runs", money(mission.usage.costUsd)] : null,
      ["Created", when(mission.createdAt)],
    ]),
    mission.prompt ? h("details", {}, h("summary", {}, "Prompt"), h("pre", { class: "text" }, mission.prompt)) : null,
    h("h2", {}, "Tasks"),
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { id: "mission-tasks" },
        h("thead", {}, h("tr", {}, ["Title", "Agent", "Depends on", "Status (latest run)", "Score"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, taskRows),
      ),
    ),
    h("h2", {}, "Runs"),
    runs.length
      ? h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { id: "runs" },
            h("thead", {}, h("tr", {}, ["Run", "Status", "Started", "Duration", "Cost", "Average score"].map((t) => h("th", { scope: "col" }, t)))),
            h("tbody", {}, runRows),
          ),
        )
      : h("p", { class: "empty" }, "Not run yet."),
    h("h2", {}, "Schedule fires"),
    fires.length
      ? h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { id: "fires" },
            h("thead", {}, h("tr", {}, ["Fire time", "Outcome", "Reason", "Run"].map((t) => h("th", { scope: "col" }, t)))),
            h(
              "tbody",
              {},
              fires.map((fire) =>
                h(
                  "tr",
                  {},
                  h("td", {}, when(fire.fireAt)),
                  h("td", {}, statusBadge(fire.status)),
                  h("td", {}, fire.reason || "–"),
                  h("td", {}, fire.runId ? h("a", { href: `${href}/runs/${encodeURIComponent(fire.runId)}` }, "open") : "–"),
                ),
              ),
            ),
          ),
        )
      : h("p", { class: "empty" }, mission.schedule ? "No fire yet." : "No schedule."),
  );
  return null;
}


// A task of a run in depth: every attempt with its agent, model, prompt, output (streamed live
// while it runs), error, phases, tokens and cost, files written, and its assessment per
// expectation (criterion, score, reason, weight).

import { api, apiPages } from "./api.js";
import { h, replace } from "./dom.js";
import { money, score, seconds, when } from "./format.js";
import { follow } from "./sse.js";
import { statusBadge, keyValue } from "./widgets.js";

export async function taskPage(main, missionId, runId, taskId) {
  const path = `/missions/${encodeURIComponent(missionId)}`;
  const attemptsPath = `${path}/runs/${encodeURIComponent(runId)}/tasks/${encodeURIComponent(taskId)}/attempts`;
  const [mission, run] = await Promise.all([api("GET", path), api("GET", `${path}/runs/${encodeURIComponent(runId)}`)]);
  const spec = mission.tasks.find((t) => t.id === taskId) || null;
  const state = (run.tasks || []).find((t) => t.id === taskId) || null;
  if (!spec && !state) {
    const error = new Error(`task ${taskId} is not part of this run`);
    error.status = 404;
    throw error;
  }
  const title = (spec && spec.title) || (state && state.title) || taskId;
  const href = `#/missions/${encodeURIComponent(missionId)}`;
  const runHref = `${href}/runs/${encodeURIComponent(runId)}`;

  const status = h("span", { id: "task-status" }, statusBadge(state ? state.status : "pending"));
  const list = h("div", { class: "attempts", id: "attempts" });
  const chunks = new Map(); // attempt number -> streamed output so far
  const cards = new Map(); // attempt number -> {output: <pre>, data}
  let attempts = [];

  async function readAttempts() {
    attempts = await apiPages(`${attemptsPath}?limit=100`);
    draw();
  }

  function outputOf(a) {
    return a.output !== null && a.output !== undefined ? a.output : chunks.get(a.attempt) || "";
  }

  function assessment(a) {
    const v = a.assessment;
    if (!v) return null;
    return h(
      "section",
      { class: "assessment" },
      h("h4", {}, "Assessment: ", h("span", { class: v.passed ? "pass" : "fail" }, `${score(v.score)} / threshold ${score(v.threshold)} — ${v.passed ? "passed" : "failed"}`)),
      v.error ? h("p", { class: "error" }, v.error) : null,
      v.criteria && v.criteria.length
        ? h(
            "table",
            { class: "criteria" },
            h("thead", {}, h("tr", {}, ["Expectation", "Score", "Reason", "Weight"].map((c) => h("th", { scope: "col" }, c)))),
            h(
              "tbody",
              {},
              v.criteria.map((c) =>
                h(
                  "tr",
                  {},
                  h("td", {}, c.criterion || c.type || "–"),
                  h("td", { class: "num" }, score(c.score)),
                  h("td", { class: "reason" }, c.reason || "–"),
                  h("td", { class: "num" }, score(c.weight)),
                ),
              ),
            ),
          )
        : null,
    );
  }

  function card(a) {
    const output = h("pre", { class: "text output", "data-attempt": a.attempt, "aria-live": a.finishedAt ? "off" : "polite" }, outputOf(a));
    const esc = a.escalation || {};
    const node = h(
      "article",
      { class: ["card", "attempt", `a-${a.status}`], "data-attempt": a.attempt },
      h(
        "h3",
        {},
        `Attempt ${a.attempt} `,
        statusBadge(a.status),
        esc.escalated ? h("span", { class: "escalated-tag" }, esc.fallbackAgent ? " ▲ fallback agent" : "", esc.escalatedModel ? " ▲ stronger model" : "") : null,
      ),
      keyValue([
        ["Agent", a.agent || "–"],
        ["Model", a.model || "–"],
        ["Queued", when(a.queuedAt)],
        ["Waited", seconds(a.queueSeconds)],
        ["Agent time", seconds(a.agentSeconds)],
        a.assessmentSeconds !== null && a.assessmentSeconds !== undefined ? ["Assessment time", seconds(a.assessmentSeconds)] : null,
        ["Duration", seconds(a.durationSeconds)],
        ["Tokens", `${(a.tokensIn || 0).toLocaleString()} in / ${(a.tokensOut || 0).toLocaleString()} out`],
        ["Cost", money(a.usage ? a.usage.costUsd : a.costUsd)],
        a.worker ? ["Worker", a.worker] : null,
      ]),
      a.error ? h("p", { class: "error attempt-error" }, a.error) : null,
      h("h4", {}, "Output"),
      output,
      a.files && a.files.length
        ? [h("h4", {}, "Files written"), h("ul", { class: "files" }, a.files.map((f) => h("li", {}, f.path || f.name || JSON.stringify(f))))]
        : null,
      assessment(a),
      a.prompt ? h("details", { class: "prompt" }, h("summary", {}, "Prompt"), h("pre", { class: "text" }, a.prompt)) : null,
    );
    cards.set(a.attempt, { output, data: a });
    return node;
  }

  function draw() {
    cards.clear();
    if (!attempts.length) {
      replace(list, h("p", { class: "empty" }, "Not started in this run."));
      return;
    }
    replace(list, [...attempts].reverse().map(card));
  }

  let readTimer = null;
  const readSoon = () => {
    if (readTimer === null) {
      readTimer = setTimeout(() => {
        readTimer = null;
        readAttempts().catch(() => {});
      }, 300);
    }
  };

  replace(
    main,
    h(
      "p",
      { class: "crumbs" },
      h("a", { href: "#/missions" }, "Missions"),
      " / ",
      h("a", { href }, mission.name),
      " / ",
      h("a", { href: runHref }, `run #${run.number}`),
      " /",
    ),
    h("div", { class: "page-head" }, h("h1", {}, title), status),
    spec
      ? [
          keyValue([
            ["Assigned to", spec.assignTo],
            ["Depends on", (spec.dependsOn || []).join(", ") || "–"],
            ["Max retries", String(spec.maxRetries ?? 2)],
            spec.sideEffects ? ["Side effects", "yes"] : null,
          ]),
          h("details", {}, h("summary", {}, "Description"), h("pre", { class: "text" }, spec.description || "")),
          spec.expectations && spec.expectations.length
            ? h("details", {}, h("summary", {}, `Expectations (${spec.expectations.length})`), h("ul", {}, spec.expectations.map((e) => h("li", {}, e.criterion || `${e.type}: ${e.value || e.pattern || e.run || ""}`))))
            : null,
        ]
      : null,
    h("h2", {}, "Attempts"),
    list,
  );
  await readAttempts();

  const stream = follow(`${path}/events?runId=${encodeURIComponent(runId)}`, {
    onEvent(event) {
      const d = event.data || {};
      if (d.taskId !== taskId) return;
      if (event.type === "task:output") {
        chunks.set(d.attempt, (chunks.get(d.attempt) || "") + (d.chunk || ""));
        const entry = cards.get(d.attempt);
        if (entry && (entry.data.output === null || entry.data.output === undefined)) entry.output.textContent = chunks.get(d.attempt);
        else if (!entry) readSoon();
      } else if (event.type === "task:status") {
        replace(status, statusBadge(d.status));
        readSoon();
      } else if (event.type === "task:assessment") {
        readSoon();
      }
    },
  });
  return {
    close() {
      stream.close();
      if (readTimer !== null) clearTimeout(readTimer);
    },
  };
}

// The missions list: name, status, last run, runs, next scheduled run, cost of the last run;
// filter by status, search by name, and how many missions need a person.

import { api, withQuery } from "./api.js";
import { h, replace } from "./dom.js";
import { money, pauseLabel, when } from "./format.js";
import { statusBadge } from "./widgets.js";

const STATUSES = ["draft", "scheduled", "active", "paused", "completed", "failed", "cancelled"];
const PAGE = 50;

export async function missionsPage(main) {
  const params = new URLSearchParams(sessionStorage.getItem("missions.listFilter") || "");
  const status = h(
    "select",
    { id: "filter-status", "aria-label": "Filter by status" },
    h("option", { value: "" }, "Any status"),
    STATUSES.map((s) => h("option", { value: s, selected: params.get("status") === s }, s)),
  );
  const search = h("input", {
    id: "search",
    type: "search",
    placeholder: "Search by name",
    "aria-label": "Search missions by name",
    value: params.get("q") || "",
  });
  const attention = h("p", { class: "attention", id: "needs-person" });
  const body = h("tbody");
  const more = h("button", { type: "button", id: "more", hidden: true }, "Show more");
  const empty = h("p", { class: "empty", hidden: true }, "No missions match. ", h("a", { href: "#/new" }, "Create one"));
  let offset = 0;
  let generation = 0;

  async function load(reset, limit = PAGE) {
    const mine = ++generation;
    if (reset) offset = 0;
    const query = { status: status.value, q: search.value.trim(), include: "lastRun,nextRunAt", limit, offset };
    sessionStorage.setItem("missions.listFilter", new URLSearchParams({ status: status.value, q: query.q }).toString());
    const rows = await api("GET", withQuery("/missions", query));
    if (mine !== generation) return; // a newer filter has been asked for meanwhile
    if (reset) body.replaceChildren();
    for (const mission of rows) body.append(row(mission));
    offset += rows.length;
    more.hidden = rows.length < limit;
    empty.hidden = body.children.length > 0;
  }

  async function loadAttention() {
    const paused = await api("GET", "/missions/resumable");
    if (!paused.length) {
      replace(attention, "No mission needs a person right now.");
      attention.dataset.count = "0";
      return;
    }
    attention.dataset.count = String(paused.length);
    replace(
      attention,
      h("strong", { class: "count" }, String(paused.length)),
      paused.length === 1 ? " mission needs a person: " : " missions need a person: ",
      h("a", { href: "#/inbox" }, "open the inbox"),
    );
  }

  let timer = null;
  search.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => load(true).catch(showError), 250);
  });
  status.addEventListener("change", () => load(true).catch(showError));
  more.addEventListener("click", () => load(false).catch(showError));
  const errorBox = h("p", { class: "error", role: "alert" });
  function showError(exc) {
    errorBox.textContent = exc.message;
  }

  replace(
    main,
    h("div", { class: "page-head" }, h("h1", {}, "Missions"), h("a", { class: "button primary", href: "#/new" }, "New mission")),
    attention,
    h("div", { class: "filters", role: "search" }, search, status),
    errorBox,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "missions", id: "missions" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["Name", "Status", "Last run", "Runs", "Next run", "Last run cost", "Tasks"].map((t) => h("th", { scope: "col" }, t)),
          ),
        ),
        body,
      ),
    ),
    empty,
    more,
  );
  await Promise.all([load(true), loadAttention()]);
  // Statuses move while the page is open: read what is shown again every 10 s.
  const refresh = setInterval(() => {
    if (document.activeElement === search) return; // (not while the person is typing)
    Promise.all([load(true, Math.min(1000, Math.max(PAGE, offset))), loadAttention()]).catch(() => {});
  }, 10000);
  return { close: () => clearInterval(refresh) };
}

function row(mission) {
  const run = mission.lastRun || null; // (GET /missions?include=lastRun: null before the first run)
  const href = `#/missions/${encodeURIComponent(mission.id)}`;
  return h(
    "tr",
    { "data-mission-id": mission.id },
    h("td", {}, h("a", { href, class: "mission-name" }, mission.name)),
    h(
      "td",
      {},
      statusBadge(mission.status),
      mission.pauseReason ? h("span", { class: "muted small" }, " ", pauseLabel(mission.pauseReason)) : null,
    ),
    h(
      "td",
      { class: "last-run" },
      run
        ? h(
            "a",
            { href: `${href}/runs/${encodeURIComponent(run.id)}`, "aria-label": `Run ${run.number}: ${run.status}` },
            statusBadge(run.status),
            " ",
            h("span", { class: "muted small" }, when(run.finishedAt || run.startedAt)),
          )
        : "–",
    ),
    h("td", { class: "num" }, String(mission.executionCount ?? 0)),
    h("td", {}, mission.nextRunAt ? when(mission.nextRunAt) : "–"),
    h("td", { class: "num" }, run ? money(run.costUsd) : "–"),
    h("td", { class: "num" }, String(mission.taskCount ?? "–")),
  );
}

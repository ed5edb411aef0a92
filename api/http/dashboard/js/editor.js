// Create and edit a mission: paste or upload a document (JSON or YAML) and send it. The API
// takes JSON only, so YAML is parsed here (js-yaml, vendored) and sent as JSON. A validation
// error is shown at the fields the API names in details.fields: on an outline of the document
// (each field with its messages) and as a list whose entries select that field in the text.
// Editing changes the mission's own fields with PATCH (the API replaces no tasks that way);
// a task is changed on its own with PATCH .../tasks/{id}.

import { load as loadYaml, dump as dumpYaml } from "../vendor/js-yaml-5.5.0.esm.min.js";
import { api, ApiError } from "./api.js";
import { h, replace } from "./dom.js";
import { app } from "./shell.js";

// Fields of GET /missions/{id} that the server keeps, not the document.
const READ_ONLY = new Set([
  "id", "status", "executionCount", "latestRunId", "pauseReason", "pauseMessage", "failureReason", "nextRunAt",
  "lastRunStatus", "lastRun", "runCount", "createdAt", "updatedAt", "usage", "tasks",
]);
const TASK_READ_ONLY = new Set(["id", "status", "attempt", "agent", "model", "output", "score", "criteria", "error", "usage"]);

const EXAMPLE = {
  name: "hello",
  prompt: "Say hello.",
  tasks: [{ title: "Greet", description: "Write a greeting.", assignTo: "writer", expectations: [{ criterion: "Friendly" }] }],
  team: { name: "crew", volatile: true, agents: [{ name: "writer", role: "Writes", model: "scripted/demo", script: [{ output: "Hello!" }] }] },
  assessor: { model: "scripted/judge", script: [{ score: 4.5, reason: "friendly" }] },
};

/** "tasks[1].dependsOn[0]" -> ["tasks", 1, "dependsOn", 0] */
export function fieldPath(name) {
  const out = [];
  for (const part of String(name).match(/[^.[\]]+|\[\d+\]/g) || []) {
    out.push(/^\[\d+\]$/.test(part) ? Number(part.slice(1, -1)) : part);
  }
  return out;
}

/** Parse ``text`` as JSON, else YAML: {doc, format} or throws with the parser's message. */
export function parseDocument(text) {
  const trimmed = text.trim();
  if (!trimmed) throw new Error("the document is empty");
  if (trimmed.startsWith("{") || trimmed.startsWith("[")) {
    try {
      return { doc: JSON.parse(trimmed), format: "json" };
    } catch (exc) {
      throw new Error(`not valid JSON: ${exc.message}`);
    }
  }
  try {
    return { doc: loadYaml(trimmed), format: "yaml" };
  } catch (exc) {
    throw new Error(`not valid YAML: ${exc.message}`);
  }
}

function outline(value, errors, path = [], key = null) {
  const here = errors.get(JSON.stringify(path)) || [];
  const messages = here.length ? h("ul", { class: "field-errors" }, here.map((m) => h("li", {}, m))) : null;
  const label = key === null ? "document" : typeof key === "number" ? `[${key}]` : key;
  const attrs = { class: ["field", here.length ? "invalid" : ""], "data-field": path.length ? pathName(path) : "body" };
  if (value !== null && typeof value === "object") {
    const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
    // Errors for children the document lacks (a missing required field).
    const missing = [...errors.keys()]
      .map((k) => JSON.parse(k))
      .filter((p) => p.length === path.length + 1 && p.slice(0, -1).every((seg, i) => seg === path[i]) && !(p[p.length - 1] in value))
      .map((p) => h("li", { class: "field invalid", "data-field": pathName(p) }, h("span", { class: "key" }, String(p[p.length - 1])), " (missing)", h("ul", { class: "field-errors" }, errors.get(JSON.stringify(p)).map((m) => h("li", {}, m)))));
    return h(
      "li",
      attrs,
      h("span", { class: "key" }, label),
      messages,
      h("ul", {}, entries.map(([k, v]) => outline(v, errors, [...path, k], k)), missing),
    );
  }
  const text = JSON.stringify(value);
  return h("li", attrs, h("span", { class: "key" }, label), ": ", h("span", { class: "value" }, text && text.length > 80 ? `${text.slice(0, 79)}…` : text), messages);
}

function pathName(path) {
  return path.map((seg, i) => (typeof seg === "number" ? `[${seg}]` : i ? `.${seg}` : seg)).join("");
}

/** Select the line of ``path``'s last key in the textarea (best effort: by its name in order). */
function selectField(textarea, path) {
  const text = textarea.value;
  let at = 0;
  for (const seg of path) {
    if (typeof seg !== "string") continue;
    const found = new RegExp(`["']?${seg.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}["']?\\s*:`).exec(text.slice(at));
    if (!found) break;
    at += found.index;
  }
  const end = text.indexOf("\n", at);
  textarea.focus();
  textarea.setSelectionRange(at, end === -1 ? text.length : end);
}

export async function editorPage(main, missionId) {
  const editing = Boolean(missionId);
  let mission = null;
  let initial = JSON.stringify(EXAMPLE, null, 2);
  if (editing) {
    mission = await api("GET", `/missions/${encodeURIComponent(missionId)}`);
    const doc = Object.fromEntries(Object.entries(mission).filter(([k]) => !READ_ONLY.has(k)));
    initial = JSON.stringify(doc, null, 2);
  }
  const textarea = h("textarea", { id: "document", class: "code", rows: 24, spellcheck: "false", "aria-describedby": "doc-help" }, initial);
  const upload = h("input", { id: "upload", type: "file", accept: ".json,.yaml,.yml,application/json,text/yaml" });
  const result = h("div", { id: "result", role: "alert" });
  const errorList = h("ul", { class: "error-list", id: "errors" });
  const tree = h("ul", { class: "outline", id: "outline" });
  const submit = h("button", { type: "submit", class: "primary", id: "save" }, editing ? "Save changes" : "Create mission");
  const asYaml = h("button", { type: "button", id: "to-yaml" }, "Show as YAML");
  const asJson = h("button", { type: "button", id: "to-json" }, "Show as JSON");

  upload.addEventListener("change", async () => {
    const file = upload.files && upload.files[0];
    if (file) textarea.value = await file.text();
  });
  asYaml.addEventListener("click", () => {
    try {
      textarea.value = dumpYaml(parseDocument(textarea.value).doc);
    } catch (exc) {
      replace(result, h("p", { class: "error" }, exc.message));
    }
  });
  asJson.addEventListener("click", () => {
    try {
      textarea.value = JSON.stringify(parseDocument(textarea.value).doc, null, 2);
    } catch (exc) {
      replace(result, h("p", { class: "error" }, exc.message));
    }
  });

  function showErrors(doc, exc) {
    const fields = exc.fields;
    const byPath = new Map();
    for (const [name, messages] of Object.entries(fields)) {
      const path = name === "body" ? [] : fieldPath(name);
      byPath.set(JSON.stringify(path), (byPath.get(JSON.stringify(path)) || []).concat(messages));
    }
    replace(result, h("p", { class: "error" }, exc.message));
    replace(
      errorList,
      Object.entries(fields).map(([name, messages]) =>
        h(
          "li",
          { "data-field": name },
          h("button", { type: "button", class: "link", onclick: () => selectField(textarea, fieldPath(name)) }, name),
          ": ",
          messages.join("; "),
        ),
      ),
    );
    replace(tree, doc && typeof doc === "object" ? outline(doc, byPath) : null);
  }

  const form = h(
    "form",
    { id: "editor", class: "editor" },
    h("label", { for: "document" }, "Mission document (JSON or YAML)"),
    textarea,
    h(
      "p",
      { class: "help", id: "doc-help" },
      editing
        ? "The mission's own fields: change them and save (tasks are changed one by one, below). A field set to null is cleared."
        : "Paste a mission or upload a file. YAML is converted to JSON in this browser; the API validates it.",
    ),
    h("div", { class: "actions" }, submit, h("label", { class: "button", for: "upload" }, "Upload a file…"), upload, asYaml, asJson),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    replace(result);
    errorList.replaceChildren();
    tree.replaceChildren();
    let doc;
    try {
      doc = parseDocument(textarea.value).doc;
    } catch (exc) {
      replace(result, h("p", { class: "error" }, exc.message));
      return;
    }
    submit.disabled = true;
    try {
      const saved = editing
        ? await api("PATCH", `/missions/${encodeURIComponent(missionId)}`, doc)
        : await api("POST", "/missions", doc);
      app.toast(editing ? `Saved ${saved.name}` : `Created ${saved.name}`);
      location.hash = `#/missions/${encodeURIComponent(saved.id)}`;
    } catch (exc) {
      if (exc instanceof ApiError && Object.keys(exc.fields).length) showErrors(doc, exc);
      else replace(result, h("p", { class: "error" }, exc.message));
    } finally {
      submit.disabled = false;
    }
  });

  replace(
    main,
    editing
      ? h("p", { class: "crumbs" }, h("a", { href: "#/missions" }, "Missions"), " / ", h("a", { href: `#/missions/${encodeURIComponent(mission.id)}` }, mission.name), " /")
      : null,
    h("h1", {}, editing ? `Edit ${mission.name}` : "New mission"),
    h("div", { class: "editor-grid" }, form, h("section", { class: "problems", "aria-label": "Validation" }, result, errorList, tree)),
    editing ? taskEditors(mission) : null,
  );
  textarea.focus();
  return null;
}

function taskEditors(mission) {
  return h(
    "section",
    { class: "task-editors" },
    h("h2", {}, "Tasks"),
    mission.tasks.map((task) => {
      const doc = Object.fromEntries(Object.entries(task).filter(([k]) => !TASK_READ_ONLY.has(k) && k !== "title"));
      const area = h("textarea", { class: "code", rows: 8, spellcheck: "false", "aria-label": `Task ${task.title}` }, JSON.stringify(doc, null, 2));
      const out = h("p", { role: "alert" });
      const save = h("button", { type: "button" }, "Save task");
      save.addEventListener("click", async () => {
        out.textContent = "";
        try {
          const body = parseDocument(area.value).doc;
          await api("PATCH", `/missions/${encodeURIComponent(mission.id)}/tasks/${encodeURIComponent(task.id)}`, body);
          out.textContent = "Saved.";
        } catch (exc) {
          const fields = exc instanceof ApiError ? Object.entries(exc.fields) : [];
          out.replaceChildren(h("span", { class: "error" }, exc.message), fields.length ? h("ul", { class: "error-list" }, fields.map(([k, v]) => h("li", {}, `${k}: ${v.join("; ")}`))) : null);
        }
      });
      return h("details", { class: "task-editor" }, h("summary", {}, task.title), area, h("div", { class: "actions" }, save), out);
    }),
  );
}

// The dashboard's shell: sign-in, the header with the needs-attention count, and a hash router
// (ids only in the fragment; the key never appears in a URL).

import { api, apiKey, ApiError, onUnauthorized, signIn, signOut } from "./api.js";
import { h, replace, $ } from "./dom.js";
import { missionsPage } from "./missions.js";
import { inboxPage } from "./inbox.js";
import { missionPage } from "./mission.js";
import { runPage } from "./run.js";
import { taskPage } from "./task.js";
import { editorPage } from "./editor.js";

const ROUTES = [
  [/^#?\/?$/, () => missionsPage],
  [/^#\/missions$/, () => missionsPage],
  [/^#\/inbox$/, () => inboxPage],
  [/^#\/new$/, () => editorPage],
  [/^#\/missions\/([\w-]+)$/, () => missionPage],
  [/^#\/missions\/([\w-]+)\/edit$/, () => editorPage],
  [/^#\/missions\/([\w-]+)\/runs\/([\w-]+)$/, () => runPage],
  [/^#\/missions\/([\w-]+)\/runs\/([\w-]+)\/tasks\/([\w-]+)$/, () => taskPage],
];

let current = null; // the page shown: {close()} to stop its streams and timers
let signInMessage = "";

async function refreshAttention() {
  const badge = $("#attention-count");
  if (!badge || !apiKey()) return;
  try {
    const paused = await api("GET", "/missions/resumable");
    badge.textContent = String(paused.length);
    badge.dataset.count = String(paused.length);
    badge.closest("a").setAttribute("aria-label", `Needs attention: ${paused.length} missions`);
  } catch (exc) {
    if (!(exc instanceof ApiError) || exc.status !== 401) badge.textContent = "?";
  }
}

function header() {
  return h(
    "nav",
    { class: "top", "aria-label": "Main" },
    h("a", { class: "brand", href: "#/missions" }, "Missions"),
    h("a", { href: "#/missions", "data-nav": "missions" }, "Missions"),
    h(
      "a",
      { href: "#/inbox", "data-nav": "inbox", id: "attention-link" },
      "Needs attention ",
      h("span", { class: "badge", id: "attention-count", "data-count": "0" }, "…"),
    ),
    h("a", { href: "#/new", "data-nav": "new" }, "New mission"),
    h("span", { class: "spacer" }),
    h("button", { type: "button", class: "link", id: "sign-out", onclick: onSignOut }, "Sign out"),
  );
}

function onSignOut() {
  signOut();
  signInMessage = "Signed out.";
  route();
}

function signInView() {
  const error = h("p", { class: "error", id: "sign-in-error", role: "alert" }, signInMessage);
  signInMessage = "";
  const input = h("input", {
    id: "api-key",
    type: "password",
    name: "api-key",
    autocomplete: "off",
    spellcheck: "false",
    placeholder: "sk_live_…",
    required: true,
    "aria-describedby": "sign-in-help sign-in-error",
  });
  const button = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h(
    "form",
    { class: "sign-in card", id: "sign-in" },
    h("h1", {}, "Sign in to Missions"),
    h("label", { for: "api-key" }, "API key of your project"),
    input,
    h(
      "p",
      { class: "help", id: "sign-in-help" },
      "The key stays in this browser tab only (sessionStorage) and is sent as an Authorization header. ",
      "Create one with: missions keys create --project NAME",
    ),
    button,
    error,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) return;
    button.disabled = true;
    error.textContent = "";
    try {
      await api("GET", "/missions?limit=1", undefined, { key });
      signIn(key);
      input.value = "";
      route();
    } catch (exc) {
      error.textContent = exc.status === 401 ? "That key was refused: check it and try again." : exc.message;
      input.focus();
    } finally {
      button.disabled = false;
    }
  });
  replace($("#app"), h("main", { id: "main", tabindex: "-1" }, form));
  input.focus();
}

let navigation = 0; // which route() is the latest: a page that loads after the next one started is closed

async function route() {
  const mine = ++navigation;
  if (current && current.close) current.close();
  current = null;
  if (!apiKey()) {
    signInView();
    return;
  }
  const hash = location.hash || "#/missions";
  let page = null;
  let params = [];
  for (const [pattern, load] of ROUTES) {
    const match = hash.match(pattern);
    if (match) {
      page = load();
      params = match.slice(1);
      break;
    }
  }
  let shell = $("#app > nav.top");
  if (!shell) {
    replace($("#app"), header(), h("main", { id: "main", tabindex: "-1" }));
    shell = $("#app > nav.top");
  }
  const section = hash.startsWith("#/inbox") ? "inbox" : hash.startsWith("#/new") ? "new" : "missions";
  for (const link of shell.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const main = $("#main");
  replace(main, h("p", { class: "loading" }, "Loading…"));
  refreshAttention();
  if (!page) {
    replace(main, h("h1", {}, "Not found"), h("p", {}, "No page at this address. ", h("a", { href: "#/missions" }, "Missions")));
    return;
  }
  try {
    const shown = await page(main, ...params.map(decodeURIComponent));
    if (mine !== navigation) {
      if (shown && shown.close) shown.close(); // the person has moved on meanwhile
      return;
    }
    current = shown;
  } catch (exc) {
    if (mine !== navigation) return;
    if (exc instanceof ApiError && exc.status === 401) return; // onUnauthorized shows the sign-in
    replace(
      main,
      h("h1", {}, exc.status === 404 ? "Not found" : "Something went wrong"),
      h("p", { class: "error", role: "alert" }, exc.message),
      h("p", {}, h("a", { href: "#/missions" }, "Back to the missions")),
    );
  }
  const heading = main.querySelector("h1");
  if (heading) document.title = `${heading.textContent} · Missions`;
}

onUnauthorized(() => {
  signOut();
  signInMessage = "The server refused the key (it may have been revoked): sign in again.";
  route();
});

window.addEventListener("hashchange", route);
window.addEventListener("missions:attention", refreshAttention);
setInterval(refreshAttention, 15000);
route();

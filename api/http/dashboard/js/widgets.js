// Small pieces several pages share.

import { api } from "./api.js";
import { h } from "./dom.js";

export function statusBadge(status) {
  return h("span", { class: ["status", `s-${status}`], "data-status": status }, status || "–");
}

/** A button that runs ``action`` once per click, disabled while it runs; errors go to ``onError``. */
export function actionButton(label, action, { kind = "", id, onError, title } = {}) {
  const button = h("button", { type: "button", class: kind, id, title }, label);
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await action();
    } catch (exc) {
      if (onError) onError(exc);
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

/** POST a mission command (execute, resume, abort); the API's answer. */
export function command(missionId, name, body) {
  return api("POST", `/missions/${encodeURIComponent(missionId)}/${name}`, body);
}

export function keyValue(pairs) {
  return h(
    "dl",
    { class: "kv" },
    pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]),
  );
}

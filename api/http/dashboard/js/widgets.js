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

/**
 * The resume actions that fit why a mission paused, as the API defines them (docs/semantics.md):
 * [{label, retryFailed, primary, help}]. For a side-effect approval ``retryFailed: false`` marks
 * the task failed, so neither choice is called "approve" there.
 */
export function resumeChoices(pauseReason) {
  if (pauseReason === "checkpoint") {
    return [
      { label: "Approve and resume", retryFailed: false, primary: true, help: "Continue past the checkpoint." },
      { label: "Approve, retry failed", retryFailed: true, help: "Continue, and run failed tasks again." },
    ];
  }
  if (pauseReason === "quality_gate") {
    return [
      { label: "Resume, retry failed", retryFailed: true, primary: true, help: "Run the failed or low-scoring tasks again, then judge the gate again." },
      { label: "Override the gate", retryFailed: false, help: "Let the blocked tasks run although the gate failed." },
    ];
  }
  if (pauseReason === "approval") {
    return [
      { label: "Run the task again", retryFailed: true, help: "Its worker was lost while it ran: running it again may repeat its side effect." },
      { label: "Mark it failed", retryFailed: false, help: "Do not run it again; the tasks that depend on it are skipped." },
    ];
  }
  return [
    { label: "Resume", retryFailed: false, primary: true, help: "" },
    { label: "Resume, retry failed", retryFailed: true, help: "" },
  ];
}

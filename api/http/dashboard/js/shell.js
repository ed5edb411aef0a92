// What pages may ask of the shell without importing it (no import cycle): a toast, and a new
// read of the needs-attention count after an action that may change it.

import { h } from "./dom.js";

export function toast(message, kind = "info") {
  const box = document.getElementById("toast");
  const item = h("div", { class: ["toast", kind] }, message);
  box.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 4000);
}

export function refreshAttention() {
  window.dispatchEvent(new Event("missions:attention"));
}

export const app = { toast, refreshAttention };

// How numbers, times and statuses read on the page. Display only: no rule of the engine here.

export const PAUSE_REASONS = {
  checkpoint: "Checkpoint: waiting for approval",
  quality_gate: "Quality gate blocked",
  approval: "Side effect needs approval",
};

export const ACTIVE = new Set(["active", "paused"]);
export const TERMINAL_TASK = new Set(["completed", "failed", "skipped", "cancelled"]);

export function pauseLabel(reason) {
  return PAUSE_REASONS[reason] || reason || "";
}

export function seconds(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (value < 1) return `${Math.round(value * 1000)} ms`;
  if (value < 60) return `${value.toFixed(value < 10 ? 1 : 0)} s`;
  const m = Math.floor(value / 60);
  const rest = Math.round(value % 60);
  if (m < 60) return `${m} min ${rest} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function elapsed(start, end) {
  if (!start) return "–";
  const a = Date.parse(start);
  const b = end ? Date.parse(end) : Date.now();
  return seconds(Math.max(0, (b - a) / 1000));
}

export function when(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

export function money(usd) {
  if (usd === null || usd === undefined) return "–";
  if (usd === 0) return "$0";
  return usd < 0.01 ? `$${usd.toFixed(4)}` : `$${usd.toFixed(2)}`;
}

export function tokens(usage) {
  if (!usage) return "–";
  const total = (usage.tokensIn || 0) + (usage.tokensOut || 0);
  return total.toLocaleString();
}

export function score(value) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(2).replace(/\.?0+$/, "");
}

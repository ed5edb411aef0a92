// The task graph of a run: tasks as nodes, dependsOn as edges, quality gates and checkpoints as
// their own nodes between the tasks they wait for and the tasks they block. Layout by dagre
// (vendored, see vendor/manifest.json); drawing in SVG, attributes only (the CSP allows no inline
// style). Each task node is a link to the task's page, so the graph is reachable with Tab.
//
// Scale: dagre needs 0.2 s for 300 nodes on this project's machine, 1 s for 500 and more than 10 s
// for some 2,000-node graphs. A graph of at most SYNC_LIMIT nodes is laid out by dagre before it
// is drawn; up to WORKER_LIMIT it is drawn at once in a plain layered layout (layout.js) and moved
// to dagre's positions when a web worker has computed them; a larger one keeps the layered layout
// (a reflow seconds later would move what a person is looking at). Statuses change in place (a
// class on the node), never by a new layout.

import dagre from "../vendor/dagre-3.1.3.esm.js";
import { s } from "./dom.js";
import { dagreLayout, layeredLayout } from "./layout.js";

const SYNC_LIMIT = 300;
const WORKER_LIMIT = 1000;
const NODE_W = 180;
const NODE_H = 44;
const MARK = 30; // a gate's or checkpoint's mark
const MAX_LABEL = 24;

function clip(text) {
  const str = String(text ?? "");
  return str.length > MAX_LABEL ? `${str.slice(0, MAX_LABEL - 1)}…` : str;
}

function pathOf(points) {
  return points.map((p, i) => `${i ? "L" : "M"}${p[0].toFixed(1)},${p[1].toFixed(1)}`).join("");
}

/** Nodes and edges of ``mission`` (tasks, qualityGates, checkpoints) as a layout model. */
export function graphModel(mission) {
  const byTitle = new Map(mission.tasks.map((t) => [t.title, t]));
  const nodes = mission.tasks.map((task) => ({ id: task.id, width: NODE_W, height: NODE_H, kind: "task", task }));
  const edges = [];
  for (const task of mission.tasks) {
    for (const dep of task.dependsOn || []) {
      const from = byTitle.get(dep);
      if (from) edges.push([from.id, task.id, "dep"]);
    }
  }
  const marks = [
    ...(mission.qualityGates || []).map((spec, index) => ({ kind: "gate", index, spec })),
    ...(mission.checkpoints || []).map((spec, index) => ({ kind: "checkpoint", index, spec })),
  ];
  for (const mark of marks) {
    const id = `${mark.kind}:${mark.index}`;
    nodes.push({ id, width: MARK, height: MARK, kind: mark.kind, mark });
    for (const title of mark.spec.afterTasks || []) if (byTitle.has(title)) edges.push([byTitle.get(title).id, id, "mark"]);
    for (const title of mark.spec.blocksTasks || []) if (byTitle.has(title)) edges.push([id, byTitle.get(title).id, "mark"]);
  }
  return { nodes, edges, dense: nodes.length > SYNC_LIMIT };
}

function markLabel(mark) {
  const name = mark.spec.name ? ` ${mark.spec.name}` : "";
  return mark.kind === "gate" ? `Quality gate${name}` : `Checkpoint${name}`;
}

/**
 * The graph of ``mission`` with the task ``states`` ({taskId: status}); ``link(taskId)`` is a
 * node's href. Returns {svg, setStatus(taskId, status), setMark(kind, index, state), ready}:
 * ``ready`` resolves once the final (dagre) layout is in place.
 */
export function taskGraph(mission, states, link) {
  const model = graphModel(mission);
  const edgeEls = model.edges.map(([, , kind]) =>
    s("path", { class: kind === "mark" ? "edge blocking" : "edge", "marker-end": "url(#arrow)" }),
  );
  const taskNodes = new Map();
  const markNodes = new Map();
  const nodeEls = new Map();
  const nodesGroup = s("g", { class: "nodes" });
  for (const n of model.nodes) {
    let node;
    if (n.kind === "task") {
      const status = states[n.id] || n.task.status || "draft";
      node = s(
        "a",
        {
          href: link(n.id),
          class: `node task s-${status}`,
          "data-task-id": n.id,
          "data-status": status,
          "aria-label": `${n.task.title}: ${status}`,
        },
        s("title", {}, `${n.task.title} (${n.task.assignTo}): ${status}`),
        s("rect", { width: NODE_W, height: NODE_H, rx: 6 }),
        s("text", { x: 10, y: 18, class: "label" }, clip(n.task.title)),
        s("text", { x: 10, y: 34, class: "sub" }, `${clip(n.task.assignTo)} · ${status}`),
      );
      taskNodes.set(n.id, { node, task: n.task });
    } else {
      const r = MARK / 2;
      const label = markLabel(n.mark);
      const detail = n.kind === "gate" ? `, minScore ${n.mark.spec.minScore ?? "–"}` : `: ${n.mark.spec.message || ""}`;
      node = s(
        "g",
        { class: `node mark ${n.kind} m-pending`, "data-mark": n.id, tabindex: 0, role: "img", "aria-label": `${label}: pending` },
        s("title", {}, label + detail),
        n.kind === "gate"
          ? s("path", { d: `M${r},0L${MARK},${r}L${r},${MARK}L0,${r}Z` })
          : s("rect", { x: 3, y: 3, width: MARK - 6, height: MARK - 6, rx: 3 }),
        s("text", { class: "glyph", x: r, y: r + 5, "text-anchor": "middle" }, n.kind === "gate" ? "G" : "C"),
      );
      markNodes.set(n.id, { node, label });
    }
    nodeEls.set(n.id, { node, width: n.width, height: n.height });
    nodesGroup.append(node);
  }
  const svg = s(
    "svg",
    { class: "graph", id: "graph", role: "group", "aria-label": `Task graph: ${mission.tasks.length} tasks` },
    s(
      "defs",
      {},
      s(
        "marker",
        { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto-start-reverse" },
        s("path", { d: "M0,0L10,5L0,10z", class: "arrowhead" }),
      ),
    ),
    s("g", { class: "edges" }, edgeEls),
    nodesGroup,
  );

  function place(layout) {
    for (const [id, { node, width, height }] of nodeEls) {
      const p = layout.nodes[id];
      if (p) node.setAttribute("transform", `translate(${(p.x - width / 2).toFixed(1)},${(p.y - height / 2).toFixed(1)})`);
    }
    layout.edges.forEach((points, i) => edgeEls[i].setAttribute("d", pathOf(points)));
    const w = Math.ceil(layout.width);
    const h = Math.ceil(layout.height);
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    svg.setAttribute("width", w);
    svg.setAttribute("height", h);
    svg.dataset.layout = layout.engine;
  }

  const plain = { nodes: model.nodes.map(({ id, width, height }) => ({ id, width, height })), edges: model.edges, dense: model.dense };
  let ready;
  if (!model.dense) {
    place(dagreLayout(dagre, plain));
    ready = Promise.resolve();
  } else if (model.nodes.length > WORKER_LIMIT) {
    place(layeredLayout(plain));
    ready = Promise.resolve();
  } else {
    place(layeredLayout(plain));
    ready = new Promise((resolve) => {
      const worker = new Worker(new URL("./layout-worker.js", import.meta.url), { type: "module" });
      worker.addEventListener("message", (event) => {
        place(event.data);
        worker.terminate();
        resolve();
      });
      worker.addEventListener("error", () => resolve()); // the layered layout stays: still readable
      worker.postMessage(plain);
    });
  }

  function setStatus(taskId, status) {
    const entry = taskNodes.get(taskId);
    if (!entry || entry.node.dataset.status === status) return;
    const { node, task } = entry;
    node.setAttribute("class", `node task s-${status}`);
    node.dataset.status = status;
    node.setAttribute("aria-label", `${task.title}: ${status}`);
    node.querySelector(".sub").textContent = `${clip(task.assignTo)} · ${status}`;
    node.querySelector("title").textContent = `${task.title} (${task.assignTo}): ${status}`;
  }

  /** A gate ("pending"|"blocked"|"passed") or a checkpoint ("pending"|"waiting"|"approved"). */
  function setMark(kind, index, state) {
    const entry = markNodes.get(`${kind}:${index}`);
    if (!entry) return;
    entry.node.setAttribute("class", `node mark ${kind} m-${state}`);
    entry.node.setAttribute("aria-label", `${entry.label}: ${state}`);
  }

  return { svg, setStatus, setMark, ready };
}

// Two layouts of one graph model {nodes: [{id, width, height}], edges: [[from, to, kind]], dense}:
// dagre's (crossing reduction, good for reading) and an immediate layered one for large graphs:
// each node in the column of its longest path from a source, and within a column ordered by the
// mean row of its predecessors (one barycenter sweep, document order breaking ties), which keeps
// most edges short in linear time. Both answer {nodes: {id: {x, y}}, edges: [points], width, height}.

export function dagreLayout(dagre, model) {
  const g = new dagre.graphlib.Graph();
  g.setGraph({
    rankdir: "LR",
    nodesep: model.dense ? 8 : 18,
    ranksep: model.dense ? 40 : 60,
    marginx: 12,
    marginy: 12,
  });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of model.nodes) g.setNode(n.id, { width: n.width, height: n.height });
  for (const [from, to] of model.edges) g.setEdge(from, to);
  dagre.layout(g);
  const nodes = {};
  for (const n of model.nodes) {
    const placed = g.node(n.id);
    nodes[n.id] = { x: placed.x, y: placed.y };
  }
  const edges = model.edges.map(([from, to]) => (g.edge(from, to).points || []).map((p) => [p.x, p.y]));
  const { width, height } = g.graph();
  return { nodes, edges, width, height, engine: "dagre" };
}

export function layeredLayout(model) {
  const gapX = model.dense ? 40 : 60;
  const gapY = model.dense ? 8 : 18;
  const incoming = new Map(model.nodes.map((n) => [n.id, 0]));
  const out = new Map(model.nodes.map((n) => [n.id, []]));
  for (const [from, to] of model.edges) {
    if (!out.has(from) || !incoming.has(to)) continue;
    out.get(from).push(to);
    incoming.set(to, incoming.get(to) + 1);
  }
  const rank = new Map();
  const queue = model.nodes.filter((n) => incoming.get(n.id) === 0).map((n) => n.id);
  for (const id of queue) rank.set(id, 0);
  for (let i = 0; i < queue.length; i++) {
    const id = queue[i];
    for (const next of out.get(id)) {
      rank.set(next, Math.max(rank.get(next) || 0, rank.get(id) + 1));
      incoming.set(next, incoming.get(next) - 1);
      if (incoming.get(next) === 0) queue.push(next);
    }
  }
  const columns = [];
  const size = new Map(model.nodes.map((n) => [n.id, n]));
  const widest = Math.max(0, ...model.nodes.map((n) => n.width));
  const tallest = Math.max(0, ...model.nodes.map((n) => n.height));
  for (const n of model.nodes) {
    const r = rank.get(n.id) ?? 0; // (a cycle cannot be: the API refuses one)
    (columns[r] ||= []).push(n.id);
  }
  const preds = new Map(model.nodes.map((n) => [n.id, []]));
  for (const [from, to] of model.edges) if (preds.has(to) && out.has(from)) preds.get(to).push(from);
  const rowOf = new Map();
  const order = new Map(model.nodes.map((n, i) => [n.id, i]));
  columns.forEach((ids, r) => {
    if (r > 0) {
      const key = new Map(
        ids.map((id) => {
          const rows = preds.get(id).map((p) => rowOf.get(p)).filter((v) => v !== undefined);
          return [id, rows.length ? rows.reduce((a, b) => a + b, 0) / rows.length : Infinity];
        }),
      );
      ids.sort((a, b) => key.get(a) - key.get(b) || order.get(a) - order.get(b));
    }
    ids.forEach((id, row) => rowOf.set(id, row));
  });
  const nodes = {};
  let height = 0;
  columns.forEach((ids, r) => {
    ids.forEach((id, row) => {
      nodes[id] = { x: 12 + r * (widest + gapX) + widest / 2, y: 12 + row * (tallest + gapY) + tallest / 2 };
    });
    height = Math.max(height, 24 + ids.length * (tallest + gapY));
  });
  const edges = model.edges.map(([from, to]) => {
    const a = nodes[from];
    const b = nodes[to];
    if (!a || !b) return [];
    return [
      [a.x + size.get(from).width / 2, a.y],
      [b.x - size.get(to).width / 2, b.y],
    ];
  });
  return { nodes, edges, width: 24 + columns.length * (widest + gapX), height, engine: "layered" };
}

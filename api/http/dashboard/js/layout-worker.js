// dagre's layout of a large task graph, off the page's main thread (see graph.js).

import dagre from "../vendor/dagre-3.1.3.esm.js";
import { dagreLayout } from "./layout.js";

self.addEventListener("message", (event) => {
  self.postMessage(dagreLayout(dagre, event.data));
});

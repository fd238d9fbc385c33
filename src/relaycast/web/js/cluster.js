// @ts-check
// The dashboard's cluster card: the nodes of a --cluster deployment (GET /api/cluster) with
// their streams, viewers and load, refreshed every few seconds. Hidden on a single node.
// Test hook: window.relaycastCluster (the last answer).

import { byId } from "./dom.js";

/**
 * @typedef {{url: string, self: boolean, streams: string[], viewers: number,
 *   sessions: number, load: number, cpu_percent: number, age_s: number}} ClusterNodeInfo
 */
/**
 * @typedef {{enabled: boolean, node?: string, registry?: string,
 *   registry_error?: string | null, nodes: ClusterNodeInfo[],
 *   pulls: {stream: string, source: string, state: string}[]}} ClusterInfo
 */

const REFRESH_MS = 3000;

/**
 * @param {string} tag
 * @param {string} text
 */
function cell(tag, text) {
  const e = document.createElement(tag);
  e.textContent = text;
  return e;
}

/** @param {ClusterInfo} info */
function render(info) {
  const section = byId("cluster");
  section.hidden = !info.enabled;
  if (!info.enabled) return;
  const registry = info.registry === "ok" ? "registry ok" : `registry unavailable: ${info.registry_error ?? ""}`;
  byId("cluster-registry").textContent = `${info.nodes.length} node(s) · ${registry}`;
  const body = byId("cluster-nodes");
  const pulls = new Map(info.pulls.map((p) => [p.stream, p]));
  const rows = info.nodes.map((node) => {
    const row = document.createElement("tr");
    if (node.self) row.className = "self";
    const streams = node.streams
      .map((name) => {
        const pull = node.self ? pulls.get(name) : undefined;
        return pull ? `${name} (from ${pull.source}, ${pull.state})` : name;
      })
      .join(", ");
    row.append(
      cell("td", node.self ? `${node.url} (this node)` : node.url),
      cell("td", streams || "—"),
      cell("td", String(node.viewers)),
      cell("td", `${Math.round(node.load * 100)} %`),
      cell("td", `${node.cpu_percent.toFixed(0)} %`),
    );
    return row;
  });
  body.replaceChildren(...rows);
}

async function refresh() {
  try {
    const response = await fetch("/api/cluster", { cache: "no-store" });
    if (response.ok) {
      /** @type {ClusterInfo} */
      const info = await response.json();
      /** @type {any} */ (window).relaycastCluster = info;
      render(info);
    }
  } catch {
    // the events feed shows the connection state; try again at the next refresh
  }
  setTimeout(refresh, REFRESH_MS);
}

refresh();

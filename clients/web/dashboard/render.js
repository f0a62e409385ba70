// DOM helpers and badges of the dashboard (text only: never innerHTML).

/** Create an element with attributes and children (strings become text nodes). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null && value !== "") node.setAttribute(name, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function badge(text, kind, attrs = {}) {
  return el("span", { class: `badge ${kind}`, ...attrs }, text);
}

const STATUS_KIND = {
  running: "info", created: "", registered: "", paused: "warn",
  succeeded: "ok", failed: "bad", canceled: "warn", stopped: "warn", error: "bad",
};

/** A run or worker status enum name (RUN_STATUS_RUNNING) as a badge. */
export function statusBadge(name) {
  const short = String(name).replace(/^(RUN|WORKER)_STATUS_/, "").toLowerCase();
  return badge(short, STATUS_KIND[short] ?? "", { "data-status": short });
}

/**
 * Heartbeat freshness re-derived against this browser's clock (the document's
 * heartbeat_state is as of its last event): missing, fresh or stale.
 */
export function heartbeatBadge(lastHeartbeatAtMs, staleAfterMs) {
  if (!lastHeartbeatAtMs) return badge("missing", "", { "data-heartbeat": "missing" });
  const fresh = Date.now() - lastHeartbeatAtMs <= staleAfterMs;
  return badge(fresh ? "fresh" : "stale", fresh ? "ok" : "warn", { "data-heartbeat": fresh ? "fresh" : "stale" });
}

/**
 * Projection status from runtime's snapshot: in_sync, or lagging by N events.
 * When the live document has since caught up with runtime's head, it is in sync.
 */
export function projectionBadge(projection, docSeq, runtimeSeq) {
  if (!projection) return badge("…", "", { "data-projection": "pending" });
  let stateName = projection.state;
  let lag = projection.lag_events;
  if (stateName === "lagging" && runtimeSeq && docSeq >= runtimeSeq) {
    stateName = "in_sync";
    lag = 0;
  }
  if (stateName === "in_sync") return badge("in_sync", "ok", { "data-projection": "in_sync" });
  if (stateName === "lagging") return badge(`lagging ${lag ?? ""}`.trim(), "warn", { "data-projection": "lagging" });
  return badge(stateName || "unknown", "", { "data-projection": stateName || "unknown" });
}

/** "12s ago" for an epoch-ms time ("" when 0). */
export function timeAgo(ms) {
  if (!ms) return "";
  const seconds = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (seconds < 60) return `${seconds}s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)}m ago`;
  return `${Math.round(seconds / 3600)}h ago`;
}

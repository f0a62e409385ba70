// Khala operator dashboard: sign in, pick or create an org, watch workers
// (heartbeat state, projection in_sync/lagging) and runs (status), and follow
// one run's live event log.
//
// Live data comes only over the WebSocket (the TypeScript SDK, clients/ts, bundled
// as lib/khala-sdk.js; JSON subprotocol):
// the runs and workers documents and the run's events. Runtime's HTTP API adds
// what documents do not carry: the projection status of each run and worker
// and the heartbeat staleness threshold; it is re-read when a document changes
// and every 15 s. State lives in memory with an in-memory cursor store, so a
// reconnect resumes exactly (no line lost or repeated) and a page reload
// starts from a snapshot.

import { JSON_SUBPROTOCOL, KhalaClient, MemoryCursorStore, SCHEMAS, decodePayload, toPlain } from "./lib/khala-sdk.js";
import { Api, loadConfig } from "./api.js";
import { beginSignIn, completeSignIn, takeCallback } from "./oidc.js";
import { el, heartbeatBadge, projectionBadge, statusBadge, timeAgo } from "./render.js";

const callback = takeCallback(window.location, window.history); // restores the pre-sign-in query
const config = loadConfig(window.location);
const api = new Api(config);
const $ = (id) => document.getElementById(id);

const state = {
  me: null,
  org: "",
  runs: new Map(), // run_id -> RunSummary
  workers: new Map(), // worker_id -> CodexWorkerSummary
  pending: new Map(), // topic -> Map collected during a snapshot
  runtimeRuns: new Map(), // run_id -> runtime snapshot (projection status)
  runtimeWorkers: new Map(),
  selectedRun: "",
  logCount: 0,
};
let client = null;
let statusTimer = null;

const runsTopic = (org) => `org.${org}.runs`;
const workersTopic = (org) => `org.${org}.workers`;
const runTopic = (org, runId) => `org.${org}.run.${runId}`;

function showError(error) {
  const banner = $("banner");
  banner.textContent = error ? String(error.message || error) : "";
  banner.hidden = !error;
}

// -- sign-in and orgs -----------------------------------------------------

async function boot() {
  api.onSignedOut = () => signedOut("Your session ended; sign in again.");
  $("signin-form").addEventListener("submit", onSignIn);
  $("org-create").addEventListener("submit", onCreateOrg);
  $("org-select").addEventListener("change", (event) => selectOrg(event.target.value));
  $("signout").addEventListener("click", onSignOut);
  $("runs").addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-run-id]");
    if (row) selectRun(row.dataset.runId);
  });
  setInterval(renderWorkers, 1000); // heartbeat ages tick
  $("signin-sso-box").hidden = !config.oidcIssuer;
  $("signin-sso").addEventListener("click", () => beginSignIn(config, window.location).catch(showError));
  try {
    if (callback) await api.signInWithIdToken(await completeSignIn(callback));
  } catch (error) {
    signedOut();
    showError(error);
    return;
  }
  if (api.signedIn) await signedIn();
  else signedOut();
}

function signedOut(message) {
  if (client) client.stop();
  client = null;
  $("signin-view").hidden = false;
  $("org-view").hidden = true;
  $("org-panels").hidden = true;
  $("signout").hidden = true;
  $("whoami").textContent = "";
  setConn("idle", "offline");
  showError(message || null);
}

async function onSignIn(event) {
  event.preventDefault();
  const email = $("signin-email").value.trim();
  try {
    await api.signInDev(email, $("signin-name").value.trim() || email.split("@")[0]);
    showError(null);
    await signedIn();
  } catch (error) {
    showError(error);
  }
}

async function onSignOut() {
  try {
    await api.signOut();
  } catch (error) {
    console.warn("logout failed", error);
  }
  signedOut();
}

async function signedIn() {
  $("signin-view").hidden = true;
  $("org-view").hidden = false;
  $("signout").hidden = false;
  try {
    await loadMe();
  } catch (error) {
    if (error.status === 401) return signedOut("Your session ended; sign in again.");
    showError(error);
  }
  startClient();
  const orgs = state.me ? state.me.memberships : [];
  const wanted = new URLSearchParams(window.location.search).get("org");
  const initial = orgs.find((m) => m.org_id === wanted) || (orgs.length === 1 ? orgs[0] : null);
  if (initial) selectOrg(initial.org_id);
}

async function loadMe() {
  state.me = await api.me();
  $("whoami").textContent = `${state.me.user.email} · ${config.surface}`;
  const select = $("org-select");
  select.replaceChildren(el("option", { value: "" }, "— pick an org —"));
  for (const m of state.me.memberships) select.append(el("option", { value: m.org_id }, `${m.org_id} (${m.role})`));
  select.value = state.org;
}

async function onCreateOrg(event) {
  event.preventDefault();
  const orgId = $("org-id").value.trim();
  try {
    await api.createOrg(orgId, $("org-name").value.trim());
    $("org-id").value = "";
    $("org-name").value = "";
    await loadMe();
    await client.refreshToken(); // the new org's topics need a token that covers them
    selectOrg(orgId);
    showError(null);
  } catch (error) {
    showError(error);
  }
}

// -- the WebSocket client -------------------------------------------------

function startClient() {
  if (client) return;
  client = new KhalaClient({
    url: config.gateway,
    topics: [],
    token: () => api.syncToken(),
    store: new MemoryCursorStore(),
    protocol: JSON_SUBPROTOCOL,
    clientName: "khala-dashboard",
    clientVersion: config.clientVersion,
    onUpdate,
  });
  window.khalaClient = client; // for operators poking around in devtools (and the e2e test)
  client.start();
  setConn("connecting", "connecting");
}

function setConn(kind, text) {
  const badge = $("conn-state");
  badge.dataset.state = kind;
  badge.textContent = text;
  $("conn-count").textContent = client ? client.connections : 0;
}

const utf8 = new TextDecoder();

/** A frame's payload as a plain object (a RuntimeEvent also gets `payload`, its JSON). */
function plainPayload(frame) {
  const message = decodePayload(frame);
  if (message === undefined) return null;
  const plain = toPlain(SCHEMAS.get(frame.schemaVersion), message);
  if (plain.payloadJson instanceof Uint8Array) {
    try {
      plain.payload = JSON.parse(utf8.decode(plain.payloadJson) || "{}");
    } catch {
      plain.payload = {};
    }
  }
  return plain;
}

function onUpdate(update) {
  switch (update.type) {
    case "connected":
      setConn("connecting", "subscribing");
      break;
    case "live":
      setConn("live", "live");
      break;
    case "disconnected":
      state.pending.clear(); // a snapshot cut off by the disconnect starts again
      setConn("waiting", `reconnecting in ${(update.retryInMs / 1000).toFixed(1)}s`);
      $("conn-state").title = update.reason;
      break;
    case "stopped":
      setConn("stopped", "stopped");
      if (/^closed 4009/.test(update.reason)) signedOut("The session was revoked; sign in again.");
      else showError(update.reason);
      break;
    case "snapshot_begin":
      state.pending.set(update.topic, new Map());
      break;
    case "snapshot_end":
      swapSnapshot(update.topic);
      break;
    case "frame":
      applyFrame({
        topic: update.topic,
        payload: plainPayload(update.frame),
        inSnapshot: update.inSnapshot,
        seq: Number(update.frame.seq),
        key: update.frame.key,
      });
      break;
    case "reset":
      resetTopic(update.topic);
      break;
    case "error":
      if (update.topic && update.code !== "stale_cursor") showError(`${update.topic}: ${update.code}: ${update.message}`);
      break;
    default:
      break;
  }
}

function docMapFor(topic) {
  if (topic === runsTopic(state.org)) return state.runs;
  if (topic === workersTopic(state.org)) return state.workers;
  return null;
}

function applyFrame(update) {
  if (state.selectedRun && update.topic === runTopic(state.org, state.selectedRun)) {
    appendLogLine(update);
    return;
  }
  const docs = docMapFor(update.topic);
  if (!docs) return;
  const target = update.inSnapshot ? state.pending.get(update.topic) : docs;
  if (!target) return;
  if (update.payload === null) target.delete(update.key);
  else target.set(update.key, update.payload);
  if (!update.inSnapshot) docsChanged(update.topic);
}

function swapSnapshot(topic) {
  const docs = docMapFor(topic);
  const collected = state.pending.get(topic);
  state.pending.delete(topic);
  if (!docs || !collected) return;
  docs.clear();
  for (const [key, value] of collected) docs.set(key, value);
  docsChanged(topic);
}

function resetTopic(topic) {
  const docs = docMapFor(topic);
  if (docs) {
    docs.clear();
    docsChanged(topic);
  }
  if (state.selectedRun && topic === runTopic(state.org, state.selectedRun)) clearLog();
}

// -- org, runs and workers ------------------------------------------------

function selectOrg(orgId) {
  if (orgId === state.org) return;
  const old = state.org;
  if (old && client) {
    const topics = [runsTopic(old), workersTopic(old)];
    if (state.selectedRun) topics.push(runTopic(old, state.selectedRun));
    client.unfollow(topics, { forget: true });
  }
  Object.assign(state, { org: orgId, selectedRun: "" });
  for (const map of [state.runs, state.workers, state.pending, state.runtimeRuns, state.runtimeWorkers]) map.clear();
  $("org-select").value = orgId;
  $("run-view").hidden = true;
  $("org-panels").hidden = !orgId;
  renderRuns();
  renderWorkers();
  if (!orgId) return;
  const url = new URL(window.location.href);
  url.searchParams.set("org", orgId);
  window.history.replaceState(null, "", url);
  client.follow([runsTopic(orgId), workersTopic(orgId)]);
  refreshStatus();
}

function docsChanged(topic) {
  if (topic === runsTopic(state.org)) renderRuns();
  else renderWorkers();
  clearTimeout(statusTimer);
  statusTimer = setTimeout(refreshStatus, 300);
}

async function refreshStatus() {
  clearTimeout(statusTimer);
  const org = state.org;
  if (!org) return;
  try {
    const [runs, workers] = await Promise.all([api.listRuns(org), api.listWorkers(org)]);
    if (org !== state.org) return;
    state.runtimeRuns = new Map(runs.runs.map((r) => [r.run_id, r]));
    state.runtimeWorkers = new Map(workers.workers.map((w) => [w.worker_id, w]));
    renderRuns();
    renderWorkers();
  } catch (error) {
    console.warn("status refresh failed", error);
  } finally {
    if (org === state.org) statusTimer = setTimeout(refreshStatus, 15000);
  }
}

function renderWorkers() {
  const body = $("workers").querySelector("tbody");
  const rows = [...state.workers.values()].sort((a, b) => b.createdAtMs - a.createdAtMs || a.workerId.localeCompare(b.workerId));
  body.replaceChildren(
    ...rows.map((w) => {
      const snapshot = state.runtimeWorkers.get(w.workerId);
      const staleAfter = snapshot ? snapshot.heartbeat_stale_after_ms : 30000;
      return el(
        "tr",
        { "data-worker-id": w.workerId },
        el("td", {}, w.workerId),
        el("td", {}, statusBadge(w.status)),
        el("td", {}, heartbeatBadge(w.lastHeartbeatAtMs, staleAfter), " ", el("span", { class: "muted" }, timeAgo(w.lastHeartbeatAtMs))),
        el("td", {}, projectionBadge(snapshot && snapshot.projection, w.lastSeq, snapshot && snapshot.last_seq)),
        el("td", {}, String(w.eventCount)),
        el("td", { class: "trunc" }, w.lastError || ""),
      );
    }),
  );
  $("workers-empty").hidden = rows.length > 0;
}

function renderRuns() {
  const body = $("runs").querySelector("tbody");
  const rows = [...state.runs.values()].sort((a, b) => b.createdAtMs - a.createdAtMs || a.runId.localeCompare(b.runId));
  body.replaceChildren(
    ...rows.map((r) => {
      const snapshot = state.runtimeRuns.get(r.runId);
      return el(
        "tr",
        { "data-run-id": r.runId, class: r.runId === state.selectedRun ? "selected" : "" },
        el("td", {}, r.runId),
        el("td", {}, r.title),
        el("td", {}, statusBadge(r.status)),
        el("td", {}, projectionBadge(snapshot && snapshot.projection, r.lastSeq, snapshot && snapshot.last_seq)),
        el("td", {}, String(r.eventCount)),
        el("td", { class: "trunc" }, r.lastOutput || r.endReason || ""),
      );
    }),
  );
  $("runs-empty").hidden = rows.length > 0;
  if (state.selectedRun && state.runs.has(state.selectedRun)) {
    $("run-title").textContent = `${state.selectedRun} — ${state.runs.get(state.selectedRun).title}`;
  }
}

// -- one run's live log ---------------------------------------------------

function selectRun(runId) {
  if (runId === state.selectedRun) return;
  if (state.selectedRun) client.unfollow([runTopic(state.org, state.selectedRun)], { forget: true });
  state.selectedRun = runId;
  clearLog();
  $("run-view").hidden = false;
  $("run-title").textContent = runId;
  renderRuns();
  client.follow([runTopic(state.org, runId)]);
}

function clearLog() {
  $("run-log").replaceChildren();
  state.logCount = 0;
  $("run-count").textContent = "0";
}

function appendLogLine(update) {
  const event = update.payload;
  const data = (event && event.payload) || {};
  const detail = typeof data.text === "string" ? data.text : data.reason || (Object.keys(data).length ? JSON.stringify(data) : "");
  const log = $("run-log");
  const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  log.append(
    el(
      "li",
      { "data-seq": String(update.seq), "data-type": event.type },
      el("span", { class: "seq" }, `#${update.seq}`),
      el("span", { class: "type" }, event.type),
      el("span", { class: "text" }, detail),
    ),
  );
  if (stick) log.scrollTop = log.scrollHeight;
  state.logCount += 1;
  $("run-count").textContent = String(state.logCount);
}

boot().catch(showError);

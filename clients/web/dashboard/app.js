// Khala operator dashboard: sign in, pick or create an org, watch workers
// (heartbeat state, projection in_sync/lagging) and runs (status), follow one
// run's live event log, and act by role: create a run, append to it, stop it,
// request work from a worker, stop or resume it, sign out another device.
//
// Actions call the real HTTP APIs with the user's access token (runtime's
// through control's /api/v1 proxy); what the user's role or surface may not do
// is disabled (permissions.js), and every refusal is shown with its code and
// message. An action's effect is seen when it comes back over the WebSocket.
//
// Live data comes only over the WebSocket (the TypeScript SDK, clients/ts, bundled
// as lib/khala-sdk.js; JSON subprotocol):
// the runs and workers documents and the run's events. Runtime's HTTP API adds
// what documents do not carry: the projection status of each run and worker
// and the heartbeat staleness threshold; it is re-read when a document changes
// (no polling). State lives in memory with an in-memory cursor store, so a
// reconnect resumes exactly (no line lost or repeated) and a page reload
// starts from a snapshot.

import { JSON_SUBPROTOCOL, KhalaClient, MemoryCursorStore, SCHEMAS, decodePayload, toPlain } from "./lib/khala-sdk.js";
import { Api, loadConfig } from "./api.js";
import { beginSignIn, completeSignIn, takeCallback } from "./oidc.js";
import { permission } from "./permissions.js";
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

/** Show `error` (an ApiError's text is "code (HTTP status): message") in the banner, or clear it. */
function showError(error, what = "") {
  const banner = $("banner");
  const text = error ? String(error.message || error) : "";
  banner.textContent = what && text ? `${what}: ${text}` : text;
  banner.dataset.code = (error && error.code) || "";
  banner.dataset.status = (error && error.status) || "";
  banner.hidden = !error;
  if (error) $("notice").hidden = true;
}

function showNotice(text) {
  $("notice").textContent = text;
  $("notice").hidden = !text;
}

/** Run one operator action: a notice when it is accepted, its error (code and message) when not. */
async function act(what, call, done) {
  showError(null);
  showNotice("");
  try {
    const result = await call();
    showNotice(done || `${what}: done`);
    return result;
  } catch (error) {
    showError(error, what);
    // Refused by role: the role may have changed since sign-in; re-read it so the
    // buttons match what the API now allows.
    if (error.status === 403) loadMe().catch(() => {});
    return undefined;
  }
}

// -- sign-in and orgs -----------------------------------------------------

async function boot() {
  api.onSignedOut = () => signedOut("Your session ended; sign in again.");
  $("signin-form").addEventListener("submit", onSignIn);
  $("org-create").addEventListener("submit", onCreateOrg);
  $("org-select").addEventListener("change", (event) => selectOrg(event.target.value));
  $("signout").addEventListener("click", onSignOut);
  $("run-create").addEventListener("submit", onCreateRun);
  $("append-form").addEventListener("submit", onAppend);
  $("run-stop").addEventListener("click", onStopRun);
  $("workers").addEventListener("click", onWorkerAction);
  $("sessions").addEventListener("click", onRevokeSession);
  $("sessions-refresh").addEventListener("click", () => loadSessions());
  $("runs").addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-run-id]");
    if (row) selectRun(row.dataset.runId);
  });
  setInterval(tickHeartbeats, 1000); // heartbeat ages tick (only those cells: buttons stay put)
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
  $("sessions-view").hidden = true;
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
  let failure = null;
  try {
    await api.signOut();
  } catch (error) {
    failure = `Signed out here, but control did not confirm it: ${error.message}`;
  }
  signedOut(failure);
}

async function signedIn() {
  $("signin-view").hidden = true;
  $("org-view").hidden = false;
  $("signout").hidden = false;
  $("sessions-view").hidden = false;
  loadSessions();
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
  applyPermissions();
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
  applyPermissions();
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
  // Throttled, not debounced: an org whose documents change all the time still
  // gets its projection status re-read (at most about twice a second).
  if (statusTimer === null) statusTimer = setTimeout(refreshStatus, 500);
}

async function refreshStatus() {
  clearTimeout(statusTimer);
  statusTimer = null;
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
    showError(error, "reading runtime's status");
  }
}

function heartbeatCell(worker) {
  const snapshot = state.runtimeWorkers.get(worker.workerId);
  const staleAfter = snapshot ? snapshot.heartbeat_stale_after_ms : 30000;
  return [heartbeatBadge(worker.lastHeartbeatAtMs, staleAfter), " ", el("span", { class: "muted" }, timeAgo(worker.lastHeartbeatAtMs))];
}

function tickHeartbeats() {
  for (const row of $("workers").querySelectorAll("tr[data-worker-id]")) {
    const worker = state.workers.get(row.dataset.workerId);
    if (worker) row.querySelector("td.heartbeat").replaceChildren(...heartbeatCell(worker));
  }
}

function renderWorkers() {
  const body = $("workers").querySelector("tbody");
  const rows = [...state.workers.values()].sort((a, b) => b.createdAtMs - a.createdAtMs || a.workerId.localeCompare(b.workerId));
  body.replaceChildren(
    ...rows.map((w) => {
      const snapshot = state.runtimeWorkers.get(w.workerId);
      return el(
        "tr",
        { "data-worker-id": w.workerId },
        el("td", {}, w.workerId),
        el("td", {}, statusBadge(w.status)),
        el("td", { class: "heartbeat" }, ...heartbeatCell(w)),
        el("td", {}, projectionBadge(snapshot && snapshot.projection, w.lastSeq, snapshot && snapshot.last_seq)),
        el("td", {}, String(w.eventCount)),
        el("td", { class: "requests" }, String(w.requestCount || 0)),
        el("td", { class: "trunc" }, w.lastError || ""),
        el("td", { class: "actions" }, ...workerButtons(w)),
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
  applyPermissions();
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

// -- actions by role -------------------------------------------------------

const shortStatus = (name) => String(name || "").replace(/^(RUN|WORKER)_STATUS_/, "").toLowerCase();
const TERMINAL_RUN = new Set(["succeeded", "failed", "canceled"]);

function currentRole() {
  const membership = state.me && state.me.memberships.find((m) => m.org_id === state.org);
  return membership ? membership.role : "";
}

/** Enable `button` when `action` is allowed (and `blocked` is empty), else disable it saying why. */
function gate(button, action, blocked = "") {
  const { allowed, why } = permission(action, currentRole(), config.surface);
  button.disabled = !allowed || Boolean(blocked);
  button.title = allowed ? blocked : why;
  button.dataset.forbidden = allowed ? "" : "role";
}

function applyPermissions() {
  $("org-role").textContent = currentRole() || "–";
  gate($("run-create").querySelector("button"), "createRun");
  const run = state.runs.get(state.selectedRun);
  const ended = run && TERMINAL_RUN.has(shortStatus(run.status)) ? `the run is ${shortStatus(run.status)}` : "";
  gate($("append-form").querySelector("button"), "appendRun", ended);
  gate($("run-stop"), "stopRun", ended);
}

function workerButtons(worker) {
  const stopped = shortStatus(worker.status) === "stopped";
  const button = (action, name, text, blocked) => {
    const node = el("button", { type: "button", "data-action": name }, text);
    gate(node, action, blocked);
    return node;
  };
  return [
    button("requestWork", "request", "Request work", stopped ? "the worker is stopped" : ""),
    " ",
    stopped ? button("stopWorker", "resume", "Resume", "") : button("stopWorker", "stop", "Stop", ""),
  ];
}

async function onCreateRun(event) {
  event.preventDefault();
  const title = $("run-new-title").value.trim();
  const run = await act("create run", () => api.createRun(state.org, title));
  if (!run) return;
  $("run-new-title").value = "";
  showNotice(`created run ${run.run_id}`);
  selectRun(run.run_id);
}

async function onAppend(event) {
  event.preventDefault();
  const type = $("append-type").value;
  const text = $("append-text").value;
  const payload = type === "run.output" ? { text } : type === "run.failed" ? { reason: text } : {};
  const runId = state.selectedRun;
  const receipt = await act(`append ${type}`, () => api.appendRunEvent(runId, type, payload));
  if (!receipt) return;
  $("append-text").value = "";
  showNotice(`appended ${type} to ${runId} (seq ${receipt.last_seq})`);
}

function onStopRun() {
  const runId = state.selectedRun;
  return act(
    "stop run",
    () => api.appendRunEvent(runId, "run.canceled", { reason: "stopped from the dashboard" }),
    `stopped run ${runId}`,
  );
}

function onWorkerAction(event) {
  const button = event.target.closest("button[data-action]");
  const row = event.target.closest("tr[data-worker-id]");
  if (!button || !row) return undefined;
  const workerId = row.dataset.workerId;
  const name = button.dataset.action;
  if (name === "request") {
    return act(`request work from ${workerId}`, () => api.requestWork(workerId, { from: "dashboard" }), `requested work from ${workerId}`);
  }
  return act(`${name} worker ${workerId}`, () => api.workerCommand(workerId, name), `${name === "stop" ? "stopped" : "resumed"} worker ${workerId}`);
}

// -- device sessions ------------------------------------------------------

async function loadSessions() {
  try {
    const { sessions } = await api.sessions();
    renderSessions(sessions);
  } catch (error) {
    showError(error, "listing your sessions");
  }
}

function renderSessions(sessions) {
  $("sessions").querySelector("tbody").replaceChildren(
    ...sessions.map((s) => {
      const revoke = el("button", { type: "button", "data-action": "revoke", class: "danger" }, "Sign out device");
      if (s.current) {
        revoke.disabled = true;
        revoke.title = "this browser: use Sign out";
      }
      return el(
        "tr",
        { "data-session-id": s.session_id, "data-device-id": s.device_id, "data-current": s.current ? "true" : "false" },
        el("td", {}, s.device_id, s.current ? el("span", { class: "muted" }, " (this browser)") : ""),
        el("td", {}, s.surface),
        el("td", {}, s.client_version || ""),
        el("td", {}, s.created_at || ""),
        el("td", {}, s.last_used_at || ""),
        el("td", {}, revoke),
      );
    }),
  );
}

async function onRevokeSession(event) {
  const button = event.target.closest("button[data-action='revoke']");
  const row = event.target.closest("tr[data-session-id]");
  if (!button || !row) return;
  const { sessionId, deviceId } = row.dataset;
  const done = await act(`sign out device ${deviceId}`, () => api.revokeSession(sessionId));
  if (!done) return;
  showNotice(`signed out device ${deviceId} (${done.revoked_session_ids.length} session(s) revoked)`);
  await loadSessions();
}

boot().catch(showError);

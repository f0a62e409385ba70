// Khala browser client: the JSON subprotocol (`khala.v1+json`) of /v1/ws.
//
// Delivery guarantee to the application, per topic: `frame` updates come
// exactly once and in seq order within an epoch, across reconnects and
// gateway restarts. Frames at or below the cursor are discarded (idempotent
// apply); a gap is healed by resubscribing from the cursor; a cursor that
// cannot be resumed (`stale_cursor`, or a frame of another epoch) gives a
// `topicReset` update and a fresh subscription (snapshot for doc topics, the
// oldest retained frame for event topics). `onUpdate` is called synchronously;
// the frame's cursor is stored right after it returns, so state applied inside
// `onUpdate` and the stored cursor never disagree.
//
// Reconnects follow protocol §7: exponential backoff with full jitter, reset
// after a healthy connection; Reconnect.retry_after_ms is used as given, any
// error's retry_after_ms is a floor; 4009, 4010 and a 4003 for the Origin stop
// the client. The sync token is renewed with RefreshAuth before it expires.
// No framework, no build step: a plain ES module for browsers (and node >= 20
// for the unit tests, with an injected WebSocket).

import { UnknownSchemaError, base64ToBytes, decodePayload } from "./protowire.js";

export { UnknownSchemaError, decodePayload } from "./protowire.js";

export const JSON_PROTOCOL = "khala.v1+json";
const CURSORS_PER_SUBSCRIBE = 100;

/** Full-jitter exponential backoff: random(0, min(cap, base * 2^attempt)). */
export class Backoff {
  constructor({ baseMs = 500, capMs = 30000, healthyAfterMs = 30000, random = Math.random } = {}) {
    Object.assign(this, { baseMs, capMs, healthyAfterMs, random, attempt: 0 });
  }

  ceiling() {
    return Math.min(this.capMs, this.baseMs * 2 ** this.attempt);
  }

  /** The next delay in ms, never below `retryAfterMs`; advances the attempt. */
  next(retryAfterMs = 0) {
    const delay = this.random() * this.ceiling();
    this.attempt = Math.min(this.attempt + 1, 32);
    return Math.max(delay, retryAfterMs);
  }

  /** Reset the attempt once a connection stayed healthy long enough. */
  connectionLasted(ms) {
    if (ms >= this.healthyAfterMs) this.attempt = 0;
  }
}

/** Cursors in memory: for state that lives in memory too (a page). */
export class MemoryCursorStore {
  constructor(initial = {}) {
    this.cursors = new Map(Object.entries(initial));
  }
  load() {
    return Object.fromEntries(this.cursors);
  }
  save(topic, cursor) {
    this.cursors.set(topic, { epoch: cursor.epoch, afterSeq: cursor.afterSeq });
  }
  delete(topic) {
    this.cursors.delete(topic);
  }
}

/**
 * Cursors in a Web Storage object (localStorage). Only for applications that
 * persist the state derived from the frames as well (e.g. in IndexedDB): a
 * cursor must never outlive the state it describes.
 */
export class StorageCursorStore {
  constructor(storage, key = "khala.cursors") {
    this.storage = storage;
    this.key = key;
  }
  load() {
    try {
      return JSON.parse(this.storage.getItem(this.key) || "{}");
    } catch {
      return {};
    }
  }
  save(topic, cursor) {
    const all = this.load();
    all[topic] = { epoch: cursor.epoch, afterSeq: cursor.afterSeq };
    this.storage.setItem(this.key, JSON.stringify(all));
  }
  delete(topic) {
    const all = this.load();
    delete all[topic];
    this.storage.setItem(this.key, JSON.stringify(all));
  }
}

export const Verdict = Object.freeze({
  APPLY: "apply",
  DUPLICATE: "duplicate",
  EPOCH_CHANGED: "epoch_changed",
  GAP: "gap",
  IGNORED: "ignored",
});

/** One topic's cursor and where its next frame must be (protocol §5 apply rule). */
export class TopicTracker {
  constructor(topic, cursor = { epoch: "", afterSeq: 0 }) {
    this.topic = topic;
    this.epoch = cursor.epoch || "";
    this.lastApplied = cursor.afterSeq || 0;
    this.expectedNext = this.lastApplied + 1;
    this.active = false;
    this.snapshotAsOf = null;
    this.snapshotLast = 0;
  }

  get cursor() {
    return { epoch: this.epoch, afterSeq: this.lastApplied };
  }

  get inSnapshot() {
    return this.snapshotAsOf !== null;
  }

  reset() {
    Object.assign(this, { epoch: "", lastApplied: 0, expectedNext: 1, active: false, snapshotAsOf: null, snapshotLast: 0 });
  }

  deactivate() {
    this.active = false;
    this.snapshotAsOf = null;
  }

  subscribed(epoch, oldestSeq) {
    this.active = true;
    this.snapshotAsOf = null;
    if (this.lastApplied === 0) {
      this.epoch = epoch;
      this.expectedNext = oldestSeq > 0 ? oldestSeq : 1;
    } else if (!this.epoch) {
      this.epoch = epoch;
    }
  }

  snapshotBegin(epoch, asOfSeq) {
    this.epoch = epoch;
    this.snapshotAsOf = asOfSeq;
    this.snapshotLast = 0;
  }

  snapshotEnd(asOfSeq) {
    this.snapshotAsOf = null;
    this.lastApplied = asOfSeq;
    this.expectedNext = asOfSeq + 1;
    return this.cursor;
  }

  /** Decide one frame without changing anything. */
  judge(epoch, seq) {
    if (!this.active) return Verdict.IGNORED;
    if (epoch !== this.epoch) return Verdict.EPOCH_CHANGED;
    if (this.snapshotAsOf !== null) {
      if (seq <= this.snapshotLast) return Verdict.DUPLICATE;
      return seq > this.snapshotAsOf ? Verdict.GAP : Verdict.APPLY;
    }
    if (seq <= this.lastApplied) return Verdict.DUPLICATE;
    return seq === this.expectedNext ? Verdict.APPLY : Verdict.GAP;
  }

  /** Advance past a frame `judge` said to apply. */
  applied(seq) {
    if (this.snapshotAsOf !== null) {
      this.snapshotLast = seq;
    } else {
      this.lastApplied = seq;
      this.expectedNext = seq + 1;
    }
  }
}

/** A KhalaFrame from its canonical JSON (defaults filled in, 64-bit strings as Numbers). */
export function frameFromJson(json) {
  return {
    topic: json.topic || "",
    seq: Number(json.seq || 0),
    kind: json.kind || "FRAME_KIND_UNSPECIFIED",
    key: json.key || "",
    payloadBytes: base64ToBytes(json.payloadBytes || ""),
    schemaVersion: json.schemaVersion || "",
    epoch: json.epoch || "",
    publishedAtMs: Number(json.publishedAtMs || 0),
  };
}

function isDocTopic(topic) {
  const parts = topic.split(".");
  return parts.length === 3 && (parts[2] === "runs" || parts[2] === "workers");
}

/** Thrown (via onStopped) when the client must not reconnect. */
export class ClientStopped extends Error {
  constructor(code, message, closeCode = null) {
    super(`${code}: ${message}`);
    this.name = "ClientStopped";
    this.code = code;
    this.closeCode = closeCode;
  }
}

/**
 * Follows topics over /v1/ws. Options:
 *   url, getToken: async () => ({token, expiresAtMs}), topics, store,
 *   onUpdate(update), onStopped(error), WebSocket, backoff, clientName,
 *   clientVersion, refreshMarginMs (60 s), snapshotIfStale (true),
 *   now (Date.now), setTimeout/clearTimeout (injectable for tests).
 * Updates: {type: "connected"|"disconnected"|"subscribed"|"snapshotStarted"|
 *   "snapshotCompleted"|"snapshotAborted"|"frame"|"live"|"topicReset"|
 *   "topicFailed"|"notice", ...}; see docs/clients.md.
 */
export class KhalaClient {
  constructor(options) {
    this.url = options.url;
    this.getToken = options.getToken;
    this.store = options.store || new MemoryCursorStore();
    this.onUpdate = options.onUpdate || (() => {});
    this.onStopped = options.onStopped || (() => {});
    this.WebSocket = options.WebSocket || globalThis.WebSocket;
    this.backoff = options.backoff || new Backoff();
    this.clientName = options.clientName || "khala-client-js";
    this.clientVersion = options.clientVersion || "1.0.0";
    this.refreshMarginMs = options.refreshMarginMs ?? 60000;
    this.snapshotIfStale = options.snapshotIfStale ?? true;
    this.now = options.now || (() => Date.now());
    this.setTimeout = options.setTimeout || ((fn, ms) => globalThis.setTimeout(fn, ms));
    this.clearTimeout = options.clearTimeout || ((id) => globalThis.clearTimeout(id));
    this.trackers = new Map();
    const stored = this.store.load();
    for (const topic of options.topics || []) this.trackers.set(topic, new TopicTracker(topic, stored[topic]));
    this.stats = { connections: 0, duplicates: 0, gaps: 0, resets: 0, refreshes: 0, mints: 0 };
    this.state = "idle";
    this.connectionId = "";
    this.ws = null;
    this.token = null;
    this.tokenLifetimeMs = 0;
    this.stopped = false;
    this.requestIds = 0;
    this.timers = new Set();
    this.connTimers = new Set();
  }

  get topics() {
    return [...this.trackers.keys()];
  }

  cursor(topic) {
    const tracker = this.trackers.get(topic);
    return tracker ? tracker.cursor : { epoch: "", afterSeq: 0 };
  }

  /** Connect (and keep reconnecting) until stop(). */
  start() {
    this.stopped = false;
    this.#attempt();
  }

  /** Close the socket and stop reconnecting. */
  stop() {
    this.stopped = true;
    this.state = "stopped";
    for (const id of [...this.timers, ...this.connTimers]) this.clearTimeout(id);
    this.timers.clear();
    this.connTimers.clear();
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000);
  }

  /**
   * Mint a new sync token now and send it with RefreshAuth (e.g. after the
   * user joined an org, so the scope covers its topics); used at the next
   * connect when offline.
   */
  async refreshToken() {
    const fresh = await this.#mint();
    if (this.#open()) {
      this.#send({ refreshAuth: { token: fresh.token } });
      this.stats.refreshes += 1;
    }
  }

  /** Follow more topics from their stored cursors (sent at once when connected). */
  subscribe(topics) {
    const stored = this.store.load();
    const added = topics.filter((topic) => !this.trackers.has(topic));
    for (const topic of added) this.trackers.set(topic, new TopicTracker(topic, stored[topic]));
    if (added.length && this.#open()) this.#sendSubscribe(added);
  }

  /** Stop following topics; `forget` also deletes their stored cursors. */
  unsubscribe(topics, { forget = false } = {}) {
    const removed = topics.filter((topic) => this.trackers.delete(topic));
    if (forget) for (const topic of removed) this.store.delete(topic);
    if (removed.length && this.#open()) this.#send({ unsubscribe: { requestId: this.#requestId(), topics: removed } });
  }

  // -- connection ---------------------------------------------------------

  #open() {
    return this.ws && this.ws.readyState === 1 && this.state === "open";
  }

  #emit(update) {
    try {
      this.onUpdate(update);
    } catch (error) {
      console.error("khala onUpdate failed", error);
      throw error;
    }
  }

  #later(ms, fn, perConnection = false) {
    const set = perConnection ? this.connTimers : this.timers;
    const id = this.setTimeout(() => {
      set.delete(id);
      fn();
    }, Math.max(0, ms));
    set.add(id);
    return id;
  }

  #marginMs() {
    return this.tokenLifetimeMs ? Math.min(this.refreshMarginMs, this.tokenLifetimeMs / 2) : this.refreshMarginMs;
  }

  async #mint() {
    const token = await this.getToken();
    this.stats.mints += 1;
    this.token = token;
    this.tokenLifetimeMs = token.expiresAtMs ? token.expiresAtMs - this.now() : 0;
    return token;
  }

  async #attempt() {
    if (this.stopped) return;
    this.state = "connecting";
    let token = this.token;
    try {
      if (!token || (token.expiresAtMs && token.expiresAtMs - this.now() < this.#marginMs())) token = await this.#mint();
    } catch (error) {
      if (error && (error.status === 401 || error.status === 403)) {
        this.#stop(new ClientStopped(error.code || "unauthorized", error.message || "cannot mint a sync token"));
        return;
      }
      this.#retry(null, `sync token: ${error && error.message}`, this.backoff.next(retryAfterOf(error)));
      return;
    }
    if (this.stopped) return;
    const ws = new this.WebSocket(this.url, [JSON_PROTOCOL]);
    this.ws = ws;
    const conn = { ws, welcomed: false, lastError: null, reconnectAt: null, healthySince: null, done: false };
    ws.onopen = () => {
      this.#send({ hello: { token: token.token, clientName: this.clientName, clientVersion: this.clientVersion } }, ws);
    };
    ws.onmessage = (event) => this.#onMessage(conn, event.data);
    ws.onclose = (event) => this.#onClose(conn, event.code, event.reason || "");
    ws.onerror = () => {}; // a close event follows
  }

  #send(message, ws = this.ws) {
    if (ws && ws.readyState === 1) ws.send(JSON.stringify(message));
  }

  #requestId() {
    this.requestIds += 1;
    return `r${this.requestIds}`;
  }

  #sendSubscribe(topics) {
    for (let i = 0; i < topics.length; i += CURSORS_PER_SUBSCRIBE) {
      const cursors = topics.slice(i, i + CURSORS_PER_SUBSCRIBE).map((topic) => {
        const tracker = this.trackers.get(topic);
        tracker.deactivate();
        const { epoch, afterSeq } = tracker.cursor;
        return { topic, epoch: afterSeq ? epoch : "", afterSeq: String(afterSeq) };
      });
      this.#send({ subscribe: { requestId: this.#requestId(), cursors, snapshotIfStale: this.snapshotIfStale } });
    }
  }

  #watchdog(conn, intervalMs) {
    if (conn.watchdog) this.clearTimeout(conn.watchdog);
    this.connTimers.delete(conn.watchdog);
    conn.watchdog = this.#later(
      2 * intervalMs,
      () => {
        conn.lastError = { code: "heartbeat_timeout", message: `silent for ${2 * intervalMs} ms` };
        this.#abandon(conn, 4000);
      },
      true,
    );
  }

  #abandon(conn, code) {
    // Do not wait for a dead peer's close handshake: detach and go on.
    try {
      conn.ws.close(code);
    } catch {
      /* already closing */
    }
    this.#onClose(conn, code, conn.lastError ? conn.lastError.code : "abandoned");
  }

  #scheduleRefresh(conn) {
    const expiresAtMs = (this.token && this.token.expiresAtMs) || conn.tokenExpiresAtMs;
    if (!expiresAtMs) return;
    const wait = Math.max(expiresAtMs - this.now() - this.#marginMs(), 1000);
    this.#later(
      wait,
      async () => {
        if (conn.done) return;
        try {
          const fresh = await this.#mint();
          if (conn.done) return;
          this.#send({ refreshAuth: { token: fresh.token } }, conn.ws);
          this.stats.refreshes += 1;
        } catch {
          this.#later(5000, () => !conn.done && this.#scheduleRefresh(conn), true);
          return;
        }
        this.#scheduleRefresh(conn);
      },
      true,
    );
  }

  #onMessage(conn, data) {
    if (conn.done) return;
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      this.#emit({ type: "notice", topic: "", message: "undecodable server message" });
      return;
    }
    if (conn.welcomed) this.#watchdog(conn, conn.heartbeatMs);
    const [kind] = Object.keys(message);
    const body = message[kind] || {};
    if (kind === "welcome") return this.#onWelcome(conn, body);
    if (kind === "frame") return this.#onFrames(conn, [body]);
    if (kind === "frames") return this.#onFrames(conn, body.frames || []);
    if (kind === "subscribed") return this.#onSubscribed(body);
    if (kind === "snapshotBegin") {
      const tracker = this.trackers.get(body.topic);
      if (!tracker || !tracker.active) return;
      tracker.snapshotBegin(body.epoch || "", Number(body.asOfSeq || 0));
      return this.#emit({ type: "snapshotStarted", topic: body.topic, epoch: body.epoch || "", asOfSeq: Number(body.asOfSeq || 0) });
    }
    if (kind === "snapshotEnd") {
      const tracker = this.trackers.get(body.topic);
      if (!tracker || !tracker.inSnapshot) return;
      const cursor = tracker.snapshotEnd(Number(body.asOfSeq || 0));
      this.#emit({ type: "snapshotCompleted", topic: body.topic, asOfSeq: cursor.afterSeq });
      this.store.save(body.topic, cursor);
      return;
    }
    if (kind === "watermark") {
      if (!this.trackers.has(body.topic)) return;
      if (body.live && conn.healthySince === null) conn.healthySince = this.now();
      return this.#emit({ type: "live", topic: body.topic, seq: Number(body.seq || 0), live: Boolean(body.live) });
    }
    if (kind === "error") return this.#onError(conn, body);
    if (kind === "reconnect") {
      conn.reconnectAt = this.now() + (body.retryAfterMs || 0);
      return this.#emit({ type: "notice", topic: "", message: `server asked to reconnect (${body.reason || ""}) in ${body.retryAfterMs || 0} ms` });
    }
    // heartbeat, pong: the watchdog was fed above
  }

  #onWelcome(conn, welcome) {
    conn.welcomed = true;
    conn.heartbeatMs = welcome.heartbeatIntervalMs || 15000;
    conn.tokenExpiresAtMs = Number(welcome.tokenExpiresAtMs || 0);
    conn.healthySince = this.trackers.size ? null : this.now();
    this.state = "open";
    this.connectionId = welcome.connectionId || "";
    this.stats.connections += 1;
    this.#watchdog(conn, conn.heartbeatMs);
    this.#scheduleRefresh(conn);
    if (this.trackers.size) this.#sendSubscribe(this.topics); // before onUpdate may add topics
    this.#emit({ type: "connected", connectionId: this.connectionId, welcome });
  }

  #onSubscribed(body) {
    const tracker = this.trackers.get(body.topic);
    if (!tracker) return;
    const resumed = tracker.lastApplied > 0;
    tracker.subscribed(body.epoch || "", Number(body.oldestSeq || 0));
    this.#emit({
      type: "subscribed", topic: body.topic, epoch: body.epoch || "",
      headSeq: Number(body.headSeq || 0), oldestSeq: Number(body.oldestSeq || 0), resumed,
    });
  }

  #onFrames(conn, frames) {
    for (const json of frames) {
      if (conn.done) return;
      const frame = frameFromJson(json);
      const tracker = this.trackers.get(frame.topic);
      if (!tracker) continue;
      const verdict = tracker.judge(frame.epoch, frame.seq);
      if (verdict === Verdict.APPLY) {
        let payload;
        try {
          payload = decodePayload(frame);
        } catch (error) {
          if (!(error instanceof UnknownSchemaError)) throw error;
          this.unsubscribe([frame.topic]);
          this.#emit({ type: "topicFailed", topic: frame.topic, code: "unknown_schema", message: error.message });
          continue;
        }
        const inSnapshot = tracker.inSnapshot;
        tracker.applied(frame.seq);
        this.#emit({ type: "frame", topic: frame.topic, frame, payload, inSnapshot, seq: frame.seq, key: frame.key });
        if (!inSnapshot && this.trackers.has(frame.topic)) this.store.save(frame.topic, tracker.cursor);
      } else if (verdict === Verdict.DUPLICATE) {
        this.stats.duplicates += 1;
      } else if (verdict === Verdict.EPOCH_CHANGED) {
        this.#send({ unsubscribe: { requestId: this.#requestId(), topics: [frame.topic] } });
        this.#rebootstrap(frame.topic, "epoch_changed");
      } else if (verdict === Verdict.GAP) {
        this.stats.gaps += 1;
        const expected = tracker.expectedNext;
        tracker.deactivate();
        this.#send({ unsubscribe: { requestId: this.#requestId(), topics: [frame.topic] } });
        this.#sendSubscribe([frame.topic]);
        this.#emit({ type: "notice", topic: frame.topic, message: `gap (expected ${expected}, got ${frame.seq}) on ${this.connectionId}; resubscribed` });
      }
    }
  }

  #rebootstrap(topic, reason) {
    const tracker = this.trackers.get(topic);
    if (!tracker) return;
    this.stats.resets += 1;
    tracker.reset();
    this.store.delete(topic);
    this.#emit({ type: "topicReset", topic, reason });
    this.#sendSubscribe([topic]);
  }

  #onError(conn, error) {
    const topic = error.topic || "";
    const tracker = topic ? this.trackers.get(topic) : null;
    if (!tracker) {
      if (!topic) {
        conn.lastError = error;
        this.#emit({ type: "notice", topic: "", message: `${error.code}: ${error.message || ""}` });
      }
      return;
    }
    const resubscribeLater = (ms) => {
      tracker.deactivate();
      this.#later(ms, () => this.trackers.has(topic) && !conn.done && this.#sendSubscribe([topic]), true);
    };
    if (error.code === "stale_cursor") {
      if (error.reason === "replay_budget" && error.retryAfterMs && !isDocTopic(topic)) {
        resubscribeLater(error.retryAfterMs);
        return this.#emit({ type: "notice", topic, message: `replay budget reached; retrying in ${error.retryAfterMs} ms` });
      }
      return this.#rebootstrap(topic, error.reason || "stale_cursor");
    }
    if (error.code === "internal") {
      resubscribeLater(Math.max(error.retryAfterMs || 0, 1000));
      return this.#emit({ type: "notice", topic, message: `internal error: ${error.message || ""}; resubscribing` });
    }
    if (error.code === "bad_request") return this.#emit({ type: "notice", topic, message: `bad_request: ${error.message || ""}` });
    this.trackers.delete(topic);
    this.#emit({ type: "topicFailed", topic, code: error.code, message: error.message || "" });
  }

  #onClose(conn, code, reason) {
    if (conn.done) return;
    conn.done = true;
    for (const id of this.connTimers) this.clearTimeout(id);
    this.connTimers.clear();
    if (this.ws === conn.ws) this.ws = null;
    for (const [topic, tracker] of this.trackers) {
      if (tracker.inSnapshot) this.#emit({ type: "snapshotAborted", topic });
      tracker.deactivate();
    }
    if (this.stopped) return;
    if (conn.healthySince !== null) this.backoff.connectionLasted(this.now() - conn.healthySince);
    if (conn.reconnectAt !== null) {
      this.#retry(code, "server drain (Reconnect)", Math.max(0, conn.reconnectAt - this.now()));
      return;
    }
    const errorCode = conn.lastError ? conn.lastError.code : "";
    if (code === 4009 || errorCode === "reauth_required") {
      return this.#stop(new ClientStopped("reauth_required", "the session was revoked: sign in again", code));
    }
    if (code === 4010 || errorCode === "upgrade_required") {
      return this.#stop(new ClientStopped("upgrade_required", (conn.lastError && conn.lastError.message) || reason, code));
    }
    if (code === 4003 && /origin/i.test(reason)) return this.#stop(new ClientStopped("forbidden", reason, code));
    if (code === 4001 || errorCode === "unauthorized" || errorCode === "token_expired") this.token = null;
    const why = conn.lastError ? `${conn.lastError.code}: ${conn.lastError.message || ""}` : reason || `closed (${code})`;
    this.#retry(code, why, this.backoff.next(conn.lastError ? conn.lastError.retryAfterMs || 0 : 0));
  }

  #retry(code, reason, delayMs) {
    this.state = "waiting";
    this.#emit({ type: "disconnected", closeCode: code, reason, retryInMs: delayMs });
    this.#later(delayMs, () => this.#attempt());
  }

  #stop(error) {
    this.stop();
    this.#emit({ type: "disconnected", closeCode: error.closeCode, reason: error.message, retryInMs: null });
    this.onStopped(error);
  }
}

function retryAfterOf(error) {
  const seconds = error && error.body && error.body.error && error.body.error.retry_after_s;
  return seconds ? seconds * 1000 : 0;
}

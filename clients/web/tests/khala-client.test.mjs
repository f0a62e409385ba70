// Unit tests of the browser client without a browser: node --test clients/web/tests/
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  Backoff,
  KhalaClient,
  MemoryCursorStore,
  StorageCursorStore,
  TopicTracker,
  Verdict,
  decodePayload,
  frameFromJson,
} from "../khala-client.js";

const TOPIC = "org.a.run.r1";

// -- a fake clock and WebSocket -------------------------------------------

class Clock {
  constructor() {
    this.t = 1_000_000;
    this.timers = new Map();
    this.next = 1;
  }
  now = () => this.t;
  setTimeout = (fn, ms) => {
    const id = this.next++;
    this.timers.set(id, { at: this.t + ms, fn });
    return id;
  };
  clearTimeout = (id) => this.timers.delete(id);
  async advance(ms) {
    const until = this.t + ms;
    for (;;) {
      const due = [...this.timers.entries()].filter(([, t]) => t.at <= until).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.timers.delete(due[0]);
      this.t = Math.max(this.t, due[1].at);
      await due[1].fn();
      await flush();
    }
    this.t = until;
  }
}

const flush = () => new Promise((resolve) => setImmediate(resolve));

class FakeSocket {
  static all = [];
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = 0;
    this.sent = [];
    FakeSocket.all.push(this);
  }
  open() {
    this.readyState = 1;
    this.onopen?.();
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close(code = 1000, reason = "") {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  serverClose(code, reason = "") {
    this.close(code, reason);
  }
  push(message) {
    this.onmessage?.({ data: JSON.stringify(message) });
  }
  welcome(extra = {}) {
    this.push({ welcome: { connectionId: `c${FakeSocket.all.indexOf(this)}`, heartbeatIntervalMs: 15000, ...extra } });
  }
  lastOf(kind) {
    return [...this.sent].reverse().find((m) => m[kind])?.[kind];
  }
}

function eventFrame(seq, epoch = "1") {
  // An empty RuntimeEvent payload decodes to its defaults.
  return { topic: TOPIC, seq: String(seq), kind: "FRAME_KIND_EVENT", key: `e${seq}`, epoch, schemaVersion: "openagents.runtime.v1.RuntimeEvent@1" };
}

function setup(options = {}) {
  FakeSocket.all = [];
  const clock = new Clock();
  const updates = [];
  let stopped = null;
  let minted = 0;
  const client = new KhalaClient({
    url: "ws://gw/v1/ws",
    topics: [TOPIC],
    getToken: async () => {
      minted += 1;
      return { token: `tok-${minted}`, expiresAtMs: clock.now() + (options.tokenLifetimeMs ?? 300_000) };
    },
    WebSocket: FakeSocket,
    backoff: new Backoff({ random: () => 0.5 }),
    now: clock.now,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    onUpdate: (u) => updates.push(u),
    onStopped: (e) => (stopped = e),
    ...options,
  });
  return { client, clock, updates, stopped: () => stopped, minted: () => minted };
}

async function connect(client) {
  client.start();
  await flush();
  const socket = FakeSocket.all.at(-1);
  socket.open();
  socket.welcome();
  return socket;
}

const applied = (updates) => updates.filter((u) => u.type === "frame").map((u) => u.seq);

// -- pure parts -------------------------------------------------------------

test("backoff: full jitter under an exponential ceiling, reset when healthy", () => {
  const backoff = new Backoff({ random: () => 1 });
  assert.deepEqual([1, 2, 3, 4].map(() => backoff.next()), [500, 1000, 2000, 4000]);
  for (let i = 0; i < 10; i += 1) backoff.next();
  assert.equal(backoff.next(), 30000);
  backoff.connectionLasted(31000);
  assert.equal(backoff.ceiling(), 500);
  assert.equal(new Backoff({ random: () => 0 }).next(700), 700, "retry_after is a floor");
});

test("tracker: duplicates discarded, gaps and epoch changes detected, snapshots skip seqs", () => {
  const t = new TopicTracker(TOPIC, { epoch: "1", afterSeq: 4 });
  assert.equal(t.judge("1", 5), Verdict.IGNORED);
  t.subscribed("1", 1);
  assert.equal(t.judge("1", 4), Verdict.DUPLICATE);
  assert.equal(t.judge("1", 6), Verdict.GAP);
  assert.equal(t.judge("2", 5), Verdict.EPOCH_CHANGED);
  assert.equal(t.judge("1", 5), Verdict.APPLY);
  t.applied(5);
  assert.deepEqual(t.cursor, { epoch: "1", afterSeq: 5 });
  const docs = new TopicTracker("org.a.runs");
  docs.subscribed("e", 0);
  docs.snapshotBegin("e", 10);
  assert.equal(docs.judge("e", 3), Verdict.APPLY);
  docs.applied(3);
  assert.equal(docs.judge("e", 3), Verdict.DUPLICATE);
  assert.equal(docs.judge("e", 11), Verdict.GAP);
  assert.deepEqual(docs.snapshotEnd(10), { epoch: "e", afterSeq: 10 });
});

test("frames from canonical JSON: defaults, 64-bit strings and base64", () => {
  const frame = frameFromJson({ topic: "t", seq: "42", payloadBytes: "AQI=" });
  assert.equal(frame.seq, 42);
  assert.equal(frame.epoch, "");
  assert.deepEqual([...frame.payloadBytes], [1, 2]);
});

test("payloads are decoded by schema_version; unknown versions are refused", () => {
  // RunSummary{run_id: "r1", status: RUNNING(2), last_seq: 300, created_at_ms: 1700000000000}
  const bytes = Uint8Array.from([
    0x0a, 2, 0x72, 0x31, 0x20, 2, 0x28, 0xac, 0x02,
    0x48, 0x80, 0xd0, 0x95, 0xff, 0xbc, 0x31,
  ]);
  const run = decodePayload({ topic: "t", kind: "FRAME_KIND_DOC_UPSERT", schemaVersion: "openagents.codex.v1.RunSummary@1", payloadBytes: bytes });
  assert.equal(run.runId, "r1");
  assert.equal(run.status, "RUN_STATUS_RUNNING");
  assert.equal(run.lastSeq, 300);
  assert.equal(run.createdAtMs, 1700000000000);
  assert.equal(run.title, "", "absent fields get their default");
  assert.equal(decodePayload({ kind: "FRAME_KIND_DOC_DELETE", schemaVersion: "x", payloadBytes: new Uint8Array() }), null);
  assert.throws(
    () => decodePayload({ topic: "t", kind: "FRAME_KIND_DOC_UPSERT", schemaVersion: "openagents.codex.v1.RunSummary@2", payloadBytes: bytes }),
    /RunSummary@2/,
  );
});

test("storage cursor store round-trips through a Storage", () => {
  const backing = new Map();
  const storage = { getItem: (k) => backing.get(k) ?? null, setItem: (k, v) => backing.set(k, v) };
  const store = new StorageCursorStore(storage);
  store.save("a", { epoch: "1", afterSeq: 3 });
  store.save("b", { epoch: "1", afterSeq: 4 });
  store.delete("a");
  assert.deepEqual(new StorageCursorStore(storage).load(), { b: { epoch: "1", afterSeq: 4 } });
});

// -- the client against a fake socket ----------------------------------------

test("hello, subscribe from stored cursors, idempotent apply, cursor stored after onUpdate", async () => {
  const store = new MemoryCursorStore({ [TOPIC]: { epoch: "1", afterSeq: 2 } });
  const seenCursor = [];
  const { client, updates } = setup({ store, onUpdate: (u) => { updates.push(u); if (u.type === "frame") seenCursor.push(store.load()[TOPIC].afterSeq); } });
  const updatesRef = updates;
  const socket = await connect(client);
  assert.deepEqual(socket.protocols, ["khala.v1+json"]);
  assert.equal(socket.sent[0].hello.token, "tok-1");
  assert.deepEqual(socket.lastOf("subscribe").cursors, [{ topic: TOPIC, epoch: "1", afterSeq: "2" }]);
  socket.push({ subscribed: { topic: TOPIC, epoch: "1", headSeq: "5", oldestSeq: "1" } });
  socket.push({ frames: { frames: [eventFrame(2), eventFrame(3), eventFrame(3), eventFrame(4)] } });
  assert.deepEqual(applied(updatesRef), [3, 4]);
  assert.deepEqual(seenCursor, [2, 3], "the cursor is saved only after the update was handled");
  assert.deepEqual(store.load()[TOPIC], { epoch: "1", afterSeq: 4 });
  assert.equal(client.stats.duplicates, 2);
});

test("Reconnect: wait retry_after_ms as given, then resume from the cursor", async () => {
  const { client, clock, updates } = setup();
  const first = await connect(client);
  first.push({ subscribed: { topic: TOPIC, epoch: "1", oldestSeq: "1" } });
  first.push({ frame: eventFrame(1) });
  first.push({ reconnect: { reason: "drain", retryAfterMs: 2350 } });
  first.serverClose(1012);
  const gone = updates.find((u) => u.type === "disconnected");
  assert.equal(gone.retryInMs, 2350);
  await clock.advance(2349);
  assert.equal(FakeSocket.all.length, 1, "no reconnect before retry_after_ms");
  await clock.advance(1);
  const second = FakeSocket.all.at(-1);
  assert.equal(FakeSocket.all.length, 2);
  second.open();
  second.welcome();
  assert.deepEqual(second.lastOf("subscribe").cursors, [{ topic: TOPIC, epoch: "1", afterSeq: "1" }]);
  second.push({ subscribed: { topic: TOPIC, epoch: "1", oldestSeq: "1" } });
  second.push({ frames: { frames: [eventFrame(1), eventFrame(2)] } });
  assert.deepEqual(applied(updates), [1, 2]);
});

test("errors: 4001 mints a new token, rate_limited delays, 4009 stops for good", async () => {
  const { client, clock, updates, stopped, minted } = setup();
  const a = await connect(client);
  a.push({ error: { code: "token_expired", message: "expired" } });
  a.serverClose(4001);
  await clock.advance(10_000);
  const b = FakeSocket.all.at(-1);
  b.open();
  assert.equal(b.sent[0].hello.token, "tok-2");
  b.welcome();
  b.push({ error: { code: "rate_limited", retryAfterMs: 9000 } });
  b.serverClose(4029);
  assert.ok(updates.at(-1).retryInMs >= 9000);
  await clock.advance(9000);
  const c = FakeSocket.all.at(-1);
  c.open();
  c.welcome();
  c.push({ error: { code: "reauth_required", message: "revoked" } });
  c.serverClose(4009);
  assert.equal(stopped().code, "reauth_required");
  await clock.advance(120_000);
  assert.equal(FakeSocket.all.length, 3, "no reconnect after 4009");
  assert.equal(minted(), 2);
});

test("stale cursor: reset the topic and resubscribe fresh", async () => {
  const store = new MemoryCursorStore({ [TOPIC]: { epoch: "old", afterSeq: 9 } });
  const { client, updates } = setup({ store });
  const socket = await connect(client);
  socket.push({ error: { code: "stale_cursor", topic: TOPIC, reason: "epoch_changed" } });
  assert.deepEqual(updates.filter((u) => u.type === "topicReset").map((u) => u.reason), ["epoch_changed"]);
  assert.equal(store.load()[TOPIC], undefined);
  assert.deepEqual(socket.lastOf("subscribe").cursors, [{ topic: TOPIC, epoch: "", afterSeq: "0" }]);
  socket.push({ subscribed: { topic: TOPIC, epoch: "2", oldestSeq: "1" } });
  socket.push({ frames: { frames: [eventFrame(1, "2"), eventFrame(2, "2")] } });
  assert.deepEqual(applied(updates), [1, 2]);
  // A frame of yet another epoch while subscribed: reset again.
  socket.push({ frame: eventFrame(3, "3") });
  assert.equal(updates.filter((u) => u.type === "topicReset").length, 2);
  assert.deepEqual(socket.lastOf("unsubscribe").topics, [TOPIC]);
});

test("a gap resubscribes from the cursor; in-flight frames are ignored until Subscribed", async () => {
  const { client, updates } = setup();
  const socket = await connect(client);
  socket.push({ subscribed: { topic: TOPIC, epoch: "1", oldestSeq: "1" } });
  socket.push({ frames: { frames: [eventFrame(1), eventFrame(3), eventFrame(4)] } });
  assert.deepEqual(socket.lastOf("subscribe").cursors, [{ topic: TOPIC, epoch: "1", afterSeq: "1" }]);
  socket.push({ subscribed: { topic: TOPIC, epoch: "1", oldestSeq: "1" } });
  socket.push({ frames: { frames: [eventFrame(2), eventFrame(3)] } });
  assert.deepEqual(applied(updates), [1, 2, 3]);
  assert.equal(client.stats.gaps, 1);
});

test("a silent socket is abandoned after two heartbeat intervals", async () => {
  const { client, clock, updates } = setup();
  await connect(client);
  await clock.advance(29_999);
  assert.equal(updates.filter((u) => u.type === "disconnected").length, 0);
  await clock.advance(1);
  assert.match(updates.find((u) => u.type === "disconnected").reason, /heartbeat_timeout/);
});

test("the sync token is renewed with RefreshAuth before it expires", async () => {
  const { client, clock } = setup({ tokenLifetimeMs: 120_000 });
  const socket = await connect(client);
  for (let i = 0; i < 6; i += 1) {
    await clock.advance(9_900);
    socket.push({ heartbeat: {} });
  }
  assert.equal(socket.lastOf("refreshAuth"), undefined);
  await clock.advance(1_500);
  assert.equal(socket.lastOf("refreshAuth").token, "tok-2");
  assert.equal(client.stats.refreshes, 1);
  assert.equal(FakeSocket.all.length, 1, "same socket");
});

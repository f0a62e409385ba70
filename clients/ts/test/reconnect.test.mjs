// Reconnect (drain), fatal close codes and backoff, with an in-process WebSocket
// stand-in that speaks the protocol's proto encoding (no network).
import assert from "node:assert/strict";
import { test } from "node:test";

import { create, toBinary, fromBinary } from "@bufbuild/protobuf";
import { KhalaClient, ws } from "../dist/index.js";

class FakeSocket {
  static instances = [];
  static heartbeatIntervalMs = 0;
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = 0;
    this.sent = [];
    FakeSocket.instances.push(this);
    setTimeout(() => {
      this.readyState = 1;
      this.onopen?.({});
    }, 0);
  }
  send(data) {
    const message = fromBinary(ws.ClientMessageSchema, data);
    this.sent.push(message);
    if (message.body.case === "hello") this.deliver({ case: "welcome", value: { connectionId: "c", maxFrameBytes: 1048576, heartbeatIntervalMs: FakeSocket.heartbeatIntervalMs } });
  }
  deliver(body) {
    const bytes = toBinary(ws.ServerMessageSchema, create(ws.ServerMessageSchema, { body }));
    this.onmessage?.({ data: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) });
  }
  close(code = 1000, reason = "") {
    if (this.readyState === 3) return;
    this.readyState = 3;
    setTimeout(() => this.onclose?.({ code, reason }), 0);
  }
}

const until = async (predicate, what) => {
  for (let i = 0; i < 200 && !predicate(); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(predicate(), what);
};

function client(updates, extra = {}) {
  let minted = 0;
  return new KhalaClient({
    url: "ws://gateway/v1/ws",
    topics: ["org.a.run.r1"],
    token: async () => ({ token: `t${++minted}`, expiresAtMs: Date.now() + 300_000 }),
    WebSocket: FakeSocket,
    backoff: { random: () => 0 },
    onUpdate: (u) => updates.push(u),
    ...extra,
  });
}

test("Reconnect: the client closes (1000) and reconnects no sooner than retry_after_ms", async () => {
  FakeSocket.instances = [];
  const updates = [];
  const c = client(updates);
  await c.start();
  await until(() => FakeSocket.instances[0]?.sent.some((m) => m.body.case === "subscribe"), "a Subscribe");
  FakeSocket.instances[0].deliver({ case: "reconnect", value: { reason: "drain", retryAfterMs: 120 } });
  await until(() => FakeSocket.instances.length === 2, "a second connection");
  await c.stop();
  const gone = updates.find((u) => u.type === "disconnected");
  assert.equal(gone.closeCode, 1000);
  assert.equal(gone.retryInMs, 120); // random() = 0: the floor is the server's retry_after_ms
  assert.equal(FakeSocket.instances[1].sent[0].body.case, "hello");
});

test("4009 (session revoked) stops the client; 4001 mints a new token before reconnecting", async () => {
  FakeSocket.instances = [];
  const updates = [];
  const c = client(updates);
  await c.start();
  await until(() => FakeSocket.instances.length === 1 && FakeSocket.instances[0].sent.length >= 2, "connected");
  FakeSocket.instances[0].close(4001, "token expired");
  await until(() => FakeSocket.instances.length === 2 && FakeSocket.instances[1].sent.length >= 1, "reconnected");
  assert.equal(FakeSocket.instances[1].sent[0].body.value.token, "t2");
  FakeSocket.instances[1].close(4009, "session revoked");
  await until(() => updates.some((u) => u.type === "stopped"), "stopped");
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(FakeSocket.instances.length, 2);
  await c.stop();
});

test("a socket silent for 2 heartbeat intervals is dropped and reconnected", async () => {
  FakeSocket.instances = [];
  FakeSocket.heartbeatIntervalMs = 40;
  const updates = [];
  const c = client(updates);
  try {
    await c.start();
    await until(() => FakeSocket.instances.length >= 2, "a reconnect after the silence");
    const gone = updates.find((u) => u.type === "disconnected");
    assert.equal(gone.closeCode, 1006);
  } finally {
    FakeSocket.heartbeatIntervalMs = 0;
    await c.stop();
  }
});

test("follow and unfollow topics on the open socket", async () => {
  FakeSocket.instances = [];
  const updates = [];
  const c = client(updates);
  try {
    await c.start();
    const socket = () => FakeSocket.instances[0];
    await until(() => socket()?.sent.some((m) => m.body.case === "subscribe"), "the first Subscribe");
    await c.follow(["org.a.run.r2"]);
    const subscribes = socket().sent.filter((m) => m.body.case === "subscribe");
    assert.deepEqual(subscribes.map((m) => m.body.value.cursors.map((x) => x.topic)), [["org.a.run.r1"], ["org.a.run.r2"]]);
    await c.unfollow(["org.a.run.r1"], { forget: true });
    const last = socket().sent.at(-1);
    assert.equal(last.body.case, "unsubscribe");
    assert.deepEqual(last.body.value.topics, ["org.a.run.r1"]);
    assert.equal(c.cursor("org.a.run.r1"), undefined);
    await c.refreshToken();
    assert.equal(socket().sent.at(-1).body.case, "refreshAuth");
  } finally {
    await c.stop();
  }
});

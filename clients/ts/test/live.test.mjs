// The TypeScript SDK against a live stack (started by tests/e2e/test_clients_ts.py,
// which passes the URLs in KHALA_TS_*_URL); skipped without one.
import assert from "node:assert/strict";
import * as fs from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";

import { ApiError, FileCursorStore, JSON_SUBPROTOCOL, KhalaApi, KhalaClient, MemoryCursorStore, PROTO, decodePayload, events } from "../dist/index.js";
import { fromBinary } from "@bufbuild/protobuf";
import { LIVE, signIn, until } from "./live_support.mjs";

// Node 22 has a global WebSocket (20 behind --experimental-websocket); else the `ws` package.
const WebSocket = globalThis.WebSocket ?? (await import("ws")).WebSocket;

const skip = LIVE ? false : "no live stack (run through tests/e2e/test_clients_ts.py)";
const tag = () => Math.random().toString(16).slice(2, 10);

function recorder() {
  const seen = { frames: new Map(), updates: [] };
  const onUpdate = async (u) => {
    seen.updates.push(u);
    if (u.type === "frame") {
      const list = seen.frames.get(u.topic) ?? [];
      list.push(u.frame.seq);
      seen.frames.set(u.topic, list);
    }
  };
  return { seen, onUpdate };
}

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => BigInt(from + i));

for (const protocol of [PROTO, JSON_SUBPROTOCOL]) {
  test(`${protocol}: live frames in order, then a restart resumes from the file store with no duplicate and no gap`, { skip }, async () => {
    const user = await signIn(tag());
    const runId = `run-${tag()}`;
    await user.createRun(runId);
    const topic = `org.${user.org}.run.${runId}`;
    const path = join(await fs.mkdtemp(join(tmpdir(), "khala-ts-live-")), "cursors.json");
    const tokens = user.tokens([topic, `org.${user.org}.runs`]);
    const first = recorder();
    const options = { url: LIVE.gateway, topics: [topic, `org.${user.org}.runs`], token: tokens, protocol };
    let client = new KhalaClient({ ...options, WebSocket, store: new FileCursorStore(path, fs), onUpdate: first.onUpdate });
    try {
      await client.start();
      await user.append(runId, ["a", "b", "c", "d"]);
      await until(() => (first.seen.frames.get(topic) ?? []).length >= 6, 20_000, "seq 6");
      await client.idle();
    } finally {
      await client.stop();
    }
    assert.deepEqual(first.seen.frames.get(topic), range(1, 6));
    const third = first.seen.updates.find((u) => u.type === "frame" && u.frame.seq === 3n && u.topic === topic);
    const payload = fromBinary(events.RuntimeEventSchema, third.frame.payloadBytes);
    assert.equal(payload.type, "run.output");
    assert.ok(first.seen.updates.some((u) => u.type === "snapshot_begin" && u.topic.endsWith(".runs")));

    await user.append(runId, ["e", "f"]); // while the client is away
    const second = recorder();
    client = new KhalaClient({ ...options, WebSocket, store: new FileCursorStore(path, fs), onUpdate: second.onUpdate });
    try {
      await client.start();
      await user.append(runId, ["g"]);
      await until(() => (second.seen.frames.get(topic) ?? []).at(-1) === 9n, 20_000, "seq 9 after the restart");
    } finally {
      await client.stop();
    }
    assert.deepEqual(second.seen.frames.get(topic), range(7, 9)); // resumed: nothing twice, nothing missing
    const subscribed = second.seen.updates.find((u) => u.type === "subscribed" && u.topic === topic);
    assert.equal(subscribed.resumed, true);
  });
}

test("stale cursors: epoch_changed and cursor_ahead reset the topic, then 1..head", { skip }, async () => {
  const user = await signIn(tag());
  const [a, b] = [`run-${tag()}`, `run-${tag()}`];
  await user.createRun(a);
  await user.createRun(b);
  await user.append(a, ["1", "2"]);
  const [ta, tb] = [`org.${user.org}.run.${a}`, `org.${user.org}.run.${b}`];
  const store = new MemoryCursorStore([
    [ta, { epoch: "epoch-that-never-was", afterSeq: 3n }],
    [tb, { epoch: "", afterSeq: 999n }],
  ]);
  const rec = recorder();
  const client = new KhalaClient({ WebSocket, url: LIVE.gateway, topics: [ta, tb], token: user.tokens([ta, tb]), store, onUpdate: rec.onUpdate });
  try {
    await client.start();
    await until(() => (rec.seen.frames.get(ta) ?? []).length >= 4 && (rec.seen.frames.get(tb) ?? []).length >= 2, 20_000, "both topics");
  } finally {
    await client.stop();
  }
  const resets = Object.fromEntries(rec.seen.updates.filter((u) => u.type === "reset").map((u) => [u.topic, u.reason]));
  assert.deepEqual(resets, { [ta]: "epoch_changed", [tb]: "cursor_ahead" });
  assert.deepEqual(rec.seen.frames.get(ta), range(1, 4));
  assert.deepEqual(rec.seen.frames.get(tb), range(1, 2));
  const kinds = rec.seen.updates.filter((u) => u.topic === ta).map((u) => u.type);
  assert.ok(kinds.indexOf("reset") < kinds.indexOf("frame"));
  assert.equal((await store.load()).get(ta).afterSeq, 4n);
});

test("RefreshAuth before expiry keeps the same socket", { skip }, async () => {
  const user = await signIn(tag());
  const runId = `run-${tag()}`;
  await user.createRun(runId);
  const topic = `org.${user.org}.run.${runId}`;
  const tokens = user.tokens([topic]);
  const rec = recorder();
  // Sync tokens live 5 min; refreshing 299 s before expiry means about every second.
  const client = new KhalaClient({ WebSocket, url: LIVE.gateway, topics: [topic], token: tokens, refreshBeforeMs: 299_000, onUpdate: rec.onUpdate });
  try {
    await client.start();
    await until(() => tokens.minted >= 3, 20_000, "two RefreshAuth");
    await user.append(runId, ["after refresh"]);
    await until(() => (rec.seen.frames.get(topic) ?? []).length >= 3, 20_000, "a frame after the refresh");
  } finally {
    await client.stop();
  }
  assert.equal(client.connections, 1);
  assert.ok(!rec.seen.updates.some((u) => u.type === "error"), JSON.stringify(rec.seen.updates.filter((u) => u.type === "error")));
});

test("KhalaApi: a worker's events live and by HTTP backfill; an oversize event is 413 frame_too_large", { skip }, async () => {
  const api = new KhalaApi({ controlUrl: LIVE.control, runtimeUrl: LIVE.runtime });
  const t = tag();
  await api.signInDev(`ts-api-${t}@example.com`, "TS API", `dev-${t}`);
  const org = `tsapi-${t}`;
  await api.createOrg(org, org);
  const workerId = `w-${t}`;
  await api.createWorker(org, workerId);
  const topic = `org.${org}.worker.${workerId}`;
  const rec = recorder();
  const client = new KhalaClient({ WebSocket, url: LIVE.gateway, topics: [topic], token: api.tokenSource([topic]), onUpdate: rec.onUpdate });
  try {
    await client.start();
    await api.workerEvents(workerId, [{ type: "worker.started" }, { type: "worker.event", payload: { n: 1 } }]);
    await until(() => (rec.seen.frames.get(topic) ?? []).length >= 3, 20_000, "the worker's frames");
  } finally {
    await client.stop();
  }
  assert.deepEqual(rec.seen.frames.get(topic), range(1, 3));
  const third = rec.seen.updates.find((u) => u.type === "frame" && u.frame.seq === 3n);
  assert.equal(decodePayload(third.frame).type, "worker.event");
  const page = await api.readWorkerEvents(workerId, 1, 10);
  assert.deepEqual(page.events.map((e) => e.stream_seq), [2, 3]);
  await assert.rejects(
    api.workerEvents(workerId, [{ type: "worker.event", payload: { blob: "x".repeat(900_000) } }]),
    (error) => error instanceof ApiError && error.status === 413 && error.code === "frame_too_large",
  );
  assert.equal((await api.getWorker(workerId)).last_seq, 3); // nothing written
});

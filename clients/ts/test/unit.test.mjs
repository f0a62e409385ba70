// Unit tests: full-jitter backoff, the per-topic apply rule, the cursor stores.
import assert from "node:assert/strict";
import * as fs from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";

import { FileCursorStore, MemoryCursorStore, TopicTracker, fullJitterDelay } from "../dist/index.js";

test("full jitter: uniform below min(cap, base·2^attempt), floored by retry_after", () => {
  assert.equal(fullJitterDelay(0, { random: () => 0.999 }), 499);
  assert.equal(fullJitterDelay(3, { random: () => 0.5 }), 2000);
  assert.equal(fullJitterDelay(40, { random: () => 0.999 }), 29_970);
  assert.equal(fullJitterDelay(5, { random: () => 0 }), 0);
  assert.equal(fullJitterDelay(0, { random: () => 0 }, 2500), 2500);
});

test("idempotent apply: duplicates dropped, gaps refused, resume continues the cursor", () => {
  const t = new TopicTracker({ epoch: "e1", afterSeq: 5n });
  assert.equal(t.judge("e1", 6n), "inactive");
  t.subscribed("e1", 1n);
  assert.equal(t.judge("e1", 5n), "duplicate");
  assert.equal(t.judge("e1", 7n), "gap");
  assert.equal(t.judge("e2", 6n), "other_epoch");
  assert.equal(t.judge("e1", 6n), "apply");
  t.applied(6n);
  assert.equal(t.judge("e1", 6n), "duplicate");
  assert.deepEqual(t.cursor(), { epoch: "e1", afterSeq: 6n });
});

test("fresh event subscription starts at oldest_seq; snapshot sets the cursor to as_of", () => {
  const t = new TopicTracker();
  t.subscribed("e1", 40n);
  assert.equal(t.judge("e1", 40n), "apply");
  const d = new TopicTracker();
  d.subscribed("e1", 0n);
  d.snapshotBegin("e1", 12n);
  assert.equal(d.judge("e1", 3n), "apply");
  d.applied(3n);
  assert.equal(d.judge("e1", 3n), "duplicate");
  assert.equal(d.judge("e1", 13n), "gap");
  d.applied(9n);
  d.snapshotEnd(12n);
  assert.equal(d.judge("e1", 13n), "apply");
  assert.deepEqual(d.cursor(), { epoch: "e1", afterSeq: 12n });
  d.reset();
  assert.deepEqual(d.cursor(), { epoch: "", afterSeq: 0n });
});

test("memory and file cursor stores round-trip 64-bit cursors", async () => {
  const big = 2n ** 63n - 1n;
  const memory = new MemoryCursorStore();
  await memory.save("org.a.runs", { epoch: "e", afterSeq: big });
  assert.deepEqual((await memory.load()).get("org.a.runs"), { epoch: "e", afterSeq: big });
  const path = join(await fs.mkdtemp(join(tmpdir(), "khala-ts-")), "cursors.json");
  const file = new FileCursorStore(path, fs);
  await Promise.all([
    file.save("org.a.runs", { epoch: "e", afterSeq: big }),
    file.save("org.a.run.r1", { epoch: "e", afterSeq: 3n }),
  ]);
  await file.save("org.a.run.r1", undefined);
  const reopened = await new FileCursorStore(path, fs).load();
  assert.deepEqual([...reopened], [["org.a.runs", { epoch: "e", afterSeq: big }]]);
});

// The TypeScript SDK decodes every golden message of proto/fixtures/ identically
// (the same suite as clients/python/tests/test_golden_fixtures.py).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import {
  JSON_SUBPROTOCOL,
  PROTO,
  UnknownSchema,
  clientMessageFromJson,
  decodePayload,
  decodeServerMessage,
  encodeClientMessage,
  serverMessageJson,
  ws,
} from "../dist/index.js";

const dir = fileURLToPath(new URL("../../../proto/fixtures/", import.meta.url));
const manifest = JSON.parse(readFileSync(`${dir}manifest.json`, "utf8"));
const forms = (entry) => {
  const bin = new Uint8Array(readFileSync(dir + entry.bin));
  const text = readFileSync(dir + entry.json, "utf8");
  return { bin, text, canonical: entry.canonical ?? JSON.parse(text) };
};

test("the manifest covers every ServerMessage and ClientMessage body", () => {
  const bodies = (schema) => schema.oneofs[0].fields.map((f) => f.name);
  const have = (direction) => new Set(manifest.fixtures.filter((f) => f.direction === direction).map((f) => f.body));
  for (const name of bodies(ws.ServerMessageSchema)) assert.ok(have("server").has(name), name);
  for (const name of bodies(ws.ClientMessageSchema)) assert.ok(have("client").has(name), name);
});

for (const entry of manifest.fixtures.filter((f) => f.direction === "server")) {
  test(`decodes server/${entry.name}`, () => {
    const { bin, text, canonical } = forms(entry);
    assert.deepEqual(serverMessageJson(decodeServerMessage(bin)), canonical);
    assert.deepEqual(serverMessageJson(decodeServerMessage(text)), canonical);
  });
}

for (const entry of manifest.fixtures.filter((f) => f.direction === "client")) {
  test(`encodes client/${entry.name}`, () => {
    const { bin, text, canonical } = forms(entry);
    const message = clientMessageFromJson(canonical);
    if (!entry.unknown_fields) {
      assert.deepEqual(encodeClientMessage(message, PROTO), bin);
      assert.equal(encodeClientMessage(message, JSON_SUBPROTOCOL), text);
    }
  });
}

test("seqs beyond 2^53 stay exact (bigint)", () => {
  const entry = manifest.fixtures.find((f) => f.name === "frame_seq_2p53_plus_1");
  const { bin, text } = forms(entry);
  assert.equal(decodeServerMessage(bin).body.value.seq, 2n ** 53n + 1n);
  assert.equal(decodeServerMessage(text).body.value.seq, 2n ** 53n + 1n);
  const max = forms(manifest.fixtures.find((f) => f.name === "frame_seq_max_uint64"));
  assert.equal(decodeServerMessage(max.bin).body.value.seq, 2n ** 64n - 1n);
});

test("the max-size fixture is exactly max_frame_bytes on the JSON subprotocol", () => {
  const entry = manifest.fixtures.find((f) => f.name === "frame_max_size");
  assert.equal(Buffer.byteLength(forms(entry).text), manifest.max_frame_bytes);
});

test("payloads decode by schema_version", () => {
  const frame = (name) => decodeServerMessage(forms(manifest.fixtures.find((f) => f.name === name)).bin).body.value;
  assert.equal(decodePayload(frame("frame_doc_upsert")).runId, "run_01");
  assert.equal(decodePayload(frame("frame_event")).type, "run.output");
  assert.equal(decodePayload(frame("frame_doc_delete")), undefined);
  const unknown = frame("frame_event");
  unknown.schemaVersion = "openagents.codex.v1.Future@9";
  assert.throws(() => decodePayload(unknown), UnknownSchema);
});

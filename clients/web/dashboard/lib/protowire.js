// Table-driven protobuf decoding of frame payloads (binary even on khala.v1+json).
//
// The tables come from khala-schemas.js, generated from the proto descriptors,
// so no message layout is written by hand here. Decoded messages use the proto3
// JSON field names; fields absent on the wire get their proto3 default, 64-bit
// integers become Numbers (exact up to 2^53), enums their value names, and
// `bytes` a Uint8Array. Unknown fields are skipped, as proto3 requires.

import { ENUMS, MESSAGES, PAYLOADS } from "./khala-schemas.js";

/** A payload this client cannot decode: stop the topic and ask the user to update. */
export class UnknownSchemaError extends Error {
  constructor(topic, schemaVersion, detail = "unknown schema_version") {
    super(`${topic}: ${detail} ${JSON.stringify(schemaVersion)}; update the client`);
    this.name = "UnknownSchemaError";
    this.topic = topic;
    this.schemaVersion = schemaVersion;
  }
}

const TWO_63 = 2n ** 63n;
const TWO_64 = 2n ** 64n;

// 64-bit values become Numbers: exact up to 2^53 (seqs and millisecond times are far below).
function toNumber(value, signed) {
  if (typeof value !== "bigint") return value;
  return Number(signed && value >= TWO_63 ? value - TWO_64 : value);
}

class Reader {
  constructor(bytes) {
    this.bytes = bytes;
    this.pos = 0;
  }

  // A Number when it fits in 53 bits, else a BigInt (callers convert).
  varint() {
    let value = 0;
    let scale = 1;
    const start = this.pos;
    for (let i = 0; i < 10; i += 1) {
      if (this.pos >= this.bytes.length) throw new RangeError("truncated varint");
      const byte = this.bytes[this.pos];
      this.pos += 1;
      if (i === 7) return this.bigVarint(start);
      value += (byte & 0x7f) * scale;
      if (byte < 0x80) return value;
      scale *= 128;
    }
    throw new RangeError("varint too long");
  }

  bigVarint(start) {
    this.pos = start;
    let value = 0n;
    for (let shift = 0n; shift < 70n; shift += 7n) {
      if (this.pos >= this.bytes.length) throw new RangeError("truncated varint");
      const byte = this.bytes[this.pos];
      this.pos += 1;
      value |= BigInt(byte & 0x7f) << shift;
      if (byte < 0x80) return value & 0xffffffffffffffffn;
    }
    throw new RangeError("varint too long");
  }

  take(length) {
    if (this.pos + length > this.bytes.length) throw new RangeError("truncated field");
    const out = this.bytes.subarray(this.pos, this.pos + length);
    this.pos += length;
    return out;
  }

  skip(wireType) {
    if (wireType === 0) this.varint();
    else if (wireType === 1) this.take(8);
    else if (wireType === 2) this.take(toNumber(this.varint(), false));
    else if (wireType === 5) this.take(4);
    else throw new RangeError(`unsupported wire type ${wireType}`);
  }
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

function defaultFor(type) {
  if (type === "string") return "";
  if (type === "bytes") return new Uint8Array(0);
  if (type === "bool") return false;
  if (type === "message") return null;
  return 0;
}

function scalar(reader, type, wireType, typeName) {
  switch (type) {
    case "string":
      return utf8.decode(reader.take(toNumber(reader.varint(), false)));
    case "bytes":
      return reader.take(toNumber(reader.varint(), false)).slice();
    case "bool":
      return toNumber(reader.varint(), false) !== 0;
    case "uint32":
    case "uint64":
      return toNumber(reader.varint(), false);
    case "int32":
    case "int64":
      return toNumber(reader.varint(), true);
    case "enum": {
      const number = toNumber(reader.varint(), true);
      const names = ENUMS[typeName] || {};
      return names[String(number)] ?? number;
    }
    case "message":
      return decodeMessage(typeName, reader.take(toNumber(reader.varint(), false)));
    default:
      reader.skip(wireType);
      return undefined;
  }
}

function parseSpec([name, type, ...rest]) {
  const repeated = rest.includes("repeated");
  const typeName = rest.find((item) => item !== "repeated");
  return { name, type, typeName, repeated };
}

const specCache = new Map();

function specsOf(typeName) {
  let specs = specCache.get(typeName);
  if (!specs) {
    const fields = MESSAGES[typeName];
    if (!fields) throw new RangeError(`no table for ${typeName}`);
    specs = new Map(Object.entries(fields).map(([number, spec]) => [Number(number), parseSpec(spec)]));
    specCache.set(typeName, specs);
  }
  return specs;
}

function initial(spec) {
  if (spec.repeated) return [];
  if (spec.type === "enum") return (ENUMS[spec.typeName] || {})["0"] ?? 0;
  return defaultFor(spec.type);
}

const PACKABLE = new Set(["bool", "int32", "int64", "uint32", "uint64", "enum"]);

/** Decode `bytes` as the message `typeName` (a full proto name in the tables). */
export function decodeMessage(typeName, bytes) {
  const specs = specsOf(typeName);
  const out = {};
  for (const spec of specs.values()) out[spec.name] = initial(spec);
  const reader = new Reader(bytes);
  while (reader.pos < bytes.length) {
    const tag = toNumber(reader.varint(), false);
    const wireType = tag % 8;
    const spec = specs.get(Math.floor(tag / 8));
    if (!spec) {
      reader.skip(wireType);
    } else if (spec.repeated && wireType === 2 && PACKABLE.has(spec.type)) {
      const packed = new Reader(reader.take(toNumber(reader.varint(), false)));
      while (packed.pos < packed.bytes.length) out[spec.name].push(scalar(packed, spec.type, 0, spec.typeName));
    } else if (spec.repeated) {
      out[spec.name].push(scalar(reader, spec.type, wireType, spec.typeName));
    } else {
      out[spec.name] = scalar(reader, spec.type, wireType, spec.typeName);
    }
  }
  return out;
}

/** Base64 (standard alphabet) to bytes, in browsers and node. */
export function base64ToBytes(text) {
  if (!text) return new Uint8Array(0);
  const binary = atob(text);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) out[i] = binary.charCodeAt(i);
  return out;
}

/**
 * A frame's payload decoded by its schema_version; null for DOC_DELETE.
 * RuntimeEvent payloads also get `payload`: the parsed JSON of payloadJson.
 */
export function decodePayload(frame) {
  if (frame.kind === "FRAME_KIND_DOC_DELETE") return null;
  const typeName = PAYLOADS[frame.schemaVersion];
  if (!typeName) throw new UnknownSchemaError(frame.topic, frame.schemaVersion);
  let message;
  try {
    message = decodeMessage(typeName, frame.payloadBytes);
  } catch (error) {
    throw new UnknownSchemaError(frame.topic, frame.schemaVersion, `undecodable payload (${error.message}) of`);
  }
  if (typeName === "openagents.runtime.v1.RuntimeEvent") {
    const text = message.payloadJson.length ? utf8.decode(message.payloadJson) : "{}";
    message.payload = JSON.parse(text);
  }
  return message;
}

export const SCHEMA_VERSIONS = Object.keys(PAYLOADS);

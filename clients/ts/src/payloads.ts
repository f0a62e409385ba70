/**
 * Frame payloads, decoded by `schema_version` (never by topic): the payload of
 * every frame is binary protobuf of the type the version names, on both
 * subprotocols. A new payload version is a new entry of SCHEMAS.
 */
import { fromBinary, type DescField, type DescMessage, type Message } from "@bufbuild/protobuf";
import { CodexWorkerSummarySchema, RunSummarySchema } from "./gen/openagents/codex/v1/summaries_pb.js";
import { RuntimeEventSchema } from "./gen/openagents/runtime/v1/events_pb.js";
import { FrameKind, type KhalaFrame } from "./gen/openagents/sync/v1/frames_pb.js";

export const SCHEMAS = new Map<string, DescMessage>([
  ["openagents.codex.v1.RunSummary@1", RunSummarySchema],
  ["openagents.codex.v1.CodexWorkerSummary@1", CodexWorkerSummarySchema],
  ["openagents.runtime.v1.RuntimeEvent@1", RuntimeEventSchema],
]);

/** A frame whose schema_version this client does not know (stop the topic, keep its cursor). */
export class UnknownSchema extends Error {
  constructor(readonly schemaVersion: string) {
    super(`unknown payload schema ${JSON.stringify(schemaVersion)}`);
  }
}

/** The decoded payload of a frame; `undefined` for DOC_DELETE (the document is gone). */
export function decodePayload(frame: KhalaFrame): Message | undefined {
  if (frame.kind === FrameKind.DOC_DELETE) return undefined;
  const schema = SCHEMAS.get(frame.schemaVersion);
  if (!schema) throw new UnknownSchema(frame.schemaVersion);
  return fromBinary(schema, frame.payloadBytes);
}

/**
 * A decoded message as a plain object for UIs: camelCase keys, 64-bit integers as
 * Numbers (exact up to 2^53: timestamps and counts, not seqs), enums as value names.
 */
export function toPlain(schema: DescMessage, message: Message): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const source = message as unknown as Record<string, unknown>;
  for (const field of schema.fields) out[field.localName] = plainValue(field, source[field.localName]);
  return out;
}

function plainValue(field: DescField, value: unknown): unknown {
  switch (field.fieldKind) {
    case "enum":
      return field.enum.values.find((v) => v.number === value)?.name ?? value;
    case "message":
      return value === undefined ? undefined : toPlain(field.message, value as Message);
    case "list":
      return (value as unknown[]).map((item) =>
        field.listKind === "message" ? toPlain(field.message, item as Message) : typeof item === "bigint" ? Number(item) : item,
      );
    default:
      return typeof value === "bigint" ? Number(value) : value;
  }
}

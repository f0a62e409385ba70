/**
 * Encoding of `openagents.sync.v1` messages on the two subprotocols.
 *
 * `khala.v1+proto`: one serialized message per binary WebSocket message.
 * `khala.v1+json`: proto3 canonical JSON, compact, one per text message.
 * Unknown fields from a newer server are ignored on both. proto/fixtures/
 * holds the golden forms these functions are tested against. 64-bit fields
 * (seq, after_seq, ...) are `bigint`, so seqs beyond 2^53 stay exact.
 */
import { create, fromBinary, fromJsonString, toBinary, toJson, type MessageInitShape } from "@bufbuild/protobuf";
import {
  ClientMessageSchema,
  ServerMessageSchema,
  type ClientMessage,
  type ServerMessage,
} from "./gen/openagents/sync/v1/ws_pb.js";

export const PROTO = "khala.v1+proto";
export const JSON_SUBPROTOCOL = "khala.v1+json";
export type Subprotocol = typeof PROTO | typeof JSON_SUBPROTOCOL;

/** A ClientMessage from its fields, e.g. `clientMessage({ body: { case: "ping", value: { nonce: "n" } } })`. */
export function clientMessage(init: MessageInitShape<typeof ClientMessageSchema>): ClientMessage {
  return create(ClientMessageSchema, init);
}

/** The WebSocket payload of a ClientMessage: bytes on PROTO, text on JSON. */
export function encodeClientMessage(message: ClientMessage, protocol: Subprotocol): Uint8Array | string {
  if (protocol === JSON_SUBPROTOCOL) {
    return JSON.stringify(toJson(ClientMessageSchema, message));
  }
  return toBinary(ClientMessageSchema, message);
}

/** A ServerMessage from a binary (proto) or text (JSON) WebSocket message. */
export function decodeServerMessage(data: Uint8Array | ArrayBuffer | string): ServerMessage {
  if (typeof data === "string") {
    return fromJsonString(ServerMessageSchema, data, { ignoreUnknownFields: true });
  }
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  return fromBinary(ServerMessageSchema, bytes, { readUnknownFields: false });
}

/** The proto3 canonical JSON object of a ServerMessage (what the fixtures' manifest compares). */
export function serverMessageJson(message: ServerMessage): unknown {
  return toJson(ServerMessageSchema, message);
}

/** The proto3 canonical JSON object of a ClientMessage. */
export function clientMessageJson(message: ClientMessage): unknown {
  return toJson(ClientMessageSchema, message);
}

/** A ClientMessage from its proto3 canonical JSON object. */
export function clientMessageFromJson(json: unknown): ClientMessage {
  return fromJsonString(ClientMessageSchema, JSON.stringify(json));
}

/** A ClientMessage from a binary WebSocket message (what a server decodes). */
export function decodeClientMessage(data: Uint8Array | string): ClientMessage {
  if (typeof data === "string") {
    return fromJsonString(ClientMessageSchema, data, { ignoreUnknownFields: true });
  }
  return fromBinary(ClientMessageSchema, data, { readUnknownFields: false });
}

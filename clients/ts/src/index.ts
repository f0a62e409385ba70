/** @khala/client: the Khala TypeScript SDK. See docs/clients.md. */
export * from "./api.js";
export * from "./backoff.js";
export * from "./client.js";
export * from "./codec.js";
export * from "./cursors.js";
export * from "./payloads.js";
export * from "./tracker.js";
export * as frames from "./gen/openagents/sync/v1/frames_pb.js";
export * as ws from "./gen/openagents/sync/v1/ws_pb.js";
export * as errors from "./gen/openagents/sync/v1/errors_pb.js";
export * as summaries from "./gen/openagents/codex/v1/summaries_pb.js";
export * as events from "./gen/openagents/runtime/v1/events_pb.js";

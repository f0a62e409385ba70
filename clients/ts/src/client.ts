/**
 * KhalaClient: one WebSocket to the gateway, resumed across reconnects.
 *
 * Guarantees to the application (docs/protocol.md §5-§7):
 * - Per topic, `onUpdate` sees frames in strictly increasing `seq`, with no
 *   duplicate and no gap; a frame at or below the topic's cursor is dropped
 *   (idempotent apply), and a gap resubscribes the topic from its cursor.
 * - Updates are delivered one at a time: the next is not handed over before
 *   the promise `onUpdate` returned has settled, and a topic's cursor is saved
 *   (CursorStore) only after its frame was applied. A restart resumes from
 *   the stored cursors.
 * - `stale_cursor` (epoch_changed, cursor_ahead, retention) drops the topic's
 *   cursor, announces `reset` before any frame of the new subscription and
 *   resubscribes fresh; doc topics are bootstrapped by a snapshot
 *   (`snapshot_if_stale`). `replay_budget` retries the same cursor later.
 * - Reconnects back off with full jitter and honour `retry_after_ms`
 *   (Reconnect, rate_limited, internal); 4009 (session revoked), 4010
 *   (upgrade required) and 4003 for Origin stop the client.
 * - The sync token is refreshed (`RefreshAuth`) `refreshBeforeMs` before it
 *   expires, and a new one is minted before every connect that would use a
 *   token about to expire, and after a 4001.
 * - A socket that sends nothing (not even a Heartbeat) for 2 ×
 *   `heartbeat_interval_ms` is dropped without a close handshake and reconnected.
 */
import { fullJitterDelay, type BackoffOptions } from "./backoff.js";
import {
  JSON_SUBPROTOCOL,
  PROTO,
  clientMessage,
  decodeServerMessage,
  encodeClientMessage,
  type Subprotocol,
} from "./codec.js";
import { MemoryCursorStore, type Cursor, type CursorStore } from "./cursors.js";
import type { KhalaFrame } from "./gen/openagents/sync/v1/frames_pb.js";
import type { ServerMessage, Welcome } from "./gen/openagents/sync/v1/ws_pb.js";
import { TopicTracker } from "./tracker.js";

/** A sync token minted by control (`POST /api/sync/token`). */
export interface SyncToken {
  token: string;
  /** Unix ms when it expires. */
  expiresAtMs: number;
}

export type Update =
  | { type: "connected"; welcome: Welcome }
  | { type: "subscribed"; topic: string; epoch: string; headSeq: bigint; resumed: boolean }
  | { type: "snapshot_begin"; topic: string; epoch: string; asOfSeq: bigint }
  | { type: "frame"; topic: string; frame: KhalaFrame; inSnapshot: boolean }
  | { type: "snapshot_end"; topic: string; asOfSeq: bigint }
  | { type: "live"; topic: string; seq: bigint }
  | { type: "reset"; topic: string; reason: string }
  | { type: "error"; code: string; message: string; topic: string; reason: string }
  | { type: "disconnected"; closeCode: number; reason: string; retryInMs: number }
  | { type: "stopped"; reason: string };

/** The WebSocket constructor the client uses (the browser's, Node 22's, or `ws`). */
export type WebSocketLike = new (url: string, protocols: string[]) => WebSocket;

export interface KhalaClientOptions {
  /** `ws[s]://<gateway>/v1/ws`. */
  url: string;
  topics: string[];
  /** Mints a fresh sync token for `topics`. */
  token: () => Promise<SyncToken>;
  store?: CursorStore;
  protocol?: Subprotocol;
  clientName?: string;
  clientVersion?: string;
  /** Send a snapshot instead of stale_cursor(retention|replay_budget) on doc topics (default true). */
  snapshotIfStale?: boolean;
  /** Refresh the token this long before it expires (default: 60 s, or half the token's lifetime if shorter). */
  refreshBeforeMs?: number;
  /** A session that lasted this long resets the backoff (default 30 000 ms). */
  healthyAfterMs?: number;
  backoff?: BackoffOptions;
  onUpdate?: (update: Update) => void | Promise<void>;
  WebSocket?: WebSocketLike;
  now?: () => number;
}

/** Close codes after which reconnecting cannot help. */
const FATAL_CLOSES = new Set([4009, 4010]);
const TOPIC_ERRORS = new Set(["forbidden_topic", "invalid_topic", "too_many_subscriptions"]);

interface SessionEnd {
  closeCode: number;
  reason: string;
  retryAfterMs: number;
  healthy: boolean;
}

export function isDocTopic(topic: string): boolean {
  return topic.endsWith(".runs") || topic.endsWith(".workers");
}

export class KhalaClient {
  readonly trackers = new Map<string, TopicTracker>();
  welcome: Welcome | undefined;
  /** Sockets opened, frames dropped as duplicates, gaps healed by resubscribing. */
  readonly stats = { connections: 0, duplicates: 0, gaps: 0 };
  private readonly options: KhalaClientOptions;
  private readonly store: CursorStore;
  private readonly protocol: Subprotocol;
  private readonly now: () => number;
  private token: SyncToken | undefined;
  private tokenMintedAt = 0;
  private forceToken = false;
  private socket: WebSocket | undefined;
  private stopped = false;
  private wake: (() => void) | undefined;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private queue: Promise<void> = Promise.resolve();
  private requestSeq = 0;
  private retryAfterMs = 0;
  private running: Promise<void> | undefined;
  private welcomed = false;

  constructor(options: KhalaClientOptions) {
    this.options = options;
    this.store = options.store ?? new MemoryCursorStore();
    this.protocol = options.protocol ?? PROTO;
    this.now = options.now ?? Date.now;
  }

  /** Sockets opened so far. */
  get connections(): number {
    return this.stats.connections;
  }

  /** Load the stored cursors and connect; returns at once (updates go to `onUpdate`). */
  async start(): Promise<void> {
    const stored = await this.store.load();
    for (const topic of this.options.topics) {
      this.trackers.set(topic, new TopicTracker(stored.get(topic)));
    }
    this.running = this.loop();
  }

  /** Close the socket and stop reconnecting; resolves once every update was handled. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.refreshTimer);
    this.socket?.close(1000);
    this.wake?.();
    await this.running;
    await this.queue;
  }

  /** Resolves once every update received so far was handled and its cursor saved. */
  async idle(): Promise<void> {
    let current: Promise<void>;
    do {
      current = this.queue;
      await current;
    } while (current !== this.queue);
  }

  /** Follow more topics: subscribed now on the open socket, and on every reconnect. */
  async follow(topics: string[]): Promise<void> {
    const stored = await this.store.load();
    const added = topics.filter((topic) => !this.trackers.has(topic));
    for (const topic of added) this.trackers.set(topic, new TopicTracker(stored.get(topic)));
    if (this.welcomed) this.subscribe(added);
  }

  /** Stop following topics; with `forget`, their stored cursors are dropped too. */
  async unfollow(topics: string[], options: { forget?: boolean } = {}): Promise<void> {
    const removed = topics.filter((topic) => this.trackers.delete(topic));
    if (removed.length === 0) return;
    if (this.welcomed) {
      this.requestSeq += 1;
      this.send(clientMessage({ body: { case: "unsubscribe", value: { requestId: `unsub-${this.requestSeq}`, topics: removed } } }));
    }
    if (options.forget) for (const topic of removed) await this.store.save(topic, undefined);
  }

  /** Mint a new sync token now and swap it in on the open socket (e.g. after joining an org). */
  async refreshToken(): Promise<void> {
    const token = await this.mint();
    if (this.welcomed) {
      this.send(clientMessage({ body: { case: "refreshAuth", value: { token: token.token } } }));
      this.scheduleRefresh();
    }
  }

  /** The cursor a topic would resume from now. */
  cursor(topic: string): Cursor | undefined {
    return this.trackers.get(topic)?.cursor();
  }

  private async loop(): Promise<void> {
    let attempt = 0;
    while (!this.stopped) {
      const end = await this.session();
      if (this.stopped) break;
      if (FATAL_CLOSES.has(end.closeCode) || (end.closeCode === 4003 && /origin/i.test(end.reason))) {
        this.stopped = true;
        await this.emit({ type: "stopped", reason: `closed ${end.closeCode} ${end.reason}`.trim() });
        break;
      }
      attempt = end.healthy ? 0 : attempt + 1;
      const delay = fullJitterDelay(attempt, this.options.backoff, end.retryAfterMs);
      await this.emit({ type: "disconnected", closeCode: end.closeCode, reason: end.reason, retryInMs: delay });
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delay);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  /** How long before expiry a token is renewed. */
  private margin(): number {
    if (this.options.refreshBeforeMs !== undefined) return this.options.refreshBeforeMs;
    const lifetime = this.token ? this.token.expiresAtMs - this.tokenMintedAt : 120_000;
    return Math.min(60_000, lifetime / 2);
  }

  private async mint(): Promise<SyncToken> {
    const token = await this.options.token();
    this.token = token;
    this.tokenMintedAt = this.now();
    return token;
  }

  private async freshToken(): Promise<SyncToken> {
    if (this.forceToken || !this.token || this.token.expiresAtMs - this.now() < this.margin()) {
      await this.mint();
      this.forceToken = false;
    }
    return this.token!;
  }

  private async session(): Promise<SessionEnd> {
    let token: SyncToken;
    try {
      token = await this.freshToken();
    } catch (error) {
      return { closeCode: 0, reason: `token: ${String(error)}`, retryAfterMs: 0, healthy: false };
    }
    const Ctor = this.options.WebSocket ?? (globalThis.WebSocket as unknown as WebSocketLike);
    const ws = new Ctor(this.options.url, [this.protocol]);
    ws.binaryType = "arraybuffer";
    this.socket = ws;
    this.retryAfterMs = 0;
    const openedAt = this.now();
    let welcomed = false;
    for (const tracker of this.trackers.values()) tracker.active = false;
    return new Promise<SessionEnd>((resolve) => {
      let watchdog: ReturnType<typeof setTimeout> | undefined;
      let ended = false;
      const end = (closeCode: number, reason: string) => {
        if (ended) return;
        ended = true;
        this.welcomed = false;
        clearTimeout(watchdog);
        clearTimeout(this.refreshTimer);
        if (closeCode === 4001) this.forceToken = true;
        const healthy = welcomed && this.now() - openedAt >= (this.options.healthyAfterMs ?? 30_000);
        this.queue.then(() => resolve({ closeCode, reason, retryAfterMs: this.retryAfterMs, healthy }));
      };
      // A socket silent for 2 heartbeat intervals is dead: drop it without a close handshake.
      const feedWatchdog = () => {
        clearTimeout(watchdog);
        const interval = this.welcome?.heartbeatIntervalMs ?? 0;
        if (!welcomed || interval <= 0) return;
        watchdog = setTimeout(() => {
          ws.onclose = null;
          ws.onmessage = null;
          ws.close(4000, "heartbeat timeout");
          end(1006, "no message for 2 heartbeat intervals");
        }, 2 * interval);
      };
      ws.onopen = () => {
        this.stats.connections += 1;
        this.send(
          clientMessage({
            body: {
              case: "hello",
              value: {
                token: token.token,
                clientName: this.options.clientName ?? "khala-ts",
                clientVersion: this.options.clientVersion ?? "0.1.0",
              },
            },
          }),
        );
      };
      ws.onmessage = (event: MessageEvent) => {
        const message = decodeServerMessage(event.data as ArrayBuffer | string);
        if (message.body.case === "welcome") {
          welcomed = true;
          this.welcome = message.body.value;
        }
        feedWatchdog();
        this.queue = this.queue.then(() => this.handle(message)).catch((error) => {
          console.error("khala: update handler failed", error);
        });
      };
      ws.onclose = (event: CloseEvent) => end(event.code, event.reason);
    });
  }

  private send(message: ReturnType<typeof clientMessage>): void {
    const ws = this.socket;
    if (ws && ws.readyState === 1) ws.send(encodeClientMessage(message, this.protocol) as string);
  }

  private subscribe(topics: string[]): void {
    if (topics.length === 0) return;
    const cursors = topics.map((topic) => {
      const c = this.trackers.get(topic)!.cursor();
      return { topic, epoch: c.epoch, afterSeq: c.afterSeq };
    });
    this.requestSeq += 1;
    this.send(
      clientMessage({
        body: {
          case: "subscribe",
          value: { requestId: `sub-${this.requestSeq}`, cursors, snapshotIfStale: this.options.snapshotIfStale ?? true },
        },
      }),
    );
  }

  private scheduleRefresh(): void {
    clearTimeout(this.refreshTimer);
    if (!this.token || this.stopped) return;
    const inMs = Math.max(0, this.token.expiresAtMs - this.margin() - this.now());
    this.refreshTimer = setTimeout(async () => {
      try {
        const token = await this.mint();
        this.send(clientMessage({ body: { case: "refreshAuth", value: { token: token.token } } }));
        this.scheduleRefresh();
      } catch {
        this.refreshTimer = setTimeout(() => this.scheduleRefresh(), 5_000);
      }
    }, inMs);
  }

  private async emit(update: Update): Promise<void> {
    await this.options.onUpdate?.(update);
  }

  private async handle(message: ServerMessage): Promise<void> {
    const body = message.body;
    switch (body.case) {
      case "welcome":
        this.welcome = body.value;
        this.welcomed = true;
        await this.emit({ type: "connected", welcome: body.value });
        this.scheduleRefresh();
        this.subscribe([...this.trackers.keys()]);
        return;
      case "subscribed": {
        const tracker = this.trackers.get(body.value.topic);
        if (!tracker) return;
        const resumed = tracker.last > 0n;
        tracker.subscribed(body.value.epoch, body.value.oldestSeq);
        await this.emit({
          type: "subscribed",
          topic: body.value.topic,
          epoch: body.value.epoch,
          headSeq: body.value.headSeq,
          resumed,
        });
        return;
      }
      case "snapshotBegin": {
        const tracker = this.trackers.get(body.value.topic);
        if (!tracker?.active) return;
        tracker.snapshotBegin(body.value.epoch, body.value.asOfSeq);
        await this.emit({ type: "snapshot_begin", topic: body.value.topic, epoch: body.value.epoch, asOfSeq: body.value.asOfSeq });
        return;
      }
      case "snapshotEnd": {
        const tracker = this.trackers.get(body.value.topic);
        if (!tracker?.active || !tracker.inSnapshot) return;
        tracker.snapshotEnd(body.value.asOfSeq);
        await this.emit({ type: "snapshot_end", topic: body.value.topic, asOfSeq: body.value.asOfSeq });
        await this.store.save(body.value.topic, tracker.cursor());
        return;
      }
      case "frame":
        await this.applyFrame(body.value);
        return;
      case "frames":
        for (const frame of body.value.frames) await this.applyFrame(frame);
        return;
      case "watermark":
        if (body.value.live) await this.emit({ type: "live", topic: body.value.topic, seq: body.value.seq });
        return;
      case "error":
        await this.handleError(body.value);
        return;
      case "reconnect":
        this.retryAfterMs = body.value.retryAfterMs;
        this.socket?.close(1000, "reconnect");
        return;
      default:
        return; // heartbeat, pong, or a body this version does not know
    }
  }

  private async applyFrame(frame: KhalaFrame): Promise<void> {
    const tracker = this.trackers.get(frame.topic);
    if (!tracker) return;
    const verdict = tracker.judge(frame.epoch, frame.seq);
    if (verdict === "apply") {
      await this.emit({ type: "frame", topic: frame.topic, frame, inSnapshot: tracker.inSnapshot });
      tracker.applied(frame.seq);
      if (!tracker.inSnapshot) await this.store.save(frame.topic, tracker.cursor());
    } else if (verdict === "duplicate") {
      this.stats.duplicates += 1;
    } else if (verdict === "gap") {
      this.stats.gaps += 1;
      // Never skip: resubscribe the topic from its cursor.
      tracker.active = false;
      this.requestSeq += 1;
      this.send(clientMessage({ body: { case: "unsubscribe", value: { requestId: `unsub-${this.requestSeq}`, topics: [frame.topic] } } }));
      this.subscribe([frame.topic]);
    }
  }

  private async handleError(error: {
    code: string;
    message: string;
    topic: string;
    reason: string;
    retryAfterMs: number;
  }): Promise<void> {
    if (error.retryAfterMs > 0) this.retryAfterMs = error.retryAfterMs;
    await this.emit({ type: "error", code: error.code, message: error.message, topic: error.topic, reason: error.reason });
    const tracker = error.topic ? this.trackers.get(error.topic) : undefined;
    if (!tracker) return;
    if (error.code === "stale_cursor") {
      if (error.reason === "replay_budget" && error.retryAfterMs > 0) {
        tracker.active = false;
        setTimeout(() => this.subscribe([error.topic]), error.retryAfterMs);
        return;
      }
      tracker.reset();
      await this.store.save(error.topic, undefined);
      await this.emit({ type: "reset", topic: error.topic, reason: error.reason });
      this.subscribe([error.topic]);
    } else if (error.code === "internal") {
      tracker.active = false;
      setTimeout(() => this.subscribe([error.topic]), Math.max(error.retryAfterMs, 1000));
    } else if (TOPIC_ERRORS.has(error.code)) {
      tracker.active = false;
    }
  }
}

export { JSON_SUBPROTOCOL, PROTO };

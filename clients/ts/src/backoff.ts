/**
 * Reconnect delays: exponential backoff with full jitter (docs/protocol.md §7):
 * `sleep = random(0, min(cap, base × 2^attempt))`. A server's `retry_after_ms`
 * is a floor the client never undercuts.
 */
export interface BackoffOptions {
  /** First delay's ceiling (ms); default 500. */
  baseMs?: number;
  /** Largest ceiling (ms); default 30 000. */
  capMs?: number;
  /** Uniform random in [0, 1); default Math.random. */
  random?: () => number;
}

/** The delay before reconnect attempt `attempt` (0-based), at least `floorMs`. */
export function fullJitterDelay(attempt: number, options: BackoffOptions = {}, floorMs = 0): number {
  const base = options.baseMs ?? 500;
  const cap = options.capMs ?? 30_000;
  const random = options.random ?? Math.random;
  const ceiling = Math.min(cap, base * 2 ** Math.min(attempt, 30));
  return Math.max(floorMs, Math.floor(random() * ceiling));
}

/**
 * Per-topic apply rule (pure): frames arrive in strictly increasing `seq` per
 * (topic, epoch), with no gap; a frame at or below the cursor is a duplicate
 * and is dropped, which makes applying idempotent across reconnects. Inside a
 * snapshot (`SnapshotBegin` … `SnapshotEnd`) DOC frames have increasing seqs
 * up to `as_of_seq` with holes (superseded docs), and the cursor becomes
 * `as_of_seq` at the end.
 */
import type { Cursor } from "./cursors.js";

export type Verdict = "apply" | "duplicate" | "gap" | "other_epoch" | "inactive";

export class TopicTracker {
  epoch: string;
  last: bigint;
  active = false;
  private expectedNext: bigint;
  private snapshotAsOf: bigint | undefined;
  private snapshotLast = 0n;

  constructor(cursor?: Cursor) {
    this.epoch = cursor?.epoch ?? "";
    this.last = cursor?.afterSeq ?? 0n;
    this.expectedNext = this.last + 1n;
  }

  /** The resume position to subscribe with. */
  cursor(): Cursor {
    return { epoch: this.last > 0n ? this.epoch : "", afterSeq: this.last };
  }

  /** Forget everything (stale cursor): the next subscription is fresh. */
  reset(): void {
    this.epoch = "";
    this.last = 0n;
    this.expectedNext = 1n;
    this.snapshotAsOf = undefined;
    this.active = false;
  }

  /** The server accepted the cursor (or a fresh subscription). */
  subscribed(epoch: string, oldestSeq: bigint): void {
    this.active = true;
    this.snapshotAsOf = undefined;
    if (this.last === 0n) {
      this.epoch = epoch;
      this.expectedNext = oldestSeq > 0n ? oldestSeq : 1n;
    }
  }

  snapshotBegin(epoch: string, asOfSeq: bigint): void {
    this.epoch = epoch;
    this.snapshotAsOf = asOfSeq;
    this.snapshotLast = 0n;
  }

  snapshotEnd(asOfSeq: bigint): void {
    this.snapshotAsOf = undefined;
    this.last = asOfSeq;
    this.expectedNext = asOfSeq + 1n;
  }

  get inSnapshot(): boolean {
    return this.snapshotAsOf !== undefined;
  }

  /** Decide one frame (no change: call `applied` once it is applied). */
  judge(epoch: string, seq: bigint): Verdict {
    if (!this.active) return "inactive";
    if (epoch !== this.epoch) return "other_epoch";
    if (this.snapshotAsOf !== undefined) {
      if (seq <= this.snapshotLast) return "duplicate";
      return seq > this.snapshotAsOf ? "gap" : "apply";
    }
    if (seq <= this.last) return "duplicate";
    return seq === this.expectedNext ? "apply" : "gap";
  }

  applied(seq: bigint): void {
    if (this.snapshotAsOf !== undefined) {
      this.snapshotLast = seq;
    } else {
      this.last = seq;
      this.expectedNext = seq + 1n;
    }
  }
}

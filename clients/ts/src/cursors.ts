/**
 * Per-topic cursor stores: where a client keeps `(epoch, afterSeq)` of every
 * topic so that a restart (or a browser reload) resumes exactly where it
 * stopped. `MemoryCursorStore` (tests, short-lived processes),
 * `IndexedDbCursorStore` (browsers) and `FileCursorStore` (Node, in
 * `@khala/client/node`-free form: it takes the `fs/promises` module).
 */

/** A resume position: every frame of the topic up to and including `afterSeq` of `epoch` was applied. */
export interface Cursor {
  epoch: string;
  afterSeq: bigint;
}

export interface CursorStore {
  /** Every stored cursor. */
  load(): Promise<Map<string, Cursor>>;
  /** Store (or, with `undefined`, forget) a topic's cursor; resolves once durable. */
  save(topic: string, cursor: Cursor | undefined): Promise<void>;
}

export class MemoryCursorStore implements CursorStore {
  readonly cursors: Map<string, Cursor>;

  constructor(initial?: Iterable<[string, Cursor]>) {
    this.cursors = new Map(initial ?? []);
  }

  async load(): Promise<Map<string, Cursor>> {
    return new Map(this.cursors);
  }

  async save(topic: string, cursor: Cursor | undefined): Promise<void> {
    if (cursor === undefined) this.cursors.delete(topic);
    else this.cursors.set(topic, { ...cursor });
  }
}

interface FsLike {
  readFile(path: string, encoding: "utf8"): Promise<string>;
  writeFile(path: string, data: string, encoding: "utf8"): Promise<void>;
  rename(from: string, to: string): Promise<void>;
}

/** A JSON file of cursors, replaced atomically (write + rename) on every save (Node). */
export class FileCursorStore implements CursorStore {
  private cursors: Map<string, Cursor> | undefined;
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly path: string,
    private readonly fs: FsLike,
  ) {}

  async load(): Promise<Map<string, Cursor>> {
    if (this.cursors === undefined) {
      this.cursors = new Map();
      let text = "";
      try {
        text = await this.fs.readFile(this.path, "utf8");
      } catch {
        text = "";
      }
      if (text) {
        const data = JSON.parse(text) as Record<string, { epoch: string; after_seq: string }>;
        for (const [topic, c] of Object.entries(data)) {
          this.cursors.set(topic, { epoch: c.epoch, afterSeq: BigInt(c.after_seq) });
        }
      }
    }
    return new Map(this.cursors);
  }

  save(topic: string, cursor: Cursor | undefined): Promise<void> {
    this.chain = this.chain.then(async () => {
      const cursors = this.cursors ?? (await this.load(), this.cursors!);
      if (cursor === undefined) cursors.delete(topic);
      else cursors.set(topic, { ...cursor });
      const data: Record<string, { epoch: string; after_seq: string }> = {};
      for (const [t, c] of [...cursors].sort(([a], [b]) => (a < b ? -1 : 1))) {
        data[t] = { epoch: c.epoch, after_seq: c.afterSeq.toString() };
      }
      const tmp = `${this.path}.tmp`;
      await this.fs.writeFile(tmp, JSON.stringify(data, null, 2), "utf8");
      await this.fs.rename(tmp, this.path);
    });
    return this.chain;
  }
}

/** Cursors in an IndexedDB object store (browsers): one record per topic, seqs as decimal strings. */
export class IndexedDbCursorStore implements CursorStore {
  private db: Promise<IDBDatabase> | undefined;

  constructor(
    private readonly dbName = "khala-cursors",
    private readonly factory: IDBFactory = globalThis.indexedDB,
  ) {}

  private open(): Promise<IDBDatabase> {
    this.db ??= new Promise((resolve, reject) => {
      const request = this.factory.open(this.dbName, 1);
      request.onupgradeneeded = () => request.result.createObjectStore("cursors");
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
    return this.db;
  }

  async load(): Promise<Map<string, Cursor>> {
    const db = await this.open();
    return new Promise((resolve, reject) => {
      const out = new Map<string, Cursor>();
      const tx = db.transaction("cursors", "readonly");
      const request = tx.objectStore("cursors").openCursor();
      request.onsuccess = () => {
        const row = request.result;
        if (row === null) return;
        const value = row.value as { epoch: string; afterSeq: string };
        out.set(String(row.key), { epoch: value.epoch, afterSeq: BigInt(value.afterSeq) });
        row.continue();
      };
      tx.oncomplete = () => resolve(out);
      tx.onerror = () => reject(tx.error);
    });
  }

  async save(topic: string, cursor: Cursor | undefined): Promise<void> {
    const db = await this.open();
    return new Promise((resolve, reject) => {
      const tx = db.transaction("cursors", "readwrite");
      const store = tx.objectStore("cursors");
      if (cursor === undefined) store.delete(topic);
      else store.put({ epoch: cursor.epoch, afterSeq: cursor.afterSeq.toString() }, topic);
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error);
    });
  }
}

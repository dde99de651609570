// Where each subscription's last delivered cursor is kept, so that a reloaded page or a restarted
// process resumes where it was. Pluggable: anything with get/set, sync or async.

/** Keeps one string per key; get answers null for a key never set. */
export interface CursorStorage {
  get(key: string): string | null | Promise<string | null>;
  set(key: string, value: string): void | Promise<void>;
}

/** Cursors in memory: they last as long as the object (share it between clients to resume). */
export function memoryStorage(): CursorStorage {
  const values = new Map<string, string>();
  return {
    get: (key) => values.get(key) ?? null,
    set: (key, value) => {
      values.set(key, value);
    },
  };
}

/** Cursors in a Web Storage object: `localStorage` by default (what survives a page reload). */
export function localStorageStorage(storage?: Storage): CursorStorage {
  const target = storage ?? globalThis.localStorage;
  if (!target) throw new TypeError("localStorageStorage: no Storage given and no globalThis.localStorage");
  return {
    get: (key) => target.getItem(key),
    set: (key, value) => target.setItem(key, value),
  };
}

const STORE = "cursors";

function promised<T>(request: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

function openDatabase(factory: IDBFactory, name: string): Promise<IDBDatabase> {
  const request = factory.open(name, 1);
  request.onupgradeneeded = () => {
    if (!request.result.objectStoreNames.contains(STORE)) request.result.createObjectStore(STORE);
  };
  return promised(request);
}

/** Cursors in IndexedDB (database `name`, default "timebank-realtime", object store "cursors"): for
 * pages whose storage is IndexedDB already, or a worker, which has no localStorage. */
export function indexedDbStorage(options: { name?: string; indexedDB?: IDBFactory } = {}): CursorStorage {
  const factory = options.indexedDB ?? globalThis.indexedDB;
  if (!factory) throw new TypeError("indexedDbStorage: no IndexedDB in this environment");
  let database: Promise<IDBDatabase> | null = null;
  const store = async (mode: IDBTransactionMode): Promise<IDBObjectStore> => {
    database ??= openDatabase(factory, options.name ?? "timebank-realtime");
    return (await database).transaction(STORE, mode).objectStore(STORE);
  };
  return {
    async get(key) {
      const value: unknown = await promised((await store("readonly")).get(key));
      return typeof value === "string" ? value : null;
    },
    async set(key, value) {
      await promised((await store("readwrite")).put(value, key));
    },
  };
}

/** The default: localStorage where there is one (a browser page), else memory (Node, a worker). */
export function defaultStorage(): CursorStorage {
  try {
    if (globalThis.localStorage) return localStorageStorage(globalThis.localStorage);
  } catch {
    // Reading localStorage throws where storage is blocked (a sandboxed iframe, some private modes).
  }
  return memoryStorage();
}

/** Writes cursors to a storage one at a time per key, newest value last: an async storage could
 * otherwise finish an older write after a newer one and move the stored cursor back. */
export class CursorWriter {
  private readonly latest = new Map<string, string>();
  private readonly writing = new Map<string, Promise<void>>();

  constructor(private readonly storage: CursorStorage, private readonly onError: (error: Error) => void) {}

  write(key: string, value: string): void {
    this.latest.set(key, value);
    if (!this.writing.has(key)) this.writing.set(key, this.drain(key));
  }

  /** Resolves once every value written so far has landed (or failed, told to onError). */
  async flush(): Promise<void> {
    while (this.writing.size > 0) await Promise.all(this.writing.values());
  }

  private async drain(key: string): Promise<void> {
    try {
      for (let value = this.latest.get(key); value !== undefined; value = this.latest.get(key)) {
        this.latest.delete(key);
        try {
          await this.storage.set(key, value);
        } catch (error) {
          this.onError(error instanceof Error ? error : new Error(String(error)));
        }
      }
    } finally {
      this.writing.delete(key);
    }
  }
}

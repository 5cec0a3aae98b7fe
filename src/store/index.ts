// openMemoryStore(): the one call an app makes to get its memory store. MEMORY_TYPE picks the
// backend when the options do not, which makes rollback to SQLite a configuration change:
//   MEMORY_TYPE=postgres (default)  the migrated schema, on DATABASE_URL or embedded PGlite
//   MEMORY_TYPE=sqlite              the app's own SQLite file (MEMORY_SQLITE_PATH)
import { DEFAULT_PGLITE_DIR, openDb, type Db, type TargetOptions } from '../postgres/connection.js';
import { UsageError } from '../errors.js';
import { PostgresMemoryStore } from './postgres-store.js';
import { SqliteMemoryStore, type SqliteStoreOptions } from './sqlite-store.js';
import type { MemoryStore, TextEmbedder } from './types.js';

export type MemoryBackend = 'sqlite' | 'postgres';

export interface OpenMemoryStoreOptions {
  /** Backend; default $MEMORY_TYPE, else 'postgres'. */
  type?: MemoryBackend | string;
  /** Turns text into vectors; its model and width must be those of the stored vectors. */
  embedder: TextEmbedder;
  /** SQLite backend: the app's memory file; default $MEMORY_SQLITE_PATH. */
  sqlitePath?: string;
  /** SQLite backend options (create the file when missing: default true). */
  sqlite?: SqliteStoreOptions;
  /** Postgres backend: where; default $DATABASE_URL, else embedded PGlite in ./.memory-migrate/pgdata. */
  target?: TargetOptions;
  /** Postgres backend: an open connection to use instead of `target` (the store does not close it). */
  db?: Db;
  /** Environment to read MEMORY_TYPE / MEMORY_SQLITE_PATH / DATABASE_URL from (default process.env). */
  env?: Record<string, string | undefined>;
}

/** The backend the options (or MEMORY_TYPE) ask for; UsageError for anything else. */
export function resolveMemoryType(type?: string, env: Record<string, string | undefined> = process.env): MemoryBackend {
  const fromEnv = env['MEMORY_TYPE'];
  const value = (type ?? (fromEnv && fromEnv.trim() !== '' ? fromEnv : 'postgres')).trim().toLowerCase();
  if (value === 'sqlite' || value === 'postgres') return value;
  const where = type !== undefined ? 'options.type' : 'MEMORY_TYPE';
  throw new UsageError(`${where} must be sqlite or postgres, not "${type ?? fromEnv}"`);
}

export async function openMemoryStore(options: OpenMemoryStoreOptions): Promise<MemoryStore> {
  const env = options.env ?? process.env;
  if (!options.embedder) throw new UsageError('openMemoryStore needs an embedder (model, dimensions, embed())');
  const type = resolveMemoryType(options.type, env);
  if (type === 'sqlite') {
    const path = options.sqlitePath ?? env['MEMORY_SQLITE_PATH'];
    if (!path) throw new UsageError('MEMORY_TYPE=sqlite needs the memory file: pass sqlitePath or set MEMORY_SQLITE_PATH');
    return SqliteMemoryStore.open(path, options.embedder, options.sqlite);
  }
  if (options.db) return PostgresMemoryStore.open(options.db, options.embedder);
  const target: TargetOptions =
    options.target ?? (env['DATABASE_URL'] ? { databaseUrl: env['DATABASE_URL'] } : { pgliteDir: DEFAULT_PGLITE_DIR });
  const db = await openDb(target);
  try {
    return await PostgresMemoryStore.open(db, options.embedder, { ownsDb: true });
  } catch (err) {
    await db.close().catch(() => {});
    throw err;
  }
}

export { PostgresMemoryStore, SqliteMemoryStore };
export type { SqliteStoreOptions };

// One small interface over the two ways we reach PostgreSQL: postgres.js against a real
// server, and PGlite (PostgreSQL in WebAssembly, in-process) as the embedded default.
// Everything above this file talks to `Db` only, so every feature runs on both.
import { mkdirSync } from 'node:fs';
import postgres from 'postgres';
import { PGlite } from '@electric-sql/pglite';
import { vector } from '@electric-sql/pglite-pgvector';
import { maskUrl } from '../secrets.js';

export type Row = Record<string, any>;

export interface Db {
  readonly kind: 'pglite' | 'postgres';
  /** Human description with secrets masked, e.g. "PostgreSQL at postgres://u:***@h/db". */
  readonly description: string;
  /** One statement, with $1.. parameters. */
  query<T extends Row = Row>(text: string, params?: unknown[]): Promise<T[]>;
  /** A whole SQL script (many statements, $$ bodies and all), sent as one simple query. */
  exec(script: string): Promise<void>;
  /** Runs fn in one transaction; rolls back if it throws. */
  transaction<T>(fn: (tx: Db) => Promise<T>): Promise<T>;
  /** COPY table (columns) FROM binary data. `data` is a complete PGCOPY stream. */
  copyBinary(table: string, columns: string[], data: Uint8Array): Promise<void>;
  close(): Promise<void>;
}

export interface TargetOptions {
  databaseUrl?: string;
  pgliteDir?: string;
  /** Connect timeout in seconds for a real server. */
  connectTimeout?: number;
}

export const DEFAULT_PGLITE_DIR = './.memory-migrate/pgdata';

export function describeTarget(opts: TargetOptions): string {
  const url = opts.databaseUrl;
  return url ? `PostgreSQL at ${maskUrl(url)}` : `embedded PGlite in ${opts.pgliteDir ?? DEFAULT_PGLITE_DIR}`;
}

export async function openDb(opts: TargetOptions): Promise<Db> {
  if (opts.databaseUrl) return openPostgres(opts.databaseUrl, opts.connectTimeout ?? 10);
  return openPglite(opts.pgliteDir ?? DEFAULT_PGLITE_DIR);
}

// ---------------------------------------------------------------- postgres.js

type Sql = postgres.Sql<{}>;
type TxSql = postgres.TransactionSql<{}>;

export async function openPostgres(url: string, connectTimeout = 10): Promise<Db> {
  const sql = postgres(url, {
    max: 4,
    connect_timeout: connectTimeout,
    onnotice: () => {},
    // Keep timestamps and json as the server sends them; callers decide how to read them.
    types: {},
    connection: { application_name: 'memory-migrate' },
  });
  const db = wrapPostgres(sql, `PostgreSQL at ${maskUrl(url)}`);
  // Surface connection problems now, with a clear error, instead of at the first real query.
  await db.query('SELECT 1');
  return {
    ...db,
    close: async () => {
      await sql.end({ timeout: 5 });
    },
  };
}

function wrapPostgres(sql: Sql | TxSql, description: string): Db {
  const db: Db = {
    kind: 'postgres',
    description,
    async query<T extends Row = Row>(text: string, params: unknown[] = []) {
      const rows = await sql.unsafe(text, params as any[]);
      return rows as unknown as T[];
    },
    async exec(script: string) {
      await sql.unsafe(script).simple();
    },
    async transaction<T>(fn: (tx: Db) => Promise<T>): Promise<T> {
      if (!('begin' in sql)) {
        // Already inside a transaction: use a savepoint so nesting works like PGlite's.
        return (await (sql as TxSql).savepoint((tx) => fn(wrapPostgres(tx, description)))) as T;
      }
      return (await (sql as Sql).begin((tx) => fn(wrapPostgres(tx, description)))) as T;
    },
    async copyBinary(table: string, columns: string[], data: Uint8Array) {
      const cols = columns.map(quoteIdent).join(', ');
      const stream = await sql.unsafe(`COPY ${table} (${cols}) FROM STDIN WITH (FORMAT binary)`).writable();
      await new Promise<void>((resolve, reject) => {
        stream.on('error', reject);
        stream.on('finish', () => resolve());
        stream.end(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
      });
    },
    async close() {
      /* a transaction handle is closed by its owner */
    },
  };
  return db;
}

// ---------------------------------------------------------------- PGlite

type PgliteLike = Pick<PGlite, 'query' | 'exec'> & { transaction?: PGlite['transaction'] };

export async function openPglite(dir: string): Promise<Db> {
  let dataDir = dir;
  if (!dir.startsWith('memory://')) {
    mkdirSync(dir, { recursive: true });
  } else {
    dataDir = 'memory://';
  }
  const pg = await PGlite.create({ dataDir, extensions: { vector } });
  const db = wrapPglite(pg, `embedded PGlite in ${dir}`);
  return {
    ...db,
    close: async () => {
      await pg.close();
    },
  };
}

function wrapPglite(pg: PgliteLike, description: string): Db {
  const db: Db = {
    kind: 'pglite',
    description,
    async query<T extends Row = Row>(text: string, params: unknown[] = []) {
      const res = await pg.query<T>(text, params);
      return res.rows;
    },
    async exec(script: string) {
      await pg.exec(script);
    },
    async transaction<T>(fn: (tx: Db) => Promise<T>): Promise<T> {
      if (!pg.transaction) {
        // PGlite has no nested transactions; a savepoint gives the same all-or-nothing.
        const name = `sp_${Math.random().toString(36).slice(2, 10)}`;
        await pg.exec(`SAVEPOINT ${name}`);
        try {
          const out = await fn(db);
          await pg.exec(`RELEASE SAVEPOINT ${name}`);
          return out;
        } catch (err) {
          await pg.exec(`ROLLBACK TO SAVEPOINT ${name}`);
          throw err;
        }
      }
      return pg.transaction((tx) => fn(wrapPglite(tx as unknown as PgliteLike, description)));
    },
    async copyBinary(table: string, columns: string[], data: Uint8Array) {
      const cols = columns.map(quoteIdent).join(', ');
      // COPY through pglite-socket kills the backend; the /dev/blob device is PGlite's own path.
      await pg.query(`COPY ${table} (${cols}) FROM '/dev/blob' WITH (FORMAT binary)`, [], {
        blob: new Blob([data]),
      });
    },
    async close() {},
  };
  return db;
}

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

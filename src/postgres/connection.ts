// One small interface over the two ways we reach PostgreSQL: postgres.js against a real
// server, and PGlite (PostgreSQL in WebAssembly, in-process) as the embedded default.
// Everything above this file talks to `Db` only, so every feature runs on both.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import postgres from 'postgres';
import { PGlite } from '@electric-sql/pglite';
import { vector } from '@electric-sql/pglite-pgvector';
import { maskUrl, redact } from '../secrets.js';
import { RunError, UsageError } from '../errors.js';
import { quoteIdent } from '../sql-identifier.js';
import { ownSchemaFirst } from './adopted-table.js';

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
  /**
   * Takes a session-level advisory lock on a connection of its own, held until the returned
   * release() is called; null when another session holds it.
   */
  tryAdvisoryLock(key: number): Promise<(() => Promise<void>) | null>;
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
  if (opts.databaseUrl) {
    checkDatabaseUrl(opts.databaseUrl);
    try {
      return await openPostgres(opts.databaseUrl, opts.connectTimeout ?? 10);
    } catch (err) {
      throw describeConnectError(err, opts.databaseUrl, opts.connectTimeout ?? 10);
    }
  }
  return openPglite(opts.pgliteDir ?? DEFAULT_PGLITE_DIR);
}

/** Opens the target, runs fn on it, and closes it whatever happens. */
export async function withDb<T>(opts: TargetOptions, fn: (db: Db) => Promise<T>): Promise<T> {
  const db = await openDb(opts);
  try {
    return await fn(db);
  } finally {
    await db.close();
  }
}

/** A malformed DATABASE_URL is bad input (exit 2), caught before any connection attempt. */
export function checkDatabaseUrl(url: string): void {
  let parsed: URL | null = null;
  try {
    parsed = new URL(url);
  } catch {
    parsed = null;
  }
  if (!parsed || !/^postgres(ql)?:$/.test(parsed.protocol) || !parsed.hostname) {
    throw new UsageError(
      `DATABASE_URL is malformed (${maskUrl(url)}): use postgres://user:password@host:5432/database, or unset it to use embedded PGlite`,
    );
  }
}

/** Turns a driver's connection failure into one line that names the problem and the fix. */
export function describeConnectError(err: unknown, url: string, connectTimeout = 10): Error {
  const e = err as { code?: string; message?: string; errno?: string };
  const where = maskUrl(url);
  const msg = redact(e?.message ?? String(err));
  switch (e?.code) {
    case 'ECONNREFUSED':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new UsageError(`cannot reach PostgreSQL at ${where} (${e.code}): check the host and port and that the server is running`);
    case 'CONNECT_TIMEOUT':
    case 'ETIMEDOUT':
      return new UsageError(
        `cannot reach PostgreSQL at ${where}: no answer within ${connectTimeout} s (--connect-timeout); check the host, port and firewall, and that the server is running`,
      );
    case '28P01':
    case '28000':
      return new UsageError(`PostgreSQL authentication failed for ${where}: check the user name and password in DATABASE_URL`);
    case '3D000':
      return new UsageError(`the database in ${where} does not exist: create it (createdb) or fix the database name in DATABASE_URL`);
    case '42501':
      return new UsageError(`PostgreSQL refused the connection to ${where}: ${msg}; grant CONNECT to this role`);
  }
  if (err instanceof UsageError || err instanceof RunError) return err;
  return new RunError(`cannot connect to PostgreSQL at ${where}: ${msg}`);
}

// ---------------------------------------------------------------- postgres.js

type Sql = postgres.Sql<{}>;
type TxSql = postgres.TransactionSql<{}>;

export async function openPostgres(url: string, connectTimeout = 10): Promise<Db> {
  // postgres.js leaves Nagle's algorithm on, so the small last message of every COPY (and of
  // any statement that follows a large write) waits ~40 ms for the server's delayed ACK. Its
  // `socket` option takes a function returning a connected socket: connect here, with
  // TCP_NODELAY, trying each host of a multi-host URL in turn as postgres.js would.
  const { Socket } = await import('node:net');
  type Target = { host: string[]; port: number[]; path?: string | false };
  const connectNoDelay = (o: Target) =>
    new Promise<InstanceType<typeof Socket>>((resolve, reject) => {
      const targets = o.path ? [{ path: o.path, host: o.host[0] ?? '', port: o.port[0] ?? 5432 }] : o.host.map((host, i) => ({ path: '', host, port: o.port[i] ?? o.port[0] ?? 5432 }));
      let i = 0;
      const attempt = () => {
        const t = targets[i]!;
        const socket = new Socket();
        socket.setNoDelay(true);
        const timer = setTimeout(() => {
          socket.destroy();
          fail(Object.assign(new Error(`write CONNECT_TIMEOUT ${t.host}:${t.port}`), { code: 'CONNECT_TIMEOUT', errno: 'CONNECT_TIMEOUT', address: t.path || t.host, port: t.port }));
        }, connectTimeout * 1000);
        const fail = (err: unknown) => {
          clearTimeout(timer);
          socket.removeAllListeners();
          socket.destroy();
          if (++i < targets.length) attempt();
          else reject(err);
        };
        socket.once('error', fail);
        socket.once('connect', () => {
          clearTimeout(timer);
          socket.removeListener('error', fail);
          Object.assign(socket, { host: t.host, port: t.port });
          resolve(socket);
        });
        if (t.path) socket.connect(t.path);
        else socket.connect(t.port, t.host);
      };
      attempt();
    });
  const open = (searchPath?: string) =>
    postgres(url, {
      max: 4,
      connect_timeout: connectTimeout,
      onnotice: () => {},
      types: { timestampUtc: { to: TIMESTAMP_OID, from: [TIMESTAMP_OID], serialize: (x: unknown) => x, parse: parseUtcTimestamp } },
      // The TIMESTAMP columns hold UTC wall time: converting to and from timestamptz must use UTC.
      connection: { application_name: 'memory-migrate', TimeZone: 'UTC', ...(searchPath ? { search_path: searchPath } : {}) },
      socket: connectNoDelay,
    } as postgres.Options<{}>);
  const description = `PostgreSQL at ${maskUrl(url)}`;
  let sql = open();
  let db = wrapPostgres(sql, description);
  // Surface connection problems now, with a clear error, instead of at the first real query.
  const [shown] = await db.query<{ search_path: string }>('SHOW search_path');
  // The database's own search path, with our schema in front (an adopted app's table is
  // reached through our view there, see adopted-table.ts): every pooled session starts so.
  const searchPath = ownSchemaFirst(shown!.search_path);
  if (searchPath !== shown!.search_path) {
    await sql.end({ timeout: 5 });
    sql = open(searchPath);
    db = wrapPostgres(sql, description);
  }
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
      const query = sql.unsafe(`COPY ${table} (${cols}) FROM STDIN WITH (FORMAT binary)`);
      // postgres.js 3.4.x never settles the writable when the server rejects the data
      // (porsager/postgres#1173): 'finish' never fires, no 'error' is emitted, and inside
      // sql.begin() the transaction then hangs forever (no ROLLBACK, connection leaked). The
      // server's error only reaches query.reject(), a no-op by then because the query has
      // already resolved to the stream. Intercept it there.
      let settle: ((err: unknown) => void) | undefined;
      let serverError: unknown;
      const q = query as unknown as { reject: (err: unknown) => void };
      const reject0 = q.reject;
      q.reject = (err: unknown) => {
        serverError ??= err;
        settle?.(err);
        reject0(err);
      };
      const stream = await query.writable();
      await new Promise<void>((resolve, reject) => {
        settle = reject;
        if (serverError !== undefined) return reject(serverError);
        stream.on('error', reject);
        stream.on('finish', () => resolve());
        stream.end(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
      });
    },
    async tryAdvisoryLock(key: number) {
      if (!('reserve' in sql)) throw new Error('advisory locks are taken outside transactions');
      const conn = await (sql as Sql).reserve();
      const [row] = await conn.unsafe('SELECT pg_try_advisory_lock($1) AS ok', [key]);
      if (!row?.['ok']) {
        conn.release();
        return null;
      }
      return async () => {
        await conn.unsafe('SELECT pg_advisory_unlock($1)', [key]).catch(() => {});
        conn.release();
      };
    },
    async close() {
      /* a transaction handle is closed by its owner */
    },
  };
  return db;
}

// ---------------------------------------------------------------- PGlite

type PgliteLike = Pick<PGlite, 'query' | 'exec'> & { transaction?: PGlite['transaction'] };

const TIMESTAMP_OID = 1114;

/** A TIMESTAMP value ('2024-01-02 03:04:05.123456') is UTC here, whatever the machine's zone. */
function parseUtcTimestamp(text: string): Date {
  return new Date(text.replace(' ', 'T') + 'Z');
}

export async function openPglite(dir: string): Promise<Db> {
  let dataDir = dir;
  if (!dir.startsWith('memory://')) {
    mkdirSync(dir, { recursive: true });
  } else {
    dataDir = 'memory://';
  }
  const releaseDir = dataDir === 'memory://' ? () => {} : acquireDirLock(dir);
  let pg: PGlite;
  try {
    pg = await PGlite.create({ dataDir, extensions: { vector }, parsers: { [TIMESTAMP_OID]: parseUtcTimestamp } });
    const shown = await pg.query<{ search_path: string }>('SHOW search_path');
    await pg.exec(`SET TimeZone = 'UTC'; SET search_path = ${ownSchemaFirst(shown.rows[0]!.search_path)}`);
  } catch (err) {
    releaseDir();
    throw new RunError(`cannot open the embedded database in ${dir}: ${(err as Error).message}`);
  }
  const db = wrapPglite(pg, `embedded PGlite in ${dir}`);
  return {
    ...db,
    close: async () => {
      try {
        await pg.close();
      } finally {
        releaseDir();
      }
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
      return pg.transaction(async (tx) => {
        const out = await fn(wrapPglite(tx as unknown as PgliteLike, description));
        // PGlite commits an aborted transaction without a word (the server's COMMIT turns into
        // a ROLLBACK): a failed statement whose error fn caught must still fail the
        // transaction. In an aborted transaction this query fails, and PGlite rolls back.
        await tx.query('SELECT 1');
        return out;
      });
    },
    async copyBinary(table: string, columns: string[], data: Uint8Array) {
      const cols = columns.map(quoteIdent).join(', ');
      // COPY through pglite-socket kills the backend; the /dev/blob device is PGlite's own path.
      await pg.query(`COPY ${table} (${cols}) FROM '/dev/blob' WITH (FORMAT binary)`, [], {
        blob: new Blob([data as Uint8Array<ArrayBuffer>]),
      });
    },
    async tryAdvisoryLock() {
      // One PGlite data directory has one process (see acquireDirLock), hence one session.
      return async () => {};
    },
    async close() {},
  };
  return db;
}

/**
 * PGlite is one process per data directory: a second process opening it would corrupt it.
 * A lock file with our pid keeps a second run out; a stale one (dead pid) is taken over.
 */
function acquireDirLock(dir: string): () => void {
  const file = join(dir, '.memory-migrate.lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(file, String(process.pid), { flag: 'wx' });
      return () => rmSync(file, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const pid = Number(readFileSync(file, 'utf8').trim());
      if (pid === process.pid) return () => {};
      if (Number.isInteger(pid) && pid > 0 && isAlive(pid)) {
        throw new RunError(
          `another memory-migrate process (pid ${pid}) is using the embedded database in ${dir}: wait for it to finish, or stop it`,
        );
      }
      rmSync(file, { force: true });
    }
  }
  throw new RunError(`cannot lock the embedded database in ${dir}: remove ${file} if no other run is active`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}


// Reads an agent's memory file without changing it: opened read-only, rows streamed in rowid
// order in bounded pages, every way the file can be unusable turned into a one-line
// UsageError that says what is wrong and what to do about it.
import Database from 'better-sqlite3';
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { UsageError } from '../errors.js';
import { decodeEmbedding } from './decode-embedding.js';
import { readMetadata } from './metadata.js';
import { parseTimestamp } from './timestamps.js';
import type { SourceFilter, SourceInfo, SourceRow } from './types.js';
import { quoteIdent } from '../sql-identifier.js';

export interface OpenSourceOptions {
  /** How long to wait for a writer's lock before giving up (default 5000 ms). */
  busyTimeoutMs?: number;
  /** Rows fetched per query while streaming (default 500). */
  pageSize?: number;
}

export interface SourceFile {
  info: SourceInfo;
  /** Number of rows rows(filter) would yield. */
  count(filter?: SourceFilter): number;
  /** Rows in rowid order, fetched page by page (never the whole file at once). */
  rows(filter?: SourceFilter): IterableIterator<SourceRow>;
  /** Row count per user id, ordered by user id (NULL first). */
  users(filter?: SourceFilter): { userId: string | null; count: number }[];
  /** sha256 hex of the main file's bytes, read in chunks. */
  sha256(): string;
  close(): void;
}

export const DEFAULT_BUSY_TIMEOUT_MS = 5000;
// Rows per source read. Each read is one synchronous call: 500 rows of 1536-d vectors held the
// event loop for about 6 ms, which delayed the round trips of the batch being written; 50
// rows cost the same CPU per row and return in well under a millisecond.
const DEFAULT_PAGE_SIZE = 50;
const SQLITE_HEADER = Buffer.from('SQLite format 3\0', 'latin1');
const SHARD_FUNCTION = 'mm_shard';

/**
 * The shard a user belongs to: the first 4 bytes of sha256(user_id ?? '') read as an unsigned
 * big-endian integer, modulo count. Every part of the tool must use this one function.
 */
export function shardOf(userId: string | null, count: number): number {
  if (!Number.isInteger(count) || count < 1) throw new RangeError(`shard count must be a positive integer, got ${count}`);
  const digest = createHash('sha256').update(userId ?? '', 'utf8').digest();
  return digest.readUInt32BE(0) % count;
}

/** Turns a file-system error met while opening `path` into a UsageError (or returns it unchanged). */
export function describeFsError(err: unknown, path: string): Error {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  switch (code) {
    case 'ENOENT':
      return new UsageError(`source file ${path} does not exist; check the --sqlite path`);
    case 'ENOTDIR':
      return new UsageError(`source file ${path} does not exist (a parent of it is not a directory); check the --sqlite path`);
    case 'EISDIR':
      return new UsageError(`${path} is a directory, not a SQLite file; pass the path of the .db file itself`);
    case 'EACCES':
    case 'EPERM':
      return new UsageError(
        `cannot read ${path} (permission denied); run as a user that can read it, or copy it somewhere readable and migrate the copy`,
      );
    case 'ELOOP':
      return new UsageError(`${path} is a symbolic link loop; pass the real path of the .db file`);
    default:
      return err instanceof Error ? err : new Error(String(err));
  }
}

/**
 * Turns a better-sqlite3 error met while reading `path` into a UsageError naming the problem
 * and the fix (or returns it unchanged when it is not something the operator can fix).
 */
export function describeSqliteError(err: unknown, path: string, busyTimeoutMs = DEFAULT_BUSY_TIMEOUT_MS): Error {
  if (!(err instanceof Error)) return new Error(String(err));
  const code = (err as { code?: unknown }).code;
  if (typeof code !== 'string' || !code.startsWith('SQLITE_')) return err;
  if (code === 'SQLITE_NOTADB') {
    return new UsageError(`${path} is not a SQLite database (unknown header); if it is encrypted (SQLCipher), decrypt it first`);
  }
  if (code.startsWith('SQLITE_CORRUPT') || code === 'SQLITE_IOERR_SHORT_READ' || /malformed/i.test(err.message)) {
    return new UsageError(
      `${path} is corrupt (${err.message}); salvage it with \`sqlite3 ${path} .recover | sqlite3 recovered.db\` and migrate recovered.db`,
    );
  }
  if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) {
    return new UsageError(
      `${path} is locked by another connection (still locked after ${busyTimeoutMs} ms); stop the app that is writing to it, or copy the file (with its -wal) and migrate the copy`,
    );
  }
  if (code === 'SQLITE_READONLY_ROLLBACK') {
    return new UsageError(
      `${path} has a hot journal (${path}-journal) from an interrupted write, which a read-only reader cannot roll back; copy both files together (as copy.db and copy.db-journal), open the copy once with \`sqlite3 copy.db "PRAGMA quick_check"\` so SQLite rolls the write back, and migrate copy.db`,
    );
  }
  if (code.startsWith('SQLITE_READONLY') || code === 'SQLITE_CANTOPEN_ISDIR') {
    return new UsageError(
      `cannot read ${path} in WAL mode without write access to its -shm/-wal files (${code}); copy ${path} and its -wal file to a writable directory and migrate the copy`,
    );
  }
  if (code.startsWith('SQLITE_CANTOPEN') || code === 'SQLITE_PERM' || code === 'SQLITE_AUTH') {
    return new UsageError(
      `cannot open ${path} (${err.message}); check that the file, its directory and any -wal/-shm files are readable, or copy it somewhere readable and migrate the copy`,
    );
  }
  if (code.startsWith('SQLITE_IOERR')) {
    return new UsageError(`I/O error reading ${path} (${code}: ${err.message}); copy the file to a local disk and migrate the copy`);
  }
  return err;
}

/** Opens a memory file read-only and checks that it can be read. Throws UsageError when not. */
export function openSource(path: string, opts: OpenSourceOptions = {}): SourceFile {
  const busyTimeoutMs = opts.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
  const pageSize = Math.max(1, Math.floor(opts.pageSize ?? DEFAULT_PAGE_SIZE));

  const sizeBytes = checkFile(path);

  let db: Database.Database;
  try {
    db = new Database(path, { readonly: true, fileMustExist: true, timeout: busyTimeoutMs });
  } catch (err) {
    throw describeSqliteError(err, path, busyTimeoutMs);
  }
  const guard = <T>(fn: () => T): T => {
    try {
      return fn();
    } catch (err) {
      throw describeSqliteError(err, path, busyTimeoutMs);
    }
  };

  try {
    // Errors (not a database, corrupt, locked) surface at the first read, not at open.
    const journalMode = guard(() => String(db.pragma('journal_mode', { simple: true })));
    const encoding = guard(() => String(db.pragma('encoding', { simple: true })));
    const tables = guard(
      () =>
        db
          .prepare(`SELECT name FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY name`)
          .pluck()
          .all() as string[],
    );
    const tableName = tables.find((t) => t.toLowerCase() === 'memories');
    if (!tableName) {
      db.close();
      return emptySource({ path, layout: 'empty', metadataColumn: null, journalMode, tables, sizeBytes });
    }

    const columns = guard(
      () => db.prepare(`PRAGMA table_info(${quoteIdent(tableName)})`).all() as { name: string }[],
    ).map((c) => c.name);
    const col = (name: string): string | undefined => columns.find((c) => c.toLowerCase() === name);
    for (const required of ['id', 'user_id', 'content']) {
      if (!col(required)) {
        throw new UsageError(
          `${tableName} table in ${path} has no ${required} column; this is not a memory file memory-migrate understands (expected columns id, user_id, content)`,
        );
      }
    }
    try {
      db.prepare(`SELECT rowid FROM ${quoteIdent(tableName)} LIMIT 0`);
    } catch {
      throw new UsageError(
        `${tableName} table in ${path} has no rowid (WITHOUT ROWID); copy it into an ordinary table first, e.g. \`CREATE TABLE memories2 AS SELECT * FROM ${tableName}\` in a copy of the file`,
      );
    }
    const metadataColumn = col('metadata') ?? col('meta_data') ?? null;

    db.function(SHARD_FUNCTION, { deterministic: true }, shardFunction());

    const info: SourceInfo = { path, layout: 'memories', metadataColumn, journalMode, tables, sizeBytes };
    return memorySource(db, info, guard, {
      table: quoteIdent(tableName),
      id: quoteIdent(col('id')!),
      userId: quoteIdent(col('user_id')!),
      content: quoteIdent(col('content')!),
      embedding: optionalCol(col('embedding')),
      metadata: optionalCol(metadataColumn ?? undefined),
      createdAt: optionalCol(col('created_at')),
      updatedAt: optionalCol(col('updated_at')),
      utf8: encoding.toUpperCase() === 'UTF-8',
      pageSize,
    });
  } catch (err) {
    if (db.open) db.close();
    throw err;
  }
}

/** Checks the path before SQLite sees it; returns the file size. */
function checkFile(path: string): number {
  let size: number;
  try {
    const st = statSync(path);
    if (st.isDirectory()) throw Object.assign(new Error('is a directory'), { code: 'EISDIR' });
    size = st.size;
  } catch (err) {
    throw describeFsError(err, path);
  }
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    throw describeFsError(err, path);
  }
  try {
    const head = Buffer.alloc(100);
    let got = 0;
    try {
      got = readSync(fd, head, 0, head.length, 0);
    } catch (err) {
      throw describeFsError(err, path);
    }
    if (size === 0) return 0; // an empty file: SQLite reads it as an empty database
    if (got < SQLITE_HEADER.length || !head.subarray(0, SQLITE_HEADER.length).equals(SQLITE_HEADER)) {
      throw new UsageError(`${path} is not a SQLite database (unknown header); if it is encrypted (SQLCipher), decrypt it first`);
    }
    if (got < 100) {
      throw new UsageError(
        `${path} is corrupt (truncated to ${got} bytes); salvage it with \`sqlite3 ${path} .recover | sqlite3 recovered.db\` and migrate recovered.db`,
      );
    }
  } finally {
    closeSync(fd);
  }
  return size;
}

interface Columns {
  table: string;
  id: string;
  userId: string;
  content: string;
  embedding: string;
  metadata: string;
  createdAt: string;
  updatedAt: string;
  utf8: boolean;
  pageSize: number;
}

/**
 * One row of the page query, read with .raw(true): an array in select-list order (no per-row
 * object with named keys to build). Indexes: R_ROWID ... R_UPDATED below.
 */
type RawRow = [
  r: number,
  id: string | null,
  userId: string | null,
  content: Buffer | string | null,
  embedding: unknown,
  metadata: unknown,
  createdAt: unknown,
  updatedAt: unknown,
];
const R_ROWID = 0;
const R_ID = 1;
const R_USER_ID = 2;
const R_CONTENT = 3;
const R_EMBEDDING = 4;
const R_METADATA = 5;
const R_CREATED = 6;
const R_UPDATED = 7;

function memorySource(
  db: Database.Database,
  info: SourceInfo,
  guard: <T>(fn: () => T) => T,
  c: Columns,
): SourceFile {
  // Text comes back decoded by SQLite's driver (no Buffer per row); anything else as bytes.
  const contentExpr = c.utf8
    ? `CASE typeof(${c.content}) WHEN 'text' THEN ${c.content} ELSE CAST(${c.content} AS BLOB) END`
    : c.content;
  const select =
    `SELECT rowid AS r, CAST(${c.id} AS TEXT) AS id, CAST(${c.userId} AS TEXT) AS user_id, ` +
    `${contentExpr} AS content, ${c.embedding} AS embedding, ${c.metadata} AS metadata, ` +
    `${c.createdAt} AS created_at, ${c.updatedAt} AS updated_at FROM ${c.table}`;
  const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  const lossy = new TextDecoder('utf-8', { ignoreBOM: true });

  function where(filter: SourceFilter, afterRowid: number | undefined): { sql: string; params: unknown[] } {
    const parts: string[] = [];
    const params: unknown[] = [];
    if (filter.users) {
      parts.push(`${c.userId} IN (SELECT value FROM json_each(?))`);
      params.push(JSON.stringify(filter.users));
    }
    if (filter.shard) {
      const { index, count } = checkShard(filter.shard);
      parts.push(`${SHARD_FUNCTION}(CAST(${c.userId} AS TEXT), ?) = ?`);
      params.push(count, index);
    }
    if (afterRowid !== undefined) {
      parts.push('rowid > ?');
      params.push(afterRowid);
    }
    return { sql: parts.length ? ` WHERE ${parts.join(' AND ')}` : '', params };
  }

  function toRow(raw: RawRow): SourceRow {
    let content: string;
    let contentBytes: number;
    let contentProblem: string | undefined;
    const rawContent = raw[R_CONTENT];
    if (rawContent === null) {
      content = '';
      contentBytes = 0;
      contentProblem = 'content is NULL';
    } else if (typeof rawContent === 'string') {
      content = rawContent;
      contentBytes = Buffer.byteLength(content, 'utf8');
      // The driver replaces each invalid UTF-8 sequence with U+FFFD, so only a text holding
      // one can be invalid: its stored bytes tell.
      const bytes = c.utf8 && content.includes('\uFFFD') ? storedContentBytes(raw[R_ROWID]) : null;
      if (bytes) ({ content, contentBytes, contentProblem } = decodeContent(bytes));
    } else {
      ({ content, contentBytes, contentProblem } = decodeContent(rawContent));
    }
    const r = raw[R_ROWID];
    const row: SourceRow = {
      rowid: Number(r),
      id: raw[R_ID] ?? `rowid:${r}`,
      userId: raw[R_USER_ID],
      content,
      contentBytes,
      embedding: decodeEmbedding(raw[R_EMBEDDING]),
      metadata: readMetadata(raw[R_METADATA]),
      createdAt: parseTimestamp(raw[R_CREATED]),
      updatedAt: parseTimestamp(raw[R_UPDATED]),
    };
    if (contentProblem) row.contentProblem = contentProblem;
    return row;
  }

  function decodeContent(bytes: Uint8Array): { content: string; contentBytes: number; contentProblem: string | undefined } {
    try {
      return { content: decoder.decode(bytes), contentBytes: bytes.byteLength, contentProblem: undefined };
    } catch {
      return { content: lossy.decode(bytes), contentBytes: bytes.byteLength, contentProblem: 'content is not valid UTF-8' };
    }
  }

  let contentBytesStatement: Database.Statement | undefined;
  function storedContentBytes(rowid: number): Buffer | null {
    contentBytesStatement ??= guard(() => db.prepare(`SELECT CAST(${c.content} AS BLOB) FROM ${c.table} WHERE rowid = ?`).pluck());
    const bytes = guard(() => contentBytesStatement!.get(rowid));
    return bytes instanceof Uint8Array ? (bytes as Buffer) : null;
  }

  // Page statements, prepared once per SQL text (at most a few filter shapes per source).
  const pageStatements = new Map<string, Database.Statement>();
  function pageStatement(sql: string): Database.Statement {
    let stmt = pageStatements.get(sql);
    if (stmt === undefined) {
      stmt = db.prepare(sql).raw(true);
      pageStatements.set(sql, stmt);
    }
    return stmt;
  }

  return {
    info,
    count(filter = {}) {
      const w = where(filter, filter.afterRowid);
      if (filter.limit !== undefined) {
        const sql = `SELECT COUNT(*) FROM (SELECT 1 FROM ${c.table}${w.sql} ORDER BY rowid LIMIT ?)`;
        return guard(() => Number(db.prepare(sql).pluck().get(...w.params, checkLimit(filter.limit!))));
      }
      return guard(() => Number(db.prepare(`SELECT COUNT(*) FROM ${c.table}${w.sql}`).pluck().get(...w.params)));
    },
    *rows(filter = {}) {
      let after = filter.afterRowid;
      let remaining = filter.limit === undefined ? Infinity : checkLimit(filter.limit);
      // Each page is its own short read: no read lock is held (and the connection is free for
      // count()/users()) while the caller works on the rows between pages.
      while (remaining > 0) {
        const take = Math.min(c.pageSize, remaining);
        const w = where(filter, after);
        const sql = `${select}${w.sql} ORDER BY rowid LIMIT ?`;
        const page = guard(() => pageStatement(sql).all(...w.params, take) as RawRow[]);
        for (let i = 0; i < page.length; i++) yield toRow(page[i]!);
        if (page.length < take) return;
        remaining -= page.length;
        after = Number(page[page.length - 1]![R_ROWID]);
      }
    },
    users(filter = {}) {
      const w = where(filter, filter.afterRowid);
      const inner =
        filter.limit !== undefined
          ? `(SELECT ${c.userId} AS u FROM ${c.table}${w.sql} ORDER BY rowid LIMIT ?)`
          : `(SELECT ${c.userId} AS u FROM ${c.table}${w.sql})`;
      const params = filter.limit !== undefined ? [...w.params, checkLimit(filter.limit)] : w.params;
      const sql = `SELECT CAST(u AS TEXT) AS userId, COUNT(*) AS count FROM ${inner} GROUP BY u ORDER BY u`;
      return guard(() => db.prepare(sql).all(...params) as { userId: string | null; count: number }[]).map((r) => ({
        userId: r.userId,
        count: Number(r.count),
      }));
    },
    sha256: () => fileSha256(info.path),
    close() {
      if (db.open) db.close();
    },
  };
}

function emptySource(info: SourceInfo): SourceFile {
  return {
    info,
    count: () => 0,
    *rows() {},
    users: () => [],
    sha256: () => fileSha256(info.path),
    close() {},
  };
}

function shardFunction(): (userId: unknown, count: unknown) => number {
  const cache = new Map<string, number>();
  return (userId, count) => {
    const u = userId === null || userId === undefined ? null : String(userId);
    const n = Number(count);
    const key = `${n}\u0000${u === null ? '\u0001' : u}`;
    let s = cache.get(key);
    if (s === undefined) {
      s = shardOf(u, n);
      if (cache.size > 100_000) cache.clear();
      cache.set(key, s);
    }
    return s;
  };
}

function checkShard(shard: { index: number; count: number }): { index: number; count: number } {
  const { index, count } = shard;
  if (!Number.isInteger(count) || count < 1 || !Number.isInteger(index) || index < 0 || index >= count) {
    throw new UsageError(`invalid shard ${index} of ${count}; the shard index must be a whole number with 0 <= index < count`);
  }
  return { index, count };
}

function checkLimit(limit: number): number {
  if (!Number.isInteger(limit) || limit < 0) throw new UsageError(`invalid limit ${limit}; use a whole number >= 0`);
  return limit;
}

function optionalCol(name: string | undefined): string {
  return name === undefined ? 'NULL' : quoteIdent(name);
}

function fileSha256(path: string): string {
  const hash = createHash('sha256');
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(1 << 20);
    let pos = 0;
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, pos);
      if (n === 0) break;
      hash.update(buf.subarray(0, n));
      pos += n;
    }
  } finally {
    closeSync(fd);
  }
  return hash.digest('hex');
}

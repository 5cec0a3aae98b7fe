// Reads an agent's memory file without changing it: opened read-only, rows streamed in rowid
// order in bounded pages, every way the file can be unusable turned into a one-line
// UsageError that says what is wrong and what to do about it (sqlite-file.ts maps them).
import { UsageError } from '../errors.js';
import { decodeEmbedding } from './decode-embedding.js';
import { detectLayout, listTables } from './layout.js';
import {
  detectFileLayout,
  ESPRESSOBOT,
  planColumnMap,
  readSchema,
  userFromText,
  type ColumnMap,
  type LayoutPlan,
  type UserFrom,
} from './layouts/index.js';
import { literal } from './layouts/schema.js';
import { refuseUnreadableFile } from './layouts/unreadable-files.js';
import type { DecodedEmbedding } from './types.js';
import { readMetadata } from './metadata.js';
import { checkShard, SHARD_FUNCTION, shardFunction } from './shard.js';
import {
  checkFile,
  DEFAULT_BUSY_TIMEOUT_MS,
  describeSqliteError,
  fileSha256,
  openSqliteFile,
  type SqliteDb,
  type SqliteStatement,
} from './sqlite-file.js';
import { parseTimestamp } from './timestamps.js';
import type { SourceFilter, SourceInfo, SourceRow } from './types.js';

export interface OpenSourceOptions {
  /** How long to wait for a writer's lock before giving up (default 5000 ms). */
  busyTimeoutMs?: number;
  /** Rows fetched per query (default 50 for rows(), 2000 for keys(), which reads no content or vectors). */
  pageSize?: number;
  /** --layout: read the file as this layout instead of detecting it. */
  layout?: string;
  /** --map: the columns of a table or query to read instead of a known layout. */
  map?: ColumnMap;
  /** --user-from: what becomes user_id (default: the layout's own choice). */
  userFrom?: UserFrom;
}

/** What verify reads of every row: the row's identity and its light fields, nothing decoded. */
export interface SourceKey {
  rowid: number;
  id: string;
  userId: string | null;
  /** readMetadata(...).json of the stored metadata: what the migration stores in jsonb. */
  metadataJson: string;
  createdAt: Date | null;
  updatedAt: Date | null;
}

export interface SourceFile {
  info: SourceInfo;
  /** Number of rows rows(filter) would yield. */
  count(filter?: SourceFilter): number;
  /** Rows in rowid order, fetched page by page (never the whole file at once). */
  rows(filter?: SourceFilter): IterableIterator<SourceRow>;
  /** The rows of rows(filter) without content and embedding, in rowid order, page by page. */
  keys(filter?: SourceFilter): IterableIterator<SourceKey>;
  /**
   * The id of each row of rows(filter) as rows() gives it (rowid:N when NULL), in rowid
   * order, page by page: what a catch-up run compares Postgres with, at a fraction of keys().
   */
  ids(filter?: SourceFilter): IterableIterator<string>;
  /** Row count per user id, ordered by user id (NULL first). */
  users(filter?: SourceFilter): { userId: string | null; count: number }[];
  /**
   * The case-folded ids (String.prototype.toLowerCase, as SeenIds folds them) that may occur
   * more than once in the file, filters aside: every id SQLite's ASCII lower() finds twice,
   * and every id with a character outside printable ASCII (JavaScript folds more of those
   * than SQLite does, Kelvin sign to k). One grouping query in SQLite, so a run keeps state
   * only for these ids, not for every id it reads.
   */
  foldedIdsThatMayRepeat(): Set<string>;
  /** sha256 hex of the main file's bytes, read in chunks. */
  sha256(): string;
  close(): void;
}

// Rows per source read. Each read is one synchronous call: 500 rows of 1536-d vectors held the
// event loop for about 6 ms, which delayed the round trips of the batch being written; 50
// rows cost the same CPU per row and return in well under a millisecond.
const DEFAULT_PAGE_SIZE = 50;
// keys() reads no content and no vectors: a page of 2000 costs about what 50 full rows do.
const KEYS_PAGE_SIZE = 2000;

/** Opens a memory file read-only and checks that it can be read. Throws UsageError when not. */
export function openSource(path: string, opts: OpenSourceOptions = {}): SourceFile {
  const busyTimeoutMs = opts.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
  const pageSize = Math.max(1, Math.floor(opts.pageSize ?? DEFAULT_PAGE_SIZE));

  refuseUnreadableFile(path);
  const sizeBytes = checkFile(path);

  const db = openSqliteFile(path, { readonly: true, fileMustExist: true, busyTimeoutMs });
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
    const tables = guard(() => listTables(db));
    const readOptions: ReadOptions = {
      utf8: encoding.toUpperCase() === 'UTF-8',
      pageSize,
      keysPageSize: opts.pageSize === undefined ? KEYS_PAGE_SIZE : pageSize,
    };
    const schema = guard(() => readSchema(db));
    const plan = opts.map
      ? guard(() => planColumnMap(db, schema, path, opts.map!))
      : (() => {
          const def = guard(() => detectFileLayout(schema, path, opts.layout));
          return def === null || def.name === ESPRESSOBOT ? null : guard(() => def.plan(db, schema, path));
        })();
    if (plan) {
      db.function(SHARD_FUNCTION, { deterministic: true }, shardFunction());
      const userFrom = opts.userFrom ?? plan.defaultUserFrom;
      const info: SourceInfo = { path, layout: plan.layout, metadataColumn: 'metadata', journalMode, tables, sizeBytes, userFrom: userFromText(userFrom), notes: plan.notes };
      if (plan.sourceModel) info.sourceModel = plan.sourceModel;
      if (plan.noWriteBack) info.noWriteBack = plan.noWriteBack;
      return memorySource(db, info, guard, relationSql(plan, userFrom, path), readOptions, plan.decode);
    }
    const layout = guard(() => detectLayout(db, path, tables));
    if (!layout) {
      db.close();
      return emptySource({ path, layout: 'empty', metadataColumn: null, journalMode, tables, sizeBytes });
    }

    db.function(SHARD_FUNCTION, { deterministic: true }, shardFunction());

    const userFrom = opts.userFrom ?? { kind: 'column' };
    const info: SourceInfo = { path, layout: 'memories', metadataColumn: layout.metadataColumn, journalMode, tables, sizeBytes, userFrom: userFromText(userFrom) };
    const tableName = layout.table;
    return memorySource(
      db,
      info,
      guard,
      {
        from: layout.table,
        rowid: 'rowid',
        id: layout.id,
        userId: userExpr(userFrom, { column: layout.userId, collection: null, partition: null, metadata: layout.metadata }, ESPRESSOBOT, path, ['column']),
        content: layout.content,
        embedding: layout.embedding,
        metadata: layout.metadata,
        createdAt: layout.createdAt,
        updatedAt: layout.updatedAt,
        contentTable: tableName,
      },
      readOptions,
    );
  } catch (err) {
    if (db.open) db.close();
    throw err;
  }
}

/**
 * SQL of what the reader selects, whatever the layout: the FROM clause and an expression per
 * field. `rowid` orders the rows and is the checkpoint.
 */
interface ReadSql {
  from: string;
  rowid: string;
  id: string;
  userId: string;
  content: string;
  embedding: string | null;
  metadata: string | null;
  createdAt: string | null;
  updatedAt: string | null;
  /** FROM clause that re-reads one row's content bytes by `rowid` (the table, or the relation). */
  contentTable: string;
}

/** The user expression --user-from asks for, over the layout's columns; refused when the layout has no such thing. */
function userExpr(
  u: UserFrom,
  cols: { column: string | null; collection: string | null; partition: string | null; metadata: string | null },
  layout: string,
  path: string,
  kinds: UserFrom['kind'][],
): string {
  const refuse = (what: string): never => {
    throw new UsageError(`--user-from ${userFromText(u)}: ${path} (layout ${layout}) has no ${what}; use one of ${[...kinds, 'metadata:<key>', 'const:<value>'].join(', ')}`);
  };
  switch (u.kind) {
    case 'column':
      return cols.column && kinds.includes('column') ? cols.column : refuse('user column');
    case 'collection':
      return cols.collection && kinds.includes('collection') ? cols.collection : refuse('collection');
    case 'partition':
      return cols.partition && kinds.includes('partition') ? cols.partition : refuse('partition key');
    case 'metadata':
      if (!cols.metadata) return refuse('metadata column');
      return `CASE WHEN json_valid(${cols.metadata}) THEN CAST(json_extract(${cols.metadata}, ${literal(`$."${u.key.replace(/"/g, '\\"')}"`)}) AS TEXT) END`;
    case 'const':
      return literal(u.value);
  }
}

/** What the reader selects from a layout's relation (see layouts/types.ts RELATION_COLUMNS). */
function relationSql(plan: LayoutPlan, u: UserFrom, path: string): ReadSql {
  const from = `(${plan.relation}) AS src`;
  return {
    from,
    rowid: 'src.r',
    id: 'src.id',
    userId: userExpr(u, { column: 'src.user_id', collection: 'src.collection', partition: 'src.partition', metadata: 'src.metadata' }, plan.layout, path, plan.userFromKinds),
    content: 'src.content',
    embedding: 'src.embedding',
    metadata: 'src.metadata',
    createdAt: 'src.created_at',
    updatedAt: 'src.updated_at',
    contentTable: from,
  };
}

interface ReadOptions {
  /** The file's text encoding is UTF-8 (the driver's text is then the stored text). */
  utf8: boolean;
  pageSize: number;
  keysPageSize: number;
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

/**
 * One row of the keys() query, read with .raw(true) like RawRow: rowid, id, user id,
 * metadata, created_at, updated_at.
 */
type RawKey = [r: number, id: string | null, userId: string | null, metadata: unknown, createdAt: unknown, updatedAt: unknown];

function memorySource(
  db: SqliteDb,
  info: SourceInfo,
  guard: <T>(fn: () => T) => T,
  c: ReadSql,
  o: ReadOptions,
  decode: (value: unknown) => DecodedEmbedding = decodeEmbedding,
): SourceFile {
  // Text comes back decoded by SQLite's driver (no Buffer per row); anything else as bytes.
  const contentExpr = o.utf8
    ? `CASE typeof(${c.content}) WHEN 'text' THEN ${c.content} ELSE CAST(${c.content} AS BLOB) END`
    : c.content;
  const light =
    `${c.metadata ?? 'NULL'} AS metadata, ${c.createdAt ?? 'NULL'} AS created_at, ${c.updatedAt ?? 'NULL'} AS updated_at FROM ${c.from}`;
  const select =
    `SELECT ${c.rowid} AS r, CAST(${c.id} AS TEXT) AS id, CAST(${c.userId} AS TEXT) AS user_id, ` +
    `${contentExpr} AS content, ${c.embedding ?? 'NULL'} AS embedding, ${light}`;
  const selectKeys = `SELECT ${c.rowid} AS r, CAST(${c.id} AS TEXT) AS id, CAST(${c.userId} AS TEXT) AS user_id, ${light}`;
  const selectIds = `SELECT ${c.rowid} AS r, CAST(${c.id} AS TEXT) AS id FROM ${c.from}`;
  // The id as rows() gives it, ASCII-folded; GLOB '*[^ -~]*' is true for any other character.
  const foldedIdsSql =
    `SELECT k FROM (SELECT lower(COALESCE(CAST(${c.id} AS TEXT), 'rowid:' || ${c.rowid})) AS k FROM ${c.from}) ` +
    `GROUP BY k HAVING count(*) > 1 OR k GLOB '*[^ -~]*'`;
  const utf8 = o.utf8;
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
      parts.push(`${c.rowid} > ?`);
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
      const bytes = utf8 && content.includes('\uFFFD') ? storedContentBytes(raw[R_ROWID]) : null;
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
      embedding: decode(raw[R_EMBEDDING]),
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

  let contentBytesStatement: SqliteStatement | undefined;
  function storedContentBytes(rowid: number): Buffer | null {
    contentBytesStatement ??= guard(() => db.prepare(`SELECT CAST(${c.content} AS BLOB) FROM ${c.contentTable} WHERE ${c.rowid} = ?`).pluck());
    const bytes = guard(() => contentBytesStatement!.get(rowid));
    return bytes instanceof Uint8Array ? (bytes as Buffer) : null;
  }

  // Page statements, prepared once per SQL text (at most a few filter shapes per source).
  const pageStatements = new Map<string, SqliteStatement>();
  function pageStatement(sql: string): SqliteStatement {
    let stmt = pageStatements.get(sql);
    if (stmt === undefined) {
      stmt = db.prepare(sql).raw(true);
      pageStatements.set(sql, stmt);
    }
    return stmt;
  }

  /**
   * The pages of `selectSql` (rowid first in its select list) that rows(filter) covers. Each
   * page is its own short read: no read lock is held (and the connection is free for
   * count()/users()) while the caller works on the rows between pages.
   */
  function* pages<R extends [number, ...unknown[]]>(selectSql: string, filter: SourceFilter, pageSize: number): Generator<R[]> {
    let after = filter.afterRowid;
    let remaining = filter.limit === undefined ? Infinity : checkLimit(filter.limit);
    while (remaining > 0) {
      const take = Math.min(pageSize, remaining);
      const w = where(filter, after);
      const sql = `${selectSql}${w.sql} ORDER BY ${c.rowid} LIMIT ?`;
      const page = guard(() => pageStatement(sql).all(...w.params, take) as R[]);
      yield page;
      if (page.length < take) return;
      remaining -= page.length;
      after = Number(page[page.length - 1]![0]);
    }
  }

  return {
    info,
    count(filter = {}) {
      const w = where(filter, filter.afterRowid);
      if (filter.limit !== undefined) {
        const sql = `SELECT COUNT(*) FROM (SELECT 1 FROM ${c.from}${w.sql} ORDER BY ${c.rowid} LIMIT ?)`;
        return guard(() => Number(db.prepare(sql).pluck().get(...w.params, checkLimit(filter.limit!))));
      }
      return guard(() => Number(db.prepare(`SELECT COUNT(*) FROM ${c.from}${w.sql}`).pluck().get(...w.params)));
    },
    *rows(filter = {}) {
      for (const page of pages<RawRow>(select, filter, o.pageSize)) {
        for (let i = 0; i < page.length; i++) yield toRow(page[i]!);
      }
    },
    *keys(filter = {}) {
      for (const page of pages<RawKey>(selectKeys, filter, o.keysPageSize)) {
        for (const [r, id, userId, metadata, createdAt, updatedAt] of page) {
          yield {
            rowid: Number(r),
            id: id ?? `rowid:${r}`,
            userId,
            metadataJson: readMetadata(metadata).json,
            createdAt: parseTimestamp(createdAt),
            updatedAt: parseTimestamp(updatedAt),
          };
        }
      }
    },
    *ids(filter = {}) {
      for (const page of pages<[r: number, id: string | null]>(selectIds, filter, o.keysPageSize)) {
        for (const [r, id] of page) yield id ?? `rowid:${r}`;
      }
    },
    users(filter = {}) {
      const w = where(filter, filter.afterRowid);
      const inner =
        filter.limit !== undefined
          ? `(SELECT ${c.userId} AS u FROM ${c.from}${w.sql} ORDER BY ${c.rowid} LIMIT ?)`
          : `(SELECT ${c.userId} AS u FROM ${c.from}${w.sql})`;
      const params = filter.limit !== undefined ? [...w.params, checkLimit(filter.limit)] : w.params;
      const sql = `SELECT CAST(u AS TEXT) AS userId, COUNT(*) AS count FROM ${inner} GROUP BY u ORDER BY u`;
      return guard(() => db.prepare(sql).all(...params) as { userId: string | null; count: number }[]).map((r) => ({
        userId: r.userId,
        count: Number(r.count),
      }));
    },
    foldedIdsThatMayRepeat() {
      // The iteration inside guard too: a lock or a corrupt page shows up while stepping.
      return guard(() => {
        const folded = new Set<string>();
        for (const k of db.prepare(foldedIdsSql).pluck().iterate() as IterableIterator<string>) folded.add(k.toLowerCase());
        return folded;
      });
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
    *keys() {},
    *ids() {},
    users: () => [],
    foldedIdsThatMayRepeat: () => new Set(),
    sha256: () => fileSha256(info.path),
    close() {},
  };
}

function checkLimit(limit: number): number {
  if (!Number.isInteger(limit) || limit < 0) throw new UsageError(`invalid limit ${limit}; use a whole number >= 0`);
  return limit;
}

// Fast, idempotent loading: rows are COPYed (binary) into a temporary staging table, and
// the caller merges them into the real table with one INSERT ... SELECT ... ON CONFLICT.
// Re-running a load therefore updates rows instead of failing on duplicates, and a failed
// load leaves the real table untouched.
//
// The staging table is `CREATE TEMP TABLE ... ON COMMIT DROP`, so everything must happen in
// ONE transaction: a temp table exists only in its own session, and postgres.js runs
// queries outside a transaction on any connection of its pool. `withStaging` does this for
// you; `createStaging` checks it and fails loudly when called outside a transaction.
import type { Db } from './connection.js';
import { quoteIdent } from '../sql-identifier.js';
import { BinaryCopyWriter, CopyEncodeError, type CopyColumnType } from './copy-binary.js';

/**
 * Default data size of one COPY statement, per target. Measured with 20,000 rows of
 * 1536-d vectors (~6.6 KB each):
 * - PostgreSQL via postgres.js: every COPY statement costs ~40 ms of idle wire time
 *   (postgres.js leaves Nagle's algorithm on, so the small CopyDone message waits for the
 *   server's delayed ACK). 0.25 MiB chunks load ~900 rows/s, 8 MiB ~13,000, 32 MiB ~20,000.
 * - PGlite: chunk size barely matters (~9,000-11,000 rows/s from 1 to 16 MiB).
 */
export const DEFAULT_COPY_CHUNK_BYTES = { postgres: 32 * 1024 * 1024, pglite: 4 * 1024 * 1024 } as const;

const STAGING_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/**
 * Creates temp table `name` shaped like `likeTable`, dropped automatically at commit.
 * Must run inside `db.transaction()` (see withStaging).
 *
 * - Without `columns`: `(LIKE likeTable INCLUDING DEFAULTS)`: every column, its type, NOT NULL
 *   and defaults (so columns left out of the COPY get their defaults).
 * - With `columns`: only those columns, with their exact types (vector(1536) included) and
 *   no constraints or defaults.
 *
 * `name` must be a plain lower-case identifier (it is used unquoted so that hand-written
 * SQL can refer to it); `likeTable` is SQL text (it may be schema-qualified).
 * Returns `name`.
 */
export async function createStaging(db: Db, name: string, likeTable: string, columns?: readonly string[]): Promise<string> {
  if (!STAGING_NAME.test(name)) {
    throw new Error(`staging table name ${JSON.stringify(name)} must be a lower-case identifier ([a-z_][a-z0-9_]*)`);
  }
  if (columns && columns.length === 0) throw new Error('createStaging: columns must not be empty');
  const ddl = columns
    ? `CREATE TEMP TABLE ${name} ON COMMIT DROP AS SELECT ${columns.map(quoteIdent).join(', ')} FROM ${likeTable} WITH NO DATA`
    : `CREATE TEMP TABLE ${name} (LIKE ${likeTable} INCLUDING DEFAULTS) ON COMMIT DROP`;
  await db.exec(ddl);
  // Outside a transaction the statement commits at once and ON COMMIT DROP removes the table
  // again (and on a pool the next query may not even run in the same session).
  const rows = await db.query<{ ok: boolean }>(`SELECT to_regclass($1) IS NOT NULL AS ok`, [`pg_temp.${name}`]);
  if (!rows[0]?.ok) {
    throw new Error(
      `staging table ${name} vanished right after it was created: createStaging must be called inside db.transaction() (or use withStaging)`,
    );
  }
  return name;
}

/**
 * Runs `fn` in one transaction with a fresh staging table `name` shaped like `likeTable`.
 * The table is dropped at commit (or discarded on rollback). Nested use inside an open
 * transaction runs in a savepoint.
 */
export async function withStaging<T>(
  db: Db,
  name: string,
  likeTable: string,
  fn: (tx: Db, staging: string) => Promise<T>,
  columns?: readonly string[],
): Promise<T> {
  return db.transaction(async (tx) => {
    await createStaging(tx, name, likeTable, columns);
    return fn(tx, name);
  });
}

export interface CopyIntoOptions {
  /** Flush a COPY statement whenever this many bytes are encoded. Default: DEFAULT_COPY_CHUNK_BYTES[db.kind]. */
  chunkBytes?: number;
  /** Called after each COPY statement with the total rows loaded so far. */
  onProgress?: (rowsLoaded: number) => void;
}

/**
 * Encodes `rows` with the PGCOPY binary encoder and loads them with `COPY table (columns)
 * FROM ... (FORMAT binary)`, in chunks of about `chunkBytes`. All chunks run in one
 * transaction (a savepoint when `db` is already a transaction), so either every row is
 * loaded or none. Returns the number of rows loaded.
 *
 * `table` is SQL text (e.g. a staging table name); `columns` are quoted. `types[i]` is the
 * binary type of `columns[i]` (see CopyColumnType). A value that cannot be encoded throws
 * CopyEncodeError naming the 0-based row of `rows` and the column.
 */
export async function copyInto(
  db: Db,
  table: string,
  columns: readonly string[],
  types: readonly CopyColumnType[],
  rows: Iterable<ArrayLike<unknown>> | AsyncIterable<ArrayLike<unknown>>,
  options: CopyIntoOptions = {},
): Promise<number> {
  if (columns.length !== types.length) {
    throw new Error(`copyInto: ${columns.length} columns but ${types.length} types`);
  }
  const chunkBytes = Math.max(1, options.chunkBytes ?? DEFAULT_COPY_CHUNK_BYTES[db.kind]);
  const writer = new BinaryCopyWriter(types, {
    columnNames: columns,
    initialBytes: Math.min(chunkBytes + 64 * 1024, 4 * 1024 * 1024),
  });
  const cols = [...columns];
  return db.transaction(async (tx) => {
    let loaded = 0;
    const flush = async () => {
      if (writer.rowCount === 0) return;
      const n = writer.rowCount;
      await tx.copyBinary(table, cols, writer.finish());
      writer.reset();
      loaded += n;
      options.onProgress?.(loaded);
    };
    const add = (row: ArrayLike<unknown>) => {
      try {
        writer.addRow(row);
      } catch (err) {
        if (err instanceof CopyEncodeError) {
          throw new CopyEncodeError(err.reason, loaded + err.row, err.column, err.columnName, err.columnType);
        }
        throw err;
      }
    };
    if (Symbol.asyncIterator in rows) {
      for await (const row of rows as AsyncIterable<ArrayLike<unknown>>) {
        add(row);
        if (writer.byteLength >= chunkBytes) await flush();
      }
    } else {
      for (const row of rows as Iterable<ArrayLike<unknown>>) {
        add(row);
        if (writer.byteLength >= chunkBytes) await flush();
      }
    }
    await flush();
    return loaded;
  });
}

// The memory table of an agent's SQLite file, found one way for every reader and writer of
// the file: a `memories` table (any case) with id, user_id and content, and optionally
// embedding, metadata (or meta_data), created_at and updated_at; rowids required. Layout A
// (source-formats.md) is the one the app creates, and what the store and rollback create in a
// file that has no memory table yet.
import { UsageError } from '../errors.js';
import { quoteIdent } from '../sql-identifier.js';
import type { SqliteDb } from './sqlite-file.js';

/** Quoted identifiers of the memory table and its columns as found in a file (null: no such column). */
export interface SqliteLayout {
  table: string;
  id: string;
  userId: string;
  content: string;
  embedding: string | null;
  metadata: string | null;
  createdAt: string | null;
  updatedAt: string | null;
  /** The metadata column's own name, unquoted ('metadata', 'meta_data', ...), or null. */
  metadataColumn: string | null;
}

/** Layout A, as the app created it. */
export const LAYOUT_A_SQL = `
CREATE TABLE IF NOT EXISTS memories (
  id TEXT PRIMARY KEY,
  user_id TEXT NOT NULL,
  content TEXT NOT NULL,
  embedding BLOB,
  metadata TEXT,
  created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
  updated_at DATETIME DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX IF NOT EXISTS idx_user_id ON memories(user_id);
CREATE INDEX IF NOT EXISTS idx_created_at ON memories(created_at);
`;

/** Names of the file's tables and views, by name. */
export function listTables(db: SqliteDb): string[] {
  return db.prepare(`SELECT name FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY name`).pluck().all() as string[];
}

/**
 * Finds the memory table of the file at `path` (open as `db`) and its columns; null when the
 * file has none. Throws a UsageError when the table lacks a required column or has no rowid.
 */
export function detectLayout(db: SqliteDb, path: string, tables: string[] = listTables(db)): SqliteLayout | null {
  const tableName = tables.find((t) => t.toLowerCase() === 'memories');
  if (!tableName) return null;
  const columns = (db.prepare(`PRAGMA table_info(${quoteIdent(tableName)})`).all() as { name: string }[]).map((c) => c.name);
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
  const quoted = (name: string): string | null => {
    const found = col(name);
    return found === undefined ? null : quoteIdent(found);
  };
  const metadataColumn = col('metadata') ?? col('meta_data') ?? null;
  return {
    table: quoteIdent(tableName),
    id: quoted('id')!,
    userId: quoted('user_id')!,
    content: quoted('content')!,
    embedding: quoted('embedding'),
    metadata: metadataColumn === null ? null : quoteIdent(metadataColumn),
    createdAt: quoted('created_at'),
    updatedAt: quoted('updated_at'),
    metadataColumn,
  };
}

/** The file's layout; Layout A is created first when the file has no memory table yet. */
export function ensureLayout(db: SqliteDb, path: string): SqliteLayout {
  const found = detectLayout(db, path);
  if (found) return found;
  db.exec(LAYOUT_A_SQL);
  return detectLayout(db, path)!;
}

/** Select-list items metadata, created_at and updated_at (NULL for a column the file lacks). */
export function metadataAndTimesSql(L: SqliteLayout): string {
  return `${L.metadata ?? 'NULL'} AS metadata, ${L.createdAt ?? 'NULL'} AS created_at, ${L.updatedAt ?? 'NULL'} AS updated_at`;
}

/**
 * SQL condition for the rows that are memories: not prompt fragments, not the app's other
 * system_* bookkeeping rows (the SQL form of the rules in rules.ts).
 */
export function memoryRowsSql(L: SqliteLayout): string {
  return `${L.userId} IS NOT NULL AND substr(CAST(${L.userId} AS TEXT), 1, 7) <> 'system_'`;
}

/** Stored content as a string (TEXT, or a BLOB holding UTF-8, read leniently). */
export function contentText(value: unknown): string {
  if (value === null || value === undefined) return '';
  if (typeof value === 'string') return value;
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('utf8');
  return String(value);
}

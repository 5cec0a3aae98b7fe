// Rollback's side of the SQLite file: memories written back into the file in its own layout
// (embedding as JSON array text, metadata as JSON text, timestamps in the file's format), all
// in one transaction that holds the write lock from before the backup copy to the commit.
// Rows it is not asked to write are not touched, so they stay byte-identical.
import { RunError, UsageError } from '../errors.js';
import { encodeEmbeddingJson } from './decode-embedding.js';
import { contentText, detectLayout, ensureLayout, memoryRowsSql, metadataAndTimesSql, type SqliteLayout } from './layout.js';
import { metadataForSqlite, readMetadata } from './metadata.js';
import { openSqliteFile, type SqliteDb, type SqliteStatement } from './sqlite-file.js';
import { fileTimestampFormat, formatTimestamp, sniffTimestampFormat, type TimestampFormat } from './timestamp-format.js';
import { parseTimestamp } from './timestamps.js';

/** A memory row as the file holds it, read for comparison with PostgreSQL. */
export interface StoredMemory {
  rowid: number;
  userId: string | null;
  /** The content as text (a BLOB read as UTF-8). */
  content: string;
  /** readMetadata(...).json of the stored metadata: what the migration makes of it. */
  metadataJson: string;
  /** When the row was last written: its updated_at, else its created_at (null when neither reads as a time). */
  lastWritten: Date | null;
  /** The format of the row's own updated_at, else of its created_at (null when neither is a known one). */
  timestampFormat: TimestampFormat | null;
}

/** A memory to write, as PostgreSQL holds it. */
export interface MemoryToWrite {
  id: string;
  userId: string;
  content: string;
  embedding: Float32Array | null;
  /** PostgreSQL's text of the jsonb metadata (written as metadataForSqlite makes it). */
  metadata: string;
  createdAt: Date;
  updatedAt: Date;
}

/** What an update writes: the fields given, and always updated_at (when the file has one). */
export interface MemoryChanges {
  /** New content, written with its vector. */
  content?: { text: string; embedding: Float32Array | null };
  /** PostgreSQL's text of the jsonb metadata (written only when the file has a metadata column). */
  metadata?: string;
  userId?: string;
  updatedAt: Date;
}

interface RawStored {
  rowid: number;
  user_id: string | null;
  content: unknown;
  metadata: unknown;
  created_at: unknown;
  updated_at: unknown;
}

export class SqliteWriteBack {
  private layout: SqliteLayout | null = null;
  private format: TimestampFormat = 'sqlite';
  private findById: SqliteStatement | null = null;
  private findByRowid: SqliteStatement | null = null;
  private readonly statements = new Map<string, SqliteStatement>();
  private began = false;

  private constructor(
    private readonly db: SqliteDb,
    readonly path: string,
    /** A dry run: the file is opened read-only and nothing is written or created. */
    readonly readOnly: boolean,
  ) {}

  /** Opens the file (which must exist): read-write, or read-only for a dry run. */
  static open(path: string, opts: { readOnly: boolean }): SqliteWriteBack {
    return new SqliteWriteBack(openSqliteFile(path, { readonly: opts.readOnly, fileMustExist: true }), path, opts.readOnly);
  }

  /**
   * Takes the write lock (BEGIN IMMEDIATE) and keeps it until commit() or abort(): no other
   * writer can slip in between. A WAL file is checkpointed into the main file first.
   */
  begin(): void {
    const journal = String(this.db.pragma('journal_mode', { simple: true })).toLowerCase();
    if (journal === 'wal') this.db.pragma('wal_checkpoint(TRUNCATE)');
    this.db.exec('BEGIN IMMEDIATE');
    this.began = true;
  }

  /** begin() took the lock and commit() has not released it. */
  get inTransaction(): boolean {
    return this.began;
  }

  /**
   * Finds the memory table (creating Layout A when the file has none, unless read-only) and
   * returns the timestamp format most of the file's recent rows use.
   */
  loadLayout(): TimestampFormat {
    const layout = this.readOnly ? detectLayout(this.db, this.path) : ensureLayout(this.db, this.path);
    if (layout && !layout.embedding) throw new UsageError(`the memories table in ${this.path} has no embedding column; it is not the app's layout`);
    this.format = layout ? fileTimestampFormat(this.db, layout) : 'sqlite';
    this.layout = layout;
    if (layout) {
      const L = layout;
      const select = `SELECT rowid AS rowid, CAST(${L.userId} AS TEXT) AS user_id, ${L.content} AS content, ${metadataAndTimesSql(L)} FROM ${L.table}`;
      this.findById = this.db.prepare(`${select} WHERE ${L.id} = ?`);
      this.findByRowid = this.db.prepare(`${select} WHERE rowid = ? AND ${L.id} IS NULL`);
    }
    return this.format;
  }

  /** The row of a memory id (for an id `rowid:N`, row N when its id is NULL); null when the file has none. */
  find(id: string): StoredMemory | null {
    if (!this.findById) return null;
    let raw = (this.findById.get(id) as RawStored | undefined) ?? null;
    const m = /^rowid:(\d+)$/.exec(id);
    if (!raw && m) raw = (this.findByRowid!.get(Number(m[1])) as RawStored | undefined) ?? null;
    if (!raw) return null;
    return {
      rowid: raw.rowid,
      userId: raw.user_id,
      content: contentText(raw.content),
      metadataJson: readMetadata(raw.metadata).json,
      lastWritten: parseTimestamp(raw.updated_at) ?? parseTimestamp(raw.created_at),
      timestampFormat: sniffTimestampFormat(raw.updated_at) ?? sniffTimestampFormat(raw.created_at),
    };
  }

  /** Adds a row; its timestamps in the file's format. */
  insert(m: MemoryToWrite): void {
    const L = this.writable();
    const cols = [L.id, L.userId, L.content, L.embedding!];
    const vals: unknown[] = [m.id, m.userId, m.content, embeddingText(m.embedding)];
    if (L.metadata) {
      cols.push(L.metadata);
      vals.push(metadataForSqlite(m.metadata));
    }
    if (L.createdAt) {
      cols.push(L.createdAt);
      vals.push(formatTimestamp(m.createdAt, this.format));
    }
    if (L.updatedAt) {
      cols.push(L.updatedAt);
      vals.push(formatTimestamp(m.updatedAt, this.format));
    }
    this.prepared(`INSERT INTO ${L.table} (${cols.join(', ')}) VALUES (${cols.map(() => '?').join(', ')})`).run(...vals);
  }

  /** Rewrites the given fields of a row found by find(); updated_at in the format the row already uses, else the file's. */
  update(row: StoredMemory, changes: MemoryChanges): void {
    const L = this.writable();
    const set: string[] = [];
    const vals: unknown[] = [];
    if (changes.content) {
      set.push(`${L.content} = ?`, `${L.embedding} = ?`);
      vals.push(changes.content.text, embeddingText(changes.content.embedding));
    }
    if (changes.metadata !== undefined && L.metadata) {
      set.push(`${L.metadata} = ?`);
      vals.push(metadataForSqlite(changes.metadata));
    }
    if (changes.userId !== undefined) {
      set.push(`${L.userId} = ?`);
      vals.push(changes.userId);
    }
    if (L.updatedAt) {
      set.push(`${L.updatedAt} = ?`);
      vals.push(formatTimestamp(changes.updatedAt, row.timestampFormat ?? this.format));
    }
    this.prepared(`UPDATE ${L.table} SET ${set.join(', ')} WHERE rowid = ?`).run(...vals, row.rowid);
  }

  /** Rows of the file that are memories (not fragments, not system rows); null when it has no memory table. */
  countMemories(): number | null {
    const L = this.layout;
    if (!L) return null;
    return Number(this.db.prepare(`SELECT count(*) FROM ${L.table} WHERE ${memoryRowsSql(L)}`).pluck().get());
  }

  commit(): void {
    this.db.exec('COMMIT');
    this.began = false;
  }

  /** Rolls the transaction back; nothing the write-back did stays in the file. */
  abort(): void {
    try {
      this.db.exec('ROLLBACK');
    } catch {
      /* the transaction is already gone */
    }
  }

  close(): void {
    this.db.close();
  }

  private writable(): SqliteLayout {
    if (!this.layout) throw new RunError('internal: no layout to write to');
    return this.layout;
  }

  private prepared(sql: string): SqliteStatement {
    let st = this.statements.get(sql);
    if (!st) this.statements.set(sql, (st = this.db.prepare(sql)));
    return st;
  }
}

/** A vector as the app's layout stores it: JSON array text. */
function embeddingText(v: Float32Array | null): string | null {
  return v === null ? null : encodeEmbeddingJson(v);
}

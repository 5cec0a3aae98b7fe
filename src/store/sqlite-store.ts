// MemoryStore on the app's own SQLite layout (Layout A in source-formats.md): one `memories`
// table with id, user_id, content, embedding (JSON array text), metadata (JSON text),
// created_at and updated_at, and the prompt fragments stored in the same table as rows of
// user 'system_prompts'. This is the store an app runs on after `MEMORY_TYPE=sqlite`, so it
// is opened read-write and writes in the file's own conventions.
//
// Differences from the Postgres store, by necessity of the layout:
// - There is no embedding_model column, so the store cannot refuse to compare vectors of
//   different models. Vectors of another width are ignored by search; vectors of another
//   model with the same width cannot be told apart. embeddingModel is always null.
// - There is no access_count / last_accessed_at and no memory_duplicates table: stats report
//   0 accesses, and a duplicate add() returns the original's id without recording anything.
// - Search is an exact cosine scan of the user's rows in JS (no index).
// - Only memory_analytics is added to the file (created on the first search).
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { dedupHash } from '../source/canonical.js';
import { decodeEmbedding, encodeEmbeddingJson } from '../source/decode-embedding.js';
import { contentText, detectLayout, ensureLayout, memoryRowsSql, metadataAndTimesSql, type SqliteLayout } from '../source/layout.js';
import { DEFAULT_BUSY_TIMEOUT_MS, describeSqliteError, openSqliteFile, type SqliteDb } from '../source/sqlite-file.js';
import { fileTimestampFormat, formatTimestamp, type TimestampFormat } from '../source/timestamp-format.js';
import { parseTimestamp } from '../source/timestamps.js';
import { categoryOf, importanceOf, readMetadata } from '../source/metadata.js';
import { SYSTEM_PROMPTS_USER } from '../source/rules.js';
import type { SourceRow } from '../source/types.js';
import { fragmentFromSource } from '../postgres/fragments.js';
import { RunError, UsageError } from '../errors.js';
import {
  formatPrompt,
  tiersUpTo,
  type AddInput,
  type AddResult,
  type AssembledPrompt,
  type FragmentRecord,
  type MemoryRecord,
  type MemoryStore,
  type SearchHit,
  type StoreStats,
  type TextEmbedder,
} from './types.js';

const ANALYTICS_SQL = `
CREATE TABLE IF NOT EXISTS memory_analytics (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  user_id TEXT,
  query_text TEXT,
  results_count INTEGER,
  response_time_ms INTEGER,
  context_tier TEXT,
  created_at DATETIME DEFAULT CURRENT_TIMESTAMP
);
`;

function cosine(a: Float32Array, b: Float32Array): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    dot += x * y;
    na += x * x;
    nb += y * y;
  }
  return na === 0 || nb === 0 ? 0 : dot / Math.sqrt(na * nb);
}

// ---------------------------------------------------------------- the store

interface RawMemory {
  id: string;
  user_id: string;
  content: unknown;
  embedding?: unknown;
  metadata: unknown;
  created_at: unknown;
  updated_at: unknown;
}

export interface SqliteStoreOptions {
  /** Create the file and Layout A when missing (default true). */
  create?: boolean;
  busyTimeoutMs?: number;
}

export class SqliteMemoryStore implements MemoryStore {
  readonly backend = 'sqlite' as const;
  private analyticsReady = false;
  private readonly memoryWhere: string;
  private readonly columns: string;

  private constructor(
    private readonly db: SqliteDb,
    private readonly layout: SqliteLayout,
    private readonly embedder: TextEmbedder,
    private readonly timestampFormat: TimestampFormat,
    readonly path: string,
  ) {
    const L = layout;
    // Rows that are memories: not fragments, not the system_* bookkeeping rows the migration skips.
    this.memoryWhere = memoryRowsSql(L);
    this.columns = `CAST(${L.id} AS TEXT) AS id, CAST(${L.userId} AS TEXT) AS user_id, ${L.content} AS content, ${metadataAndTimesSql(L)}`;
  }

  get model(): string {
    return this.embedder.model;
  }

  static async open(path: string, embedder: TextEmbedder, opts: SqliteStoreOptions = {}): Promise<SqliteMemoryStore> {
    const busy = opts.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
    if (!existsSync(path) && opts.create === false) {
      throw new UsageError(`SQLite memory file ${path} does not exist; check the path (MEMORY_SQLITE_PATH)`);
    }
    const db = openSqliteFile(path, { busyTimeoutMs: busy });
    try {
      const layout = opts.create === false ? detectLayout(db, path) : ensureLayout(db, path);
      if (!layout) throw new UsageError(`${path} has no memories table; it is not the app's memory file`);
      if (!layout.embedding) throw new UsageError(`the memories table in ${path} has no embedding column; search needs one`);
      return new SqliteMemoryStore(db, layout, embedder, fileTimestampFormat(db, layout), path);
    } catch (err) {
      db.close();
      throw describeSqliteError(err, path, busy);
    }
  }

  private now(): string | number {
    return formatTimestamp(new Date(), this.timestampFormat);
  }

  private toRecord(r: RawMemory): MemoryRecord {
    const md = readMetadata(r.metadata).fields;
    const created = parseTimestamp(r.created_at);
    return {
      id: r.id,
      userId: r.user_id,
      content: contentText(r.content),
      metadata: md,
      category: categoryOf(md),
      importanceScore: importanceOf(md),
      embeddingModel: null,
      createdAt: created ?? new Date(0),
      updatedAt: parseTimestamp(r.updated_at) ?? created ?? new Date(0),
    };
  }

  async add(input: AddInput): Promise<AddResult> {
    const L = this.layout;
    if (input.userId === SYSTEM_PROMPTS_USER || input.userId.startsWith('system_')) {
      throw new UsageError(`user ids starting with system_ are reserved in the SQLite layout (${SYSTEM_PROMPTS_USER} rows are prompt fragments)`);
    }
    const key = dedupHash(input.content);
    const order = L.createdAt ? `${L.createdAt}, ${L.id}` : L.id;
    const rows = this.db
      .prepare(`SELECT CAST(${L.id} AS TEXT) AS id, ${L.content} AS content FROM ${L.table} WHERE ${L.userId} = ? ORDER BY ${order}`)
      .iterate(input.userId) as IterableIterator<{ id: string; content: unknown }>;
    for (const r of rows) {
      if (dedupHash(contentText(r.content)) === key) return { id: r.id, duplicate: true, duplicateOf: r.id };
    }
    const id = input.id ?? `mem_${randomUUID()}`;
    const [vec] = await this.embedder.embed([input.content]);
    const md = JSON.stringify(input.metadata ?? {});
    const emb = vec ? encodeEmbeddingJson(vec) : null;
    const now = this.now();
    const set: string[] = [`${L.userId} = ?`, `${L.content} = ?`, `${L.embedding} = ?`];
    const params: unknown[] = [input.userId, input.content, emb];
    if (L.metadata) {
      set.push(`${L.metadata} = ?`);
      params.push(md);
    }
    if (L.updatedAt) {
      set.push(`${L.updatedAt} = ?`);
      params.push(now);
    }
    const write = this.db.transaction(() => {
      const upd = this.db.prepare(`UPDATE ${L.table} SET ${set.join(', ')} WHERE ${L.id} = ?`).run(...params, id);
      if (upd.changes > 0) return;
      const cols = [L.id, L.userId, L.content, L.embedding!];
      const vals: unknown[] = [id, input.userId, input.content, emb];
      if (L.metadata) {
        cols.push(L.metadata);
        vals.push(md);
      }
      if (L.createdAt) {
        cols.push(L.createdAt);
        vals.push(now);
      }
      if (L.updatedAt) {
        cols.push(L.updatedAt);
        vals.push(now);
      }
      this.db.prepare(`INSERT INTO ${L.table} (${cols.join(', ')}) VALUES (${cols.map(() => '?').join(', ')})`).run(...vals);
    });
    write();
    return { id, duplicate: false };
  }

  async search(query: string, userId: string, k = 5, tier: string | null = null): Promise<SearchHit[]> {
    const started = Date.now();
    const L = this.layout;
    const [q] = await this.embedder.embed([query]);
    if (!q) throw new RunError('the embedder returned no vector for the query');
    const scored: { raw: RawMemory; similarity: number }[] = [];
    const rows = this.db
      .prepare(`SELECT ${this.columns}, ${L.embedding} AS embedding FROM ${L.table} WHERE ${L.userId} = ? AND ${this.memoryWhere}`)
      .iterate(userId) as IterableIterator<RawMemory>;
    for (const r of rows) {
      const dec = decodeEmbedding(r.embedding, q.length);
      if (!dec.vector) continue; // no vector, or one of another width (another model)
      scored.push({ raw: r, similarity: cosine(q, dec.vector) });
    }
    scored.sort((a, b) => b.similarity - a.similarity || (a.raw.id < b.raw.id ? -1 : a.raw.id > b.raw.id ? 1 : 0));
    const hits = scored.slice(0, Math.max(0, k)).map((s) => ({ ...this.toRecord(s.raw), similarity: s.similarity }));
    this.logSearch(userId, query, hits.length, Date.now() - started, tier);
    return hits;
  }

  private logSearch(userId: string, query: string, results: number, ms: number, tier: string | null): void {
    if (!this.analyticsReady) {
      this.db.exec(ANALYTICS_SQL);
      this.analyticsReady = true;
    }
    this.db
      .prepare(`INSERT INTO memory_analytics (user_id, query_text, results_count, response_time_ms, context_tier, created_at) VALUES (?, ?, ?, ?, ?, ?)`)
      .run(userId, query, results, ms, tier, formatTimestamp(new Date(), 'sqlite'));
  }

  async get(id: string): Promise<MemoryRecord | null> {
    const L = this.layout;
    const row = this.db.prepare(`SELECT ${this.columns} FROM ${L.table} WHERE ${L.id} = ? AND ${this.memoryWhere}`).get(id) as
      | RawMemory
      | undefined;
    return row ? this.toRecord(row) : null;
  }

  async delete(id: string): Promise<boolean> {
    const L = this.layout;
    return this.db.prepare(`DELETE FROM ${L.table} WHERE ${L.id} = ? AND ${this.memoryWhere}`).run(id).changes > 0;
  }

  async stats(userId?: string): Promise<StoreStats> {
    const L = this.layout;
    const where = userId === undefined ? this.memoryWhere : `${this.memoryWhere} AND ${L.userId} = ?`;
    const rows = this.db
      .prepare(`SELECT CAST(${L.userId} AS TEXT) AS user_id, ${L.metadata ?? 'NULL'} AS metadata, ${L.createdAt ?? 'NULL'} AS created_at FROM ${L.table} WHERE ${where}`)
      .iterate(...(userId === undefined ? [] : [userId])) as IterableIterator<{ user_id: string; metadata: unknown; created_at: unknown }>;
    let total = 0;
    let importance = 0;
    let latest: Date | null = null;
    const users = new Set<string>();
    const categories = new Set<string>();
    for (const r of rows) {
      total++;
      users.add(r.user_id);
      const md = readMetadata(r.metadata).fields;
      importance += importanceOf(md);
      const c = categoryOf(md);
      if (c !== null) categories.add(c);
      const t = parseTimestamp(r.created_at);
      if (t && (!latest || t > latest)) latest = t;
    }
    return {
      totalMemories: total,
      users: users.size,
      categories: categories.size,
      avgImportance: total === 0 ? 0 : importance / total,
      totalAccesses: 0,
      latestMemory: latest,
      fragments: this.fragments().filter((f) => f.active).length,
    };
  }

  /** Every fragment row of the file, mapped exactly as the migration maps it. */
  private fragments(): (FragmentRecord & { active: boolean })[] {
    const L = this.layout;
    const rows = this.db.prepare(`SELECT ${this.columns} FROM ${L.table} WHERE ${L.userId} = ?`).all(SYSTEM_PROMPTS_USER) as RawMemory[];
    const out: (FragmentRecord & { active: boolean })[] = [];
    for (const r of rows) {
      const content = contentText(r.content);
      if (content.trim() === '') continue; // the migration skips these too
      const row: SourceRow = {
        rowid: 0,
        id: r.id,
        userId: SYSTEM_PROMPTS_USER,
        content,
        contentBytes: Buffer.byteLength(content, 'utf8'),
        embedding: { encoding: 'null', vector: null },
        metadata: readMetadata(r.metadata),
        createdAt: parseTimestamp(r.created_at),
        updatedAt: parseTimestamp(r.updated_at),
      };
      const f = fragmentFromSource(row);
      out.push({
        id: f.id,
        category: f.category,
        priority: f.priority,
        content: f.content,
        agentType: f.agentType,
        contextTier: f.contextTier,
        active: f.isActive,
      });
    }
    return out;
  }

  async assemblePrompt(query: string, userId: string, agentType: string, tier: 'core' | 'standard' | 'full', k = 5): Promise<AssembledPrompt> {
    const memories = await this.search(query, userId, k, tier);
    const tiers = tiersUpTo(tier);
    const fragments: FragmentRecord[] = this.fragments()
      .filter((f) => f.active && (f.agentType === null || f.agentType === agentType) && tiers.includes(f.contextTier))
      .sort((a, b) => b.priority - a.priority || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
      .map(({ active: _active, ...f }) => f);
    return { memories, fragments, text: formatPrompt(fragments, memories) };
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}

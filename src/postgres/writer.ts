// Writes one batch into the target tables. Memories go through binary COPY into a staging
// table and then one INSERT … SELECT … ON CONFLICT, so an idempotent upsert keeps COPY's
// speed. Must be called inside a transaction (the staging table lives until commit).
import type { Db } from './connection.js';
import { BinaryCopyWriter, type CopyColumnType } from './copy-binary.js';
import type { FragmentRow } from './fragments.js';
import { vectorToText } from './vector-text.js';
import { exactInstant, instantText } from '../source/timestamps.js';
import { rowUuid } from './row-uuid.js';
import { memoriesIsView } from './adopted-table.js';

export interface MemoryRow {
  id: string;
  userId: string;
  content: string;
  contentHash: string;
  dedupHash: string;
  /** null on a metadata-only update keeps the stored vector. */
  embedding: Float32Array | null;
  embeddingModel: string | null;
  /** JSON text, parsed by PostgreSQL itself so numbers stay exact. */
  metadata: string;
  category: string | null;
  importanceScore: number;
  createdAt: Date | null;
  updatedAt: Date | null;
}

export interface DuplicateRow {
  originalId: string;
  duplicateId: string;
  userId: string;
  duplicateHash: string;
  similarity: number;
  type: 'exact' | 'fuzzy' | 'semantic';
}

export interface WriteResult {
  inserted: number;
  updated: number;
  insertedIds: string[];
  updatedIds: string[];
  /** Written into an adopted app's table (its triggers, not ours, decide its updated_at). */
  adopted?: boolean;
}

const MEMORY_COLUMNS: [string, CopyColumnType][] = [
  ['id', 'text'],
  ['uuid', 'uuid'],
  ['user_id', 'text'],
  ['content', 'text'],
  ['content_hash', 'text'],
  ['dedup_hash', 'text'],
  ['embedding', 'vector'],
  ['embedding_model', 'text'],
  ['metadata', 'jsonb'],
  ['category', 'text'],
  ['importance_score', 'float8'],
  ['created_at', 'timestamp'],
  ['updated_at', 'timestamp'],
  ['last_accessed_at', 'timestamp'],
];

const MEMORY_COLUMN_LIST = MEMORY_COLUMNS.map(([c]) => c).join(', ');

/** An encoder for memory rows (see encodeMemories). */
export function memoryCopyWriter(): BinaryCopyWriter {
  return new BinaryCopyWriter(MEMORY_COPY_TYPES, { initialBytes: 1024 * 1024 });
}

const MEMORY_COPY_TYPES = MEMORY_COLUMNS.map(([, t]) => t);
/** The memories columns encodeMemories writes, in order. */
export const MEMORY_COPY_COLUMNS = MEMORY_COLUMNS.map(([c]) => c);

/**
 * Encodes memory rows as one PGCOPY binary stream for the memories columns above. The bytes
 * are a view of the writer's buffer: valid until the writer encodes again.
 */
export function encodeMemories(rows: MemoryRow[], writer = memoryCopyWriter()): Uint8Array {
  writer.reset();
  for (const r of rows) addMemoryRow(writer, r);
  return writer.finish();
}

/** Appends one memory row to a writer (for callers that encode a batch in slices). */
export function addMemoryRow(writer: BinaryCopyWriter, r: MemoryRow): void {
  const updatedAt = r.updatedAt && exactInstant(r.updatedAt);
  writer.addRow([
    r.id,
    rowUuid(r.id),
    r.userId,
    r.content,
    r.contentHash,
    r.dedupHash,
    r.embedding,
    r.embeddingModel,
    r.metadata,
    r.category,
    r.importanceScore,
    r.createdAt && exactInstant(r.createdAt),
    updatedAt,
    // The source has no access time: its last change stands in, so an app's "not accessed
    // for 30 days" job does not see every migrated row as never accessed.
    updatedAt,
  ]);
}

export interface WriteMemoriesOptions {
  /**
   * The caller knows none of these ids is in memories (a first load into an empty table):
   * COPY straight into memories, without the staging table and the upsert. Should an id be
   * there after all (a concurrent writer), the COPY fails with unique_violation (23505) and
   * the transaction is aborted: the caller writes the batch again without `direct`.
   */
  direct?: boolean;
  /**
   * encodeMemories(rows), done by the caller ahead of the transaction (so that encoding the
   * next batch overlaps the database's work on this one).
   */
  encoded?: Uint8Array;
}

/** The columns are TIMESTAMP holding UTC wall time. */
const NOW_UTC = `(now() AT TIME ZONE 'UTC')`;

export async function writeMemories(tx: Db, rows: MemoryRow[], options: WriteMemoriesOptions = {}): Promise<WriteResult> {
  const out: WriteResult = { inserted: 0, updated: 0, insertedIds: [], updatedIds: [] };
  if (rows.length === 0) return out;
  const encoded = options.encoded ?? encodeMemories(rows);
  if (options.direct) return copyStraightIn(tx, rows, encoded);
  // CREATE … AS … WITH NO DATA copies the column types but not NOT NULL, so NULL timestamps
  // can be staged and defaulted in the INSERT below.
  await tx.exec(
    `CREATE TEMP TABLE IF NOT EXISTS mm_stage_memories ON COMMIT DROP AS SELECT ${MEMORY_COLUMN_LIST} FROM memories WITH NO DATA;
     TRUNCATE mm_stage_memories;`,
  );
  await tx.copyBinary('mm_stage_memories', MEMORY_COPY_COLUMNS, encoded);
  out.adopted = await memoriesIsView(tx);
  const result = out.adopted ? await upsertThroughView(tx) : await tx.query<{ id: string; inserted: boolean }>(
    `WITH up AS (
       INSERT INTO memories (${MEMORY_COLUMN_LIST})
       SELECT id, uuid, user_id, content, content_hash, dedup_hash, embedding, embedding_model, metadata, category,
              importance_score, COALESCE(created_at, ${NOW_UTC}), COALESCE(updated_at, created_at, ${NOW_UTC}),
              COALESCE(last_accessed_at, updated_at, created_at, ${NOW_UTC})
         FROM mm_stage_memories
       ON CONFLICT (id) DO UPDATE SET
         user_id = EXCLUDED.user_id,
         content = EXCLUDED.content,
         embedding = CASE WHEN EXCLUDED.embedding IS NULL AND memories.content_hash = EXCLUDED.content_hash
                          THEN memories.embedding ELSE EXCLUDED.embedding END,
         embedding_model = CASE WHEN EXCLUDED.embedding IS NULL AND memories.content_hash = EXCLUDED.content_hash
                          THEN memories.embedding_model ELSE EXCLUDED.embedding_model END,
         content_hash = EXCLUDED.content_hash,
         dedup_hash = EXCLUDED.dedup_hash,
         metadata = EXCLUDED.metadata,
         category = EXCLUDED.category,
         importance_score = EXCLUDED.importance_score,
         created_at = EXCLUDED.created_at,
         updated_at = EXCLUDED.updated_at
       WHERE memories.content_hash IS DISTINCT FROM EXCLUDED.content_hash
          OR memories.metadata IS DISTINCT FROM EXCLUDED.metadata
       RETURNING id, (xmax = 0) AS inserted)
     SELECT id, inserted FROM up`,
  );
  for (const r of result) {
    if (r.inserted) {
      out.inserted++;
      out.insertedIds.push(r.id);
    } else {
      out.updated++;
      out.updatedIds.push(r.id);
    }
  }
  return out;
}

/**
 * The upsert above for an adopted app's table, where memories is a view whose INSTEAD OF
 * triggers write through, and a view takes no ON CONFLICT: the function adopted-table.ts
 * made does the same, row by row, by the links' and the app's keys.
 */
async function upsertThroughView(tx: Db): Promise<{ id: string; inserted: boolean }[]> {
  return tx.query<{ id: string; inserted: boolean }>(`SELECT id, inserted FROM upsert_staged_memories()`);
}

/** COPY into memories itself. */
async function copyStraightIn(tx: Db, rows: MemoryRow[], encoded: Uint8Array): Promise<WriteResult> {
  // The staging path's COALESCE(created_at, now()): the same transaction timestamp, exact
  // to the microsecond. Rows without timestamps are encoded again with it filled in.
  let bytes = encoded;
  if (rows.some((r) => r.createdAt === null || r.updatedAt === null)) {
    const [t] = await tx.query<{ us: string }>(`SELECT (extract(epoch FROM now()) * 1000000)::int8::text AS us`);
    const now = BigInt(t!.us);
    const filled = rows.map((r) => ({ ...r, createdAt: r.createdAt ?? now, updatedAt: r.updatedAt ?? r.createdAt ?? now }));
    bytes = encodeMemories(filled as unknown as MemoryRow[]);
  }
  await tx.copyBinary('memories', MEMORY_COPY_COLUMNS, bytes);
  const ids = rows.map((r) => r.id);
  return { inserted: ids.length, updated: 0, insertedIds: ids, updatedIds: [] };
}

export async function writeFragments(
  tx: Db,
  rows: (FragmentRow & { embedding?: Float32Array | null; embeddingModel?: string | null })[],
): Promise<{ inserted: number; updated: number }> {
  if (rows.length === 0) return { inserted: 0, updated: 0 };
  const payload = JSON.stringify(
    rows.map((f) => ({
      id: f.id,
      category: f.category,
      priority: f.priority,
      content: f.content,
      content_hash: f.contentHash,
      tags: f.tags,
      embedding: f.embedding ? vectorToText(f.embedding) : null,
      embedding_model: f.embeddingModel ?? null,
      agent_type: f.agentType,
      context_tier: f.contextTier,
      is_active: f.isActive,
      metadata: f.metadata,
      created_at: instantText(f.createdAt),
      updated_at: instantText(f.updatedAt ?? f.createdAt),
    })),
  );
  const res = await tx.query<{ inserted: boolean }>(
    `WITH up AS (
       INSERT INTO prompt_fragments (id, uuid, category, priority, content, content_hash, tags, embedding, embedding_model,
                                     agent_type, context_tier, is_active, metadata, created_at, updated_at)
       SELECT x.id, memory_migrate_uuid(x.id), x.category, x.priority, x.content, x.content_hash,
              ARRAY(SELECT jsonb_array_elements_text(x.tags)), x.embedding::vector, x.embedding_model,
              x.agent_type, x.context_tier, x.is_active, x.metadata::jsonb,
              COALESCE(x.created_at AT TIME ZONE 'UTC', ${NOW_UTC}), COALESCE(COALESCE(x.updated_at, x.created_at) AT TIME ZONE 'UTC', ${NOW_UTC})
         FROM jsonb_to_recordset($1::text::jsonb) AS x(id text, category text, priority int, content text, content_hash text,
              tags jsonb, embedding text, embedding_model text, agent_type text, context_tier text, is_active boolean,
              metadata text, created_at timestamptz, updated_at timestamptz)
       ON CONFLICT (id) DO UPDATE SET
         category = EXCLUDED.category, priority = EXCLUDED.priority, content = EXCLUDED.content,
         content_hash = EXCLUDED.content_hash, tags = EXCLUDED.tags,
         embedding = COALESCE(EXCLUDED.embedding, prompt_fragments.embedding),
         embedding_model = COALESCE(EXCLUDED.embedding_model, prompt_fragments.embedding_model),
         agent_type = EXCLUDED.agent_type, context_tier = EXCLUDED.context_tier, is_active = EXCLUDED.is_active,
         metadata = EXCLUDED.metadata, created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at
       WHERE prompt_fragments.content_hash IS DISTINCT FROM EXCLUDED.content_hash
          OR prompt_fragments.metadata IS DISTINCT FROM EXCLUDED.metadata
       RETURNING (xmax = 0) AS inserted)
     SELECT inserted FROM up`,
    [payload],
  );
  const inserted = res.filter((r) => r.inserted).length;
  return { inserted, updated: res.length - inserted };
}

export async function writeDuplicates(tx: Db, rows: DuplicateRow[]): Promise<void> {
  if (rows.length === 0) return;
  await tx.query(
    `INSERT INTO memory_duplicates (original_id, duplicate_id, user_id, duplicate_hash, similarity_score, dedup_type)
     SELECT x.original_id, x.duplicate_id, x.user_id, x.duplicate_hash, x.similarity_score, x.dedup_type
       FROM jsonb_to_recordset($1::text::jsonb) AS x(original_id text, duplicate_id text, user_id text, duplicate_hash text,
            similarity_score float8, dedup_type text)
     ON CONFLICT (duplicate_id, dedup_type) DO NOTHING`,
    [
      JSON.stringify(
        rows.map((d) => ({
          original_id: d.originalId,
          duplicate_id: d.duplicateId,
          user_id: d.userId,
          duplicate_hash: d.duplicateHash,
          similarity_score: d.similarity,
          dedup_type: d.type,
        })),
      ),
    ],
  );
}

export async function writeSkips(tx: Db, rows: { id: string; user: string | null; reason: string }[]): Promise<void> {
  if (rows.length === 0) return;
  await tx.query(
    `INSERT INTO migration_skips (source_id, user_id, reason)
     SELECT x.id, x.user_id, x.reason FROM jsonb_to_recordset($1::text::jsonb) AS x(id text, user_id text, reason text)
     ON CONFLICT (source_id) DO UPDATE SET user_id = EXCLUDED.user_id, reason = EXCLUDED.reason`,
    [JSON.stringify(rows.map((s) => ({ id: s.id, user_id: s.user, reason: s.reason })))],
  );
}

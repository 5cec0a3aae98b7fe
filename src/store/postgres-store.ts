// MemoryStore on the migrated Postgres schema (PGlite or a real server). Search orders by
// the same distance expression the ivfflat index is built on, so the index is used.
import { randomUUID } from 'node:crypto';
import type { Db } from '../postgres/connection.js';
import { vectorToText } from '../postgres/vector-text.js';
import { contentHash, dedupHash } from '../source/canonical.js';
import { cosineDistanceSql, ivfflatIndexLists, ivfflatProbes } from '../postgres/indexes.js';
import { tableDimensions } from '../postgres/schema.js';
import { RunError } from '../errors.js';
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


function toRecord(r: Record<string, any>): MemoryRecord {
  return {
    id: r.id,
    userId: r.user_id,
    content: r.content,
    metadata: typeof r.metadata === 'string' ? JSON.parse(r.metadata) : (r.metadata ?? {}),
    category: r.category ?? null,
    importanceScore: Number(r.importance_score),
    embeddingModel: r.embedding_model ?? null,
    createdAt: new Date(r.created_at),
    updatedAt: new Date(r.updated_at),
  };
}

const RECORD_COLUMNS = 'id, user_id, content, metadata, category, importance_score, embedding_model, created_at, updated_at';

export class PostgresMemoryStore implements MemoryStore {
  readonly backend = 'postgres' as const;
  private constructor(
    private readonly db: Db,
    private readonly embedder: TextEmbedder,
    private readonly dims: number,
    private readonly ownsDb: boolean,
  ) {}

  get model(): string {
    return this.embedder.model;
  }

  static async open(db: Db, embedder: TextEmbedder, opts: { ownsDb?: boolean } = {}): Promise<PostgresMemoryStore> {
    const dims = await tableDimensions(db, 'memories');
    if (dims === null) throw new RunError('the target has no memories table: run `memory-migrate migrate` or `memory-migrate schema` first');
    if (dims !== embedder.dimensions) {
      throw new RunError(
        `memories.embedding is vector(${dims}) but the embedder ${embedder.model} makes ${embedder.dimensions} dimensions: use the model the migration used`,
      );
    }
    return new PostgresMemoryStore(db, embedder, dims, opts.ownsDb ?? false);
  }

  /** Refuses to compare vectors from different models in one column. */
  private async assertSingleModel(userId: string): Promise<void> {
    const rows = await this.db.query<{ model: string | null }>(
      `SELECT DISTINCT embedding_model AS model FROM memories WHERE user_id = $1 AND embedding IS NOT NULL LIMIT 3`,
      [userId],
    );
    const others = rows.map((r) => r.model).filter((m) => m !== this.embedder.model);
    if (others.length > 0) {
      throw new RunError(
        `memories of ${userId} were embedded with ${others.join(', ')}, not ${this.embedder.model}: refusing to compare vectors ` +
          `from different models; search with --model ${others[0]} or re-run the migration with --model ${this.embedder.model}`,
      );
    }
  }

  async add(input: AddInput): Promise<AddResult> {
    const hash = contentHash(input.content);
    const dhash = dedupHash(input.content);
    const dup = await this.db.query<{ id: string }>(
      `SELECT id FROM memories WHERE user_id = $1 AND dedup_hash = $2 ORDER BY created_at, id LIMIT 1`,
      [input.userId, dhash],
    );
    const id = input.id ?? `mem_${randomUUID()}`;
    if (dup[0]) {
      await this.db.query(
        `INSERT INTO memory_duplicates (original_id, duplicate_id, user_id, duplicate_hash, similarity_score, dedup_type)
         VALUES ($1, $2, $3, $4, 1.0, 'exact') ON CONFLICT (duplicate_id, dedup_type) DO NOTHING`,
        [dup[0].id, id, input.userId, hash],
      );
      return { id: dup[0].id, duplicate: true, duplicateOf: dup[0].id };
    }
    const [vec] = await this.embedder.embed([input.content]);
    const md = input.metadata ?? {};
    const values = [id, input.userId, input.content, hash, dhash, vectorToText(vec!), this.embedder.model, JSON.stringify(md),
      typeof md['category'] === 'string' ? md['category'] : null];
    // UPDATE, then INSERT when there was nothing to update: no ON CONFLICT, which an adopted
    // app's table (memories is then a view over it, see postgres/adopted-table.ts) cannot take.
    await this.db.transaction(async (tx) => {
      const updated = await tx.query(
        `UPDATE memories SET user_id = $2, content = $3, content_hash = $4, dedup_hash = $5, embedding = $6::vector,
                embedding_model = $7, metadata = $8::text::jsonb, category = $9
          WHERE id = $1 RETURNING id`,
        values,
      );
      if (updated.length > 0) return;
      await tx.query(
        `INSERT INTO memories (id, user_id, content, content_hash, dedup_hash, embedding, embedding_model, metadata, category)
         VALUES ($1, $2, $3, $4, $5, $6::vector, $7, $8::text::jsonb, $9)`,
        values,
      );
    });
    return { id, duplicate: false };
  }

  async search(query: string, userId: string, k = 5, tier: string | null = null): Promise<SearchHit[]> {
    const started = Date.now();
    await this.assertSingleModel(userId);
    const [vec] = await this.embedder.embed([query]);
    const hits = await this.db.transaction(async (tx) => {
      const lists = (await ivfflatIndexLists(tx, 'memories_embedding_idx')) ?? 1;
      // Probes sqrt(lists) for recall; iterative scans keep filling when the user filter
      // removes rows the index returned (pgvector >= 0.8; ignored as a placeholder before).
      await tx.exec(`SET LOCAL ivfflat.probes = ${ivfflatProbes(lists)}; SET LOCAL ivfflat.iterative_scan = relaxed_order;`);
      return tx.query(
        `SELECT ${RECORD_COLUMNS}, ${cosineDistanceSql(this.dims, '$1')} AS distance
           FROM memories
          WHERE user_id = $2 AND embedding IS NOT NULL
          ORDER BY distance
          LIMIT $3`,
        [vectorToText(vec!), userId, k],
      );
    });
    const out = hits.map((h) => ({ ...toRecord(h), similarity: 1 - Number(h['distance']) }));
    await this.db.query(
      `INSERT INTO memory_analytics (user_id, query_text, results_count, response_time_ms, context_tier) VALUES ($1, $2, $3, $4, $5)`,
      [userId, query, out.length, Date.now() - started, tier],
    );
    return out;
  }

  async get(id: string): Promise<MemoryRecord | null> {
    const rows = await this.db.query(`SELECT ${RECORD_COLUMNS} FROM memories WHERE id = $1`, [id]);
    return rows[0] ? toRecord(rows[0]) : null;
  }

  async delete(id: string): Promise<boolean> {
    const rows = await this.db.query(`DELETE FROM memories WHERE id = $1 RETURNING id`, [id]);
    await this.db.query(`DELETE FROM memory_duplicates WHERE duplicate_id = $1`, [id]);
    return rows.length > 0;
  }

  async stats(userId?: string): Promise<StoreStats> {
    const [m] = await this.db.query(
      `SELECT count(*)::int AS total, count(DISTINCT user_id)::int AS users, count(DISTINCT category)::int AS categories,
              COALESCE(avg(importance_score), 0)::float8 AS avg_importance, COALESCE(sum(access_count), 0)::int AS accesses,
              max(created_at) AS latest
         FROM memories WHERE $1::text IS NULL OR user_id = $1`,
      [userId ?? null],
    );
    const [f] = await this.db.query(`SELECT count(*)::int AS n FROM prompt_fragments WHERE is_active`);
    return {
      totalMemories: Number(m!['total']),
      users: Number(m!['users']),
      categories: Number(m!['categories']),
      avgImportance: Number(m!['avg_importance']),
      totalAccesses: Number(m!['accesses']),
      latestMemory: m!['latest'] ? new Date(m!['latest']) : null,
      fragments: Number(f!['n']),
    };
  }

  async assemblePrompt(query: string, userId: string, agentType: string, tier: 'core' | 'standard' | 'full', k = 5): Promise<AssembledPrompt> {
    const memories = await this.search(query, userId, k, tier);
    const rows = await this.db.query(
      `SELECT id, category, priority, content, agent_type, context_tier FROM prompt_fragments
        WHERE is_active AND (agent_type IS NULL OR agent_type = $1) AND context_tier = ANY($2::text[])
        ORDER BY priority DESC, id`,
      [agentType, tiersUpTo(tier)],
    );
    const fragments: FragmentRecord[] = rows.map((r) => ({
      id: r['id'],
      category: r['category'],
      priority: Number(r['priority']),
      content: r['content'],
      agentType: r['agent_type'] ?? null,
      contextTier: r['context_tier'],
    }));
    if (memories.length > 0) {
      await this.db.query(
        `UPDATE memories SET access_count = access_count + 1, last_accessed_at = now() WHERE id = ANY($1::text[])`,
        [memories.map((m) => m.id)],
      );
    }
    return { memories, fragments, text: formatPrompt(fragments, memories) };
  }

  async close(): Promise<void> {
    if (this.ownsDb) await this.db.close();
  }
}

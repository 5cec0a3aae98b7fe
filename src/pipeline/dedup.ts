// Duplicates within a user. Exact duplicates share a dedup hash (src/source/canonical.ts) with
// a stored row, a row of this batch or of an earlier one; near duplicates differ by a word or
// by punctuation (fuzzy: word-set Jaccard) or only say the same thing (semantic: cosine
// similarity of the vectors).
import type { Db } from '../postgres/connection.js';
import type { DuplicateRow } from '../postgres/writer.js';
import { vectorToText } from '../postgres/vector-text.js';
import { countDuplicate, recordDuplicate, userCounts } from './counts.js';
import { dedupKey } from './keys.js';
import type { Existing, PipelineOptions, PipelineResult, PreparedMemory, RunState } from './types.js';


export interface ExactDedupResult {
  /** The memories to write: new, or stored and changed. */
  toWrite: PreparedMemory[];
  duplicates: DuplicateRow[];
  /** Ids recorded as exact duplicates by an earlier run that no longer are. */
  staleDuplicates: string[];
}

/**
 * Sorts a batch's memories into unchanged, still recorded duplicates, exact duplicates (of a
 * stored row, of this batch, of the batch in flight or of this run) and rows to write.
 */
export function exactDedup(
  state: RunState,
  memories: PreparedMemory[],
  existing: Map<string, Existing>,
  keyOwners: Map<string, string>,
  counts: PipelineResult,
): ExactDedupResult {
  const m = counts.memories;
  const toWrite: PreparedMemory[] = [];
  const duplicates: DuplicateRow[] = [];
  const staleDuplicates: string[] = [];
  const batchKeys = new Map<string, string>();
  // Dedup keys as they are in the source now: a row of this batch, or of the batch still being
  // written, may have been edited since the target was written, so the target's dedup_hash for
  // it is out of date. Built on first use: a first load never asks.
  let batchKeyOf: Map<string, string> | null = null;
  const inflight = state.inflight;
  const currentKey = (id: string) =>
    (batchKeyOf ??= new Map(memories.map((x) => [x.id, dedupKey(x.userId, x.dedupHash)]))).get(id) ?? inflight?.keyOf.get(id);
  for (const mem of memories) {
    const ex = existing.get(mem.id);
    if (ex?.duplicateOf) {
      const originalKey = currentKey(ex.duplicateOf) ?? dedupKey(ex.originalUser, ex.originalDedupHash);
      if (originalKey === dedupKey(mem.userId, mem.dedupHash)) {
        // Recorded as an exact duplicate by an earlier run: still a duplicate.
        countDuplicate(counts, mem.userId, 'exact');
        continue;
      }
      // It or its original was edited since: no longer a duplicate, so it is decided afresh
      // like a new row (as a clean run of the edited file would).
      staleDuplicates.push(mem.id);
    }
    if (ex && ex.contentHash !== null) {
      if (ex.contentHash === mem.contentHash && ex.sameMetadata) {
        m.unchanged++;
        userCounts(counts, mem.userId).unchanged++;
        continue;
      }
      mem.changedContent = ex.contentHash !== mem.contentHash;
      toWrite.push(mem);
      continue;
    }
    const key = dedupKey(mem.userId, mem.dedupHash);
    let storedOwner = keyOwners.get(key);
    // A stored owner edited in this batch or the one in flight no longer has this key.
    if (storedOwner !== undefined && (currentKey(storedOwner) ?? key) !== key) storedOwner = undefined;
    const owner = batchKeys.get(key) ?? storedOwner ?? inflight?.owners.get(key) ?? state.runKeys?.get(mem.userId, mem.dedupHash);
    if (owner !== undefined && owner !== mem.id) {
      recordDuplicate(counts, duplicates, mem, owner, 1.0, 'exact');
      continue;
    }
    batchKeys.set(key, mem.id);
    state.runKeys?.set(mem.userId, mem.dedupHash, mem.id);
    toWrite.push(mem);
  }
  return { toWrite, duplicates, staleDuplicates };
}

/**
 * How many of a user's stored memories fuzzy dedup compares a batch with: the most recent.
 * Their texts and word sets are what it holds, for each user of the batch, while it decides
 * the batch (about 1 KB a memory); older memories are not compared.
 */
export const FUZZY_POOL_PER_USER = 10_000;

/**
 * Near-duplicates by word-set Jaccard against the user's most recent stored memories (up to
 * FUZZY_POOL_PER_USER) and the batch. Recorded in memory_duplicates; with skipMatches the
 * later row is not stored.
 */
export async function fuzzyDedup(
  db: Db,
  opts: PipelineOptions,
  toWrite: PreparedMemory[],
  duplicates: DuplicateRow[],
  result: PipelineResult,
) {
  const threshold = opts.dedup.threshold ?? 0.9;
  const users = [...new Set(toWrite.filter((t) => t.changedContent).map((t) => t.userId))];
  if (users.length === 0) return;
  // Bounded: the most recent FUZZY_POOL_PER_USER of each user's stored memories, in the
  // order they were stored (the first of equal scores wins).
  const stored = await db.query<{ id: string; user_id: string; content: string }>(
    `SELECT id, user_id, content FROM (
       SELECT id, user_id, content, created_at,
              row_number() OVER (PARTITION BY user_id ORDER BY created_at DESC, id DESC) AS recent
         FROM memories WHERE user_id = ANY($1::text[])) s
      WHERE recent <= $2 ORDER BY created_at, id`,
    [users, FUZZY_POOL_PER_USER],
  );
  const pool = new Map<string, { id: string; words: Set<string> }[]>();
  for (const s of stored) {
    const list = pool.get(s.user_id) ?? [];
    list.push({ id: s.id, words: wordSet(s.content) });
    pool.set(s.user_id, list);
  }
  const keep: PreparedMemory[] = [];
  for (const mem of toWrite) {
    if (!mem.changedContent) {
      keep.push(mem);
      continue;
    }
    const words = wordSet(mem.content);
    const list = pool.get(mem.userId) ?? [];
    let match: { id: string; score: number } | null = null;
    for (const other of list) {
      if (other.id === mem.id) continue;
      const score = jaccard(words, other.words);
      if (score >= threshold && (!match || score > match.score)) match = { id: other.id, score };
    }
    if (match) {
      recordDuplicate(result, duplicates, mem, match.id, match.score, 'fuzzy');
      if (opts.dedup.skipMatches) continue;
    }
    list.push({ id: mem.id, words });
    pool.set(mem.userId, list);
    keep.push(mem);
  }
  toWrite.splice(0, toWrite.length, ...keep);
}

/**
 * Near-duplicates by meaning, after embedding: cosine similarity (pgvector, 1 - (a <=> b))
 * of each new vector to the user's stored rows and to the rows before it in this batch, so
 * the outcome does not depend on where batches start. The ORDER BY is not an index order, so
 * the search is exact, never an ivfflat approximation. With skipMatches the later row is not
 * stored (it was embedded already: the match needs its vector). It holds only the batch: the
 * comparison with stored rows runs in the database (a scan of the user's rows per new row).
 */
export async function semanticDedup(
  db: Db,
  opts: PipelineOptions,
  toWrite: PreparedMemory[],
  duplicates: DuplicateRow[],
  result: PipelineResult,
) {
  const threshold = opts.dedup.threshold ?? 0.85;
  const candidates = toWrite.filter((t) => t.changedContent && t.embedding);
  if (candidates.length === 0) return;
  const payload = JSON.stringify(candidates.map((c, i) => ({ i, id: c.id, u: c.userId, v: vectorToText(c.embedding!) })));
  const rows = await db.query<{ i: number; j: number | null; match_id: string; sim: number }>(
    `WITH x AS MATERIALIZED (
       SELECT i, id, u, v::vector AS v FROM jsonb_to_recordset($1::text::jsonb) AS r(i int, id text, u text, v text))
     SELECT x.i, NULL::int AS j, n.id AS match_id, n.sim
       FROM x CROSS JOIN LATERAL (
         SELECT m.id, 1 - (m.embedding <=> x.v) AS sim FROM memories m
          WHERE m.user_id = x.u AND m.id <> x.id AND m.embedding IS NOT NULL AND 1 - (m.embedding <=> x.v) >= $2
          ORDER BY 1 - (m.embedding <=> x.v) DESC, m.created_at, m.id
          LIMIT 1) n
     UNION ALL
     SELECT a.i, b.i AS j, b.id AS match_id, 1 - (a.v <=> b.v) AS sim
       FROM x a JOIN x b ON b.u = a.u AND b.i < a.i
      WHERE 1 - (a.v <=> b.v) >= $2`,
    [payload, threshold],
  );
  const stored = new Map<number, { id: string; score: number }>();
  const inBatch = new Map<number, { j: number; id: string; score: number }[]>();
  for (const r of rows) {
    const i = Number(r.i);
    const score = Number(r.sim);
    if (r.j === null) stored.set(i, { id: r.match_id, score });
    else inBatch.set(i, [...(inBatch.get(i) ?? []), { j: Number(r.j), id: r.match_id, score }]);
  }
  const dropped = new Set<number>();
  candidates.forEach((mem, i) => {
    let match = stored.get(i) ?? null;
    for (const o of (inBatch.get(i) ?? []).sort((a, b) => a.j - b.j)) {
      // A skipped earlier row is not stored, so it cannot be an original.
      if (dropped.has(o.j)) continue;
      if (!match || o.score > match.score) match = { id: o.id, score: o.score };
    }
    if (!match) return;
    recordDuplicate(result, duplicates, mem, match.id, match.score, 'semantic');
    if (opts.dedup.skipMatches) dropped.add(i);
  });
  if (dropped.size === 0) return;
  const drop = new Set([...dropped].map((i) => candidates[i]));
  const keep = toWrite.filter((t) => !drop.has(t));
  toWrite.splice(0, toWrite.length, ...keep);
}

/** Lower-cased words with punctuation stripped, as a set. */
export function wordSet(text: string): Set<string> {
  const words = text
    .normalize('NFC')
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s]+/gu, ' ')
    .split(/\s+/)
    .filter((w) => w.length > 0);
  return new Set(words);
}

/** |A ∩ B| / |A ∪ B|; two empty sets are identical (1). */
export function jaccard(a: Set<string>, b: Set<string>): number {
  if (a.size === 0 && b.size === 0) return 1;
  let inter = 0;
  const [small, large] = a.size <= b.size ? [a, b] : [b, a];
  for (const w of small) if (large.has(w)) inter++;
  return inter / (a.size + b.size - inter);
}

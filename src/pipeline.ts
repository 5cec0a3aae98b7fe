// Streams rows from the SQLite source to the target in batches. Each batch is classified
// (memory, fragment, skip), deduplicated per user, embedded (reusing stored vectors and the
// cache first), and written in its own transaction together with the ledger checkpoint, so a
// crash at any point loses at most the batch in flight and a re-run converges.
import type { Db } from './postgres/connection.js';
import type { SourceFile } from './source/sqlite-source.js';
import type { SourceFilter, SourceRow } from './source/types.js';
import { contentHash, dedupHash } from './source/canonical.js';
import { categoryOf, importanceOf } from './source/metadata.js';
import { isSystemUser, MAX_CONTENT_BYTES, SYSTEM_PROMPTS_USER } from './source/rules.js';
import type { EmbeddingService } from './embed/service.js';
import type { EmbedInput, EmbedStats } from './embed/types.js';
import { fragmentFromSource, defaultFragments, type FragmentRow } from './postgres/fragments.js';
import {
  addMemoryRow,
  memoryCopyWriter,
  writeMemories,
  writeFragments,
  writeDuplicates,
  writeSkips,
  type MemoryRow,
  type DuplicateRow,
} from './postgres/writer.js';
import type { BinaryCopyWriter } from './postgres/copy-binary.js';
import { checkpoint } from './postgres/ledger.js';
import { createBtreeIndexes, dropMemoriesBtreeIndexes } from './postgres/schema.js';
import { emptyMemoryCounts, MAX_SKIPPED_IN_REPORT, type MemoryCounts, type SkippedRow } from './report.js';
import { jaccard, RunDedupKeys, wordSet } from './dedup.js';


export interface DedupOptions {
  mode: 'exact' | 'fuzzy' | 'semantic';
  /** Jaccard threshold for fuzzy (default 0.9), cosine similarity for semantic (default 0.85). */
  threshold?: number;
  /** Skip fuzzy/semantic matches instead of only recording them. */
  skipMatches?: boolean;
}

export interface PipelineOptions {
  source: SourceFile;
  /** The target; null when a dry run has no schema to read from. */
  db: Db | null;
  embeddings: EmbeddingService;
  model: string;
  dimensions: number;
  /** Model that produced the stored SQLite vectors (declared by the operator). */
  sourceModel: string | null;
  filter: SourceFilter;
  dedup: DedupOptions;
  batchSize: number;
  dryRun: boolean;
  runId: number | null;
  signal?: AbortSignal;
  onProgress?: (p: PipelineProgress) => void;
  onSkip?: (row: SkippedRow) => void;
}

export interface PipelineProgress {
  done: number;
  total: number;
  memories: MemoryCounts;
}

export interface PipelineResult {
  memories: MemoryCounts;
  fragments: { read: number; migrated: number; updated: number; unchanged: number; defaults: number };
  users: Record<string, { read: number; migrated: number; updated: number; unchanged: number; duplicates: number; skipped: number }>;
  invalidStored: number;
  skippedRows: SkippedRow[];
  lastRowid: number | null;
  /**
   * Texts a dry run would send to the API (after dedup, reuse and unchanged rows), grouped
   * as the real run would group them: one group per embedding call.
   */
  pendingEmbeds: EmbedInput[][];
}

export class Interrupted extends Error {
  constructor(readonly lastRowid: number | null) {
    super('interrupted');
  }
}

interface Existing {
  contentHash: string | null;
  sameMetadata: boolean;
  duplicateOf: string | null;
  /** The recorded original's stored user and dedup_hash (to tell a stale record). */
  originalUser: string | null;
  originalDedupHash: string | null;
}

// Reading, hashing and encoding are synchronous. The batch being written meanwhile needs the
// event loop for each of its round trips and to keep feeding its COPY to the socket, and the
// server sits idle until it gets it: every 10 rows (about half a millisecond of work) the loop
// gets a turn. Every 50 rows measured 7.7/7.4/6.6 s against 6.8/6.2/6.4 s for 100k rows.
const YIELD_EVERY_ROWS = 10;
const yieldToIo = () => new Promise<void>((resolve) => setImmediate(resolve));

function emptyResult(): PipelineResult {
  return {
    memories: emptyMemoryCounts(),
    fragments: { read: 0, migrated: 0, updated: 0, unchanged: 0, defaults: 0 },
    users: {},
    invalidStored: 0,
    skippedRows: [],
    lastRowid: null,
    pendingEmbeds: [],
  };
}

/** What the batches of one run share. */
interface RunState {
  /**
   * Dedup keys (user + dedup hash) of the rows this run stores, for the whole run. Kept only
   * when the target is not asked instead: a dry run (nothing is written) and a first load
   * (the target holds nothing but this run's rows, so the per-batch lookup is skipped).
   */
  runKeys: RunDedupKeys | null;
  /** Skip the target lookups: a first load into an empty target. */
  fresh: boolean;
  /**
   * The batch whose transaction may still be open while the next one is prepared: the dedup
   * keys its rows will have once it commits (the target still shows the old ones).
   */
  inflight: { owners: Map<string, string>; keyOf: Map<string, string> } | null;
  /** Two encoders: one batch's bytes are on their way to the server while the next is encoded. */
  writers: [BinaryCopyWriter, BinaryCopyWriter];
  batches: number;
}

export async function runPipeline(opts: PipelineOptions): Promise<PipelineResult> {
  const { source, db, dryRun } = opts;
  const total = source.count(opts.filter);
  const result = emptyResult();
  // A first load (memories and memory_duplicates empty when the run starts): the target holds
  // only this run's rows, and source ids do not repeat, so no id of a batch can be stored yet
  // and the per-batch lookups of existing ids and dedup keys are answered from memory.
  const fresh = db !== null && !dryRun && (await targetIsEmpty(db));
  const state: RunState = {
    runKeys: dryRun || fresh ? new RunDedupKeys() : null,
    fresh,
    inflight: null,
    writers: [memoryCopyWriter(), memoryCopyWriter()],
    batches: 0,
  };
  // A first load builds the secondary btree indexes once, after the COPY (see
  // MEMORIES_BTREE_INDEXES). Not for a shard (other shards may be writing) nor for fuzzy or
  // semantic dedup, which search each user's stored rows in every batch.
  let indexesDropped = fresh && !opts.filter.shard && opts.dedup.mode === 'exact';
  if (indexesDropped) await dropMemoriesBtreeIndexes(db!);
  const restoreIndexes = async () => {
    if (!indexesDropped) return;
    indexesDropped = false;
    await createBtreeIndexes(db!);
  };
  const seenIdsLower = new Map<string, string>();
  let batch: SourceRow[] = [];
  let done = 0;

  // Two stages: batch k is written (COPY, ledger checkpoint, commit) while batch k+1 is read,
  // decoded, hashed, deduplicated, embedded and encoded. Commits stay in batch order, one at a
  // time. Preparing k+1 reads the target while k may be uncommitted: RunState.inflight carries
  // what k changes. Fuzzy and semantic dedup compare with every stored row, and a repeated id
  // may be in batch k itself: those batches wait for k to commit before they are prepared.
  let pending: Promise<void> | null = null;
  const settle = async () => {
    if (!pending) return;
    const p = pending;
    pending = null;
    await p;
  };
  const flush = async (rows: SourceRow[]) => {
    if (rows.length === 0) return;
    // Stopped: the batch being written (and any prepared, its embeddings paid for) is
    // committed; nothing new is started.
    if (opts.signal?.aborted) {
      await settle();
      throw new Interrupted(result.lastRowid);
    }
    const repeatedId = rows.some((r) => (r as SourceRow & { repeatedId?: boolean }).repeatedId);
    if (opts.dedup.mode !== 'exact' || repeatedId) await settle();
    // A repeated id is looked up in the target, by id and by dedup key: indexes needed.
    if (repeatedId) await restoreIndexes();
    const prepared = await prepareBatch(opts, state, rows);
    const count = rows.length; // not the rows themselves: they hold the vectors
    await settle();
    pending = commitBatch(opts, state, prepared, result).then(() => {
      done += count;
      result.lastRowid = prepared.lastRowid;
      opts.onProgress?.({ done, total, memories: result.memories });
    });
    // Awaited before the next batch commits; until then a failure must not count as unhandled.
    pending.catch(() => {});
  };

  // Reads the source in order, batch by batch, and waits for the last commit.
  const readAll = async () => {
    let sinceYield = 0;
    for (const row of source.rows(opts.filter)) {
      const lower = row.id.toLowerCase();
      const clash = seenIdsLower.get(lower);
      if (clash !== undefined && clash !== row.id) (row as SourceRow & { idClash?: string }).idClash = clash;
      else if (clash === row.id) (row as SourceRow & { repeatedId?: boolean }).repeatedId = true;
      else seenIdsLower.set(lower, row.id);
      batch.push(row);
      if (batch.length >= opts.batchSize) {
        const full = batch;
        batch = [];
        await flush(full);
      } else if (++sinceYield >= YIELD_EVERY_ROWS) {
        sinceYield = 0;
        await yieldToIo();
      }
    }
    await flush(batch);
    await settle();
  };

  try {
    await readAll();
  } catch (err) {
    // Stopped or failed: the rows committed so far get their indexes now, not at the next run.
    await settle().catch(() => {});
    await restoreIndexes().catch(() => {});
    throw err;
  }
  await restoreIndexes();
  if (db && !dryRun) {
    result.fragments.defaults = await ensureDefaultFragments(db, opts);
  } else if (dryRun) {
    result.fragments.defaults = await countMissingDefaults(db, opts, result);
  }
  return result;
}

/** a + b, for the counts a batch adds to the run's. */
function addMemoryCounts(a: MemoryCounts, b: MemoryCounts): MemoryCounts {
  const sumMaps = (x: Record<string, number>, y: Record<string, number>) => {
    const out = { ...x };
    for (const [k, v] of Object.entries(y)) out[k] = (out[k] ?? 0) + v;
    return out;
  };
  return {
    read: a.read + b.read,
    migrated: a.migrated + b.migrated,
    updated: a.updated + b.updated,
    unchanged: a.unchanged + b.unchanged,
    skipped: a.skipped + b.skipped,
    errors: a.errors + b.errors,
    duplicates: {
      exact: a.duplicates.exact + b.duplicates.exact,
      fuzzy: a.duplicates.fuzzy + b.duplicates.fuzzy,
      semantic: a.duplicates.semantic + b.duplicates.semantic,
      total: a.duplicates.total + b.duplicates.total,
    },
    skippedByReason: sumMaps(a.skippedByReason, b.skippedByReason),
    warnings: sumMaps(a.warnings, b.warnings),
  };
}

function addFragmentCounts(a: PipelineResult['fragments'], b: PipelineResult['fragments']): PipelineResult['fragments'] {
  return {
    read: a.read + b.read,
    migrated: a.migrated + b.migrated,
    updated: a.updated + b.updated,
    unchanged: a.unchanged + b.unchanged,
    defaults: a.defaults + b.defaults,
  };
}

/** Adds a committed batch's counts to the run's. */
function mergeResult(into: PipelineResult, batch: PipelineResult) {
  into.memories = addMemoryCounts(into.memories, batch.memories);
  into.fragments = addFragmentCounts(into.fragments, batch.fragments);
  for (const [user, c] of Object.entries(batch.users)) {
    const u = userCounts(into, user);
    u.read += c.read;
    u.migrated += c.migrated;
    u.updated += c.updated;
    u.unchanged += c.unchanged;
    u.duplicates += c.duplicates;
    u.skipped += c.skipped;
  }
  into.invalidStored += batch.invalidStored;
  for (const s of batch.skippedRows) if (into.skippedRows.length < MAX_SKIPPED_IN_REPORT) into.skippedRows.push(s);
  into.pendingEmbeds.push(...batch.pendingEmbeds);
}

function userCounts(result: PipelineResult, user: string | null) {
  const key = user ?? '(null)';
  let u = result.users[key];
  if (!u) {
    u = { read: 0, migrated: 0, updated: 0, unchanged: 0, duplicates: 0, skipped: 0 };
    result.users[key] = u;
  }
  return u;
}

function skip(opts: PipelineOptions, result: PipelineResult, row: SourceRow, reason: string, skips: SkippedRow[]) {
  const m = result.memories;
  m.skipped++;
  m.skippedByReason[reason] = (m.skippedByReason[reason] ?? 0) + 1;
  userCounts(result, row.userId).skipped++;
  const s = { id: row.id, user: row.userId, reason };
  skips.push(s);
  if (result.skippedRows.length < MAX_SKIPPED_IN_REPORT) result.skippedRows.push(s);
  opts.onSkip?.(s);
}

/** A row found to duplicate `originalId`: recorded for memory_duplicates and counted. */
function recordDuplicate(
  result: PipelineResult,
  duplicates: DuplicateRow[],
  mem: MemoryRow,
  originalId: string,
  similarity: number,
  type: DuplicateRow['type'],
) {
  duplicates.push({ originalId, duplicateId: mem.id, userId: mem.userId, duplicateHash: mem.contentHash, similarity, type });
  result.memories.duplicates[type]++;
  result.memories.duplicates.total++;
  userCounts(result, mem.userId).duplicates++;
}

function warn(result: PipelineResult, what: string) {
  result.memories.warnings[what] = (result.memories.warnings[what] ?? 0) + 1;
}

/** Why a row is not a memory to store, or null when it is one. */
function skipReason(row: SourceRow & { idClash?: string }): string | null {
  if (row.userId === null) return 'user_id is NULL';
  if (row.contentProblem) return row.contentProblem;
  if (row.contentBytes > MAX_CONTENT_BYTES) return 'content over 1 MB';
  if (row.content.trim().length === 0) return 'empty content';
  if (row.idClash) return `id differs only in case from ${row.idClash}`;
  if (isSystemUser(row.userId)) return `system user ${row.userId}`;
  return null;
}

/** A memory to write. `source` is null, and `embedding` too, once its batch is encoded. */
type Survivor = MemoryRow & { source: SourceRow | null; changedContent: boolean };

/** A batch ready to be written: everything decided, counted (in `counts`) and encoded. */
interface PreparedBatch {
  /** This batch's counts, added to the run's once it commits. */
  counts: PipelineResult;
  lastRowid: number;
  survivors: Survivor[];
  /** Ids whose memory the target stores already (an update, not an insert). */
  stored: Set<string>;
  fragments: FragmentRow[];
  duplicates: DuplicateRow[];
  skips: SkippedRow[];
  staleDuplicates: string[];
  /** encodeMemories(survivors), or null when the write must encode (rows without timestamps). */
  encoded: Uint8Array | null;
  writerSlot: number;
}

async function prepareBatch(opts: PipelineOptions, state: RunState, rows: SourceRow[]): Promise<PreparedBatch> {
  const { db, dryRun } = opts;
  const counts = emptyResult();
  const m = counts.memories;
  const skips: SkippedRow[] = [];
  const memories: Survivor[] = [];
  const fragments: FragmentRow[] = [];

  let sinceYield = 0;
  for (const row of rows) {
    if (++sinceYield >= YIELD_EVERY_ROWS) {
      sinceYield = 0;
      await yieldToIo();
    }
    const reason = skipReason(row);
    if (!reason && row.userId === SYSTEM_PROMPTS_USER) {
      // Fragments are not memories: they are counted under fragments, not memories.read.
      counts.fragments.read++;
      fragments.push(fragmentFromSource(row));
      continue;
    }
    m.read++;
    userCounts(counts, row.userId).read++;
    if (reason) {
      skip(opts, counts, row, reason, skips);
      continue;
    }
    if (row.metadata.warning) warn(counts, 'metadata not JSON (kept as {raw})');
    if (row.metadata.duplicateKeys > 0) warn(counts, 'metadata with duplicate keys (the last one kept, as PostgreSQL does)');
    memories.push({
      source: row,
      id: row.id,
      userId: row.userId!,
      content: row.content,
      contentHash: contentHash(row.content),
      dedupHash: dedupHash(row.content),
      embedding: null,
      embeddingModel: null,
      metadata: row.metadata.json,
      category: categoryOf(row.metadata.fields),
      importanceScore: importanceOf(row.metadata.fields),
      createdAt: row.createdAt,
      updatedAt: row.updatedAt ?? row.createdAt,
      changedContent: true,
    });
  }

  // What the target already holds for these ids, and which stored rows share a dedup key.
  // A first load asks only about a repeated id (its first occurrence may be stored by now).
  const asksTarget = db !== null && (!state.fresh || rows.some((r) => (r as SourceRow & { repeatedId?: boolean }).repeatedId));
  const [existing, keyOwners] = asksTarget
    ? await Promise.all([lookupExisting(db, memories), lookupDedupOwners(db, memories)])
    : [new Map<string, Existing>(), new Map<string, string>()];

  const toWrite: Survivor[] = [];
  const duplicates: DuplicateRow[] = [];
  const batchKeys = new Map<string, string>();
  // Dedup keys as they are in the source now: a row of this batch, or of the batch still being
  // written, may have been edited since the target was written, so the target's dedup_hash for
  // it is out of date.
  // Built on first use: a first load never asks.
  let batchHash: Map<string, string> | null = null;
  const inflight = state.inflight;
  const currentKey = (id: string) =>
    (batchHash ??= new Map(memories.map((x) => [x.id, `${x.userId}\u0000${x.dedupHash}`]))).get(id) ?? inflight?.keyOf.get(id);
  const staleDuplicates: string[] = [];
  for (const mem of memories) {
    const ex = existing.get(mem.id);
    const uc = userCounts(counts, mem.userId);
    if (ex?.duplicateOf) {
      const originalKey = currentKey(ex.duplicateOf) ?? `${ex.originalUser}\u0000${ex.originalDedupHash}`;
      if (originalKey === `${mem.userId}\u0000${mem.dedupHash}`) {
        // Recorded as an exact duplicate by an earlier run: still a duplicate.
        m.duplicates.exact++;
        m.duplicates.total++;
        uc.duplicates++;
        continue;
      }
      // It or its original was edited since: no longer a duplicate, so it is decided afresh
      // like a new row (as a clean run of the edited file would).
      staleDuplicates.push(mem.id);
    }
    if (ex && ex.contentHash !== null) {
      if (ex.contentHash === mem.contentHash && ex.sameMetadata) {
        m.unchanged++;
        uc.unchanged++;
        continue;
      }
      mem.changedContent = ex.contentHash !== mem.contentHash;
      toWrite.push(mem);
      continue;
    }
    const key = `${mem.userId}\u0000${mem.dedupHash}`;
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

  if (opts.dedup.mode === 'fuzzy' && db) {
    await fuzzyDedup(db, opts, toWrite, duplicates, counts);
  }

  // Embeddings: reuse the stored vector when the declared source model is the target model,
  // otherwise cache, otherwise the API. Metadata-only updates keep the vector they have.
  const needEmbed: { target: { embedding: Float32Array | null; embeddingModel: string | null }; input: EmbedInput }[] = [];
  const reuseAllowed = opts.sourceModel !== null && opts.sourceModel === opts.model;
  const stats = opts.embeddings.stats;
  for (const mem of toWrite) {
    if (!mem.changedContent) continue;
    const stored = mem.source!.embedding;
    if (reuseAllowed) {
      if (stored.vector && stored.vector.length === opts.dimensions) {
        mem.embedding = stored.vector;
        mem.embeddingModel = opts.model;
        stats.reused++;
        continue;
      }
      if (stored.encoding !== 'null' && stored.encoding !== 'empty') {
        counts.invalidStored++;
        warn(counts, 'stored vector invalid, re-embedded');
      }
    }
    needEmbed.push({ target: mem, input: { text: mem.content, ref: { id: mem.id, user: mem.userId } } });
  }
  const storedFragments = db && fragments.length > 0 ? await fragmentHashes(db, fragments) : new Map<string, string>();
  for (const f of fragments) {
    // An unchanged fragment keeps its stored vector (the upsert coalesces a NULL embedding).
    if (storedFragments.get(f.id) === f.contentHash) continue;
    needEmbed.push({ target: fragmentTarget(f), input: { text: f.content, ref: { id: f.id, user: SYSTEM_PROMPTS_USER } } });
  }
  await embedInto(opts, needEmbed, counts);

  if (opts.dedup.mode === 'semantic' && db && !dryRun) {
    await semanticDedup(db, opts, toWrite, duplicates, counts);
  }

  const stored = new Set<string>();
  for (const [id, ex] of existing) if (ex.contentHash !== null) stored.add(id);
  // The keys the next batch must see as this batch's (the target shows them once it commits).
  if (asksTarget) {
    const owners = new Map<string, string>();
    const keyOf = new Map<string, string>();
    for (const s of toWrite) {
      const key = `${s.userId}\u0000${s.dedupHash}`;
      keyOf.set(s.id, key);
      if (!owners.has(key)) owners.set(key, s.id);
    }
    state.inflight = { owners, keyOf };
  }
  const writerSlot = state.batches++ % 2;
  const canEncode = db !== null && !dryRun && toWrite.length > 0 && toWrite.every((s) => s.createdAt !== null && s.updatedAt !== null);
  let encoded: Uint8Array | null = null;
  if (canEncode) {
    const writer = state.writers[writerSlot];
    writer.reset();
    for (let i = 0; i < toWrite.length; i++) {
      if (i > 0 && i % YIELD_EVERY_ROWS === 0) await yieldToIo();
      addMemoryRow(writer, toWrite[i]!);
    }
    encoded = writer.finish();
    // The stream holds the vectors now: their 6 KB buffers can be freed while the batch is
    // written instead of after it commits (measured alone: a 100k-row load peaked 16-34 MB lower).
    for (const s of toWrite) {
      s.embedding = null;
      s.source = null;
    }
  }
  return {
    counts,
    lastRowid: rows[rows.length - 1]!.rowid,
    survivors: toWrite,
    stored,
    fragments,
    duplicates,
    skips,
    staleDuplicates,
    encoded,
    writerSlot,
  };
}

async function commitBatch(opts: PipelineOptions, state: RunState, batch: PreparedBatch, result: PipelineResult): Promise<void> {
  const { db, dryRun } = opts;
  const { counts, survivors, fragments } = batch;
  const m = counts.memories;
  if (dryRun || !db) {
    for (const mem of survivors) {
      const uc = userCounts(counts, mem.userId);
      if (batch.stored.has(mem.id)) {
        m.updated++;
        uc.updated++;
      } else {
        m.migrated++;
        uc.migrated++;
      }
    }
    counts.fragments.migrated += fragments.length;
    mergeResult(result, counts);
    return;
  }

  // None of these ids in memories yet (a first load, or new rows): COPY straight in. Should
  // one be there after all (another writer), the batch is written again through the upsert.
  const direct = survivors.every((x) => !batch.stored.has(x.id));
  try {
    await db.transaction((tx) => writeBatch(opts, tx, batch, result, direct));
  } catch (err) {
    if (!direct || (err as { code?: string }).code !== '23505') throw err;
    await db.transaction((tx) => writeBatch(opts, tx, batch, result, false));
  }
  mergeResult(result, counts);
  // An unusually large batch does not keep its encoder's buffer for the rest of the run.
  if (state.writers[batch.writerSlot].byteLength > 32 * 1024 * 1024) state.writers[batch.writerSlot] = memoryCopyWriter();
}

/**
 * One batch's transaction. Adds what it wrote to batch.counts only once every statement has
 * succeeded. On a server, the statements that do not depend on the COPY are sent ahead of it
 * in one pipeline, so the batch costs few round trips.
 */
async function writeBatch(opts: PipelineOptions, tx: Db, batch: PreparedBatch, result: PipelineResult, direct: boolean) {
  const { survivors, fragments } = batch;
  const sideDone = together(tx, [
    // Each batch commits with its ledger checkpoint: should the server lose the last commits
    // in a crash, the ledger loses them too and a re-run writes them again. So a batch need
    // not wait for its WAL flush (finishRun's ordinary commit flushes everything before it).
    () => (tx.kind === 'postgres' ? tx.exec('SET LOCAL synchronous_commit = off') : null),
    () =>
      batch.staleDuplicates.length > 0
        ? tx.query(`DELETE FROM memory_duplicates WHERE duplicate_id = ANY($1::text[]) AND dedup_type = 'exact'`, [batch.staleDuplicates])
        : null,
    () => writeSkips(tx, batch.skips),
  ]);
  // A failure of the COPY below aborts the transaction; these then fail too, and are awaited.
  sideDone.catch(() => {});
  const w = await writeMemories(tx, survivors, { direct, ...(batch.encoded ? { encoded: batch.encoded } : {}) });
  await sideDone;
  const fw = await writeFragments(tx, fragments);
  const updatedIds = new Set(w.updatedIds);
  await restoreUpdatedAt(tx, 'memories', survivors.filter((s) => updatedIds.has(s.id)).map((s) => ({ id: s.id, at: s.updatedAt })));
  if (fw.updated > 0) await restoreUpdatedAt(tx, 'prompt_fragments', fragments.map((f) => ({ id: f.id, at: f.updatedAt ?? f.createdAt })));
  const m = { ...batch.counts.memories };
  m.migrated += w.inserted;
  m.updated += w.updated;
  m.unchanged += survivors.length - w.inserted - w.updated;
  const f = { ...batch.counts.fragments };
  f.migrated += fw.inserted;
  f.updated += fw.updated;
  f.unchanged += fragments.length - fw.inserted - fw.updated;
  // The checkpoint carries the run's totals as they are once this batch commits, in the
  // shape finishRun records, so a run that never finishes still says what it committed.
  // Duplicates after the COPY: their originals may be rows of this batch (a foreign key).
  await together(tx, [
    () => writeDuplicates(tx, batch.duplicates),
    () =>
      opts.runId === null
        ? null
        : checkpoint(tx, opts.runId, batch.lastRowid, {
            memories: addMemoryCounts(result.memories, m),
            fragments: addFragmentCounts(result.fragments, f),
          }),
  ]);
  batch.counts.memories = m;
  batch.counts.fragments = f;
  const userOf = new Map(survivors.map((s) => [s.id, s.userId]));
  for (const id of w.insertedIds) userCounts(batch.counts, userOf.get(id) ?? null).migrated++;
  for (const id of w.updatedIds) userCounts(batch.counts, userOf.get(id) ?? null).updated++;
}

/**
 * Runs independent statements of one transaction. postgres.js pipelines statements issued
 * together (one round trip for all); PGlite runs in-process, so one after the other.
 */
async function together(tx: Db, steps: (() => Promise<unknown> | null)[]): Promise<void> {
  if (tx.kind === 'pglite') {
    for (const step of steps) await step();
    return;
  }
  await Promise.all(steps.map((step) => step()));
}

/**
 * The touch trigger (sql/004) sets updated_at = now() when content or metadata change but
 * updated_at does not. An update by a re-run (source edited, source updated_at unchanged)
 * must still store the source's updated_at, as a clean run would: set it back.
 */
async function restoreUpdatedAt(tx: Db, table: 'memories' | 'prompt_fragments', rows: { id: string; at: Date | null }[]) {
  const fix = rows.filter((r) => r.at !== null);
  if (fix.length === 0) return;
  await tx.query(
    `UPDATE ${table} t SET updated_at = x.at
       FROM jsonb_to_recordset($1::text::jsonb) AS x(id text, at timestamptz)
      WHERE t.id = x.id AND t.updated_at IS DISTINCT FROM x.at`,
    [JSON.stringify(fix.map((r) => ({ id: r.id, at: r.at!.toISOString() })))],
  );
}

function fragmentTarget(f: FragmentRow & { embedding?: Float32Array | null; embeddingModel?: string | null }) {
  f.embedding ??= null;
  f.embeddingModel ??= null;
  return f as { embedding: Float32Array | null; embeddingModel: string | null };
}

async function embedInto(
  opts: PipelineOptions,
  items: { target: { embedding: Float32Array | null; embeddingModel: string | null }; input: EmbedInput }[],
  result: PipelineResult,
) {
  if (items.length === 0) return;
  if (opts.dryRun) {
    result.pendingEmbeds.push(items.map((it) => it.input));
    return;
  }
  const out = await opts.embeddings.embedTexts(items.map((i) => i.input));
  out.forEach((r, i) => {
    const t = items[i]!.target;
    if ('vector' in r) {
      t.embedding = r.vector;
      t.embeddingModel = opts.model;
    } else {
      // Kept without a vector: the memory itself must not be lost. Counted as rejected.
      t.embedding = null;
      t.embeddingModel = null;
      warn(result, 'embedding rejected by the API (stored without vector)');
    }
  });
}

/** True when memories and memory_duplicates hold no row (a first load into this target). */
async function targetIsEmpty(db: Db): Promise<boolean> {
  const [r] = await db.query<{ empty: boolean }>(
    `SELECT NOT EXISTS (SELECT 1 FROM memories) AND NOT EXISTS (SELECT 1 FROM memory_duplicates) AS empty`,
  );
  return r?.empty === true;
}

async function lookupExisting(db: Db, mems: MemoryRow[]): Promise<Map<string, Existing>> {
  const out = new Map<string, Existing>();
  if (mems.length === 0) return out;
  const rows = await db.query<{
    id: string;
    content_hash: string | null;
    dup_of: string | null;
    orig_user: string | null;
    orig_hash: string | null;
  }>(
    `SELECT x.id, m.content_hash, d.original_id AS dup_of, o.user_id AS orig_user, o.dedup_hash AS orig_hash
       FROM unnest($1::text[]) AS x(id)
       LEFT JOIN memories m ON m.id = x.id
       LEFT JOIN memory_duplicates d ON d.duplicate_id = x.id AND d.dedup_type = 'exact'
       LEFT JOIN memories o ON o.id = d.original_id
      WHERE m.id IS NOT NULL OR d.original_id IS NOT NULL`,
    [mems.map((x) => x.id)],
  );
  if (rows.length === 0) return out;
  // Metadata is compared (on the server, as jsonb) only where it decides: a stored row whose
  // content is unchanged. New rows, the bulk of a resumed or second load, ship only their ids.
  const current = new Map(mems.map((x) => [x.id, x]));
  const sameContent = rows.filter((r) => r.content_hash !== null && r.content_hash.trim() === current.get(r.id)!.contentHash);
  const sameMetadata = new Set<string>();
  if (sameContent.length > 0) {
    const same = await db.query<{ id: string }>(
      `SELECT x.id FROM jsonb_to_recordset($1::text::jsonb) AS x(id text, md text)
         JOIN memories m ON m.id = x.id WHERE m.metadata = x.md::jsonb`,
      [JSON.stringify(sameContent.map((r) => ({ id: r.id, md: current.get(r.id)!.metadata })))],
    );
    for (const r of same) sameMetadata.add(r.id);
  }
  for (const r of rows) {
    out.set(r.id, {
      contentHash: r.content_hash ? r.content_hash.trim() : null,
      sameMetadata: sameMetadata.has(r.id),
      duplicateOf: r.dup_of,
      originalUser: r.orig_user,
      originalDedupHash: r.orig_hash ? r.orig_hash.trim() : null,
    });
  }
  return out;
}

async function fragmentHashes(db: Db, fragments: FragmentRow[]): Promise<Map<string, string>> {
  const rows = await db.query<{ id: string; content_hash: string }>(
    `SELECT id, content_hash FROM prompt_fragments WHERE id = ANY($1::text[])`,
    [fragments.map((f) => f.id)],
  );
  return new Map(rows.map((r) => [r.id, r.content_hash.trim()]));
}

// dedup_hash is char(64): compared with a text value it would be cast to text, which rules out
// memories_dedup_idx and scans the table for every batch (a load slowing down as it grows).
async function lookupDedupOwners(db: Db, mems: MemoryRow[]): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  if (mems.length === 0) return out;
  const rows = await db.query<{ id: string; user_id: string; dedup_hash: string }>(
    `SELECT DISTINCT ON (m.user_id, m.dedup_hash) m.id, m.user_id, m.dedup_hash
       FROM memories m JOIN (SELECT DISTINCT u, h FROM unnest($1::text[], $2::text[]) AS x(u, h)) x
         ON m.user_id = x.u AND m.dedup_hash = x.h::bpchar
      ORDER BY m.user_id, m.dedup_hash, m.created_at, m.id`,
    [mems.map((x) => x.userId), mems.map((x) => x.dedupHash)],
  );
  for (const r of rows) out.set(`${r.user_id}\u0000${r.dedup_hash.trim()}`, r.id);
  return out;
}

/**
 * Near-duplicates by word-set Jaccard against the user's stored memories and the batch.
 * Recorded in memory_duplicates; with skipMatches the later row is not stored.
 */
async function fuzzyDedup(
  db: Db,
  opts: PipelineOptions,
  toWrite: (MemoryRow & { changedContent: boolean })[],
  duplicates: DuplicateRow[],
  result: PipelineResult,
) {
  const threshold = opts.dedup.threshold ?? 0.9;
  const users = [...new Set(toWrite.filter((t) => t.changedContent).map((t) => t.userId))];
  if (users.length === 0) return;
  const stored = await db.query<{ id: string; user_id: string; content: string }>(
    `SELECT id, user_id, content FROM memories WHERE user_id = ANY($1::text[]) ORDER BY created_at, id`,
    [users],
  );
  const pool = new Map<string, { id: string; words: Set<string> }[]>();
  for (const s of stored) {
    const list = pool.get(s.user_id) ?? [];
    list.push({ id: s.id, words: wordSet(s.content) });
    pool.set(s.user_id, list);
  }
  const keep: typeof toWrite = [];
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
 * stored (it was embedded already: the match needs its vector).
 */
async function semanticDedup(
  db: Db,
  opts: PipelineOptions,
  toWrite: (MemoryRow & { changedContent: boolean })[],
  duplicates: DuplicateRow[],
  result: PipelineResult,
) {
  const threshold = opts.dedup.threshold ?? 0.85;
  const candidates = toWrite.filter((t) => t.changedContent && t.embedding);
  if (candidates.length === 0) return;
  const payload = JSON.stringify(
    candidates.map((c, i) => ({ i, id: c.id, u: c.userId, v: `[${Array.from(c.embedding!).join(',')}]` })),
  );
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

async function ensureDefaultFragments(db: Db, opts: PipelineOptions): Promise<number> {
  const defaults = defaultFragments();
  const present = await db.query<{ id: string }>(`SELECT id FROM prompt_fragments WHERE id = ANY($1::text[])`, [
    defaults.map((d) => d.id),
  ]);
  const have = new Set(present.map((p) => p.id));
  const missing = defaults.filter((d) => !have.has(d.id));
  if (missing.length === 0) return 0;
  const items = missing.map((f) => ({ target: fragmentTarget(f), input: { text: f.content, ref: { id: f.id, user: null } } }));
  const out = await opts.embeddings.embedTexts(items.map((i) => i.input));
  out.forEach((r, i) => {
    if ('vector' in r) {
      items[i]!.target.embedding = r.vector;
      items[i]!.target.embeddingModel = opts.model;
    }
  });
  const w = await db.transaction((tx) => writeFragments(tx, missing));
  return w.inserted;
}

async function countMissingDefaults(db: Db | null, opts: PipelineOptions, result: PipelineResult): Promise<number> {
  const defaults = defaultFragments();
  let missing = defaults;
  if (db) {
    const present = await db.query<{ id: string }>(`SELECT id FROM prompt_fragments WHERE id = ANY($1::text[])`, [
      defaults.map((d) => d.id),
    ]);
    const have = new Set(present.map((p) => p.id));
    missing = defaults.filter((d) => !have.has(d.id));
  }
  if (missing.length > 0) result.pendingEmbeds.push(missing.map((f) => ({ text: f.content, ref: { id: f.id, user: null } })));
  return missing.length;
}

export type { EmbedStats };

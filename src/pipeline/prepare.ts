// Prepares one batch for its transaction, in two steps. decideBatch (classify, look up what the
// target holds, deduplicate, send the texts to embed) runs ahead of the writer, several
// batches ahead when dedup is exact, so the embedding API always has the next texts; finishBatch
// (wait for the vectors, semantic dedup, encode for COPY) runs while the batch before it is
// committing. Nothing is written here; everything decided is counted into the batch's own result.
import type { BinaryCopyWriter } from '../postgres/copy-binary.js';
import { addMemoryRow } from '../postgres/writer.js';
import { classifyRows } from './classify.js';
import { nameCopyRow } from './commit.js';
import { emptyResult } from './counts.js';
import { exactDedup, fuzzyDedup, semanticDedup } from './dedup.js';
import { dedupKey } from './keys.js';
import { startEmbedBatch } from './embed-step.js';
import { lookupDedupOwners, lookupExisting } from './lookups.js';
import type { Existing, FragmentToWrite, InflightKeys, PipelineOptions, PipelineResult, PreparedBatch, PreparedMemory, RunState, SourceBatch } from './types.js';
import { YIELD_EVERY_ROWS, yieldToIo } from './yield-to-io.js';

/**
 * A batch whose rows are decided (classified, looked up, deduplicated) and whose texts are on
 * their way to the embedding API; finishBatch() waits for the vectors and encodes it.
 */
export interface DecidedBatch {
  counts: PipelineResult;
  lastRowid: number;
  memories: PreparedMemory[];
  existing: Map<string, Existing>;
  fragments: FragmentToWrite[];
  duplicates: PreparedBatch['duplicates'];
  skips: PreparedBatch['skips'];
  rejects: PreparedBatch['rejects'];
  staleDuplicates: string[];
  /** Settles when every vector of the batch is in place (or its reject reason). */
  embedded: Promise<void>;
  /** This batch's entry in RunState.uncommitted. */
  keys: InflightKeys;
}

export async function prepareBatch(opts: PipelineOptions, state: RunState, batch: SourceBatch): Promise<PreparedBatch> {
  return finishBatch(opts, state, await decideBatch(opts, state, batch));
}

/**
 * Everything that needs no vector: classify, look up what the target holds, deduplicate, and
 * send the texts to embed (without waiting for them). Runs ahead of the writer, in order.
 */
export async function decideBatch(opts: PipelineOptions, state: RunState, batch: SourceBatch): Promise<DecidedBatch> {
  const { db } = opts;
  const counts = emptyResult();
  const { memories, fragments, skips, rejects } = await classifyRows(opts, batch, counts);

  // What the target already holds for these ids, and which stored rows share a dedup key.
  // A first load asks about an id only when it repeats (its first occurrence may be stored by
  // now), and about a dedup key only when StoredKeyFilter says the run may have stored it.
  const asksIds = db !== null && (!state.fresh || batch.repeatsId);
  const storedKeys = state.storedKeys;
  const asksKeysOf = db === null ? [] : storedKeys ? memories.filter((m) => storedKeys.mayHold(m.userId, m.dedupHash)) : memories;
  // The batches not committed when the lookups start: the target cannot show their keys yet.
  // (One that commits meanwhile may show up in both: the same owner either way.)
  const uncommitted = mergeInflight(state.uncommitted);
  const [existing, keyOwners] = await Promise.all([
    asksIds ? lookupExisting(db, memories) : new Map<string, Existing>(),
    asksKeysOf.length > 0 ? lookupDedupOwners(db!, asksKeysOf) : new Map<string, string>(),
  ]);

  state.inflight = uncommitted;
  const { toWrite, duplicates, staleDuplicates } = exactDedup(state, memories, existing, keyOwners, counts);
  if (storedKeys) for (const s of toWrite) storedKeys.add(s.userId, s.dedupHash);
  if (opts.dedup.mode === 'fuzzy' && db) {
    await fuzzyDedup(db, opts, toWrite, duplicates, counts);
  }
  const { done: embedded } = await startEmbedBatch(opts, toWrite, fragments, counts);
  // Awaited by finishBatch; until then (or if the run stops first) a failure is not unhandled.
  embedded.catch(() => {});
  // The keys the next batches must see as this batch's: the target shows them only once it
  // commits (the writer drops them then).
  const keys = inflightKeys(toWrite);
  state.uncommitted.push(keys);
  return {
    keys,
    counts,
    lastRowid: batch.rows[batch.rows.length - 1]!.rowid,
    memories: toWrite,
    existing,
    fragments,
    duplicates,
    skips,
    rejects,
    staleDuplicates,
    embedded,
  };
}

/** Waits for the batch's vectors, runs semantic dedup, and encodes it for COPY. */
export async function finishBatch(opts: PipelineOptions, state: RunState, d: DecidedBatch): Promise<PreparedBatch> {
  const { db, dryRun } = opts;
  await d.embedded;
  const toWrite = d.memories;
  if (opts.dedup.mode === 'semantic' && db && !dryRun) {
    await semanticDedup(db, opts, toWrite, d.duplicates, d.counts);
  }
  const stored = new Set<string>();
  for (const [id, ex] of d.existing) if (ex.contentHash !== null) stored.add(id);
  const writerSlot = state.batches++ % 2;
  const encoded = await encodeForCopy(opts, state.writers[writerSlot], toWrite);
  return {
    counts: d.counts,
    lastRowid: d.lastRowid,
    memories: toWrite,
    stored,
    fragments: d.fragments,
    duplicates: d.duplicates,
    skips: d.skips,
    rejects: d.rejects,
    staleDuplicates: d.staleDuplicates,
    encoded,
    writerSlot,
  };
}

/**
 * The keys of the batches decided and not committed, as one: the first owner of a key stays
 * its owner (batches are decided in order), an id's key is its latest.
 */
function mergeInflight(list: readonly InflightKeys[]): InflightKeys | null {
  if (list.length === 0) return null;
  if (list.length === 1) return list[0]!;
  const owners = new Map<string, string>();
  const keyOf = new Map<string, string>();
  for (const k of list) {
    for (const [key, id] of k.owners) if (!owners.has(key)) owners.set(key, id);
    for (const [id, key] of k.keyOf) keyOf.set(id, key);
  }
  return { owners, keyOf };
}

/** The dedup keys `toWrite` gives the target once written. */
function inflightKeys(toWrite: PreparedMemory[]): InflightKeys {
  const owners = new Map<string, string>();
  const keyOf = new Map<string, string>();
  for (const s of toWrite) {
    const key = dedupKey(s.userId, s.dedupHash);
    keyOf.set(s.id, key);
    if (!owners.has(key)) owners.set(key, s.id);
  }
  return { owners, keyOf };
}

/**
 * Encodes the memories for COPY ahead of the transaction, so that encoding overlaps the
 * database's work on the batch before. Null when the write must encode: nothing is written,
 * or a row has no timestamps (the write fills them in from the transaction's clock).
 */
async function encodeForCopy(opts: PipelineOptions, writer: BinaryCopyWriter, toWrite: PreparedMemory[]): Promise<Uint8Array | null> {
  const canEncode =
    opts.db !== null && !opts.dryRun && toWrite.length > 0 && toWrite.every((s) => s.createdAt !== null && s.updatedAt !== null);
  if (!canEncode) return null;
  writer.reset();
  for (let i = 0; i < toWrite.length; i++) {
    if (i > 0 && i % YIELD_EVERY_ROWS === 0) await yieldToIo();
    try {
      addMemoryRow(writer, toWrite[i]!);
    } catch (err) {
      throw nameCopyRow(err, toWrite);
    }
  }
  const encoded = writer.finish();
  // The stream holds the vectors now: their buffers can be freed while the batch is written
  // rather than after it commits, which keeps the peak memory of a long load down.
  for (const s of toWrite) {
    s.embedding = null;
    s.source = null;
  }
  return encoded;
}

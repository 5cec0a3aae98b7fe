// Prepares one batch for its transaction while the batch before it may still be committing:
// classify, look up what the target holds, deduplicate, embed, and encode for COPY. Nothing is
// written here; everything decided is counted into the batch's own result.
import type { BinaryCopyWriter } from '../postgres/copy-binary.js';
import { addMemoryRow } from '../postgres/writer.js';
import { classifyRows } from './classify.js';
import { nameCopyRow } from './commit.js';
import { emptyResult } from './counts.js';
import { exactDedup, fuzzyDedup, semanticDedup } from './dedup.js';
import { dedupKey } from './keys.js';
import { embedBatch } from './embed-step.js';
import { lookupDedupOwners, lookupExisting } from './lookups.js';
import type { Existing, InflightKeys, PipelineOptions, PreparedBatch, PreparedMemory, RunState, SourceBatch } from './types.js';
import { YIELD_EVERY_ROWS, yieldToIo } from './yield-to-io.js';

export async function prepareBatch(opts: PipelineOptions, state: RunState, batch: SourceBatch): Promise<PreparedBatch> {
  const { db, dryRun } = opts;
  const counts = emptyResult();
  const { memories, fragments, skips, rejects } = await classifyRows(opts, batch, counts);

  // What the target already holds for these ids, and which stored rows share a dedup key.
  // A first load asks only about a repeated id (its first occurrence may be stored by now).
  const asksTarget = db !== null && (!state.fresh || batch.repeatsId);
  const [existing, keyOwners] = asksTarget
    ? await Promise.all([lookupExisting(db, memories), lookupDedupOwners(db, memories)])
    : [new Map<string, Existing>(), new Map<string, string>()];

  const { toWrite, duplicates, staleDuplicates } = exactDedup(state, memories, existing, keyOwners, counts);
  if (opts.dedup.mode === 'fuzzy' && db) {
    await fuzzyDedup(db, opts, toWrite, duplicates, counts);
  }
  await embedBatch(opts, toWrite, fragments, counts);
  if (opts.dedup.mode === 'semantic' && db && !dryRun) {
    await semanticDedup(db, opts, toWrite, duplicates, counts);
  }

  const stored = new Set<string>();
  for (const [id, ex] of existing) if (ex.contentHash !== null) stored.add(id);
  // The keys the next batch must see as this batch's: the target shows them only once it commits.
  if (asksTarget) state.inflight = inflightKeys(toWrite);
  const writerSlot = state.batches++ % 2;
  const encoded = await encodeForCopy(opts, state.writers[writerSlot], toWrite);
  return {
    counts,
    lastRowid: batch.rows[batch.rows.length - 1]!.rowid,
    memories: toWrite,
    stored,
    fragments,
    duplicates,
    skips,
    rejects,
    staleDuplicates,
    encoded,
    writerSlot,
  };
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

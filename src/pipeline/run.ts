// Streams rows from the SQLite source to the target in batches. Each batch is classified
// (memory, fragment, skip), deduplicated per user, embedded (reusing stored vectors and the
// cache first), and written in its own transaction together with the ledger checkpoint, so a
// crash at any point loses at most the batch in flight and a re-run converges.
import { memoryCopyWriter } from '../postgres/writer.js';
import { createBtreeIndexes, dropMemoriesBtreeIndexes } from '../postgres/schema.js';
import { commitBatch } from './commit.js';
import { emptyResult } from './counts.js';
import { RunDedupKeys } from './keys.js';
import { countMissingDefaults, ensureDefaultFragments } from './embed-step.js';
import { targetIsEmpty } from './lookups.js';
import { prepareBatch } from './prepare.js';
import type { PipelineOptions, PipelineResult, RunState, SourceBatch } from './types.js';
import { YIELD_EVERY_ROWS, yieldToIo } from './yield-to-io.js';

export class Interrupted extends Error {
  constructor(readonly lastRowid: number | null) {
    super('interrupted');
  }
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
  let batch = newSourceBatch();
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
  const flush = async (full: SourceBatch) => {
    if (full.rows.length === 0) return;
    // Stopped: the batch being written (and any prepared, its embeddings paid for) is
    // committed; nothing new is started.
    if (opts.signal?.aborted) {
      await settle();
      throw new Interrupted(result.lastRowid);
    }
    if (opts.dedup.mode !== 'exact' || full.repeatsId) await settle();
    // A repeated id is looked up in the target, by id and by dedup key: indexes needed.
    if (full.repeatsId) await restoreIndexes();
    const prepared = await prepareBatch(opts, state, full);
    const count = full.rows.length; // the callback below keeps this, not the rows (they hold the vectors)
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
      const seen = seenIdsLower.get(lower);
      if (seen !== undefined && seen !== row.id) (batch.idClashes ??= new Map()).set(row, seen);
      else if (seen === row.id) batch.repeatsId = true;
      else seenIdsLower.set(lower, row.id);
      batch.rows.push(row);
      if (batch.rows.length >= opts.batchSize) {
        const full = batch;
        batch = newSourceBatch();
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
    result.fragments.defaults = await countMissingDefaults(db, result);
  }
  return result;
}

function newSourceBatch(): SourceBatch {
  return { rows: [], idClashes: null, repeatsId: false };
}

// Streams rows from the SQLite source to the target in batches. Each batch is classified
// (memory, fragment, skip), deduplicated per user, embedded (reusing stored vectors and the
// cache first; the texts of the next batches are queued for the API while earlier ones are
// written), and written in its own transaction together with the ledger checkpoint, so a
// crash at any point loses at most the batches not committed, whose vectors are in the cache
// already, and a re-run converges without paying for them again.
import { memoryCopyWriter } from '../postgres/writer.js';
import { createBtreeIndexes, dropMemoriesBtreeIndexes } from '../postgres/schema.js';
import { commitBatch } from './commit.js';
import { emptyResult } from './counts.js';
import { RunDedupKeys, StoredKeyFilter } from './keys.js';
import { newSourceBatch, SeenIds } from './source-batch.js';
import { countMissingDefaults, ensureDefaultFragments } from './embed-step.js';
import { targetIsEmpty } from './lookups.js';
import { decideBatch, finishBatch, type DecidedBatch } from './prepare.js';
import { EmbedCancelled } from '../embed/types.js';
import type { PipelineOptions, PipelineResult, RunState, SourceBatch } from './types.js';
import { YIELD_EVERY_ROWS, yieldToIo } from './yield-to-io.js';

/**
 * How many batches may be decided ahead of the writer: their rows are held in memory (with
 * their stored vectors) until they commit, so this bounds the memory embed-ahead costs.
 */
export const MAX_BATCHES_AHEAD = 8;

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
  // only this run's rows, so no id of a batch can be stored yet unless it repeats, and a dedup
  // key is asked of the target only when StoredKeyFilter says this run may have stored it.
  const fresh = db !== null && !dryRun && (await targetIsEmpty(db));
  const state: RunState = {
    runKeys: dryRun ? new RunDedupKeys() : null,
    storedKeys: fresh ? new StoredKeyFilter() : null,
    fresh,
    inflight: null,
    uncommitted: [],
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
  const seenIds = new SeenIds(source.foldedIdsThatMayRepeat());
  let batch = newSourceBatch();
  let done = 0;

  // Three stages, in batch order. Deciding (classify, lookups, dedup, queueing the texts to
  // embed) runs up to `ahead` batches ahead of the writer, so the embedding API has the next
  // batches' texts while earlier ones are still being embedded or written. Finishing (waiting
  // for the vectors, encoding) batch k+1 overlaps committing batch k; commits are one at a
  // time, in order, each only with its rows' vectors (or reject reasons). Deciding reads the
  // target while earlier batches may be uncommitted: RunState.uncommitted carries what they
  // change. Fuzzy and semantic dedup compare with every stored row, and a repeated id may be
  // in an uncommitted batch: those batches wait for every earlier batch to commit first.
  const ahead = dryRun || opts.dedup.mode !== 'exact' ? 1 : MAX_BATCHES_AHEAD;
  /** Commits of the batches decided and not committed, oldest first. */
  const commits: Promise<void>[] = [];
  let lastFinish: Promise<unknown> = Promise.resolve();
  let lastCommit: Promise<void> = Promise.resolve();
  let beforeLastCommit: Promise<void> = Promise.resolve();
  let stopped = false;
  const aborted = () => opts.signal?.aborted === true;

  /** Resolves when the oldest uncommitted batch commits, or the run is stopped; throws its failure. */
  const oldestCommitted = async () => {
    const oldest = commits[0]!;
    if (!opts.signal) return oldest;
    let onAbort: (() => void) | undefined;
    const abort = new Promise<void>((resolve) => {
      onAbort = resolve;
      opts.signal!.addEventListener('abort', onAbort, { once: true });
    });
    try {
      await Promise.race([oldest, abort]);
    } finally {
      opts.signal.removeEventListener('abort', onAbort!);
    }
  };
  const settleAll = async () => {
    while (commits.length > 0 && !aborted()) await oldestCommitted();
  };
  /** Stopped: the commit under way finishes, texts not sent yet are dropped, nothing new starts. */
  const stop = async () => {
    stopped = true;
    await opts.embeddings.cancelQueued();
    await Promise.allSettled(commits);
  };

  /** The first failure of a batch (its embedding or its commit): nothing more is decided. */
  let failure: unknown = undefined;
  const failed = (err: unknown) => {
    if (failure === undefined && !(err instanceof EmbedCancelled) && !(err instanceof Interrupted)) failure = err;
  };
  const check = () => {
    if (failure !== undefined) throw failure;
  };

  /** Decided batches still waiting for vectors. */
  let embedding = 0;
  const enqueue = (decided: DecidedBatch & { rows: number }) => {
    embedding++;
    decided.embedded.then(
      () => embedding--,
      (err: unknown) => {
        embedding--;
        failed(err);
      },
    );
    // Finishing k encodes into the writer batch k-2 used: it waits for that commit.
    const finish = Promise.all([lastFinish, beforeLastCommit]).then(() => {
      if (stopped) throw new Interrupted(result.lastRowid);
      return finishBatch(opts, state, decided);
    });
    // A finished batch is committed even once the run is stopping: its vectors are paid for.
    const commit = Promise.all([finish, lastCommit]).then(async ([prepared]) => {
      await commitBatch(opts, state, prepared, result);
      done += decided.rows;
      result.lastRowid = prepared.lastRowid;
      opts.onProgress?.({ done, total, memories: result.memories });
    });
    const settled = commit.finally(() => {
      const k = state.uncommitted.indexOf(decided.keys);
      if (k >= 0) state.uncommitted.splice(k, 1);
      commits.splice(commits.indexOf(settled), 1);
    });
    // Awaited in order by the reader; until then a failure must not count as unhandled.
    settled.catch(failed);
    finish.catch(() => {});
    lastFinish = finish;
    beforeLastCommit = lastCommit;
    // Kept rejected: a batch after a failed one is never committed (the checkpoint would pass
    // rows that were not written).
    lastCommit = commit;
    commits.push(settled);
  };

  const flush = async (full: SourceBatch) => {
    check();
    if (full.rows.length === 0) return;
    if (!aborted() && (opts.dedup.mode !== 'exact' || full.repeatsId)) await settleAll();
    // A repeated id is looked up in the target, by id and by dedup key: indexes needed.
    if (!aborted() && full.repeatsId) await restoreIndexes();
    // One batch decided while the one before it is written, as always; further ahead (up to
    // `ahead`) only while batches wait for vectors and the API's queue is not full.
    const mustWait = () =>
      commits.length >= ahead ||
      (commits.length >= 2 && (embedding === 0 || opts.embeddings.queuedTokens >= opts.embeddings.lookaheadTokens));
    while (!aborted() && commits.length > 0 && mustWait()) {
      await oldestCommitted();
    }
    // Stopped: the batch being written (and any finished, its embeddings paid for) is
    // committed; nothing new is started.
    if (aborted()) {
      await stop();
      throw new Interrupted(result.lastRowid);
    }
    check();
    const decided = { ...(await decideBatch(opts, state, full)), rows: full.rows.length };
    enqueue(decided);
  };

  // Reads the source in order, batch by batch, and waits for the last commit.
  const readAll = async () => {
    let sinceYield = 0;
    for (const row of source.rows(opts.filter)) {
      seenIds.add(row, batch);
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
    await settleAll();
    if (aborted() && commits.length > 0) {
      await stop();
      throw new Interrupted(result.lastRowid);
    }
  };

  // Stopped: the texts not sent yet are dropped at once, not when the reader next looks.
  const onAbort = () => void opts.embeddings.cancelQueued().catch(() => {});
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    await readAll();
  } catch (err) {
    // Stopped or failed: what is being committed finishes, nothing more is sent, and the rows
    // committed so far get their indexes now, not at the next run.
    if (!stopped) await stop().catch(() => {});
    await restoreIndexes().catch(() => {});
    throw err instanceof EmbedCancelled || (stopped && aborted()) ? new Interrupted(result.lastRowid) : err;
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
    state.runKeys?.close();
  }
  await restoreIndexes();
  if (db && !dryRun) {
    result.fragments.defaults = await ensureDefaultFragments(db, opts);
  } else if (dryRun) {
    result.fragments.defaults = await countMissingDefaults(db, result, opts);
  }
  return result;
}


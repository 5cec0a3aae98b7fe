// Vectors for a batch: the stored SQLite vector when the declared source model is the target
// model, otherwise the cache, otherwise the API. A dry run only collects what it would send.
import type { Db } from '../postgres/connection.js';
import { writeFragments } from '../postgres/writer.js';
import type { FragmentRow } from '../postgres/fragments.js';
import { SYSTEM_PROMPTS_USER } from '../source/rules.js';
import type { EmbedInput, EmbedResult } from '../embed/types.js';
import { warn } from './counts.js';
import { fragmentHashes, missingDefaultFragments } from './lookups.js';
import type { EmbedItem, FragmentToWrite, PipelineOptions, PipelineResult, PreparedMemory } from './types.js';

/** Gives every changed memory and fragment of a batch its vector (metadata-only updates keep theirs). */
export async function embedBatch(opts: PipelineOptions, toWrite: PreparedMemory[], fragments: FragmentToWrite[], counts: PipelineResult) {
  await (await startEmbedBatch(opts, toWrite, fragments, counts)).done;
}

/**
 * embedBatch in two steps: resolves once the batch's texts are queued for the API (after the
 * stored vectors, the stored fragments and the cache are looked at); `done` settles when
 * every vector is in place. The pipeline decides the next batches meanwhile.
 */
export async function startEmbedBatch(
  opts: PipelineOptions,
  toWrite: PreparedMemory[],
  fragments: FragmentToWrite[],
  counts: PipelineResult,
): Promise<{ done: Promise<void> }> {
  const needEmbed = reuseStoredVectors(opts, toWrite, counts);
  const storedFragments = opts.db && fragments.length > 0 ? await fragmentHashes(opts.db, fragments) : new Map<string, string>();
  for (const f of fragments) {
    // An unchanged fragment keeps its stored vector (the upsert coalesces a NULL embedding).
    if (storedFragments.get(f.id) === f.contentHash) continue;
    needEmbed.push({ target: f, input: { text: f.content, ref: { id: f.id, user: SYSTEM_PROMPTS_USER } } });
  }
  return embedInto(opts, needEmbed, counts);
}

/** Takes the stored vectors that may be reused; returns the memories that need one made. */
function reuseStoredVectors(opts: PipelineOptions, toWrite: PreparedMemory[], counts: PipelineResult): EmbedItem[] {
  const needEmbed: EmbedItem[] = [];
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
  return needEmbed;
}

/** Embeds the items' texts (cache, then API) into their targets; a dry run only records the texts. */
async function embedInto(opts: PipelineOptions, items: EmbedItem[], result: PipelineResult): Promise<{ done: Promise<void> }> {
  if (items.length === 0) return { done: Promise.resolve() };
  if (opts.dryRun) {
    if (opts.embedSink) await opts.embedSink(items.map((it) => it.input));
    return { done: Promise.resolve() };
  }
  const { done } = await opts.embeddings.submit(items.map((i) => i.input));
  return { done: done.then((out) => applyVectors(opts, items, out, result)) };
}

function applyVectors(opts: PipelineOptions, items: EmbedItem[], out: EmbedResult[], result: PipelineResult): void {
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

/** Writes the default fragments the target lacks, embedded; returns how many. */
export async function ensureDefaultFragments(db: Db, opts: PipelineOptions): Promise<number> {
  const missing: FragmentToWrite[] = await missingDefaultFragments(db);
  if (missing.length === 0) return 0;
  const out = await opts.embeddings.embedTexts(missing.map(defaultFragmentInput));
  out.forEach((r, i) => {
    if ('vector' in r) {
      missing[i]!.embedding = r.vector;
      missing[i]!.embeddingModel = opts.model;
    }
  });
  const w = await db.transaction((tx) => writeFragments(tx, missing));
  return w.inserted;
}

/** For a dry run: how many default fragments a real run would write, their texts pending. */
export async function countMissingDefaults(db: Db | null, result: PipelineResult, opts?: PipelineOptions): Promise<number> {
  const missing = await missingDefaultFragments(db);
  if (missing.length > 0 && opts?.embedSink) await opts.embedSink(missing.map(defaultFragmentInput));
  return missing.length;
}

function defaultFragmentInput(f: FragmentRow): EmbedInput {
  return { text: f.content, ref: { id: f.id, user: null } };
}

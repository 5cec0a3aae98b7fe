// What a backfill sends, decided exactly as `migrate` decides it for SQL: the same reader and
// decoding, the same row rules (classify.ts), the same per-user exact dedup (dedup.ts), batch
// by batch in rowid order. A plugin holds no dedup keys we could ask, so every run decides the
// whole file from the start (cheap: no vectors are made for it); the ledger only says which
// decided memories the plugin already has. Used by the backfill and by verify, so both agree
// on which memories belong in the plugin.
import { classifyRows } from '../pipeline/classify.js';
import { exactDedup } from '../pipeline/dedup.js';
import { emptyResult } from '../pipeline/counts.js';
import { RunDedupKeys } from '../pipeline/keys.js';
import { newSourceBatch, SeenIds } from '../pipeline/source-batch.js';
import type { PipelineOptions, PipelineResult, PreparedMemory, RunState, SourceBatch } from '../pipeline/types.js';
import type { SourceFile } from '../source/reader.js';
import type { SourceFilter } from '../source/types.js';
import type { SkippedRow } from '../report.js';
import { namespaceFor } from '../plugin-namespace.js';

export interface PlannedBatch {
  lastRowid: number;
  rows: number;
  /** This batch's counts (per user: read, duplicates, skipped, rejected). */
  counts: PipelineResult;
  /** The memories to send, in rowid order. */
  memories: PreparedMemory[];
  skips: SkippedRow[];
  /** Rows the row rules reject (a NUL character...): never sent, counted as failed. */
  rejects: SkippedRow[];
}

/** The PipelineOptions the pipeline's steps read, for a run with no database. */
export function planOptions(source: SourceFile, filter: SourceFilter, base: Partial<PipelineOptions>): PipelineOptions {
  return {
    source,
    db: null,
    embeddings: base.embeddings!,
    model: base.model ?? '',
    dimensions: base.dimensions ?? 0,
    sourceModel: base.sourceModel ?? null,
    filter,
    dedup: { mode: 'exact' },
    batchSize: base.batchSize ?? 500,
    dryRun: base.dryRun ?? false,
    runId: null,
    userInMetadata: false,
  };
}

/** Source rows batch by batch, classified and deduplicated, in rowid order. */
export async function* planBatches(opts: PipelineOptions): AsyncGenerator<PlannedBatch> {
  // Only runKeys and inflight are read by exactDedup; no writer is ever used here.
  const state = { runKeys: new RunDedupKeys(), storedKeys: null, fresh: true, inflight: null, uncommitted: [], batches: 0 } as unknown as RunState;
  const seenIds = new SeenIds(opts.source.foldedIdsThatMayRepeat());
  let batch = newSourceBatch();
  const decide = async (b: SourceBatch): Promise<PlannedBatch> => {
    const counts = emptyResult();
    const { memories, skips, rejects } = await classifyRows(opts, b, counts);
    const { toWrite } = exactDedup(state, memories, new Map(), new Map(), counts);
    return { lastRowid: b.rows[b.rows.length - 1]!.rowid, rows: b.rows.length, counts, memories: toWrite, skips, rejects };
  };
  try {
    for (const row of opts.source.rows(opts.filter)) {
      seenIds.add(row, batch);
      batch.rows.push(row);
      if (batch.rows.length >= opts.batchSize) {
        yield await decide(batch);
        batch = newSourceBatch();
      }
    }
    if (batch.rows.length > 0) yield await decide(batch);
  } finally {
    state.runKeys?.close();
  }
}

/** The namespace of each user under a template, or why it has none (remembered per user). */
export class NamespaceMap {
  private readonly names = new Map<string, { name: string } | { problem: string }>();
  constructor(readonly template: string) {}

  of(userId: string): { name: string } | { problem: string } {
    let n = this.names.get(userId);
    if (!n) {
      try {
        n = { name: namespaceFor(this.template, userId) };
      } catch (err) {
        n = { problem: err instanceof Error ? err.message : String(err) };
      }
      this.names.set(userId, n);
    }
    return n;
  }

  /** The key a user's counts go under: its namespace, or `(none: user)`. */
  key(userId: string | null): string {
    if (userId === null) return '(no user)';
    const n = this.of(userId);
    return 'name' in n ? n.name : `(none: ${userId})`;
  }
}

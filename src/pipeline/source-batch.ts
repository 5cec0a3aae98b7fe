// Source rows grouped into batches, with what the read loop notices about their ids on the way:
// the pipeline (run.ts) and the plugin backfill (plugin-client/plan.ts) read alike.
import type { SourceRow } from '../source/types.js';
import type { SourceBatch } from './types.js';

export function newSourceBatch(): SourceBatch {
  return { rows: [], idClashes: null, repeatsId: false };
}

/**
 * The ids read so far, case-folded: a row whose id equals an earlier one but for case is a
 * clash (skipped, see classify.ts), one equal to the letter a repeat (its first occurrence may
 * be stored by now). Only ids the source says may repeat (SourceFile.foldedIdsThatMayRepeat)
 * are remembered, so memory grows with those, not with the file: none in a file whose ids are
 * unique and ASCII.
 */
export class SeenIds {
  private readonly byLower = new Map<string, string>();
  constructor(private readonly mayRepeat: ReadonlySet<string>) {}

  /** Records the row's id, and marks the batch it joins when the id clashes or repeats. */
  add(row: SourceRow, batch: SourceBatch): void {
    if (this.mayRepeat.size === 0) return;
    const lower = row.id.toLowerCase();
    if (!this.mayRepeat.has(lower)) return;
    const seen = this.byLower.get(lower);
    if (seen === undefined) this.byLower.set(lower, row.id);
    else if (seen !== row.id) (batch.idClashes ??= new Map()).set(row, seen);
    else batch.repeatsId = true;
  }
}

// The run's counts. Each batch counts into a result of its own, added to the run's only once
// the batch commits, so the report and the ledger say what was committed.
import type { DuplicateRow, MemoryRow } from '../postgres/writer.js';
import type { SourceRow } from '../source/types.js';
import { emptyMemoryCounts, MAX_SKIPPED_IN_REPORT, type MemoryCounts, type SkippedRow } from '../report.js';
import type { FragmentCounts, PipelineOptions, PipelineResult, UserCounts } from './types.js';

export function emptyResult(): PipelineResult {
  return {
    memories: emptyMemoryCounts(),
    fragments: { read: 0, migrated: 0, updated: 0, unchanged: 0, defaults: 0 },
    users: {},
    invalidStored: 0,
    skippedRows: [],
    lastRowid: null,
  };
}

/** a + b, for the counts a batch adds to the run's. */
export function addMemoryCounts(a: MemoryCounts, b: MemoryCounts): MemoryCounts {
  return {
    read: a.read + b.read,
    migrated: a.migrated + b.migrated,
    updated: a.updated + b.updated,
    unchanged: a.unchanged + b.unchanged,
    skipped: a.skipped + b.skipped,
    rejected: a.rejected + b.rejected,
    errors: a.errors + b.errors,
    duplicates: sumCounts(a.duplicates, b.duplicates),
    skippedByReason: sumCounts(a.skippedByReason, b.skippedByReason),
    warnings: sumCounts(a.warnings, b.warnings),
  };
}

export function addFragmentCounts(a: FragmentCounts, b: FragmentCounts): FragmentCounts {
  return sumCounts(a, b);
}

/** Adds a committed batch's counts to the run's. */
export function mergeResult(into: PipelineResult, batch: PipelineResult) {
  into.memories = addMemoryCounts(into.memories, batch.memories);
  into.fragments = addFragmentCounts(into.fragments, batch.fragments);
  for (const [user, c] of Object.entries(batch.users)) addCounts(userCounts(into, user), c);
  into.invalidStored += batch.invalidStored;
  for (const s of batch.skippedRows) if (into.skippedRows.length < MAX_SKIPPED_IN_REPORT) into.skippedRows.push(s);
}

/** a + b, key by key, for a record of counts. */
function sumCounts<T extends Record<keyof T & string, number>>(a: T, b: T): T {
  const out = { ...a };
  addCounts(out, b);
  return out;
}

/** Adds `add`'s counts to `into`'s, key by key; a key `into` lacks starts at 0. */
function addCounts<K extends string>(into: Record<K, number>, add: Record<K, number>) {
  for (const k in add) into[k] = (into[k] ?? 0) + add[k];
}

export function userCounts(result: PipelineResult, user: string | null): UserCounts {
  const key = user ?? '(null)';
  let u = result.users[key];
  if (!u) {
    u = { read: 0, migrated: 0, updated: 0, unchanged: 0, duplicates: 0, skipped: 0, rejected: 0 };
    result.users[key] = u;
  }
  return u;
}

/** A row not stored: counted, listed for migration_skips and the report, and announced. */
export function skip(opts: PipelineOptions, result: PipelineResult, row: SourceRow, reason: string, skips: SkippedRow[]) {
  const m = result.memories;
  m.skipped++;
  m.skippedByReason[reason] = (m.skippedByReason[reason] ?? 0) + 1;
  userCounts(result, row.userId).skipped++;
  const s = { id: row.id, user: row.userId, reason };
  skips.push(s);
  if (result.skippedRows.length < MAX_SKIPPED_IN_REPORT) result.skippedRows.push(s);
  opts.onSkip?.(s);
}

/**
 * A row PostgreSQL cannot store: counted as rejected and as an error, listed for
 * migration_skips (as rejected) and the reject file. Not announced as a skip: it is not one.
 */
export function reject(result: PipelineResult, row: SourceRow, reason: string, rejects: SkippedRow[]) {
  result.memories.rejected++;
  result.memories.errors++;
  userCounts(result, row.userId).rejected++;
  rejects.push({ id: row.id, user: row.userId, reason });
}

/** A row found to duplicate `originalId`: recorded for memory_duplicates and counted. */
export function recordDuplicate(
  result: PipelineResult,
  duplicates: DuplicateRow[],
  mem: MemoryRow,
  originalId: string,
  similarity: number,
  type: DuplicateRow['type'],
) {
  duplicates.push({ originalId, duplicateId: mem.id, userId: mem.userId, duplicateHash: mem.contentHash, similarity, type });
  countDuplicate(result, mem.userId, type);
}

export function countDuplicate(result: PipelineResult, userId: string, type: DuplicateRow['type']) {
  result.memories.duplicates[type]++;
  result.memories.duplicates.total++;
  userCounts(result, userId).duplicates++;
}

export function warn(result: PipelineResult, what: string) {
  result.memories.warnings[what] = (result.memories.warnings[what] ?? 0) + 1;
}

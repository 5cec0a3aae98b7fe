// Sorts a batch's source rows into memories, prompt fragments and skipped rows, and counts
// what was read. The rules themselves are the app's (src/source/rules.ts, metadata.ts).
import { fragmentFromSource } from '../postgres/fragments.js';
import type { SourceRow } from '../source/types.js';
import { contentHash, dedupHash } from '../source/canonical.js';
import { categoryOf, importanceOf, withUserId } from '../source/metadata.js';
import { isSystemUser, MAX_CONTENT_BYTES, SYSTEM_PROMPTS_USER } from '../source/rules.js';
import type { SkippedRow } from '../report.js';
import { reject, skip, userCounts, warn } from './counts.js';
import type { FragmentToWrite, PipelineOptions, PipelineResult, PreparedMemory, SourceBatch } from './types.js';
import { YIELD_EVERY_ROWS, yieldToIo } from './yield-to-io.js';

export interface ClassifiedRows {
  memories: PreparedMemory[];
  fragments: FragmentToWrite[];
  skips: SkippedRow[];
  rejects: SkippedRow[];
}

/** Why a row is not a memory to store, or null when it is one. */
export function skipReason(row: SourceRow, idClashes: SourceBatch['idClashes']): string | null {
  if (row.userId === null) return 'user_id is NULL';
  if (row.contentProblem) return row.contentProblem;
  if (row.contentBytes > MAX_CONTENT_BYTES) return 'content over 1 MB';
  if (row.content.trim().length === 0) return 'empty content';
  const idClash = idClashes?.get(row);
  if (idClash) return `id differs only in case from ${idClash}`;
  if (isSystemUser(row.userId)) return `system user ${row.userId}`;
  return null;
}

/**
 * Why PostgreSQL cannot store a row that is not skipped, or null. Its text columns cannot
 * hold U+0000, which SQLite text can. (Metadata with one is kept as {raw} instead.)
 */
/** memories.user_id is VARCHAR(255), as the seed documents it. */
const USER_ID_MAX_CHARS = 255;

export function rejectReason(row: SourceRow): string | null {
  const nul = (field: string) => `${field} contains a NUL character (U+0000), which PostgreSQL text cannot store`;
  if (row.content.indexOf('\u0000') !== -1) return nul('content');
  if (row.id.indexOf('\u0000') !== -1) return nul('id');
  if (row.userId !== null && row.userId.indexOf('\u0000') !== -1) return nul('user_id');
  // VARCHAR(255) counts characters; .length counts UTF-16 units, so only a long one is counted.
  if (row.userId !== null && row.userId.length > USER_ID_MAX_CHARS && [...row.userId].length > USER_ID_MAX_CHARS) {
    return `user_id is longer than ${USER_ID_MAX_CHARS} characters, the width of the user_id column`;
  }
  return null;
}

export async function classifyRows(opts: PipelineOptions, batch: SourceBatch, counts: PipelineResult): Promise<ClassifiedRows> {
  const m = counts.memories;
  const skips: SkippedRow[] = [];
  const rejects: SkippedRow[] = [];
  const memories: PreparedMemory[] = [];
  const fragments: FragmentToWrite[] = [];
  let sinceYield = 0;
  for (const row of batch.rows) {
    if (++sinceYield >= YIELD_EVERY_ROWS) {
      sinceYield = 0;
      await yieldToIo();
    }
    // A row skipped anyway (no user, a system user...) stays a plain skip: nothing is lost.
    const reason = skipReason(row, batch.idClashes);
    const rejected = reason ? null : rejectReason(row);
    if (!reason && !rejected && row.userId === SYSTEM_PROMPTS_USER) {
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
    if (rejected) {
      reject(counts, row, rejected, rejects);
      continue;
    }
    if (row.metadata.warning) warn(counts, 'metadata not JSON (kept as {raw})');
    if (row.metadata.duplicateKeys > 0) warn(counts, 'metadata with duplicate keys (the last one kept, as PostgreSQL does)');
    if (opts.userInMetadata && row.metadata.fields['user_id'] !== undefined && row.metadata.fields['user_id'] !== row.userId) {
      warn(counts, "metadata.user_id replaced by the row's user (--user-in-metadata)");
    }
    memories.push(toMemory(row, opts.userInMetadata === true));
  }
  return { memories, fragments, skips, rejects };
}

/** A row that passed skipReason (so its user is set) as a memory, its vector not chosen yet. */
function toMemory(row: SourceRow, userInMetadata: boolean): PreparedMemory {
  return {
    source: row,
    id: row.id,
    userId: row.userId!,
    content: row.content,
    contentHash: contentHash(row.content),
    dedupHash: dedupHash(row.content),
    embedding: null,
    embeddingModel: null,
    metadata: userInMetadata ? withUserId(row.metadata.json, row.userId!) : row.metadata.json,
    category: categoryOf(row.metadata.fields),
    importanceScore: importanceOf(row.metadata.fields),
    createdAt: row.createdAt,
    updatedAt: row.updatedAt ?? row.createdAt,
    changedContent: true,
  };
}

// Writes a prepared batch in one transaction together with its ledger checkpoint, so a crash
// loses at most the batch in flight and a re-run converges. Counts it once it has committed.
import type { Db } from '../postgres/connection.js';
import { CopyEncodeError } from '../postgres/copy-binary.js';
import { checkpoint } from '../postgres/ledger.js';
import { MEMORY_COPY_COLUMNS, memoryCopyWriter, writeDuplicates, writeFragments, writeMemories, writeSkips } from '../postgres/writer.js';
import { appendRejects } from '../embed/reject-file.js';
import type { SkippedRow } from '../report.js';
import { storableText } from '../source/rules.js';
import { addFragmentCounts, addMemoryCounts, mergeResult, userCounts } from './counts.js';
import type { PipelineOptions, PipelineResult, PreparedBatch, RunState } from './types.js';
import { isoInstant } from '../source/timestamps.js';

// Above this, a batch's encoder is replaced rather than reused.
const MAX_KEPT_WRITER_BYTES = 32 * 1024 * 1024;

export async function commitBatch(opts: PipelineOptions, state: RunState, batch: PreparedBatch, result: PipelineResult): Promise<void> {
  const { db, dryRun } = opts;
  const { counts, memories, fragments } = batch;
  const m = counts.memories;
  if (dryRun || !db) {
    for (const mem of memories) {
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
  const direct = memories.every((x) => !batch.stored.has(x.id));
  let newlyRejected: SkippedRow[];
  try {
    newlyRejected = await db.transaction((tx) => writeBatch(opts, tx, batch, result, direct));
  } catch (err) {
    if (!direct || (err as { code?: string }).code !== '23505') throw err;
    newlyRejected = await db.transaction((tx) => writeBatch(opts, tx, batch, result, false));
  }
  mergeResult(result, counts);
  // Only once the rejected rows are recorded, so that every line names a row verify names too.
  // A crash right here loses lines, never records: verify still names those rows.
  if (opts.rejectFile && newlyRejected.length > 0) await appendRejects(opts.rejectFile, newlyRejected);
  // An unusually large batch does not keep its encoder's buffer for the rest of the run.
  if (state.writers[batch.writerSlot].byteLength > MAX_KEPT_WRITER_BYTES) state.writers[batch.writerSlot] = memoryCopyWriter();
}

/**
 * One batch's transaction. Adds what it wrote to batch.counts only once every statement has
 * succeeded. On a server, the statements that do not depend on the COPY are sent ahead of it
 * in one pipeline, so the batch costs few round trips. Returns the rows rejected for the
 * first time (for the reject file).
 */
async function writeBatch(opts: PipelineOptions, tx: Db, batch: PreparedBatch, result: PipelineResult, direct: boolean): Promise<SkippedRow[]> {
  const { memories, fragments } = batch;
  let newlyRejected: SkippedRow[] = [];
  const sideDone = together(tx, [
    // Each batch commits with its ledger checkpoint: should the server lose the last commits
    // in a crash, the ledger loses them too and a re-run writes them again. So a batch need
    // not wait for its WAL flush (finishRun's ordinary commit flushes everything before it).
    () => (tx.kind === 'postgres' ? tx.exec('SET LOCAL synchronous_commit = off') : null),
    () =>
      batch.staleDuplicates.length > 0
        ? tx.query(`DELETE FROM memory_duplicates WHERE duplicate_id = ANY($1::text[]) AND dedup_type = 'exact'`, [batch.staleDuplicates])
        : null,
    () => writeSkips(tx, batch.skips.map(storableSkip)),
    () => (batch.skips.length + batch.rejects.length > 0 ? recordRejects(tx, batch).then((r) => void (newlyRejected = r)) : null),
  ]);
  // A failure of the COPY below aborts the transaction; these then fail too, and are awaited.
  sideDone.catch(() => {});
  let w;
  try {
    w = await writeMemories(tx, memories, { direct, ...(batch.encoded ? { encoded: batch.encoded } : {}) });
  } catch (err) {
    throw nameCopyRow(err, memories);
  }
  await sideDone;
  const fw = await writeFragments(tx, fragments);
  const updatedIds = new Set(w.updatedIds);
  if (!w.adopted) await restoreUpdatedAt(tx, 'memories', memories.filter((s) => updatedIds.has(s.id)).map((s) => ({ id: s.id, at: s.updatedAt })));
  if (fw.updated > 0) await restoreUpdatedAt(tx, 'prompt_fragments', fragments.map((f) => ({ id: f.id, at: f.updatedAt ?? f.createdAt })));
  const m = { ...batch.counts.memories };
  m.migrated += w.inserted;
  m.updated += w.updated;
  m.unchanged += memories.length - w.inserted - w.updated;
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
  const userOf = new Map(memories.map((s) => [s.id, s.userId]));
  for (const id of w.insertedIds) userCounts(batch.counts, userOf.get(id) ?? null).migrated++;
  for (const id of w.updatedIds) userCounts(batch.counts, userOf.get(id) ?? null).updated++;
  return newlyRejected;
}

/** A skip as migration_skips can hold it (an id or user with U+0000 escaped, see storableText). */
function storableSkip(s: SkippedRow): SkippedRow {
  return { id: storableText(s.id), user: s.user === null ? null : storableText(s.user), reason: s.reason };
}

/**
 * Records the batch's rejected rows as skips with rejected = true, and clears the flag of
 * rows that are plain skips now (a rejected row edited into, say, empty content). Returns the
 * rows not already recorded as rejected for the same reason: a re-run adds no reject-file
 * line for a row it rejected before. All parts of one statement see the table as it was
 * before it, so the NOT EXISTS below sees the records as earlier runs left them.
 */
async function recordRejects(tx: Db, batch: PreparedBatch): Promise<SkippedRow[]> {
  // One entry per id: ON CONFLICT cannot update the same row twice in one statement.
  const byId = new Map(batch.rejects.map((r) => [storableText(r.id), r]));
  const fresh = await tx.query<{ id: string }>(
    `WITH x AS (SELECT * FROM jsonb_to_recordset($1::text::jsonb) AS x(id text, user_id text, reason text)),
          up AS (INSERT INTO migration_skips (source_id, user_id, reason, rejected)
                 SELECT id, user_id, reason, true FROM x
                 ON CONFLICT (source_id) DO UPDATE SET user_id = EXCLUDED.user_id, reason = EXCLUDED.reason, rejected = true),
          plain AS (UPDATE migration_skips SET rejected = false WHERE rejected AND source_id = ANY($2::text[]))
     SELECT x.id FROM x
      WHERE NOT EXISTS (SELECT 1 FROM migration_skips s WHERE s.source_id = x.id AND s.rejected AND s.reason = x.reason)`,
    [
      JSON.stringify([...byId.values()].map((r) => storableSkip(r)).map((s) => ({ id: s.id, user_id: s.user, reason: s.reason }))),
      batch.skips.map((s) => storableText(s.id)),
    ],
  );
  const freshIds = new Set(fresh.map((f) => f.id));
  return [...byId].filter(([id]) => freshIds.has(id)).map(([, r]) => r);
}

/**
 * A COPY error names the failing row by its place in the batch: the encoder's 0-based row,
 * or the server's "COPY memories, line N" (in binary COPY, N counts rows from 1). Operators
 * know rows by their source id, so the message names that instead. Only for errors about the
 * row's data (SQLSTATE class 22 data exception, 23 constraint): a statement timeout or a lost
 * connection also carries the line COPY had reached, but that row is not the cause. The error
 * object is kept: its SQLSTATE decides the retry above and the exit code.
 */
export function nameCopyRow(err: unknown, rows: readonly { id: string }[]): unknown {
  if (err instanceof CopyEncodeError) {
    const row = rows[err.row];
    const column = MEMORY_COPY_COLUMNS[err.column] ?? err.columnName;
    if (row) err.message = `source row ${storableText(row.id)}, column ${column} (${err.columnType}): ${err.reason}`;
    return err;
  }
  const { where, code } = (err ?? {}) as { where?: unknown; code?: unknown };
  const aboutRow = typeof code === 'string' && /^2[23]/.test(code);
  const line = aboutRow && typeof where === 'string' ? /\bCOPY \S+, line (\d+)/.exec(where) : null;
  const row = line ? rows[Number(line[1]) - 1] : undefined;
  if (row && err instanceof Error) err.message = `source row ${storableText(row.id)}: ${err.message}`;
  return err;
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
 * The touch trigger (sql/008) sets updated_at = now() when content or metadata change but
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
    [JSON.stringify(fix.map((r) => ({ id: r.id, at: isoInstant(r.at!) })))],
  );
}

// The Batch API's ledger (sql/010_embedding_batches.sql): what migrate --batch-api uploaded
// and created, so that a resumed run polls the same batches instead of paying again.
import type { Db } from './connection.js';

/** [cache key, row id, user] of one input of a request line. */
export type BatchInputRef = [key: string, id: string | null, user: string | null];

export type BatchRowState = 'uploaded' | 'submitted' | 'done';

export interface EmbeddingBatchRow {
  id: number;
  jobTag: string;
  inputsSha256: string;
  inputFileId: string;
  batchId: string | null;
  state: BatchRowState;
  batchStatus: string | null;
  lineCount: number;
  inputCount: number;
  resubmitOf: number | null;
}

interface RawRow {
  id: string | number;
  job_tag: string;
  inputs_sha256: string;
  input_file_id: string;
  batch_id: string | null;
  state: BatchRowState;
  batch_status: string | null;
  line_count: number;
  input_count: number;
  resubmit_of: string | number | null;
}

const COLUMNS = `id, job_tag, inputs_sha256, input_file_id, batch_id, state, batch_status, line_count, input_count, resubmit_of`;

function fromRaw(r: RawRow): EmbeddingBatchRow {
  return {
    id: Number(r.id),
    jobTag: r.job_tag,
    inputsSha256: r.inputs_sha256.trim(),
    inputFileId: r.input_file_id,
    batchId: r.batch_id,
    state: r.state,
    batchStatus: r.batch_status,
    lineCount: Number(r.line_count),
    inputCount: Number(r.input_count),
    resubmitOf: r.resubmit_of === null ? null : Number(r.resubmit_of),
  };
}

/** Records an uploaded batch file before its batch is created; returns the row id. */
export async function recordUpload(
  db: Db,
  u: {
    jobTag: string;
    inputsSha256: string;
    model: string;
    dimensions: number;
    inputFileId: string;
    lines: Record<string, BatchInputRef[]>;
    lineCount: number;
    inputCount: number;
    resubmitOf?: number;
  },
): Promise<number> {
  const [row] = await db.query<{ id: string | number }>(
    `INSERT INTO embedding_batches (job_tag, inputs_sha256, model, dimensions, input_file_id, lines, line_count, input_count, resubmit_of)
     VALUES ($1, $2, $3, $4, $5, $6::text::jsonb, $7, $8, $9) RETURNING id`,
    [u.jobTag, u.inputsSha256, u.model, u.dimensions, u.inputFileId, JSON.stringify(u.lines), u.lineCount, u.inputCount, u.resubmitOf ?? null],
  );
  return Number(row!.id);
}

/** The batch of a recorded upload exists (created by us, or found by its metadata tag). */
export async function recordBatchCreated(db: Db, id: number, batchId: string, status: string): Promise<void> {
  await db.query(`UPDATE embedding_batches SET batch_id = $2, batch_status = $3, state = 'submitted', updated_at = now() WHERE id = $1`, [
    id,
    batchId,
    status,
  ]);
}

export async function recordPoll(db: Db, id: number, status: string, requestCounts: unknown): Promise<void> {
  await db.query(`UPDATE embedding_batches SET batch_status = $2, request_counts = $3::text::jsonb, updated_at = now() WHERE id = $1`, [
    id,
    status,
    JSON.stringify(requestCounts ?? null),
  ]);
}

/** Every answer of the batch is in the cache (or in `failed`): nothing more to do for it. */
export async function recordDone(db: Db, id: number, status: string, failed: Record<string, string>): Promise<void> {
  await db.query(
    `UPDATE embedding_batches SET state = 'done', batch_status = $2, failed = $3::text::jsonb, updated_at = now() WHERE id = $1`,
    [id, status, JSON.stringify(failed)],
  );
}

/** custom_id → the inputs of that line, in order (read when the batch's answers are loaded). */
export async function batchLines(db: Db, id: number): Promise<Record<string, BatchInputRef[]>> {
  const [row] = await db.query<{ lines: string }>(`SELECT lines::text AS lines FROM embedding_batches WHERE id = $1`, [id]);
  return row ? (JSON.parse(row.lines) as Record<string, BatchInputRef[]>) : {};
}

/** The job's batches not done yet, oldest first (without their lines: those can be large). */
export async function openBatches(db: Db, jobTag: string): Promise<EmbeddingBatchRow[]> {
  const rows = await db.query<RawRow>(`SELECT ${COLUMNS} FROM embedding_batches WHERE job_tag = $1 AND state <> 'done' ORDER BY id`, [jobTag]);
  return rows.map(fromRaw);
}

/** Whether a resubmission of batch row `id` was already recorded. */
export async function hasResubmission(db: Db, id: number): Promise<boolean> {
  const rows = await db.query(`SELECT 1 FROM embedding_batches WHERE resubmit_of = $1 LIMIT 1`, [id]);
  return rows.length > 0;
}

/** Cache key → reason for every input of a failed line in the job's finished batches. */
export async function failedInputs(db: Db, jobTag: string): Promise<Map<string, string>> {
  const rows = await db.query<{ key: string; reason: string }>(
    `SELECT f.key, f.value AS reason FROM embedding_batches b, jsonb_each_text(b.failed) f WHERE b.job_tag = $1 AND b.state = 'done'`,
    [jobTag],
  );
  return new Map(rows.map((r) => [r.key, r.reason]));
}

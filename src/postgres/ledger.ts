// The migration ledger (migration_runs): one row per run, with options (secrets removed),
// counts, status and the last committed checkpoint. When MEMORY_EVENTS_HMAC_SECRET is set
// each row carries an HMAC-SHA256 over its canonical JSON so tampering can be detected.
import { createHmac } from 'node:crypto';
import type { Db } from './connection.js';

export type RunStatus = 'pending' | 'committed' | 'failed' | 'interrupted';

export interface RunRow {
  id: number;
  source_path: string;
  source_sha256: string;
  options: Record<string, unknown>;
  shard: string | null;
  status: RunStatus;
  counts: Record<string, unknown>;
  checkpoint_rowid: number | null;
  error: string | null;
  hmac: string | null;
  started_at: Date | string;
  finished_at: Date | string | null;
}

/** Stable JSON: keys sorted at every level, so the HMAC does not depend on key order. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value ?? null);
  if (value instanceof Date) return JSON.stringify(value.toISOString());
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const obj = value as Record<string, unknown>;
  return `{${Object.keys(obj)
    .filter((k) => obj[k] !== undefined)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`)
    .join(',')}}`;
}

function isoOrNull(v: Date | string | null): string | null {
  if (v === null) return null;
  return new Date(v).toISOString();
}

/** The fields the HMAC covers: everything but the hmac itself. */
export function hmacPayload(r: RunRow): string {
  return canonicalJson({
    id: Number(r.id),
    source_path: r.source_path,
    source_sha256: r.source_sha256,
    options: r.options,
    shard: r.shard,
    status: r.status,
    counts: r.counts,
    checkpoint_rowid: r.checkpoint_rowid === null ? null : Number(r.checkpoint_rowid),
    error: r.error,
    started_at: isoOrNull(r.started_at),
    finished_at: isoOrNull(r.finished_at),
  });
}

export function computeHmac(r: RunRow, secret: string): string {
  return createHmac('sha256', secret).update(hmacPayload(r)).digest('hex');
}

function hmacSecret(): string | undefined {
  const s = process.env['MEMORY_EVENTS_HMAC_SECRET'];
  return s && s.length > 0 ? s : undefined;
}

async function sign(db: Db, id: number): Promise<void> {
  const secret = hmacSecret();
  if (!secret) return;
  const [row] = await db.query<RunRow>(`SELECT * FROM migration_runs WHERE id = $1`, [id]);
  if (!row) return;
  await db.query(`UPDATE migration_runs SET hmac = $2 WHERE id = $1`, [id, computeHmac(row, secret)]);
}

export async function startRun(
  db: Db,
  run: { sourcePath: string; sourceSha256: string; options: Record<string, unknown>; shard: string | null },
): Promise<number> {
  const [row] = await db.query<{ id: number }>(
    `INSERT INTO migration_runs (source_path, source_sha256, options, shard, status, started_at)
     VALUES ($1, $2, $3::text::jsonb, $4, 'pending', date_trunc('milliseconds', now())) RETURNING id`,
    [run.sourcePath, run.sourceSha256, JSON.stringify(run.options), run.shard],
  );
  const id = Number(row!.id);
  await sign(db, id);
  return id;
}

/**
 * Called inside each batch's transaction, so the checkpoint is exactly what was committed.
 * Merged like finishRun's: what a step before the load recorded (recordCounts) stays.
 */
export async function checkpoint(db: Db, id: number, rowid: number, counts: unknown): Promise<void> {
  await db.query(`UPDATE migration_runs SET checkpoint_rowid = $2, counts = counts || $3::text::jsonb WHERE id = $1`, [
    id,
    rowid,
    JSON.stringify(counts),
  ]);
  await sign(db, id);
}

/**
 * Merges `counts` into the run's (top-level keys replace). Called inside the transaction of
 * a step that is not a batch, so the ledger says what the step did exactly when it committed.
 */
export async function recordCounts(db: Db, id: number, counts: Record<string, unknown>): Promise<void> {
  await db.query(`UPDATE migration_runs SET counts = counts || $2::text::jsonb WHERE id = $1`, [id, JSON.stringify(counts)]);
  await sign(db, id);
}

/**
 * Ends a run. `counts` is merged over the last checkpoint's (top-level keys replace), so a
 * run that stops mid-load keeps the counts of what it committed.
 */
export async function finishRun(db: Db, id: number, status: RunStatus, counts: Record<string, unknown>, error?: string): Promise<void> {
  await db.query(
    `UPDATE migration_runs SET status = $2, counts = counts || $3::text::jsonb, error = $4, finished_at = date_trunc('milliseconds', now()) WHERE id = $1`,
    [id, status, JSON.stringify(counts), error ?? null],
  );
  await sign(db, id);
}

/** The last run for this source and shard that did not finish: a resume picks up from it. */
export async function unfinishedRun(db: Db, sourceSha256: string, shard: string | null): Promise<RunRow | null> {
  const rows = await db.query<RunRow>(
    `SELECT * FROM migration_runs WHERE source_sha256 = $1 AND shard IS NOT DISTINCT FROM $2
      ORDER BY id DESC LIMIT 1`,
    [sourceSha256, shard],
  );
  const last = rows[0];
  return last && last.status !== 'committed' ? last : null;
}

/** What verify, search and rollback read of a committed run. */
export interface LedgerRun {
  id: number;
  source_sha256: string;
  options: Record<string, unknown>;
}

/** The last committed migration run, preferring one of this source file. */
export async function lastCommittedRun(db: Db, sourceSha256?: string): Promise<LedgerRun | null> {
  const has = await db.query(`SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = current_schema() AND c.relname = 'migration_runs'`);
  if (has.length === 0) return null;
  const rows = await db.query<{ id: number; source_sha256: string; options: string }>(
    `SELECT id, source_sha256, options::text AS options FROM migration_runs WHERE status = 'committed'
      ORDER BY (source_sha256 = $1) DESC, id DESC LIMIT 1`,
    [sourceSha256 ?? ''],
  );
  const r = rows[0];
  if (!r) return null;
  return { id: Number(r.id), source_sha256: String(r.source_sha256).trim(), options: JSON.parse(r.options) };
}

export async function listRuns(db: Db, limit = 50): Promise<RunRow[]> {
  return db.query<RunRow>(`SELECT * FROM migration_runs ORDER BY id DESC LIMIT $1`, [limit]);
}

export interface LedgerCheck {
  id: number;
  ok: boolean;
  reason?: string;
}

/** Recomputes each row's HMAC. Rows without one (secret unset when written) are flagged. */
export async function verifyLedger(db: Db, secret: string): Promise<LedgerCheck[]> {
  const rows = await db.query<RunRow>(`SELECT * FROM migration_runs ORDER BY id`);
  return rows.map((r) => {
    if (!r.hmac) return { id: Number(r.id), ok: false, reason: 'no HMAC (written without MEMORY_EVENTS_HMAC_SECRET)' };
    const expected = computeHmac(r, secret);
    return expected === r.hmac.trim()
      ? { id: Number(r.id), ok: true }
      : { id: Number(r.id), ok: false, reason: 'HMAC mismatch: the row was changed after it was written' };
  });
}

/**
 * When the committed runs began and last ended (ISO 8601 text, exact), or nulls without one.
 * verify uses them to tell what an app wrote in Postgres after the migration from what the
 * migration wrote.
 */
export async function migrationWindow(db: Db): Promise<{ firstStarted: string | null; lastFinished: string | null }> {
  const [w] = await db.query<{ first: string | null; last: string | null }>(
    `SELECT to_char(min(started_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS first,
            to_char(max(finished_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS last
       FROM migration_runs WHERE status = 'committed'`,
  );
  return { firstStarted: w?.first ?? null, lastFinished: w?.last ?? null };
}

/** The --user-from the latest run of this source (same bytes or same path) recorded, if any. */
export async function recordedUserFrom(db: Db, sourceSha256: string, sourcePath: string): Promise<{ id: number; userFrom: string } | null> {
  const rows = await db.query<{ id: number; user_from: string | null }>(
    `SELECT id, COALESCE(options->'source'->>'userFrom', 'column') AS user_from FROM migration_runs
      WHERE source_sha256 = $1 OR source_path = $2 ORDER BY id DESC LIMIT 1`,
    [sourceSha256, sourcePath],
  );
  const r = rows[0];
  return r ? { id: Number(r.id), userFrom: String(r.user_from) } : null;
}

// The verify report: the --json object of `memory-migrate verify` (a stable contract: keys are
// added, never renamed), its constants, and the one way a check records a mismatch.

/** Exit code of a verify run that found a mismatch. */
export const EXIT_MISMATCH = 3;
export const DEFAULT_SAMPLE = 200;
/** Recall@1 below this gets a probes recommendation. */
export const RECALL_TARGET = 0.99;
/** Mismatches kept in the report (the count is always exact). */
export const MAX_REPORTED = 1000;

export interface VerifyMismatch {
  /** The row (source id), or null for a count or schema mismatch. */
  id: string | null;
  user: string | null;
  /** What was checked: count, missing, rejected, extra, user_id, content, metadata, created_at, updated_at, embedding, vector, fragment, schema. */
  check: string;
  detail: string;
}

export interface UserCounts {
  /** Rows of this user in the SQLite file. */
  sqlite: number;
  /** Rows not migrated because the last run did not cover them (--user, --shard, --limit). */
  pending: number;
  /** Postgres side: stored memories, recorded duplicates, recorded skips, fragments. */
  memories: number;
  duplicates: number;
  skipped: number;
  fragments: number;
  postgres: number;
}

export interface VerifyReport {
  ok: boolean;
  command: 'verify';
  source: string;
  target: string;
  /** The ledger row that says what was meant to be migrated. */
  run: { id: number; users: string[]; limit: number | null; shard: string | null; sourceChanged: boolean } | null;
  expected: { model: string | null; dimensions: number | null; sourceModel: string | null };
  seed: number;
  sample: number;
  /** Sampled rows compared field by field. */
  checked: number;
  sampleIds: string[];
  /** recall@1 of the ivfflat index over the sampled rows, at the probes the store uses; null without an index. */
  recall: number | null;
  index: { name: string; lists: number; probes: number; suggestedProbes: number | null; fix: string | null } | null;
  /** Source rows the last run was not meant to migrate and that are not in Postgres. */
  pending: number;
  counts: {
    sqliteRows: number;
    inScope: number;
    memories: number;
    duplicates: number;
    skipped: number;
    fragments: number;
    pending: number;
    missing: number;
    /** Rows the migration recorded as rejected (PostgreSQL cannot store them): not accounted for. */
    rejected: number;
    extra: number;
    users: Record<string, UserCounts>;
  };
  fragments: { source: number; target: number; checked: number };
  mismatchCount: number;
  mismatches: VerifyMismatch[];
  /**
   * What the app wrote in Postgres after the migration: rows added (not in the file; a random
   * uuid or created after the first run began) and rows changed (updated_at after the last
   * run). Not mismatches: `rollback` takes them into SQLite. Listed up to MAX_REPORTED.
   */
  sinceMigration: { added: number; changed: number; rows: VerifyMismatch[] };
  notes: string[];
  durationMs: number;
}

/** Records a row the app added or changed in Postgres since the migration (check 'added' or 'changed'). */
export function recordChange(report: VerifyReport, row: VerifyMismatch & { check: 'added' | 'changed' }): void {
  report.sinceMigration[row.check]++;
  if (report.sinceMigration.rows.length < MAX_REPORTED) report.sinceMigration.rows.push(row);
}

/** How a check reports a mismatch: counted always, listed up to MAX_REPORTED. */
export type RecordMismatch = (m: VerifyMismatch) => void;

export function mismatchRecorder(report: VerifyReport): RecordMismatch {
  return (m) => {
    report.mismatchCount++;
    if (report.mismatches.length < MAX_REPORTED) report.mismatches.push(m);
  };
}

/** A report with nothing checked yet. */
export function emptyVerifyReport(source: string, target: string, seed: number, sample: number): VerifyReport {
  return {
    ok: false,
    command: 'verify',
    source,
    target,
    run: null,
    expected: { model: null, dimensions: null, sourceModel: null },
    seed,
    sample,
    checked: 0,
    sampleIds: [],
    recall: null,
    index: null,
    pending: 0,
    counts: { sqliteRows: 0, inScope: 0, memories: 0, duplicates: 0, skipped: 0, fragments: 0, pending: 0, missing: 0, rejected: 0, extra: 0, users: {} },
    fragments: { source: 0, target: 0, checked: 0 },
    mismatchCount: 0,
    mismatches: [],
    sinceMigration: { added: 0, changed: 0, rows: [] },
    notes: [],
    durationMs: 0,
  };
}

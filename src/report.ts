// The migration report: the --json object (a stable contract: keys are added, never
// renamed) and the human summary printed from it.
import { cutoverLines, type CutoverInfo } from './postgres/cutover.js';
import { emptyEmbedStats, type EmbedStats } from './embed/types.js';
import type { BatchApiStats } from './embed/batch-api.js';

export interface SkippedRow {
  id: string;
  user: string | null;
  reason: string;
}

export interface SelftestCheck {
  name: string;
  ok: boolean;
  detail?: string;
}

export interface MemoryCounts {
  read: number;
  migrated: number;
  updated: number;
  unchanged: number;
  skipped: number;
  /** Rows PostgreSQL cannot store (a NUL character): not migrated, recorded, in the reject file. */
  rejected: number;
  /** Rows counted as errors: the rejected ones. They do not fail the run (exit 0): verify names them. */
  errors: number;
  duplicates: { exact: number; fuzzy: number; semantic: number; total: number };
  /** Skips by reason, e.g. { "empty content": 2 }. */
  skippedByReason: Record<string, number>;
  /** Warnings counted per row (metadata kept as {raw}, invalid stored vectors re-embedded...). */
  warnings: Record<string, number>;
}

/** What a mirrored run deleted (or, on a dry run, would delete). */
export interface DeletedCounts {
  /** Stored memories whose source row is gone. */
  memories: number;
  /** Duplicate records (memory_duplicates rows) whose source row is gone. */
  duplicates: number;
  /** Skip records (migration_skips, rejected rows included) whose source row is gone. */
  skips: number;
  /** Prompt fragments whose source row is gone. */
  fragments: number;
  /**
   * Rows still in the file that were recorded as duplicates of a deleted memory: their records
   * go with it (ON DELETE CASCADE) and the load that follows stores or re-records them.
   */
  reloadedDuplicates: number;
}

export interface MigrationReport {
  ok: boolean;
  command: string;
  dryRun: boolean;
  source: { path: string; sha256: string | null; layout: string; empty: boolean };
  target: string;
  runId: number | null;
  memories: MemoryCounts;
  fragments: { read: number; migrated: number; updated: number; unchanged: number; defaults: number };
  embeddings: EmbedStats & {
    model: string;
    dimensions: number;
    sourceModel: string | null;
    invalidStored: number;
    estimatedCostUsd: number;
    /** With --batch-api: what went through OpenAI's Batch API (see src/embed/batch-api.ts). */
    batchApi?: BatchApiStats;
  };
  users: Record<string, { read: number; migrated: number; updated: number; unchanged: number; duplicates: number; skipped: number; rejected: number }>;
  indexes: { table: string; index: string; rows: number; lists: number; action: string; ms: number }[];
  backupSchema: string | null;
  /** What the app needs to run on the result (absent on a dry run). */
  cutover?: CutoverInfo;
  selftest: { ran: boolean; passed: boolean; checks: SelftestCheck[] };
  skippedRows: SkippedRow[];
  /**
   * This run's lines of --reject-file: inputs the embedding API refused (stored without a
   * vector) and rows PostgreSQL cannot store (not stored). A row is written there once, when
   * first rejected; a re-run counts it again in memories.rejected but adds no line.
   */
  rejectedRows?: SkippedRow[];
  preflight?: {
    textsToEmbed: number;
    tokens: number;
    requests: number;
    cached: number;
    estimatedCostUsd: number;
    /** The same texts through the Batch API (--batch-api): half the online price. */
    batchCostUsd: number;
    etaSeconds: number;
  };
  /** With --mirror-deletes: records of rows gone from the file, deleted before the load (a dry run: would be). */
  deleted?: DeletedCounts;
  timings: { loadMs: number; indexMs: number; selftestMs: number };
  durationMs: number;
  error?: string;
}

export function emptyMemoryCounts(): MemoryCounts {
  return {
    read: 0,
    migrated: 0,
    updated: 0,
    unchanged: 0,
    skipped: 0,
    rejected: 0,
    errors: 0,
    duplicates: { exact: 0, fuzzy: 0, semantic: 0, total: 0 },
    skippedByReason: {},
    warnings: {},
  };
}

/** A migration report with nothing done yet. */
export function emptyMigrationReport(o: {
  dryRun: boolean;
  sqlite: string;
  sourceModel: string | null;
  model: string;
  dimensions: number;
  target: string;
}): MigrationReport {
  const { model, dimensions, target } = o;
  return {
    ok: false,
    command: 'migrate',
    dryRun: o.dryRun,
    source: { path: o.sqlite, sha256: null, layout: 'unknown', empty: false },
    target,
    runId: null,
    memories: emptyMemoryCounts(),
    fragments: { read: 0, migrated: 0, updated: 0, unchanged: 0, defaults: 0 },
    embeddings: {
      model,
      dimensions,
      sourceModel: o.sourceModel,
      ...emptyEmbedStats(),
      invalidStored: 0,
      estimatedCostUsd: 0,
    },
    users: {},
    indexes: [],
    backupSchema: null,
    selftest: { ran: false, passed: false, checks: [] },
    skippedRows: [],
    timings: { loadMs: 0, indexMs: 0, selftestMs: 0 },
    durationMs: 0,
  };
}

/** Skipped rows kept in the report itself; the full list goes to --report files. */
export const MAX_SKIPPED_IN_REPORT = 1000;

function pad(s: string | number, n: number, right = false): string {
  const t = String(s);
  return right ? t.padEnd(n) : t.padStart(n);
}

/** The pgloader-like summary table, one line per table, then embedding and self-test lines. */
export function formatSummary(r: MigrationReport): string {
  const lines: string[] = [];
  const m = r.memories;
  const f = r.fragments;
  const head = ['table', 'read', 'migrated', 'updated', 'unchanged', 'duplicates', 'skipped', 'errors', 'time'];
  const widths = [18, 8, 9, 8, 10, 11, 8, 7, 9];
  const row = (cells: (string | number)[]) => cells.map((c, i) => pad(c, widths[i]!, i === 0)).join(' ').trimEnd();
  const rule = widths.map((w) => '-'.repeat(w)).join(' ');
  const t = r.timings;
  lines.push(row(head));
  lines.push(rule);
  // Memories and fragments load in the same batches: the load time is on the memories line.
  lines.push(row(['memories', m.read, m.migrated, m.updated, m.unchanged, m.duplicates.total, m.skipped, m.errors, secs(t.loadMs)]));
  lines.push(row(['prompt_fragments', f.read, f.migrated + f.defaults, f.updated, f.unchanged, 0, 0, 0, '']));
  lines.push(row(['memory_duplicates', '', m.duplicates.total, '', '', '', '', '', '']));
  lines.push(rule);
  if (!r.dryRun) {
    lines.push(row(['vector indexes', '', '', '', '', '', '', '', secs(t.indexMs)]));
    lines.push(row(['self-test', '', '', '', '', '', '', '', r.selftest.ran ? secs(t.selftestMs) : 'skipped']));
  }
  lines.push(row(['total', '', '', '', '', '', '', m.errors, secs(r.durationMs)]));
  lines.push('');
  const e = r.embeddings;
  lines.push(
    `embeddings (${e.model}, ${e.dimensions} dims): reused ${e.reused}, cached ${e.cached}, computed ${e.computed}, ` +
      `requests ${e.requests}, retries ${e.retries}, tokens ${e.tokens}, truncated ${e.truncated}, rejected ${e.rejected}, ` +
      `estimated cost $${e.estimatedCostUsd.toFixed(4)}`,
  );
  if (e.rateLimit || e.rateLimited > 0) {
    const limit = e.rateLimit ? `${e.rateLimit.tokensPerMin} tokens/min, ${e.rateLimit.requestsPerMin} requests/min` : 'not reported';
    lines.push(`embedding rate limit: ${limit}; held back ${secs(e.throttledMs)} to stay inside it; 429 answers ${e.rateLimited}`);
  }
  if (e.batchApi) {
    const b = e.batchApi;
    lines.push(
      `batch api: ${b.batches} batches created, ${b.requests} requests, ${b.completed} completed, ${b.failedLines} failed lines, ` +
        `${b.expired} expired, ${b.cancelled} cancelled, ${b.resubmitted} requests resubmitted, ${b.resumed} resumed, ${b.tokens} tokens`,
    );
  }
  if (e.invalidStored > 0) lines.push(`stored vectors that were invalid and re-embedded: ${e.invalidStored}`);
  const reasons = Object.entries(m.skippedByReason);
  if (reasons.length > 0) lines.push(`skipped: ${reasons.map(([k, v]) => `${k} ${v}`).join(', ')}`);
  const warnings = Object.entries(m.warnings);
  if (warnings.length > 0) lines.push(`warnings: ${warnings.map(([k, v]) => `${k} ${v}`).join(', ')}`);
  const dups = m.duplicates;
  if (dups.total > 0) lines.push(`duplicates: exact ${dups.exact}, fuzzy ${dups.fuzzy}, semantic ${dups.semantic}`);
  if (r.deleted) lines.push(formatDeleted(r.deleted, r.dryRun));
  for (const ix of r.indexes) {
    if (ix.action !== 'skipped-empty') lines.push(`index ${ix.index}: ${ix.action} (rows ${ix.rows}, lists ${ix.lists}, ${ix.ms} ms)`);
  }
  if (r.backupSchema) lines.push(`previous tables backed up in schema ${r.backupSchema}`);
  if (r.cutover) lines.push(...cutoverLines(r.cutover));
  if (r.selftest.ran) {
    for (const c of r.selftest.checks) lines.push(formatCheck(c));
  } else {
    lines.push('self-test skipped');
  }
  if (m.rejected > 0) {
    const where = r.dryRun ? 'a real run lists them in --reject-file' : 'see --reject-file; verify names them';
    lines.push(`rows PostgreSQL cannot store (not migrated, counted as errors): ${m.rejected}, ${where}`);
  }
  if (e.rejected > 0) lines.push(`inputs the embedding API rejected (stored without a vector): ${e.rejected}, see --reject-file and --report`);
  lines.push(`duration: ${(r.durationMs / 1000).toFixed(1)} s`);
  return lines.join('\n');
}

/** The one line saying what --mirror-deletes deleted (or, on a dry run, would delete). */
export function formatDeleted(d: DeletedCounts, dryRun: boolean): string {
  const total = d.memories + d.duplicates + d.skips + d.fragments;
  return (
    `${dryRun ? 'would delete' : 'deleted'} ${total} record${total === 1 ? '' : 's'} of rows gone from the SQLite file: ` +
    `memories ${d.memories}, duplicates ${d.duplicates}, skips ${d.skips}, fragments ${d.fragments}` +
    (d.reloadedDuplicates > 0
      ? `; ${dryRun ? 'would reload' : 'reloaded'} ${d.reloadedDuplicates} duplicate row${d.reloadedDuplicates === 1 ? '' : 's'} whose original was deleted`
      : '')
  );
}

/** One self-test check as a line: ✅ or ❌, its name, and the detail if any. */
export function formatCheck(c: SelftestCheck): string {
  return `${c.ok ? '✅' : '❌'} ${c.name}${c.detail ? ` — ${c.detail}` : ''}`;
}

function secs(ms: number): string {
  return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}

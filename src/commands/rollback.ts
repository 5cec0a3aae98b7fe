// `memory-migrate rollback` (`migrate --rollback` is an alias): the way back to SQLite with nothing
// lost. The SQLite file is copied to <file>.bak-<UTC time> first; then every memory that is in
// Postgres but not in the file, or that changed in Postgres after the cutover, is written
// back in the file's own layout (embedding as JSON array text, metadata as JSON text,
// timestamps in the file's format). Rows the file already has unchanged are not touched, so
// they stay byte-identical. Postgres is only read. Then the app switches with
// `export MEMORY_TYPE=sqlite`.
import { copyFileSync, existsSync, statSync, constants as fsConstants } from 'node:fs';
import { Command } from 'commander';
import { openSource } from '../source/reader.js';
import { SqliteWriteBack, type StoredMemory } from '../source/write-back.js';
import type { TimestampFormat } from '../source/timestamp-format.js';
import { parseVectorText } from '../postgres/vector-text.js';
import { parseTimestampText } from '../source/timestamps.js';
import { withUserId } from '../source/metadata.js';
import { SYSTEM_PROMPTS_USER } from '../source/rules.js';
import type { Db } from '../postgres/connection.js';
import { tableDimensions } from '../postgres/schema.js';
import { lastCommittedRun } from '../postgres/ledger.js';
import type { Output } from '../output.js';
import { UsageError } from '../errors.js';
import type { CliCommand } from './command.js';
import { describeTarget, examples, openTarget, outputOptions, resolveTarget, targetExists, targetOptions, type TargetFlags } from './shared.js';
import { idsWithStoredMetadata } from '../postgres/stored-metadata.js';

export const SWITCH_TO_SQLITE = 'export MEMORY_TYPE=sqlite';
const PAGE = 1000;
/** to_char format of a TIMESTAMP (UTC wall time) as ISO 8601 to the microsecond. */
const EXACT_UTC = `'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'`;
/** Rows listed in the report (the counts are always exact). */
const MAX_LISTED = 1000;

export interface RollbackFlags extends TargetFlags {
  sqlite: string;
  dryRun?: boolean;
  json?: boolean;
}

export interface RollbackRow {
  id: string;
  user: string;
  action: 'insert' | 'update';
  /** What differs: new, content, metadata, user_id. */
  changes: string[];
}

export interface RollbackReport {
  ok: boolean;
  command: 'rollback';
  dryRun: boolean;
  source: string;
  target: string;
  /** The copy made before writing (null on a dry run). */
  backup: string | null;
  /** The copy of the -wal file, when the file had un-checkpointed writes. */
  backupWal: string | null;
  /** Memories read from Postgres. */
  postgres: number;
  inserted: number;
  updated: number;
  unchanged: number;
  /** Prompt fragments an app added in Postgres, written into the file as system_prompts rows. */
  fragmentsInserted: number;
  /** Rows that differ but are newer in SQLite than in Postgres: kept as they are. */
  keptSqliteNewer: number;
  /** Memories in the file that Postgres does not have (duplicates, skips, deleted after cutover): kept. */
  onlyInSqlite: number;
  rows: RollbackRow[];
  conflicts: { id: string; detail: string }[];
  timestampFormat: TimestampFormat;
  warnings: string[];
  switch: string;
  durationMs: number;
}

interface PgRow {
  id: string;
  user_id: string;
  content: string;
  metadata: string;
  /** The metadata without its user_id key (what --user-in-metadata added). */
  metadata_without_user: string;
  /** ISO 8601 UTC to the microsecond, as stored. */
  created: string;
  updated: string;
  embedding_model: string | null;
}

/** <file>.bak-<UTC yyyymmddThhmmssZ>, with -2, -3... if that name is taken. */
export function backupName(file: string, now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  let name = `${file}.bak-${stamp}`;
  for (let n = 2; existsSync(name) || existsSync(`${name}-wal`); n++) name = `${file}.bak-${stamp}-${n}`;
  return name;
}

export const rollbackCommand: CliCommand<RollbackFlags, RollbackReport> = {
  define() {
    const cmd = new Command('rollback')
      .description('write memories added or changed in Postgres back into the SQLite file (after a backup copy), for MEMORY_TYPE=sqlite')
      .requiredOption('--sqlite <file>', 'the SQLite memory file to write back into, copied to <file>.bak-<UTC time> first (required, no default)');
    targetOptions(cmd).option('--dry-run', 'list what would be written back; write nothing, make no backup', false);
    outputOptions(cmd);
    return examples(cmd, 'memory-migrate rollback --sqlite memory.db --dry-run', `memory-migrate rollback --sqlite memory.db && ${SWITCH_TO_SQLITE}`);
  },
  run: rollback,
  render: renderRollbackReport,
};

async function rollback(flags: RollbackFlags, out: Output): Promise<{ report: RollbackReport; exitCode: number }> {
  const started = Date.now();
  const dryRun = flags.dryRun ?? false;
  const path = flags.sqlite;
  // Checks the file the same way migrate does (exists, is SQLite, readable), without writing.
  const probe = openSource(path);
  probe.close();
  // Only layouts the write-back knows are written; any other is refused before the backup or the target is touched.
  if (probe.info.noWriteBack) throw new UsageError(`cannot roll back into ${path} (layout ${probe.info.layout}): ${probe.info.noWriteBack}`);
  const target = resolveTarget(flags, out);
  const report: RollbackReport = {
    ok: false,
    command: 'rollback',
    dryRun,
    source: path,
    target: describeTarget(target),
    backup: null,
    backupWal: null,
    postgres: 0,
    inserted: 0,
    fragmentsInserted: 0,
    updated: 0,
    unchanged: 0,
    keptSqliteNewer: 0,
    onlyInSqlite: 0,
    rows: [],
    conflicts: [],
    timestampFormat: 'sqlite',
    warnings: [],
    switch: SWITCH_TO_SQLITE,
    durationMs: 0,
  };

  if (!targetExists(target)) {
    throw new UsageError(`${report.target} does not exist: there is nothing to roll back (pass the --pglite-dir / --database-url the migration used)`);
  }
  const db = await openTarget(target);
  let lite: SqliteWriteBack | null = null;
  try {
    const dims = await tableDimensions(db, 'memories');
    if (dims === null) throw new UsageError(`${report.target} has no memories table: there is nothing to roll back`);
    const run = await lastCommittedRun(db);
    const fileModel = typeof run?.options['sourceModel'] === 'string' ? (run.options['sourceModel'] as string) : null;
    // migrate --user-in-metadata added user_id to the stored metadata: not a change of the row.
    const userInMetadata = run?.options['userInMetadata'] === true;

    lite = SqliteWriteBack.open(path, { readOnly: dryRun });
    if (!dryRun) {
      // Hold the write lock from the copy to the commit: no other writer can slip in between.
      lite.begin();
      const bak = backupName(path);
      copyFileSync(path, bak, fsConstants.COPYFILE_EXCL);
      report.backup = bak;
      const wal = `${path}-wal`;
      if (existsSync(wal) && statSync(wal).size > 0) {
        copyFileSync(wal, `${bak}-wal`, fsConstants.COPYFILE_EXCL);
        report.backupWal = `${bak}-wal`;
      }
      out.info(`Backup of ${path}: ${bak}${report.backupWal ? ` (with ${report.backupWal})` : ''}`);
    }

    report.timestampFormat = lite.loadLayout();

    const otherModels = new Map<string, number>();
    let last = '';
    for (;;) {
      const page = await db.query<PgRow>(
        `SELECT id, user_id, content, metadata::text AS metadata, (metadata - 'user_id')::text AS metadata_without_user,
                to_char(created_at, ${EXACT_UTC}) AS created, to_char(updated_at, ${EXACT_UTC}) AS updated, embedding_model
           FROM memories WHERE id > $1 ORDER BY id LIMIT ${PAGE}`,
        [last],
      );
      if (page.length === 0) break;
      last = page[page.length - 1]!.id;
      report.postgres += page.length;

      const plan: { pg: PgRow; existing: StoredMemory | null; row: RollbackRow }[] = [];
      const existingRows = page.map((pg) => lite!.find(pg.id));
      // Unchanged metadata (compared as jsonb, so no number is rounded) stays in the file as its
      // original text.
      const sameMetadata = await idsWithStoredMetadata(
        db,
        page.flatMap((pg, i) => {
          const e = existingRows[i];
          return e ? [{ id: pg.id, md: userInMetadata && e.userId !== null ? withUserId(e.metadataJson, e.userId) : e.metadataJson }] : [];
        }),
      );
      for (const [i, pg] of page.entries()) {
        const existing = existingRows[i]!;
        if (!existing) {
          plan.push({ pg, existing, row: { id: pg.id, user: pg.user_id, action: 'insert', changes: ['new'] } });
          continue;
        }
        const changes: string[] = [];
        if (existing.content !== pg.content) changes.push('content');
        if (!sameMetadata.has(pg.id)) changes.push('metadata');
        if (existing.userId !== pg.user_id) changes.push('user_id');
        if (changes.length === 0) {
          report.unchanged++;
          continue;
        }
        const liteUpdated = existing.lastWritten;
        const pgUpdated = parseTimestampText(pg.updated)!.getTime();
        if (liteUpdated !== null && pgUpdated <= liteUpdated.getTime()) {
          report.keptSqliteNewer++;
          if (report.conflicts.length < MAX_LISTED) {
            report.conflicts.push({
              id: pg.id,
              detail: `${changes.join(', ')} differ but SQLite is as new or newer (${liteUpdated.toISOString()} ≥ ${new Date(pgUpdated).toISOString()}): kept the SQLite row`,
            });
          }
          continue;
        }
        plan.push({ pg, existing, row: { id: pg.id, user: pg.user_id, action: 'update', changes } });
      }

      // Vectors only for the rows that are written with new content.
      const needVec = plan.filter((p) => p.row.action === 'insert' || p.row.changes.includes('content')).map((p) => p.pg.id);
      const vectors = new Map<string, Float32Array | null>();
      if (needVec.length > 0) {
        const got = await db.query<{ id: string; vec: string | null; model: string | null }>(
          `SELECT id, embedding::text AS vec, embedding_model AS model FROM memories WHERE id IN (SELECT jsonb_array_elements_text($1::text::jsonb))`,
          [JSON.stringify(needVec)],
        );
        for (const g of got) {
          vectors.set(g.id, g.vec === null ? null : parseVectorText(g.vec));
          if (g.vec !== null && g.model !== fileModel) otherModels.set(g.model ?? 'unknown', (otherModels.get(g.model ?? 'unknown') ?? 0) + 1);
        }
      }

      for (const p of plan) {
        if (p.row.action === 'insert') report.inserted++;
        else report.updated++;
        if (report.rows.length < MAX_LISTED) report.rows.push(p.row);
        if (dryRun) continue;
        const updatedAt = parseTimestampText(p.pg.updated)!;
        if (p.row.action === 'insert') {
          lite.insert({
            id: p.pg.id,
            userId: p.pg.user_id,
            content: p.pg.content,
            embedding: vectors.get(p.pg.id) ?? null,
            metadata: p.pg.metadata,
            createdAt: parseTimestampText(p.pg.created)!,
            updatedAt,
          });
          continue;
        }
        lite.update(p.existing!, {
          content: p.row.changes.includes('content') ? { text: p.pg.content, embedding: vectors.get(p.pg.id) ?? null } : undefined,
          metadata: p.row.changes.includes('metadata') ? metadataToWrite(p.pg, p.existing!, userInMetadata) : undefined,
          userId: p.row.changes.includes('user_id') ? p.pg.user_id : undefined,
          updatedAt,
        });
      }
      if (page.length < PAGE) break;
    }

    // Memories the file has and Postgres does not: duplicates and skips of the migration, and
    // rows deleted in Postgres after cutover. Rollback never deletes: they stay.
    const total = lite.countMemories();
    if (total !== null) {
      report.onlyInSqlite = Math.max(0, total - (dryRun ? report.unchanged + report.updated + report.keptSqliteNewer : report.postgres));
    }
    report.fragmentsInserted = await writeBackNewFragments(db, lite, dryRun);
    if (!dryRun) lite.commit();
    for (const [m, n] of otherModels) {
      report.warnings.push(
        `${n} vector${n === 1 ? '' : 's'} written back ${n === 1 ? 'was' : 'were'} made by ${m}, ` +
          (fileModel ? `not ${fileModel} (the model of the file's own vectors)` : `and the model of the file's own vectors is unknown (migrate ran without --source-model)`) +
          `: the app must search with ${m}, or re-embed those rows`,
      );
    }
    report.ok = true;
  } catch (err) {
    if (lite?.inTransaction) {
      lite.abort();
      if (report.backup) out.error(`rollback failed; nothing was written to ${path}; the backup ${report.backup} is kept`);
    }
    throw err;
  } finally {
    lite?.close();
    await db.close().catch(() => {});
  }
  report.durationMs = Date.now() - started;
  return { report, exitCode: 0 };
}

function renderRollbackReport(r: RollbackReport, out: Output): void {
  const verb = r.dryRun ? 'would write back' : 'wrote back';
  for (const row of r.rows.slice(0, 50)) {
    out.info(`  ${r.dryRun ? 'would ' : ''}${row.action} ${row.id} (${row.user})${row.action === 'update' ? `: ${row.changes.join(', ')}` : ''}`);
  }
  const listed = Math.min(50, r.rows.length);
  if (r.inserted + r.updated > listed) out.info(`  … and ${r.inserted + r.updated - listed} more (--json lists up to ${MAX_LISTED})`);
  for (const c of r.conflicts.slice(0, 20)) out.info(`  kept ${c.id}: ${c.detail}`);
  out.info(
    `Rollback${r.dryRun ? ' (dry run: nothing written, no backup made)' : ''}: ${r.postgres} memories in Postgres; ${verb} ` +
      `${r.inserted} new and ${r.updated} changed to ${r.source}; ${r.unchanged} already identical` +
      (r.keptSqliteNewer ? `; ${r.keptSqliteNewer} newer in SQLite kept` : '') +
      (r.onlyInSqlite ? `; ${r.onlyInSqlite} only in SQLite kept` : '') +
      (r.fragmentsInserted ? `; ${r.dryRun ? 'would add' : 'added'} ${r.fragmentsInserted} prompt fragments the app created as system_prompts rows` : '') +
      '. Postgres was not changed.',
  );
  for (const w of r.warnings) out.info(`⚠️  ${w}`);
  if (r.backup) out.info(`Backup: ${r.backup}${r.backupWal ? ` and ${r.backupWal}` : ''}`);
  if (!r.dryRun) out.info(`Switch the app back to SQLite:\n  ${r.switch}`);
  else out.info(`After a real rollback, switch the app with: ${r.switch}`);
}

/** Changed metadata goes back without the user_id that migrate --user-in-metadata added. */
function metadataToWrite(pg: PgRow, existing: StoredMemory, userInMetadata: boolean): string {
  if (!userInMetadata) return pg.metadata;
  const had = Object.prototype.hasOwnProperty.call(JSON.parse(existing.metadataJson) as object, 'user_id');
  return had ? pg.metadata : pg.metadata_without_user;
}

/**
 * Prompt fragments in Postgres that the file lacks (an app added them after cutover) go into
 * the file as the app kept fragments: memories of user system_prompts, their fields in the
 * metadata (built by PostgreSQL, so its numbers stay exact). Fragments the file has are left
 * as they are, as are the defaults.
 */
async function writeBackNewFragments(db: Db, lite: SqliteWriteBack, dryRun: boolean): Promise<number> {
  const rows = await db.query<{ id: string; content: string; metadata: string; vec: string | null; created: string; updated: string }>(
    `SELECT id, content, embedding::text AS vec,
            (metadata || jsonb_build_object('type', 'system_prompt', 'category', category, 'priority', priority, 'tags', to_jsonb(tags),
                                            'agent_type', COALESCE(agent_type, 'all'), 'context_tier', context_tier, 'is_active', is_active))::text AS metadata,
            to_char(created_at, ${EXACT_UTC}) AS created, to_char(updated_at, ${EXACT_UTC}) AS updated
       FROM prompt_fragments WHERE id NOT LIKE 'default:%' ORDER BY id`,
  );
  let written = 0;
  for (const f of rows) {
    if (lite.find(f.id)) continue;
    written++;
    if (dryRun) continue;
    lite.insert({
      id: f.id,
      userId: SYSTEM_PROMPTS_USER,
      content: f.content,
      embedding: f.vec === null ? null : parseVectorText(f.vec),
      metadata: f.metadata,
      createdAt: parseTimestampText(f.created)!,
      updatedAt: parseTimestampText(f.updated)!,
    });
  }
  return written;
}

// `memory-migrate verify`: the parity gate before cutover. Every source row is accounted for
// (stored, recorded duplicate, recorded skip, fragment, or pending because the last run was
// limited to some users, a shard or N rows), per-user counts add up, a seeded random sample is
// compared field by field with the source, the ivfflat index finds each sampled row from its
// own vector, and the fragments match. Exit 3 on any mismatch, 0 when clean. The checks live in
// src/verify/; this file resolves the flags and the target and runs them in order.
import { randomInt } from 'node:crypto';
import { Command, Option } from 'commander';
import { openSource, type SourceFile } from '../source/reader.js';
import { fileSha256 } from '../source/sqlite-file.js';
import { tableDimensions } from '../postgres/schema.js';
import { lastCommittedRun, type LedgerRun } from '../postgres/ledger.js';
import { DEFAULT_OPENAI_MODEL, LOCAL_EMBEDDING_MODEL, modelInfo } from '../embed/models.js';
import type { Db } from '../postgres/connection.js';
import type { Output } from '../output.js';
import { UsageError } from '../errors.js';
import { DEFAULT_SAMPLE, EXIT_MISMATCH, emptyVerifyReport, mismatchRecorder, type VerifyReport } from '../verify/report.js';
import { reconcile, type Scope } from '../verify/reconcile.js';
import { sampleCheck } from '../verify/sample.js';
import { checkFragments } from '../verify/fragments.js';
import type { CliCommand } from './command.js';
import { pluginTargetOptions, verifyPluginCommand } from './plugin-backfill.js';
import { sourceLayoutOptions, sourceOpenOptions, sourceOptionsFromLedger, type SourceLayoutFlags } from './source-options.js';
import { describeTarget, embedderFromRun, examples, openTarget, outputOptions, parsePositiveInt, resolveTarget, targetExists, targetOptions, type TargetFlags } from './shared.js';

export interface VerifyFlags extends TargetFlags, SourceLayoutFlags {
  sqlite: string;
  sample?: number;
  seed?: number;
  sourceModel?: string;
  embedder?: string;
  model?: string;
  dimensions?: number;
  json?: boolean;
}

export const verifyCommand: CliCommand<VerifyFlags & { toPlugin?: string }, VerifyReport> = {
  aliasFor: (flags) => (flags.toPlugin !== undefined ? (verifyPluginCommand as unknown as CliCommand<VerifyFlags, unknown>) : undefined),

  define() {
    const cmd = new Command('verify')
      .description('prove parity: per-user counts, a seeded sample compared field by field, index recall, fragments (exit 3 on any mismatch)')
      .requiredOption('--sqlite <file>', 'the SQLite memory file that was migrated, opened read-only (required, no default)');
    targetOptions(sourceLayoutOptions(cmd))
      .option('--sample <n>', `rows compared field by field (default ${DEFAULT_SAMPLE})`, parsePositiveInt('--sample'))
      .option('--seed <n>', 'seed of the sample, to repeat a run exactly (default: random, printed)', parsePositiveInt('--seed', 0))
      .option('--source-model <name>', 'model of the vectors stored in SQLite: reused vectors must equal them bit for bit (default: as migrate recorded)')
      .addOption(new Option('--embedder <kind>', 'embedder the migration used (default: as migrate recorded)').choices(['openai', 'local']))
      .option('--model <name>', 'model the stored vectors must have (default: as migrate recorded)')
      .option('--dimensions <n>', "width the stored vectors must have (default: the model's)", parsePositiveInt('--dimensions'));
    pluginTargetOptions(cmd);
    outputOptions(cmd);
    return examples(cmd, 'memory-migrate verify --sqlite memory.db', 'memory-migrate verify --sqlite memory.db --sample 1000 --seed 42 --json');
  },

  async run(flags, out) {
    const started = Date.now();
    const sampleSize = flags.sample ?? DEFAULT_SAMPLE;
    const seed = flags.seed ?? randomInt(0, 2 ** 31 - 1);
    const explicit = sourceOpenOptions(flags);
    // A file only the ledger's --map or --layout can read fails auto-detection: that waits for the ledger.
    let source: SourceFile;
    let unreadAs: UsageError | null = null;
    try {
      source = openSource(flags.sqlite, explicit);
    } catch (err) {
      if (!(err instanceof UsageError) || Object.keys(explicit).length > 0) throw err;
      unreadAs = err;
      source = unopenedSource(flags.sqlite);
    }
    const target = resolveTarget(flags, out);
    const report = emptyVerifyReport(flags.sqlite, describeTarget(target), seed, sampleSize);
    const mismatch = mismatchRecorder(report);

    let db: Db | null = null;
    try {
      if (!targetExists(target)) {
        throw new UsageError(`${report.target} does not exist: nothing was migrated there (run memory-migrate migrate first, or pass the --pglite-dir / --database-url it used)`);
      }
      db = await openTarget(target);
      const tableDims = await tableDimensions(db, 'memories');
      if (tableDims === null) {
        throw new UsageError(`${report.target} has no memories table: nothing was migrated there (run memory-migrate migrate first)`);
      }
      const sha = source.sha256();
      const run = await lastCommittedRun(db, sha);
      if (run && Object.keys(explicit).length === 0) {
        // Walk the file exactly as the run read it: its layout, mapping and --user-from.
        const recorded = sourceOptionsFromLedger(run.options);
        if (Object.keys(recorded).length > 0) {
          source.close();
          source = openSource(flags.sqlite, recorded);
          unreadAs = null;
        }
      }
      if (unreadAs) throw unreadAs;
      const scope = scopeOf(run);
      if (run) {
        report.run = { id: run.id, users: scope.users, limit: scope.limit, shard: scope.shardText, sourceChanged: run.source_sha256 !== sha };
        if (run.source_sha256 !== sha) {
          report.notes.push(`the SQLite file changed after run #${run.id} (sha256 differs): rows written since then show up as missing`);
        }
      } else {
        report.notes.push('no committed migration run in the ledger: every source row is expected in Postgres');
      }

      // What the vectors should be.
      const { model, dims, sourceModel } = await expectedVectors(db, flags, run, tableDims);
      report.expected = { model: model ?? null, dimensions: dims, sourceModel };
      if (tableDims !== dims) {
        mismatch({ id: null, user: null, check: 'schema', detail: `memories.embedding is vector(${tableDims}), expected ${dims} dimensions for ${model}` });
      }

      const reconciled = await reconcile(db, source, scope, report, mismatch);
      await sampleCheck(db, source, reconciled.memoryRowids, { sampleSize, seed, model: model ?? null, dims, sourceModel }, report, mismatch);
      await checkFragments(db, source, reconciled.fragmentIds, reconciled.fragmentsMissing, reconciled.fragmentsAdded, report, mismatch);
    } finally {
      await db?.close().catch(() => {});
      source.close();
    }
    // Still exit 3 when the only differences are the app's writes since the migration: verify
    // certifies that Postgres and the file agree, and they do not (yet). rollback makes them.
    report.ok = report.mismatchCount === 0 && report.sinceMigration.added + report.sinceMigration.changed === 0;
    report.durationMs = Date.now() - started;
    return { report, exitCode: report.ok ? 0 : EXIT_MISMATCH };
  },

  render: renderVerifyReport,
};

/** What the last committed run was meant to migrate (everything without a run). */
function scopeOf(run: LedgerRun | null): Scope & { shardText: string | null } {
  const opts = run?.options ?? {};
  const users = Array.isArray(opts['users']) ? (opts['users'] as unknown[]).map(String) : [];
  const limit = typeof opts['limit'] === 'number' ? (opts['limit'] as number) : null;
  const shardText = typeof opts['shard'] === 'string' ? (opts['shard'] as string) : null;
  const shard = shardText && /^\d+\/\d+$/.test(shardText) ? { index: Number(shardText.split('/')[0]), count: Number(shardText.split('/')[1]) } : null;
  return { users, limit, shard, shardText, userInMetadata: opts['userInMetadata'] === true };
}

/** Model and width the stored vectors must have: the flags, else the ledger, else the table. */
async function expectedVectors(
  db: Db,
  flags: VerifyFlags,
  run: LedgerRun | null,
  tableDims: number,
): Promise<{ model: string | undefined; dims: number; sourceModel: string | null }> {
  const opts = run?.options ?? {};
  const emb = embedderFromRun(flags, run);
  let model = emb.model ?? (emb.embedder === 'local' ? LOCAL_EMBEDDING_MODEL : run || flags.embedder ? DEFAULT_OPENAI_MODEL : undefined);
  if (model === undefined) {
    const [top] = await db.query<{ m: string | null }>(
      `SELECT embedding_model AS m FROM memories WHERE embedding_model IS NOT NULL GROUP BY embedding_model ORDER BY count(*) DESC LIMIT 1`,
    );
    model = top?.m ?? undefined;
  }
  const dims = emb.dimensions ?? (model ? modelInfo(model)?.dimensions : undefined) ?? tableDims;
  const sourceModel = flags.sourceModel ?? (typeof opts['sourceModel'] === 'string' ? (opts['sourceModel'] as string) : null);
  return { model, dims, sourceModel };
}

// ---------------------------------------------------------------- output

function renderVerifyReport(r: VerifyReport, out: Output): void {
  out.info(`Verifying ${r.source} against ${r.target}`);
  if (r.run) {
    const scope = [
      r.run.users.length ? `users ${r.run.users.join(', ')}` : 'all users',
      r.run.shard ? `shard ${r.run.shard}` : null,
      r.run.limit !== null ? `first ${r.run.limit} rows` : null,
    ].filter(Boolean);
    out.info(`Scope: run #${r.run.id} migrated ${scope.join(', ')}`);
  }
  for (const n of r.notes) out.info(`Note: ${n}`);
  const c = r.counts;
  out.info(
    `Rows: ${c.sqliteRows} in SQLite = ${c.memories} memories + ${c.duplicates} recorded duplicates + ${c.skipped} recorded skips + ` +
      `${c.fragments} fragments + ${c.pending} pending (${c.missing} missing, ${c.rejected} rejected, ${c.extra} extra)`,
  );
  if (r.pending > 0) {
    const pendingUsers = Object.entries(c.users).filter(([, u]) => u.pending > 0);
    out.info(`Pending (not covered by the last run, not in Postgres): ${r.pending} rows of ${pendingUsers.length} users — run migrate without --limit/--user/--shard to finish`);
  }
  out.info(
    `Sample: ${r.checked} rows (seed ${r.seed}) checked for content, metadata, timestamps, embedding ${r.expected.model ?? '?'} × ${r.expected.dimensions}` +
      (r.expected.sourceModel && r.expected.sourceModel === r.expected.model ? ', reused vectors bit for bit' : ''),
  );
  if (r.index && r.recall !== null) {
    out.info(`Index recall@1: ${r.recall.toFixed(3)} (${r.index.name}, lists ${r.index.lists}, probes ${r.index.probes})`);
    if (r.index.fix) out.info(`⚠️  ${r.index.fix}`);
  }
  out.info(`Fragments: ${r.fragments.checked} of ${r.fragments.source} compared (${r.fragments.target} migrated fragments in Postgres)`);
  const since = r.sinceMigration;
  if (since.added + since.changed > 0) {
    out.info(
      `Since the migration, Postgres has ${since.added} row${since.added === 1 ? '' : 's'} added and ${since.changed} changed by the app ` +
        `(not in the SQLite file; rollback writes them there):`,
    );
    for (const m of since.rows.slice(0, 20)) out.info(`  ${m.id}${m.user !== null ? ` (${m.user})` : ''} — ${m.check}: ${m.detail}`);
  }
  if (r.mismatchCount === 0 && !r.ok) {
    out.error(
      `❌ No damage found, but Postgres is ahead of the SQLite file by the app's writes above: ` +
        `run rollback to take them into SQLite (exit 3 until both agree).`,
    );
    return;
  }
  if (r.ok) {
    out.info(`✅ Parity verified: no mismatches${r.pending ? ` (${r.pending} rows pending)` : ''}.`);
    return;
  }
  const shown = r.mismatches.slice(0, 20);
  out.error(`❌ ${r.mismatchCount} mismatch${r.mismatchCount === 1 ? '' : 'es'}${r.mismatchCount > shown.length ? ` (first ${shown.length})` : ''}:`);
  for (const m of shown) {
    out.error(`  ${m.id ?? `user ${m.user}`}${m.id && m.user !== null ? ` (${m.user})` : ''} — ${m.check}: ${m.detail}`);
  }
}

/** Stands in for a source the ledger has yet to say how to read: it only knows its bytes. */
function unopenedSource(path: string): SourceFile {
  const unread = (): never => {
    throw new UsageError(`${path} cannot be read without the layout the migration recorded`);
  };
  return {
    info: { path, layout: 'empty', metadataColumn: null, journalMode: 'unknown' },
    count: unread,
    rows: unread,
    keys: unread,
    ids: unread,
    users: unread,
    foldedIdsThatMayRepeat: unread,
    sha256: () => fileSha256(path),
    close() {},
  };
}

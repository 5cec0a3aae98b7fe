// `memory-migrate migrate`: the command (flags, help, the printed summary). The run itself is in
// migrate-run.ts. `migrate --rollback` is an alias of `memory-migrate rollback`.
import { Command, Option } from 'commander';
import { DEFAULT_BUSY_TIMEOUT_MS } from '../source/sqlite-file.js';
import { formatSummary, type MigrationReport } from '../report.js';
import type { CliCommand } from './command.js';
import { rollbackCommand } from './rollback.js';
import { migrateToPluginCommand, pluginBackfillOptions, pluginTargetOptions } from './plugin-backfill.js';
import { migrate, MIGRATE_DEFAULTS, type MigrateFlags } from './migrate-run.js';
import { sourceLayoutOptions } from './source-options.js';
import {
  collect,
  embedderOptions,
  examples,
  outputOptions,
  parseFraction,
  parsePositiveInt,
  parsePositiveNumber,
  parseShard,
  targetOptions,
} from './shared.js';

export { migrate, EXIT_INTERRUPTED, MIGRATE_DEFAULTS, type MigrateFlags } from './migrate-run.js';

export const migrateCommand: CliCommand<MigrateFlags & { rollback?: boolean; toPlugin?: string }, MigrationReport> = {
  define() {
    const cmd = new Command('migrate')
      .description('migrate a SQLite memory file into PostgreSQL: schema, rows, embeddings, indexes, self-test')
      .requiredOption('--sqlite <file>', 'the SQLite memory file, opened read-only, never changed (required, no default)');
    embedderOptions(targetOptions(sourceLayoutOptions(cmd)))
      .option(
        '--source-model <name>',
        'model that produced the vectors stored in SQLite; equal to --model = reuse them, no API calls (default: none, so stored vectors are not reused)',
      )
      .option('--force-recreate', 'move existing tables to a backup schema memory_backup_<UTC time>, then rebuild', false)
      .option('--no-backup', 'with --force-recreate: really DROP the existing tables instead of backing them up (default: back up)')
      .option('--skip-test', 'do not run the self-test after loading (CI)', false)
      .option('--dry-run', 'read everything, write nothing; report counts, tokens, requests, cost and ETA', false)
      .option('--limit <n>', 'process at most N source rows (default: every row)', parsePositiveInt('--limit'))
      .addOption(new Option('--user <id>', 'only this user (repeatable)').argParser(collect).default([], 'every user'))
      .option('--shard <K/N>', 'only users with hash(user_id) mod N = K, for N parallel workers (default: no sharding)', parseShard)
      .addOption(
        new Option('--dedup <mode>', 'duplicate detection: exact (always), fuzzy adds word-set Jaccard, semantic adds cosine similarity (pgvector)')
          .choices(['exact', 'fuzzy', 'semantic'])
          .default(MIGRATE_DEFAULTS.dedup),
      )
      .option('--dedup-threshold <x>', 'fuzzy: Jaccard threshold (default 0.9); semantic: cosine similarity (default 0.85)', parseFraction('--dedup-threshold'))
      .option('--dedup-skip', 'fuzzy/semantic: do not store matches (default: store and record them)', false)
      .option(
        '--mirror-deletes',
        'catch-up runs: delete from Postgres the records of rows deleted from the SQLite file since an earlier run (never rows an app wrote in Postgres; not with --limit)',
        false,
      )
      .option(
        '--user-in-metadata',
        "also keep each memory's user in its metadata as user_id, so clients that filter only inside metadata (LangChain PGVectorStore) can scope to a user",
        false,
      )
      .option('--batch-size <n>', 'rows per committed batch', parsePositiveInt('--batch-size'), MIGRATE_DEFAULTS.batchSize)
      .option(
        '--batch-api',
        "embed through OpenAI's Batch API: half the price, results within 24 h; an interrupted run resumes polling the same batches (openai embedder only)",
        false,
      )
      .option('--batch-poll-seconds <s>', 'with --batch-api: seconds between polls of the batches', parsePositiveNumber('--batch-poll-seconds'), MIGRATE_DEFAULTS.batchPollSeconds)
      .option('--reject-file <file>', 'JSON Lines file for inputs the embedding API refused (id, user, reason)', MIGRATE_DEFAULTS.rejectFile)
      .option('--busy-timeout <ms>', 'ms to wait while another process holds a write lock on the SQLite file', parsePositiveInt('--busy-timeout', 0), DEFAULT_BUSY_TIMEOUT_MS)
      .option('--report <file>', 'also write the full JSON report, with every skipped and rejected row, to this file (default: none)')
      .option('--rollback', 'alias of `memory-migrate rollback`: instead of migrating, roll back to SQLite (writes to --sqlite)', false);
    pluginBackfillOptions(pluginTargetOptions(cmd));
    outputOptions(cmd);
    return examples(
      cmd,
      'memory-migrate migrate --sqlite fixtures/espressobot_memory.db --embedder local',
      'DATABASE_URL=postgres://app:***@db.internal:5432/agent memory-migrate migrate --sqlite memory.db \\\n' +
        '      --model text-embedding-3-small --source-model text-embedding-3-small --skip-test --json',
    );
  },

  aliasFor: (flags) =>
    flags.rollback
      ? (rollbackCommand as CliCommand<MigrateFlags, unknown>)
      : flags.toPlugin !== undefined
        ? (migrateToPluginCommand as unknown as CliCommand<MigrateFlags, unknown>)
        : undefined,

  run: migrate,

  render(report, out) {
    if (report.dryRun) {
      out.info('Dry run: nothing was written.');
      for (const [user, c] of Object.entries(report.users)) {
        out.info(`  ${user}: read ${c.read}, would insert ${c.migrated}, update ${c.updated}, unchanged ${c.unchanged}, duplicates ${c.duplicates}, skipped ${c.skipped}`);
      }
      const pf = report.preflight;
      if (pf) {
        out.info(
          `Embedding preflight: ${pf.textsToEmbed} texts, ${pf.tokens} tokens, ${pf.requests} requests, ${pf.cached} cached, ` +
            `estimated cost $${pf.estimatedCostUsd.toFixed(4)}, ETA ${pf.etaSeconds.toFixed(1)} s; ` +
            `with --batch-api $${pf.batchCostUsd.toFixed(4)} (Batch API: half price, results within 24 h)`,
        );
      }
    }
    out.info(formatSummary(report));
    const rejected = report.memories.rejected;
    out.info(
      !report.ok
        ? '❌ Migration finished with problems (see above).'
        : rejected > 0
          ? `⚠️  Migration completed, except ${rejected} row${rejected === 1 ? '' : 's'} PostgreSQL cannot store (see above): verify fails until they are fixed.`
          : '🎉 Migration completed successfully!',
    );
  },
};

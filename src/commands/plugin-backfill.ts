// `migrate --to-plugin URL` and `verify --to-plugin URL`: the same commands pointed at a
// memory-plugin v1 server instead of a database. migrate.ts and verify.ts run these instead
// (aliasFor) when --to-plugin is given; the work is in src/plugin-client/.
import { Command } from 'commander';
import { openSource } from '../source/reader.js';
import type { Output } from '../output.js';
import { UsageError, errorMessage } from '../errors.js';
import { writeFileSync } from 'node:fs';
import { backfillToPlugin, type BackfillFlags } from '../plugin-client/backfill.js';
import { renderBackfill, type BackfillReport } from '../plugin-client/report.js';
import { renderPluginVerify, verifyPlugin, type PluginVerifyFlags, type PluginVerifyReport } from '../plugin-client/verify.js';
import { DEFAULT_NAMESPACE_TEMPLATE } from '../plugin-namespace.js';
import type { CliCommand } from './command.js';
import { buildProvider, buildService, checkEmbeddingEndpoint, parsePositiveInt, type EmbedderFlags } from './shared.js';
import { sourceOpenOptions, type SourceLayoutFlags } from './source-options.js';

/** The options --to-plugin adds to migrate and verify. */
export function pluginTargetOptions(cmd: Command): Command {
  return cmd
    .option(
      '--to-plugin <url>',
      'write to (verify: compare with) a memory-plugin v1 server at this base URL instead of PostgreSQL (verify: --sample counts namespaces, default 50)',
    )
    .option('--namespace-template <t>', `with --to-plugin: each user's namespace, {user} escaped to the name pattern (default ${DEFAULT_NAMESPACE_TEMPLATE})`)
    .option('--plugin-token <token>', 'with --to-plugin: bearer token the plugin requires (default: $MEMORY_PLUGIN_TOKEN; never printed)');
}

/** The options only the backfill has. */
export function pluginBackfillOptions(cmd: Command): Command {
  return cmd
    .option('--plugin-concurrency <n>', 'with --to-plugin: most commits in flight (default 8)', parsePositiveInt('--plugin-concurrency'))
    .option('--ledger-file <file>', 'with --to-plugin: where progress is recorded (default: <sqlite>.to-plugin.ledger.json)');
}

export type MigrateToPluginFlags = BackfillFlags &
  EmbedderFlags &
  SourceLayoutFlags & {
    databaseUrl?: string;
    forceRecreate?: boolean;
    dedup?: string;
    mirrorDeletes?: boolean;
    shard?: unknown;
    userInMetadata?: boolean;
    batchApi?: boolean;
    report?: string;
  };

/** Flags that only mean something for a database target: refused with --to-plugin. */
function refuseDatabaseFlags(flags: MigrateToPluginFlags): void {
  const refused: string[] = [];
  if (flags.databaseUrl) refused.push('--database-url');
  if (flags.forceRecreate) refused.push('--force-recreate');
  if (flags.dedup && flags.dedup !== 'exact') refused.push(`--dedup ${flags.dedup}`);
  if (flags.mirrorDeletes) refused.push('--mirror-deletes');
  if (flags.shard) refused.push('--shard');
  if (flags.userInMetadata) refused.push('--user-in-metadata');
  if (flags.batchApi) refused.push('--batch-api');
  if (refused.length > 0) {
    throw new UsageError(`${refused.join(', ')} cannot be combined with --to-plugin (a plugin is written through its HTTP API, not SQL); drop ${refused.length === 1 ? 'it' : 'them'}`);
  }
}

export const migrateToPluginCommand: CliCommand<MigrateToPluginFlags, BackfillReport> = {
  define: () => new Command('migrate'),
  async run(flags, out: Output) {
    refuseDatabaseFlags(flags);
    const source = openSource(flags.sqlite, { ...sourceOpenOptions(flags), ...(flags.busyTimeout !== undefined ? { busyTimeoutMs: flags.busyTimeout } : {}) });
    try {
      const makeEmbedder = async (dryRun: boolean) => {
        const provider = buildProvider(flags);
        if (!dryRun) await checkEmbeddingEndpoint(provider);
        return { model: provider.model, dimensions: provider.dimensions, service: () => buildService(provider, null, dryRun) };
      };
      const result = await backfillToPlugin(flags, source, makeEmbedder, out).catch((err: unknown) => {
        const report = (err as { report?: BackfillReport }).report;
        if (report) writeReport(flags.report, report, out);
        throw err;
      });
      writeReport(flags.report, result.report, out);
      return result;
    } finally {
      source.close();
    }
  },
  render(report, out) {
    renderBackfill(report, (l) => out.info(l), (l) => out.error(l));
  },
};

/** --report: the JSON report (as --json prints it) to a file as well; every rejected row is in --reject-file. */
function writeReport(path: string | undefined, report: BackfillReport, out: Output): void {
  if (!path) return;
  try {
    writeFileSync(path, JSON.stringify(report, null, 2) + '\n');
  } catch (err) {
    out.error(`memory-migrate: cannot write the report to ${path}: ${errorMessage(err)}`);
  }
}

export type VerifyPluginFlags = PluginVerifyFlags & SourceLayoutFlags & { databaseUrl?: string };

export const verifyPluginCommand: CliCommand<VerifyPluginFlags, PluginVerifyReport> = {
  define: () => new Command('verify'),
  async run(flags, out: Output) {
    if (flags.databaseUrl) throw new UsageError('--database-url cannot be combined with --to-plugin (verify compares the file with the plugin); drop one');
    const source = openSource(flags.sqlite, sourceOpenOptions(flags));
    try {
      return await verifyPlugin(flags, source, out);
    } finally {
      source.close();
    }
  },
  render(report, out) {
    renderPluginVerify(report, (l) => out.info(l), (l) => out.error(l));
  },
};

// The work of `memory-migrate migrate` (src/commands/migrate.ts is the command): SQLite memory
// file → Postgres/pgvector, then indexes, then the self-test. Bad input is refused before
// anything is written; every batch commits with its checkpoint; a re-run converges on the
// same tables. Also the library's migrate() (src/index.ts).
import { describeCutover } from '../postgres/cutover.js';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { openSource } from '../source/reader.js';
import type { SourceFilter } from '../source/types.js';
import { installSchema, existingTables } from '../postgres/schema.js';
import { findAppTable, memoriesIsView, type AppTable } from '../postgres/adopted-table.js';
import { buildVectorIndexes, INDEX_BUILD_STEPS } from '../postgres/indexes.js';
import { acquireIndexLock, acquireRunLock, type RunLock } from '../postgres/lock.js';
import { startRun, finishRun, unfinishedRun } from '../postgres/ledger.js';
import { mirrorDeletes, noDeletes, runPipeline, Interrupted, type DedupOptions } from '../pipeline/index.js';
import { runSelftest } from '../selftest.js';
import { estimateCostUsd } from '../embed/models.js';
import { emptyMigrationReport, MAX_SKIPPED_IN_REPORT, type MigrationReport, type SkippedRow } from '../report.js';
import type { Db } from '../postgres/connection.js';
import type { Output } from '../output.js';
import { describeLoadError, errorMessage, oneLine, UsageError } from '../errors.js';
import { redact } from '../secrets.js';
import { fileSize, PreflightTally, readRejects, rejectedRows, SkippedRowSpool, writeReportFile } from './migrate-steps.js';
import {
  buildProvider,
  buildService,
  checkEmbeddingEndpoint,
  describeTarget,
  openTarget,
  resolveTarget,
  targetExists,
  textEmbedder,
  type EmbedderFlags,
  type TargetFlags,
} from './shared.js';
import { createProgress, createStepProgress } from '../progress.js';
import { OpenAIProvider } from '../embed/openai-provider.js';
import { BATCH_PRICE_FACTOR, BatchEmbedder, BatchRejectsProvider, batchJobTag, emptyBatchApiStats, DEFAULT_BATCH_POLL_SECONDS } from '../embed/batch-api.js';
import { EmbeddingCache } from '../embed/cache.js';
import type { EmbedInput, EmbeddingProvider } from '../embed/types.js';
import { fillCacheFromBatches } from '../pipeline/batch-prepass.js';
import { sourceOpenOptions, type SourceLayoutFlags } from './source-options.js';
import { recordedUserFrom } from '../postgres/ledger.js';
import type { SourceInfo } from '../source/types.js';

export interface MigrateFlags extends TargetFlags, EmbedderFlags, SourceLayoutFlags {
  sqlite: string;
  sourceModel?: string;
  forceRecreate?: boolean;
  backup?: boolean;
  skipTest?: boolean;
  userInMetadata?: boolean;
  dryRun?: boolean;
  limit?: number;
  user?: string[];
  shard?: { index: number; count: number };
  dedup?: DedupOptions['mode'];
  dedupThreshold?: number;
  dedupSkip?: boolean;
  batchSize?: number;
  /** --busy-timeout: ms to wait for a writer's lock on the SQLite file. */
  busyTimeout?: number;
  /** --mirror-deletes: delete from Postgres the records of rows deleted from the file. */
  mirrorDeletes?: boolean;
  /** --batch-api: embed through OpenAI's Batch API (half price, results within 24 h). */
  batchApi?: boolean;
  /** --batch-poll-seconds: how often the Batch API's batches are polled. */
  batchPollSeconds?: number;
  json?: boolean;
  report?: string;
}

/** Defaults of migrate's flags (the CLI shows them in --help; a library caller gets them too). */
export const MIGRATE_DEFAULTS = {
  batchSize: 1000,
  dedup: 'exact',
  rejectFile: 'memory-migrate-rejects.jsonl',
  batchPollSeconds: DEFAULT_BATCH_POLL_SECONDS,
} as const;

/** Exit code of a run interrupted by SIGINT/SIGTERM. */
export const EXIT_INTERRUPTED = 130;

export async function migrate(flags: MigrateFlags, out: Output): Promise<{ report: MigrationReport; exitCode: number }> {
  const started = Date.now();
  const dryRun = flags.dryRun ?? false;
  if (flags.mirrorDeletes && flags.limit !== undefined) {
    throw new UsageError(
      '--mirror-deletes cannot be combined with --limit: a limited run does not read the whole file, so it cannot tell which rows were deleted; drop --limit',
    );
  }
  // Validate everything that can be validated before touching the target.
  const provider = buildProvider(flags);
  if (flags.batchApi && !(provider instanceof OpenAIProvider)) {
    throw new UsageError('--batch-api needs --embedder openai: the local embedder has no Batch API and costs nothing; drop --batch-api');
  }
  const source = openSource(flags.sqlite, {
    ...(flags.busyTimeout !== undefined ? { busyTimeoutMs: flags.busyTimeout } : {}),
    ...sourceOpenOptions(flags),
  });
  if (flags.sourceModel === undefined && source.info.sourceModel) {
    // The file says which model made its vectors: reuse them rather than pay for them again.
    flags = { ...flags, sourceModel: source.info.sourceModel.model };
    out.info(`source model ${source.info.sourceModel.model} (from ${source.info.sourceModel.from})`);
  }
  for (const note of source.info.notes ?? []) out.info(note);
  const target = resolveTarget(flags, out);
  const report = emptyMigrationReport({
    dryRun,
    sqlite: flags.sqlite,
    sourceModel: flags.sourceModel ?? null,
    model: provider.model,
    dimensions: provider.dimensions,
    target: describeTarget(target),
  });
  report.source.layout = source.info.layout;
  report.source.empty = source.info.layout === 'empty';
  if (report.source.empty) {
    const tables = source.info.tables ?? [];
    out.info(
      tables.length === 0
        ? 'SQLite database exists but is empty'
        : `SQLite database exists but is empty: it has no memories table (tables found: ${tables.join(', ')})`,
    );
  }

  let db: Db | null = null;
  let lock: RunLock | null = null;
  let runId: number | null = null;
  let phase: 'setup' | 'load' | 'finish' = 'setup';
  // Every skipped row, for the --report file (the printed report keeps the first 1,000); kept
  // on disk, and only when there is such a file.
  const allSkipped = flags.report ? new SkippedRowSpool() : null;
  const rejectStart = fileSize(flags.rejectFile);
  const controller = new AbortController();
  const onSignal = () => {
    out.error('interrupt received: finishing the current batch, then stopping');
    controller.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    report.source.sha256 = source.sha256();
    if (flags.mirrorDeletes && report.source.empty) {
      // A wrong path or an emptied file would otherwise delete every migrated row.
      throw new UsageError(
        `--mirror-deletes needs the memories table, and ${flags.sqlite} has none: it would delete every migrated row; check --sqlite`,
      );
    }
    const filter: SourceFilter = {
      ...(flags.user && flags.user.length > 0 ? { users: flags.user } : {}),
      ...(flags.shard ? { shard: flags.shard } : {}),
      ...(flags.limit !== undefined ? { limit: flags.limit } : {}),
    };
    const shardLabel = flags.shard ? `${flags.shard.index}/${flags.shard.count}` : null;
    // Reading the whole table once finds most corruption before the target is touched.
    const total = source.count(filter);
    if (!dryRun) await checkEmbeddingEndpoint(provider);

    if (dryRun) {
      // A dry run reads the target when it exists (to tell unchanged from new) and writes nothing.
      // An existing but empty PGlite directory is not a database yet: opening it would initdb.
      const pgliteEmpty = target.pgliteDir !== undefined && !existsSync(join(target.pgliteDir, 'PG_VERSION'));
      if (targetExists(target) && !pgliteEmpty) {
        db = await openTarget(target);
        // An app's table memory-migrate has not adopted yet holds none of its rows: read as empty.
        const app = await findAppTable(db);
        const notYetAdopted = app !== null && !(await memoriesIsView(db));
        if (notYetAdopted) out.info(adoptionLine(app, 'would write'));
        if ((await existingTables(db, ['memories'])).length === 0 || notYetAdopted) {
          await db.close();
          db = null;
        }
      }
    } else {
      out.info(`Source: ${total} rows to read; opening the target and installing the schema`);
      db = await openTarget(target);
      lock = await acquireRunLock(db, shardLabel);
      const install = await installSchema(db, {
        dimensions: provider.dimensions,
        forceRecreate: flags.forceRecreate,
        backup: flags.backup !== false,
        log: (l) => out.info(l),
      });
      report.backupSchema = install.backupSchema;
      if (install.adopted) out.info(adoptionLine(install.adopted, 'writing'));
      if (install.backupSchema) out.info(`Existing tables moved to backup schema ${install.backupSchema}`);
      const previous = await unfinishedRun(db, report.source.sha256, shardLabel);
      if (previous) {
        out.info(`Resuming: run #${previous.id} ended ${previous.status} at source rowid ${previous.checkpoint_rowid ?? 0}; committed batches are kept`);
      }
      if (!flags.forceRecreate) await refuseUserRemap(db, report.source.sha256, resolve(flags.sqlite), source.info);
      runId = await startRun(db, {
        sourcePath: resolve(flags.sqlite),
        sourceSha256: report.source.sha256,
        options: { ...ledgerOptions(flags), source: ledgerSource(source.info, flags) },
        shard: shardLabel,
      });
      report.runId = runId;
    }

    if (flags.mirrorDeletes) {
      // Before the load: the duplicates of a deleted memory lose their records with it, and
      // the load that follows stores or re-records them (see mirror-deletes.ts).
      report.deleted = db
        ? await mirrorDeletes(db, source, {
            scope: { users: flags.user ?? [], shard: flags.shard ?? null },
            dryRun,
            runId,
          })
        : noDeletes();
    }

    let loadProvider: EmbeddingProvider = provider;
    if (flags.batchApi && !dryRun && db && provider instanceof OpenAIProvider) {
      const batches = await embedThroughBatches(flags, provider, db, source, filter, total, report, controller.signal, out);
      loadProvider = new BatchRejectsProvider(provider, batches.rejected, flags.rejectFile);
    }
    const service = buildService(loadProvider, db, dryRun);
    const progress = createProgress(out, { label: 'memories', total, service, provider: provider as { inflight?: number } });
    phase = 'load';
    const tally = dryRun ? new PreflightTally(service) : null;
    const loadStarted = Date.now();
    let result;
    try {
      result = await runPipeline({
        source,
        db,
        embeddings: service,
        ...pipelineFlags(flags, provider),
        filter,
        dryRun,
        runId,
        // Rows PostgreSQL cannot store go to the reject file too; a dry run writes nothing.
        ...(flags.rejectFile && !dryRun ? { rejectFile: flags.rejectFile } : {}),
        signal: controller.signal,
        onProgress: (p) => progress.update(p.done, p.memories),
        ...(allSkipped ? { onSkip: (row: SkippedRow) => allSkipped.add(row) } : {}),
        ...(tally ? { embedSink: (inputs: EmbedInput[]) => tally.add(inputs) } : {}),
      });
    } finally {
      progress.stop();
      tally?.close();
    }
    report.timings.loadMs = Date.now() - loadStarted;
    report.memories = result.memories;
    report.fragments = result.fragments;
    report.users = result.users;
    report.skippedRows = result.skippedRows;
    report.embeddings = { ...report.embeddings, ...service.stats, invalidStored: result.invalidStored };
    phase = 'finish';

    if (dryRun) {
      report.preflight = tally!.total;
    } else if (db) {
      const indexStarted = Date.now();
      const steps = createStepProgress(out, { label: 'indexes', total: INDEX_BUILD_STEPS });
      // Concurrent shards would build the same index at the same time: one at a time.
      const indexLock = await acquireIndexLock(db, () => out.info('waiting for another run to finish building the vector indexes'));
      try {
        report.indexes = await buildVectorIndexes(
          db,
          provider.dimensions,
          (l) => steps.log(l),
          (s) => (s.state === 'start' ? steps.start(s.name === 'ANALYZE' ? 'ANALYZE' : `building ${s.name}`) : steps.finish()),
        );
      } finally {
        steps.stop();
        await indexLock.release().catch(() => {});
      }
      report.timings.indexMs = Date.now() - indexStarted;
      report.cutover = await describeCutover(db, provider.model, provider.dimensions);
      if (!flags.skipTest) {
        const testStarted = Date.now();
        const st = await runSelftest(db, textEmbedder(service, provider));
        report.selftest = { ran: true, ...st };
        report.timings.selftestMs = Date.now() - testStarted;
        report.embeddings = { ...report.embeddings, ...service.stats, invalidStored: result.invalidStored };
      }
    }
    report.embeddings.estimatedCostUsd =
      (estimateCostUsd(provider.model, report.embeddings.tokens) ?? 0) +
      (estimateCostUsd(provider.model, report.embeddings.batchApi?.tokens ?? 0) ?? 0) * BATCH_PRICE_FACTOR;
    // Rejected rows are errors of the rows, not of the run: the rest is migrated, they are in
    // the reject file, and verify names them (exit 3) until they are fixed.
    report.ok = report.memories.errors - report.memories.rejected === 0 && (!report.selftest.ran || report.selftest.passed);
    report.durationMs = Date.now() - started;
    if (db && runId !== null) await finishRun(db, runId, 'committed', countsOf(report));
    return { report, exitCode: report.ok ? 0 : 1 };
  } catch (caught) {
    // Once rows are being written, a failure says what to fix and that a re-run resumes.
    const err =
      caught instanceof Interrupted || dryRun || !db || runId === null || (caught as { exitCode?: number }).exitCode
        ? caught
        : describeLoadError(caught, { loading: phase === 'load' });
    report.ok = false;
    report.durationMs = Date.now() - started;
    report.error = redact(oneLine(errorMessage(err)));
    if (db && runId !== null) {
      const status = err instanceof Interrupted ? 'interrupted' : 'failed';
      // Stopped mid-load, the report has no counts yet: the last checkpoint's are kept.
      await finishRun(db, runId, status, phase === 'finish' ? countsOf(report) : {}, report.error).catch(() => {});
    }
    if (err instanceof Interrupted) {
      out.error(
        `Interrupted after source rowid ${err.lastRowid ?? 0}; every batch up to there is committed. ` +
          `Run the same command again to resume.`,
      );
      return { report, exitCode: EXIT_INTERRUPTED };
    }
    // With --json the report (ok: false, error) is still the one object printed.
    if (err !== null && typeof err === 'object') (err as { report?: MigrationReport }).report = report;
    throw err;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    report.rejectedRows = readRejects(flags.rejectFile, rejectStart, MAX_SKIPPED_IN_REPORT);
    if (flags.report) {
      try {
        // Every rejected row, read from the reject file as the report is written.
        writeReportFile(flags.report, report, allSkipped!, rejectedRows(flags.rejectFile, rejectStart));
      } catch (e) {
        out.error(`memory-migrate: cannot write the report to ${flags.report}: ${errorMessage(e)}`);
      }
    }
    allSkipped?.close();
    await lock?.release().catch(() => {});
    await db?.close().catch(() => {});
    source.close();
  }
}

/**
 * --batch-api: fills the embedding cache through OpenAI's Batch API before the load (see
 * pipeline/batch-prepass.ts); returns the embedder, whose `rejected` the load uses.
 */
async function embedThroughBatches(
  flags: MigrateFlags,
  provider: OpenAIProvider,
  db: Db,
  source: ReturnType<typeof openSource>,
  filter: SourceFilter,
  total: number,
  report: MigrationReport,
  signal: AbortSignal,
  out: Output,
): Promise<BatchEmbedder> {
  const stats = emptyBatchApiStats();
  report.embeddings.batchApi = stats;
  const scope = JSON.stringify({ users: flags.user ?? [], shard: flags.shard ?? null, limit: flags.limit ?? null });
  const steps = createStepProgress(out, { label: 'batch api', total: 1 });
  const lastStatus = new Map<string, string>();
  const batches = new BatchEmbedder({
    db,
    // Its own cache object (same table): the load's LRU starts empty and counts its own hits.
    cache: new EmbeddingCache({ db }),
    apiKey: process.env['OPENAI_API_KEY'] ?? '',
    baseURL: provider.baseURL,
    model: provider.model,
    dimensions: provider.dimensions,
    sendDimensions: provider.sendDimensions,
    jobTag: batchJobTag({ sourceSha256: report.source.sha256 ?? '', model: provider.model, dimensions: provider.dimensions, scope }),
    maxInputs: provider.maxInputs,
    maxTokens: provider.maxTokens,
    maxInputTokens: provider.maxInputTokens,
    pollSeconds: flags.batchPollSeconds ?? MIGRATE_DEFAULTS.batchPollSeconds,
    stats,
    signal,
    onStatus: (e) => {
      const line = `batch ${e.batchId}: ${e.status}, ${e.completed}/${e.total} requests done${e.failed > 0 ? `, ${e.failed} failed` : ''}`;
      steps.start(line);
      if (lastStatus.get(e.batchId) !== `${e.status}|${e.completed}|${e.failed}`) steps.log(line);
      lastStatus.set(e.batchId, `${e.status}|${e.completed}|${e.failed}`);
    },
  });
  const prepass = createProgress(out, { label: 'batch files', total });
  try {
    await fillCacheFromBatches(
      {
        source,
        db,
        embeddings: buildService(provider, db, true),
        ...pipelineFlags(flags, provider),
        filter,
        dryRun: true,
        runId: null,
        signal,
        onProgress: (p) => prepass.update(p.done, p.memories),
      },
      batches,
      (l) => steps.log(l),
    );
  } catch (err) {
    if (err instanceof Interrupted) {
      out.error('Batch API: stopped before the load; the batches created so far are recorded, and the same command resumes polling them');
    }
    throw err;
  } finally {
    prepass.stop();
    steps.stop();
  }
  if (stats.batches === 0 && stats.resumed === 0) out.info('Batch API: nothing to embed through it, no batches were needed');
  return batches;
}

/** What the flags decide of the pipeline: the load and the Batch API pre-pass decide alike. */
function pipelineFlags(flags: MigrateFlags, provider: { model: string; dimensions: number }) {
  return {
    model: provider.model,
    dimensions: provider.dimensions,
    sourceModel: flags.sourceModel ?? null,
    dedup: { mode: flags.dedup ?? MIGRATE_DEFAULTS.dedup, threshold: flags.dedupThreshold, skipMatches: flags.dedupSkip },
    batchSize: flags.batchSize ?? MIGRATE_DEFAULTS.batchSize,
    userInMetadata: flags.userInMetadata ?? false,
  };
}

function countsOf(r: MigrationReport) {
  return { memories: r.memories, fragments: r.fragments, embeddings: r.embeddings, ...(r.deleted ? { deleted: r.deleted } : {}) };
}

/** How the source was read, as the ledger records it: verify reads it the same way, a re-run may not remap users. */
function ledgerSource(info: SourceInfo, f: MigrateFlags): Record<string, unknown> {
  return { layout: info.layout, userFrom: info.userFrom ?? 'column', ...(f.map !== undefined || f.mapTable !== undefined || f.mapContent !== undefined ? { map: sourceOpenOptions(f).map } : {}) };
}

/** A re-run that maps users differently from an earlier run of the same file would split or merge users silently. */
async function refuseUserRemap(db: Db, sha256: string, path: string, info: SourceInfo): Promise<void> {
  const earlier = await recordedUserFrom(db, sha256, path);
  const now = info.userFrom ?? 'column';
  if (earlier && earlier.userFrom !== now) {
    throw new UsageError(
      `run #${earlier.id} of this file made user_id from --user-from ${earlier.userFrom}, this run from ${now}: users cannot be remapped in place; ` +
        `run again with --user-from ${earlier.userFrom}, or migrate into a fresh target (or --force-recreate)`,
    );
  }
}

/** Options as recorded in the ledger: no URLs, no keys. */
function ledgerOptions(f: MigrateFlags): Record<string, unknown> {
  return {
    embedder: f.embedder ?? 'openai',
    model: f.model ?? null,
    dimensions: f.dimensions ?? null,
    sourceModel: f.sourceModel ?? null,
    limit: f.limit ?? null,
    users: f.user ?? [],
    shard: f.shard ? `${f.shard.index}/${f.shard.count}` : null,
    dedup: f.dedup ?? MIGRATE_DEFAULTS.dedup,
    dedupThreshold: f.dedupThreshold ?? null,
    dedupSkip: f.dedupSkip ?? false,
    batchSize: f.batchSize ?? MIGRATE_DEFAULTS.batchSize,
    forceRecreate: f.forceRecreate ?? false,
    mirrorDeletes: f.mirrorDeletes ?? false,
    batchApi: f.batchApi ?? false,
    // verify and rollback read it: the stored metadata has the user added.
    userInMetadata: f.userInMetadata ?? false,
  };
}

/** The one line that says memory-migrate writes into the app's own table, and where its own things go. */
function adoptionLine(app: AppTable, verb: string): string {
  const idFrom = app.idFrom === 'app-default' ? 'its own default' : app.idFrom === 'row-uuid' ? 'a UUID derived from the source id' : 'the source id';
  return (
    `Target: ${app.schema}.memories is the app's own table (id ${app.idColumn.type}, from ${idFrom}); ${verb} into it without changing its columns, ` +
    `with memory-migrate's links, hashes and ledger in schema memory_migrate`
  );
}

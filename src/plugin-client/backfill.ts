// `migrate --to-plugin URL`: the memories `migrate` would store, written through the
// memory-plugin v1 contract instead of SQL, to any plugin. Each memory is committed with
// id = rowUuid(source id), the same deterministic UUID a SQL migration gives it, so a partial
// or repeated run upserts in place and never doubles a row. Each namespace is upserted once
// per run, before its first memory. Rows are written by a bounded pool of workers, one batch
// at a time (the next batch is decided and embedded meanwhile); the ledger file is advanced
// after every batch the plugin has acknowledged, so a killed run resumes where it stopped.
import { resolve } from 'node:path';
import type { SourceFile } from '../source/reader.js';
import type { SourceFilter } from '../source/types.js';
import { rowUuid } from '../postgres/row-uuid.js';
import { startEmbedBatch } from '../pipeline/embed-step.js';
import { appendRejects } from '../embed/reject-file.js';
import type { EmbeddingService } from '../embed/service.js';
import type { PreparedMemory } from '../pipeline/types.js';
import type { Output } from '../output.js';
import { RunError, UsageError, errorMessage, oneLine } from '../errors.js';
import { redact } from '../secrets.js';
import { createProgress } from '../progress.js';
import { namespaceKindOf } from '../plugin-namespace.js';
import { PluginClient, PluginRejection, PluginUnavailable } from './http.js';
import { PluginLedger, defaultLedgerPath, ledgerKey, type LedgerEntry } from './ledger.js';
import { NamespaceMap, planBatches, planOptions, type PlannedBatch } from './plan.js';
import { connectPlugin, type PluginTargetFlags } from './connect.js';
import { emptyNamespaceCounts, sumNamespaceCounts, type BackfillReport, type NamespaceCounts } from './report.js';
import { MAX_SKIPPED_IN_REPORT } from '../report.js';

export interface BackfillFlags extends PluginTargetFlags {
  sqlite: string;
  sourceModel?: string;
  dryRun?: boolean;
  limit?: number;
  user?: string[];
  batchSize?: number;
  busyTimeout?: number;
  /** --plugin-concurrency: commits in flight. */
  pluginConcurrency?: number;
  /** --ledger-file (default `<sqlite>.to-plugin.ledger.json`). */
  ledgerFile?: string;
  rejectFile?: string;
}

export const DEFAULT_PLUGIN_CONCURRENCY = 8;
export const DEFAULT_PLUGIN_BATCH_SIZE = 500;
const ALREADY_WRITTEN = 'already written (ledger)';

/** The embedder, built only when the plugin takes vectors (the command layer knows how). */
export type MakeEmbedder = (dryRun: boolean) => Promise<{ service: () => EmbeddingService; model: string; dimensions: number }>;

/** Runs the backfill from an open source (closed by the caller). */
export async function backfillToPlugin(
  flags: BackfillFlags,
  source: SourceFile,
  makeEmbedder: MakeEmbedder,
  out: Output,
): Promise<{ report: BackfillReport; exitCode: number }> {
  const started = Date.now();
  const dryRun = flags.dryRun ?? false;
  const filter: SourceFilter = {
    ...(flags.user && flags.user.length > 0 ? { users: flags.user } : {}),
    ...(flags.limit !== undefined ? { limit: flags.limit } : {}),
  };
  const plugin = await connectPlugin(flags, out);
  const report = emptyBackfillReport(flags, plugin.client.displayUrl, plugin.template, dryRun);
  report.capabilities = plugin.health.capabilities;
  report.source.sha256 = source.sha256();

  // Vectors: only when the plugin takes ours (capability `embedding` and our width accepted).
  let service: EmbeddingService | null = null;
  let model = '';
  let dimensions = 0;
  if (plugin.health.capabilities.includes('embedding')) {
    const embedder = await makeEmbedder(dryRun);
    model = embedder.model;
    dimensions = embedder.dimensions;
    const refusal = dryRun ? null : await plugin.probeEmbeddingWidth(dimensions);
    if (refusal) {
      report.embeddings.reason = `the plugin refused a ${dimensions}-dimension vector (${refusal}): memories are sent without embedding`;
    } else {
      service = embedder.service();
      report.embeddings.send = true;
      report.embeddings.model = model;
      report.embeddings.dimensions = dimensions;
      report.embeddings.reason = dryRun ? 'the plugin reports embedding: vectors would be sent (width not probed in a dry run)' : `the plugin accepts ${dimensions}-dimension vectors`;
    }
  } else {
    report.embeddings.reason = 'the plugin does not report the embedding capability: memories are sent without vectors (none are made)';
  }
  if (report.embeddings.reason) out.info(`Embeddings: ${report.embeddings.reason}`);

  const ledgerPath = resolve(flags.ledgerFile ?? defaultLedgerPath(flags.sqlite));
  const ledger = PluginLedger.open(ledgerPath);
  const key = ledgerKey({ sourceSha256: report.source.sha256, plugin: plugin.client.baseUrl, template: plugin.template, filter });
  // A run that stopped is resumed; after a finished one, everything is sent again (it upserts
  // in place), which is how the runbook repairs what verify names as missing.
  const earlier = ledger.get(key);
  const previous = earlier && !earlier.finished ? earlier : undefined;
  report.ledger = { path: ledgerPath, resumedFrom: previous ? previous.checkpointRowid : null };
  if (!dryRun) ledger.assertWritable();
  if (earlier) {
    out.info(
      previous
        ? `Resuming: an earlier run stopped after source rowid ${previous.checkpointRowid}; memories up to there are not sent again`
        : 'Ledger: an earlier run finished this backfill; sending everything again (upserts in place, nothing doubles)',
    );
  }

  const opts = planOptions(source, filter, {
    ...(service ? { embeddings: service } : {}),
    model,
    dimensions,
    sourceModel: flags.sourceModel ?? null,
    batchSize: flags.batchSize ?? DEFAULT_PLUGIN_BATCH_SIZE,
    dryRun,
  });
  const writer = new NamespaceWriter(plugin.client, report, flags.rejectFile && !dryRun ? flags.rejectFile : undefined, flags.pluginConcurrency ?? DEFAULT_PLUGIN_CONCURRENCY);
  const namespaces = new NamespaceMap(plugin.template);
  const total = source.count(filter);
  const progress = createProgress(out, { label: 'memories', total, ...(service ? { service } : {}) });
  const done = { rows: 0 };
  let checkpoint = previous?.checkpointRowid ?? 0;
  const retryIds = new Set(previous?.rejectedIds ?? []);
  const rejectedIds = new Set<string>(previous?.rejectedIds ?? []);
  let written = previous?.written ?? 0;

  const interrupted = { flag: false };
  const onSignal = () => {
    out.error('interrupt received: finishing the current batch, then stopping');
    interrupted.flag = true;
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    let pending: { batch: PlannedBatch; send: PreparedMemory[]; embedded: Promise<void> } | null = null;
    const writeBatch = async (p: NonNullable<typeof pending>) => {
      await p.embedded;
      const { rejected, written: wrote } = await writer.write(p.send, namespaces);
      if (!dryRun) {
        for (const m of p.send) rejectedIds.delete(m.id);
        for (const id of rejected) rejectedIds.add(id);
        written += wrote;
        checkpoint = Math.max(checkpoint, p.batch.lastRowid);
        const entry: LedgerEntry = {
          checkpointRowid: checkpoint,
          rejectedIds: [...rejectedIds],
          written,
          finished: false,
          updatedAt: new Date().toISOString(),
          plugin: plugin.client.displayUrl,
          template: plugin.template,
        };
        ledger.set(key, entry);
      }
      done.rows += p.batch.rows;
      progress.update(done.rows);
    };
    for await (const batch of planBatches(opts)) {
      const send = countBatch(batch, namespaces, report, previous?.checkpointRowid ?? 0, retryIds, dryRun);
      // The vectors of this batch are made while the batch before it is written.
      const embedded = service && send.length > 0 ? (await startEmbedBatch(opts, send, [], batch.counts)).done : Promise.resolve();
      embedded.catch(() => {});
      if (pending) await writeBatch(pending);
      pending = { batch, send, embedded };
      if (interrupted.flag) break;
    }
    if (pending) await writeBatch(pending);
  } catch (err) {
    progress.stop();
    report.ok = false;
    report.totals = sumNamespaceCounts(report.namespaces);
    report.durationMs = Date.now() - started;
    const resume = `every batch up to source rowid ${checkpoint} is written (ledger ${ledgerPath})`;
    let e: Error;
    if (err instanceof PluginUnavailable) {
      e = new RunError(`${err.message}: stopped (circuit breaker) rather than keep sending to a plugin that is down; ${resume}; when it is back, run the same command again to resume`);
    } else if (err instanceof PluginRejection && (err.status === 401 || err.status === 403)) {
      e = new UsageError(`the plugin refused the token (${err.message}); ${resume}; check --plugin-token / MEMORY_PLUGIN_TOKEN and run the same command again`);
    } else if (err instanceof UsageError || err instanceof RunError) {
      e = err;
    } else {
      e = new RunError(`${oneLine(errorMessage(err))}; ${resume}; run the same command again to resume`);
    }
    report.error = redact(oneLine(e.message));
    (e as { report?: BackfillReport }).report = report;
    throw e;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  progress.stop();
  if (interrupted.flag) {
    report.ok = false;
    report.totals = sumNamespaceCounts(report.namespaces);
    report.error = `interrupted after source rowid ${checkpoint}; run the same command again to resume`;
    report.durationMs = Date.now() - started;
    out.error(`Interrupted after source rowid ${checkpoint}; every batch up to there is written. Run the same command again to resume.`);
    return { report, exitCode: 130 };
  }
  if (!dryRun) {
    ledger.set(key, {
      checkpointRowid: checkpoint,
      rejectedIds: [...rejectedIds],
      written,
      finished: true,
      updatedAt: new Date().toISOString(),
      plugin: plugin.client.displayUrl,
      template: plugin.template,
    });
  }
  if (service) {
    const s = service.stats;
    report.embeddings.reused = s.reused;
    report.embeddings.embedded = s.computed;
    report.embeddings.cached = s.cached;
  }
  report.requests = { attempts: plugin.client.attempts, retried: plugin.client.retried };
  report.totals = sumNamespaceCounts(report.namespaces);
  report.namespaces = Object.fromEntries(Object.entries(report.namespaces).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  // Rejected rows do not fail the run: they are in the reject file, and verify names them.
  report.ok = true;
  report.durationMs = Date.now() - started;
  return { report, exitCode: 0 };
}

/**
 * Counts a planned batch into the report (read, skipped, failed per namespace) and returns
 * the memories to send: not those an earlier run wrote (at or before its checkpoint, not
 * rejected), and none whose user has no valid namespace.
 */
function countBatch(
  batch: PlannedBatch,
  namespaces: NamespaceMap,
  report: BackfillReport,
  doneUpTo: number,
  retryIds: Set<string>,
  dryRun: boolean,
): PreparedMemory[] {
  const c = batch.counts;
  for (const [user, u] of Object.entries(c.users)) {
    const n = nsCounts(report, namespaces.key(user === '(null)' ? null : user));
    n.read += u.read;
    n.skipped += u.skipped + u.duplicates;
    n.failed += u.rejected;
  }
  for (const [reason, k] of Object.entries(c.memories.skippedByReason)) addReason(report, reason, k);
  if (c.memories.duplicates.total > 0) addReason(report, 'duplicate (exact, same user)', c.memories.duplicates.total);
  report.fragmentsNotSent += c.fragments.read;
  for (const r of batch.rejects) {
    addReason(report, r.reason, 1, true);
    if (report.rejectedRows.length < MAX_SKIPPED_IN_REPORT) report.rejectedRows.push(r);
  }
  const send: PreparedMemory[] = [];
  for (const m of batch.memories) {
    const key = namespaces.key(m.userId);
    const ns = namespaces.of(m.userId);
    if (!('name' in ns)) {
      nsCounts(report, key).failed++;
      addReason(report, 'no valid namespace for the user', 1, true);
      if (report.rejectedRows.length < MAX_SKIPPED_IN_REPORT) report.rejectedRows.push({ id: m.id, user: m.userId, reason: ns.problem });
      continue;
    }
    if (m.source!.rowid <= doneUpTo && !retryIds.has(m.id)) {
      nsCounts(report, key).skipped++;
      addReason(report, ALREADY_WRITTEN, 1);
      continue;
    }
    if (dryRun) {
      nsCounts(report, key).written++;
      continue;
    }
    send.push(m);
  }
  return send;
}

function nsCounts(report: BackfillReport, key: string): NamespaceCounts {
  return (report.namespaces[key] ??= emptyNamespaceCounts());
}

function addReason(report: BackfillReport, reason: string, k: number, failed = false) {
  const into = failed ? report.failedByReason : report.skippedByReason;
  into[reason] = (into[reason] ?? 0) + k;
}

/**
 * Writes memories with at most `concurrency` commits in flight, each namespace upserted once
 * per run before its first memory. A 4xx on one memory rejects that row (reject file,
 * counted) and the rest go on; the breaker's PluginUnavailable stops everything.
 */
class NamespaceWriter {
  private readonly upserted = new Map<string, Promise<void>>();

  constructor(
    private readonly client: PluginClient,
    private readonly report: BackfillReport,
    private readonly rejectFile: string | undefined,
    private readonly concurrency: number,
  ) {}

  /** How many the plugin acknowledged, and the source ids it rejected. */
  async write(memories: PreparedMemory[], namespaces: NamespaceMap): Promise<{ written: number; rejected: string[] }> {
    const rejected: string[] = [];
    let written = 0;
    const lines: { id: string; user: string; reason: string }[] = [];
    let next = 0;
    let fatal: unknown = undefined;
    const worker = async () => {
      while (fatal === undefined && next < memories.length) {
        const m = memories[next++]!;
        const ns = (namespaces.of(m.userId) as { name: string }).name;
        try {
          await this.ensureNamespace(ns);
          await this.client.commit(ns, {
            id: rowUuid(m.id),
            content: m.content,
            kind: 'fact',
            source: 'agent',
            ...(m.embedding ? { embedding: Array.from(m.embedding) } : {}),
          });
          this.report.namespaces[ns]!.written++;
          written++;
        } catch (err) {
          if (err instanceof PluginRejection && err.status !== 401 && err.status !== 403) {
            const reason = `the plugin refused it: ${err.message}`;
            this.report.namespaces[ns]!.failed++;
            addReason(this.report, `the plugin refused it (${err.status} ${err.code})`, 1, true);
            rejected.push(m.id);
            lines.push({ id: m.id, user: m.userId, reason });
            if (this.report.rejectedRows.length < MAX_SKIPPED_IN_REPORT) this.report.rejectedRows.push({ id: m.id, user: m.userId, reason });
            continue;
          }
          fatal ??= err;
          if (!(err instanceof PluginUnavailable)) this.client.stop(errorMessage(err));
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.concurrency, memories.length) }, worker));
    if (this.rejectFile && lines.length > 0) await appendRejects(this.rejectFile, lines);
    if (fatal !== undefined) throw fatal;
    return { written, rejected };
  }

  private ensureNamespace(name: string): Promise<void> {
    let p = this.upserted.get(name);
    if (!p) {
      p = this.client.upsertNamespace(name, namespaceKindOf(name)).then(() => {
        this.report.namespacesUpserted++;
      });
      // A refused upsert is answered to every memory of the namespace (each is rejected).
      this.upserted.set(name, p);
    }
    return p;
  }
}

function emptyBackfillReport(flags: BackfillFlags, plugin: string, template: string, dryRun: boolean): BackfillReport {
  return {
    ok: false,
    command: 'migrate --to-plugin',
    dryRun,
    source: { path: flags.sqlite, sha256: null },
    plugin,
    namespaceTemplate: template,
    capabilities: [],
    embeddings: { send: false, reason: null, model: null, dimensions: null, reused: 0, embedded: 0, cached: 0 },
    namespaces: {},
    totals: emptyNamespaceCounts(),
    namespacesUpserted: 0,
    skippedByReason: {},
    failedByReason: {},
    fragmentsNotSent: 0,
    rejectedRows: [],
    ledger: { path: '', resumedFrom: null },
    requests: { attempts: 0, retried: 0 },
    durationMs: 0,
  };
}

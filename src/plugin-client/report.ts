// The report of `migrate --to-plugin` (--json prints it as is; keys are added, never renamed)
// and its human table: per namespace, what was read, written, skipped and failed (seed 001's
// per-tenant report).
import type { SkippedRow } from '../report.js';

export interface NamespaceCounts {
  /** Memory rows of the namespace's user read from the source (fragments are not memories). */
  read: number;
  /** Acknowledged by the plugin in this run (a dry run: would be sent). */
  written: number;
  /** Not sent: skipped by the row rules, exact duplicates, or written by an earlier run (ledger). */
  skipped: number;
  /** Not stored: refused by the plugin (4xx), by the row rules, or no valid namespace. */
  failed: number;
}

export interface BackfillReport {
  ok: boolean;
  command: 'migrate --to-plugin';
  dryRun: boolean;
  source: { path: string; sha256: string | null };
  /** The plugin URL, any password in it masked. */
  plugin: string;
  namespaceTemplate: string;
  capabilities: string[];
  embeddings: {
    send: boolean;
    reason: string | null;
    model: string | null;
    dimensions: number | null;
    reused: number;
    embedded: number;
    cached: number;
  };
  namespaces: Record<string, NamespaceCounts>;
  totals: NamespaceCounts;
  namespacesUpserted: number;
  skippedByReason: Record<string, number>;
  failedByReason: Record<string, number>;
  /** system_prompts rows: prompt fragments, which the contract has no place for. */
  fragmentsNotSent: number;
  rejectedRows: SkippedRow[];
  ledger: { path: string; resumedFrom: number | null };
  requests: { attempts: number; retried: number };
  durationMs: number;
  error?: string;
}

export function emptyNamespaceCounts(): NamespaceCounts {
  return { read: 0, written: 0, skipped: 0, failed: 0 };
}

export function sumNamespaceCounts(all: Record<string, NamespaceCounts>): NamespaceCounts {
  const t = emptyNamespaceCounts();
  for (const c of Object.values(all)) {
    t.read += c.read;
    t.written += c.written;
    t.skipped += c.skipped;
    t.failed += c.failed;
  }
  return t;
}

/** The per-namespace table, sorted by namespace, with a total line. */
export function namespaceTable(r: Pick<BackfillReport, 'namespaces' | 'totals' | 'dryRun'>): string[] {
  const head = ['namespace', 'read', r.dryRun ? 'would write' : 'written', 'skipped', 'failed'];
  const rows = Object.keys(r.namespaces)
    .sort()
    .map((k) => {
      const c = r.namespaces[k]!;
      return [k, c.read, c.written, c.skipped, c.failed].map(String);
    });
  const t = r.totals;
  const total = ['total', t.read, t.written, t.skipped, t.failed].map(String);
  const all = [head, ...rows, total];
  const widths = head.map((_, i) => Math.max(...all.map((row) => row[i]!.length)));
  const fmt = (row: string[]) => row.map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  ');
  const rule = widths.map((w) => '-'.repeat(w)).join('  ');
  return [fmt(head), rule, ...rows.map(fmt), rule, fmt(total)];
}

export function renderBackfill(r: BackfillReport, info: (line: string) => void, error: (line: string) => void): void {
  info(`${r.dryRun ? 'Dry run (nothing was written): ' : ''}${r.source.path} → ${r.plugin} (namespaces ${r.namespaceTemplate})`);
  for (const line of namespaceTable(r)) info(`  ${line}`);
  const reasons = Object.entries(r.skippedByReason).map(([k, v]) => `${k} ${v}`);
  if (reasons.length) info(`Skipped: ${reasons.join(', ')}`);
  const failed = Object.entries(r.failedByReason).map(([k, v]) => `${k} ${v}`);
  if (failed.length) error(`Failed: ${failed.join(', ')} (in the reject file; verify names them)`);
  if (r.fragmentsNotSent > 0) info(`Prompt fragments not sent (the contract has no place for them): ${r.fragmentsNotSent}`);
  if (!r.dryRun) {
    info(
      `Plugin: ${r.namespacesUpserted} namespaces upserted, ${r.requests.attempts} requests (${r.requests.retried} retried)` +
        (r.embeddings.send ? `; vectors sent: ${r.embeddings.reused} reused, ${r.embeddings.embedded} embedded, ${r.embeddings.cached} cached` : '; no vectors sent'),
    );
    info(`Ledger: ${r.ledger.path}`);
  }
  if (r.ok) info(r.totals.failed > 0 ? `⚠️  Backfill completed, except ${r.totals.failed} failed rows (see above).` : r.dryRun ? 'Dry run complete.' : '🎉 Backfill completed.');
}

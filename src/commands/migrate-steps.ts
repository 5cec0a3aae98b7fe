// The pieces of a migrate run around the pipeline: the dry run's embedding preflight, the
// rows the embedding API rejected (read back from --reject-file), and the --report file.
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import type { MigrationReport, SkippedRow } from '../report.js';
import { redact } from '../secrets.js';
import type { EmbeddingService } from '../embed/service.js';
import type { EmbedInput } from '../embed/types.js';
import { BATCH_PRICE_FACTOR } from '../embed/batch-api.js';

/**
 * Sums the service's preflight over the embedding calls the real run would make. A text
 * already planned in an earlier call would be a cache hit by then, so it is counted as cached.
 */
export async function preflight(service: EmbeddingService, groups: EmbedInput[][]): Promise<NonNullable<MigrationReport['preflight']>> {
  const seen = new Set<string>();
  const total = { textsToEmbed: 0, tokens: 0, requests: 0, cached: 0, estimatedCostUsd: 0, batchCostUsd: 0, etaSeconds: 0 };
  for (const group of groups) {
    const fresh = group.filter((g) => !seen.has(service.keyFor(g.text)));
    total.cached += group.length - fresh.length;
    // The run's first request is a small probe, sent alone: planned as such.
    const pf = await service.preflight(fresh, { first: total.requests === 0 });
    for (const g of fresh) seen.add(service.keyFor(g.text));
    total.textsToEmbed += pf.texts;
    total.tokens += pf.tokens;
    total.requests += pf.requests;
    total.cached += pf.cached;
    total.estimatedCostUsd += pf.estimatedCostUsd;
    total.batchCostUsd += pf.estimatedCostUsd * BATCH_PRICE_FACTOR;
    total.etaSeconds += pf.etaSeconds;
  }
  return total;
}

export function fileSize(path: string | undefined): number {
  if (!path) return 0;
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

/** Rows this run appended to the reject file (JSON Lines: id, user, reason). */
export function readRejects(path: string | undefined, from: number): SkippedRow[] {
  if (!path || fileSize(path) <= from) return [];
  const text = readFileSync(path).subarray(from).toString('utf8');
  const rows: SkippedRow[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      const r = JSON.parse(line) as Partial<SkippedRow>;
      rows.push({ id: String(r.id ?? ''), user: r.user ?? null, reason: String(r.reason ?? '') });
    } catch {
      /* a line another process was writing: skip it */
    }
  }
  return rows;
}

/** The full report: every skipped row and every input the embedding API rejected, redacted. */
export function writeReportFile(path: string, report: MigrationReport, skipped: SkippedRow[], rejected: SkippedRow[]): void {
  const full: MigrationReport = {
    ...report,
    skippedRows: skipped.length >= report.skippedRows.length ? skipped : report.skippedRows,
    rejectedRows: rejected,
  };
  writeFileSync(path, redact(JSON.stringify(full, null, 2)) + '\n');
}

// The pieces of a migrate run around the pipeline: the dry run's embedding preflight, the
// rows the embedding API rejected (read back from --reject-file), and the --report file.
import { closeSync, openSync, readSync, statSync, writeFileSync } from 'node:fs';
import type { MigrationReport, SkippedRow } from '../report.js';
import { redact } from '../secrets.js';
import type { EmbeddingService } from '../embed/service.js';
import type { EmbedInput } from '../embed/types.js';
import { BATCH_PRICE_FACTOR } from '../embed/batch-api.js';
import { ScratchKeys } from '../source/scratch-keys.js';

/**
 * The dry run's preflight: the service's preflight summed over the embedding calls the real
 * run would make, as the pipeline decides them (its embedSink). A text already planned in an
 * earlier call would be a cache hit by then, so it is counted as cached; the texts planned
 * are remembered on disk (ScratchKeys), not in memory. close() when the run ends.
 */
export class PreflightTally {
  readonly total = { textsToEmbed: 0, tokens: 0, requests: 0, cached: 0, estimatedCostUsd: 0, batchCostUsd: 0, etaSeconds: 0 };
  private readonly planned = new ScratchKeys();
  constructor(private readonly service: EmbeddingService) {}

  async add(group: EmbedInput[]): Promise<void> {
    const { total, service, planned } = this;
    const fresh = group.filter((g) => !planned.has(service.keyFor(g.text)));
    total.cached += group.length - fresh.length;
    // The run's first request is a small probe, sent alone: planned as such.
    const pf = await service.preflight(fresh, { first: total.requests === 0 });
    for (const g of fresh) planned.set(service.keyFor(g.text), '');
    total.textsToEmbed += pf.texts;
    total.tokens += pf.tokens;
    total.requests += pf.requests;
    total.cached += pf.cached;
    total.estimatedCostUsd += pf.estimatedCostUsd;
    total.batchCostUsd += pf.estimatedCostUsd * BATCH_PRICE_FACTOR;
    total.etaSeconds += pf.etaSeconds;
  }

  close(): void {
    this.planned.close();
  }
}

export function fileSize(path: string | undefined): number {
  if (!path) return 0;
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

/**
 * The first `limit` rows this run appended to the reject file (JSON Lines: id, user, reason),
 * read a chunk at a time: the file of a long run can be large.
 */
export function readRejects(path: string | undefined, from: number, limit = Infinity): SkippedRow[] {
  if (!path || fileSize(path) <= from) return [];
  const rows: SkippedRow[] = [];
  const fd = openSync(path, 'r');
  try {
    const chunk = Buffer.alloc(REJECTS_CHUNK_BYTES);
    let position = from;
    let partial = Buffer.alloc(0);
    for (;;) {
      const n = readSync(fd, chunk, 0, chunk.length, position);
      position += n;
      const bytes = Buffer.concat([partial, chunk.subarray(0, n)]);
      // Split on newline bytes, never inside a multi-byte character.
      const end = n === 0 ? bytes.length : bytes.lastIndexOf(0x0a) + 1;
      for (const line of bytes.subarray(0, end).toString('utf8').split('\n')) {
        if (rows.length >= limit) return rows;
        if (!line.trim()) continue;
        try {
          const r = JSON.parse(line) as Partial<SkippedRow>;
          rows.push({ id: String(r.id ?? ''), user: r.user ?? null, reason: String(r.reason ?? '') });
        } catch {
          /* a line another process was writing: skip it */
        }
      }
      if (n === 0) return rows;
      partial = bytes.subarray(end);
    }
  } finally {
    closeSync(fd);
  }
}

const REJECTS_CHUNK_BYTES = 1 << 16;

/** The full report: every skipped row and every input the embedding API rejected, redacted. */
export function writeReportFile(path: string, report: MigrationReport, skipped: SkippedRow[], rejected: SkippedRow[]): void {
  const full: MigrationReport = {
    ...report,
    skippedRows: skipped.length >= report.skippedRows.length ? skipped : report.skippedRows,
    rejectedRows: rejected,
  };
  writeFileSync(path, redact(JSON.stringify(full, null, 2)) + '\n');
}

// The pieces of a migrate run around the pipeline: the dry run's embedding preflight, the
// rows the embedding API rejected (read back from --reject-file), and the --report file.
import { closeSync, mkdtempSync, openSync, readSync, rmSync, statSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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
    const fresh: EmbedInput[] = [];
    const freshKeys: string[] = [];
    for (const g of group) {
      const key = service.keyFor(g.text);
      if (planned.has(key)) continue;
      fresh.push(g);
      freshKeys.push(key);
    }
    total.cached += group.length - fresh.length;
    // The run's first request is a small probe, sent alone: planned as such.
    const pf = await service.preflight(fresh, { first: total.requests === 0 });
    for (const key of freshKeys) planned.set(key, '');
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
  const rows: SkippedRow[] = [];
  if (limit <= 0) return rows;
  for (const row of skippedRowLines(path, from)) {
    rows.push(row);
    if (rows.length >= limit) break;
  }
  return rows;
}

/** Every row this run appended to the reject file, read as they are iterated. */
export function rejectedRows(path: string | undefined, from: number): Iterable<SkippedRow> {
  return { [Symbol.iterator]: () => skippedRowLines(path, from) };
}

/** The rows of a JSON Lines file of skipped rows from byte `from` on, a chunk at a time. */
function* skippedRowLines(path: string | undefined, from: number): Generator<SkippedRow> {
  if (!path || fileSize(path) <= from) return;
  const fd = openSync(path, 'r');
  try {
    const chunk = Buffer.alloc(LINES_CHUNK_BYTES);
    let position = from;
    let partial = Buffer.alloc(0);
    for (;;) {
      const n = readSync(fd, chunk, 0, chunk.length, position);
      position += n;
      const bytes = Buffer.concat([partial, chunk.subarray(0, n)]);
      // Split on newline bytes, never inside a multi-byte character.
      const end = n === 0 ? bytes.length : bytes.lastIndexOf(0x0a) + 1;
      for (const line of bytes.subarray(0, end).toString('utf8').split('\n')) {
        if (!line.trim()) continue;
        try {
          const r = JSON.parse(line) as Partial<SkippedRow>;
          yield { id: String(r.id ?? ''), user: r.user ?? null, reason: String(r.reason ?? '') };
        } catch {
          /* a line another process was writing: skip it */
        }
      }
      if (n === 0) return;
      partial = bytes.subarray(end);
    }
  } finally {
    closeSync(fd);
  }
}

const LINES_CHUNK_BYTES = 1 << 16;

/**
 * Every skipped row of a run with --report, until the report is written: JSON Lines in a
 * temporary file (deleted by close() or at process exit), not a list in memory, so a file
 * with millions of skipped rows costs disk, not memory.
 */
export class SkippedRowSpool {
  private readonly dir = mkdtempSync(join(tmpdir(), 'mm-skipped-'));
  private readonly path = join(this.dir, 'skipped.jsonl');
  private readonly fd = openSync(this.path, 'w');
  private lines: string[] = [];
  private closed = false;
  private readonly removeOnExit = () => this.close();
  count = 0;

  constructor() {
    process.once('exit', this.removeOnExit);
  }

  add(row: SkippedRow): void {
    this.lines.push(JSON.stringify(row));
    this.count++;
    if (this.lines.length >= SPOOL_LINES_PER_WRITE) this.flush();
  }

  /** The rows added, in order, read back as they are iterated. */
  rows(): Iterable<SkippedRow> {
    this.flush();
    return { [Symbol.iterator]: () => skippedRowLines(this.path, 0) };
  }

  /** Closes and deletes the file; safe to call twice. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    process.off('exit', this.removeOnExit);
    closeSync(this.fd);
    rmSync(this.dir, { recursive: true, force: true });
  }

  private flush(): void {
    if (this.lines.length === 0) return;
    writeSync(this.fd, this.lines.join('\n') + '\n');
    this.lines = [];
  }
}

const SPOOL_LINES_PER_WRITE = 1000;

/**
 * The full report: every skipped row and every input the embedding API rejected, redacted.
 * The two lists are written row by row from where they are kept (the spool, the reject
 * file), never held whole. `skipped` is used when it has at least the rows the report shows.
 */
export function writeReportFile(
  path: string,
  report: MigrationReport,
  skipped: { count: number; rows(): Iterable<SkippedRow> },
  rejected: Iterable<SkippedRow>,
): void {
  // rejectedRows here are the first the printed report shows; `rejected` has them all.
  const { skippedRows, rejectedRows, ...rest } = report;
  void rejectedRows;
  const head = JSON.stringify(rest, null, 2);
  const fd = openSync(path, 'w');
  try {
    let pending = '';
    const write = (text: string) => {
      pending += text;
      if (pending.length >= 1 << 16) {
        writeSync(fd, redact(pending));
        pending = '';
      }
    };
    // The report's own fields, then the two lists, in JSON.stringify(…, null, 2)'s layout.
    write(head.slice(0, head.lastIndexOf('}')).trimEnd());
    const list = (name: string, rows: Iterable<SkippedRow>) => {
      write(`,\n  ${JSON.stringify(name)}: [`);
      let first = true;
      for (const row of rows) {
        write(`${first ? '' : ','}\n    ${JSON.stringify(row)}`);
        first = false;
      }
      write(first ? ']' : '\n  ]');
    };
    list('skippedRows', skipped.count >= skippedRows.length ? skipped.rows() : skippedRows);
    list('rejectedRows', rejected);
    write('\n}\n');
    writeSync(fd, redact(pending));
  } finally {
    closeSync(fd);
  }
}

// migrate --batch-api: embeddings through OpenAI's Batch API, at half the price, with the
// answers put into the embedding cache so the ordinary load that follows finds every vector
// there (and a later run too: same cache keys as the online path).
//
//   texts (streamed, after stored vectors and the cache) ──► JSONL request lines on disk
//     ──► POST /v1/files (purpose=batch) ──► ledger row (embedding_batches) ──► POST /v1/batches
//     ──► GET /v1/batches/{id} every --batch-poll-seconds ──► output / error files
//     ──► vectors into embedding_cache; failed lines' inputs recorded as rejected
//
// OpenAI's documented limits (API reference, "Create batch" and the Batch guide):
// - an input file holds at most 50,000 requests and at most 200 MB;
// - a /v1/embeddings batch holds at most 50,000 embedding inputs across all its requests;
// - each request line is an ordinary embeddings request: at most 2,048 inputs and 300,000
//   tokens (--max-batch-inputs / --max-batch-tokens, as online), 8,192 tokens per input;
// - metadata: at most 16 keys, keys up to 64 characters, values up to 512.
// We stay under them with a margin on the file size (190 MB), since a line is only counted
// once it is written.
//
// Crash safety: the ledger row is written after the upload and before the batch is created,
// and every batch carries metadata {memory_migrate_run, inputs_sha256}. A run killed between
// creating a batch and recording its id finds it on resume by listing batches, and adopts it
// instead of creating another; a row whose batch does not exist gets one from the same file.
// An expired or cancelled batch keeps the answers it has; only its other lines are sent again.
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Readable } from 'node:stream';
import OpenAI from 'openai';
import { canonicalize } from '../source/canonical.js';
import type { Db } from '../postgres/connection.js';
import {
  batchLines,
  failedInputs,
  hasResubmission,
  openBatches,
  recordBatchCreated,
  recordDone,
  recordPoll,
  recordUpload,
  type BatchInputRef,
  type EmbeddingBatchRow,
} from '../postgres/embedding-batches.js';
import { RunError } from '../errors.js';
import { redact } from '../secrets.js';
import { decodeEmbeddings, describeError } from './api-response.js';
import { cacheKeyForText, type CacheEntry, type EmbeddingCache } from './cache.js';
import { appendRejects } from './reject-file.js';
import { truncateToTokens } from './tokens.js';
import type { EmbedCallOptions, EmbedInput, EmbedResult, EmbedStats, EmbeddingProvider } from './types.js';

export const BATCH_MAX_REQUESTS = 50_000;
export const BATCH_MAX_INPUTS = 50_000;
export const BATCH_MAX_FILE_BYTES = 190 * 1024 * 1024;
export const DEFAULT_BATCH_POLL_SECONDS = 30;
/** Batch API list price relative to the online one. */
export const BATCH_PRICE_FACTOR = 0.5;

const TERMINAL = new Set(['completed', 'failed', 'expired', 'cancelled']);

export interface BatchApiStats {
  /** Batches created by this run (resubmissions included). */
  batches: number;
  /** Request lines sent in them. */
  requests: number;
  /** Lines answered with vectors, in the batches this run finished. */
  completed: number;
  /** Lines answered with an error: their inputs are rejected. */
  failedLines: number;
  expired: number;
  cancelled: number;
  /** Lines of expired or cancelled batches sent again. */
  resubmitted: number;
  /** Batches of an earlier run polled to the end by this one. */
  resumed: number;
  /** Batches created but not recorded (a killed run), found by their metadata tag. */
  adopted: number;
  /** Input tokens the finished lines used. */
  tokens: number;
  /** Inputs cut to the per-input token limit for embedding (the stored content is not). */
  truncated: number;
}

export function emptyBatchApiStats(): BatchApiStats {
  return { batches: 0, requests: 0, completed: 0, failedLines: 0, expired: 0, cancelled: 0, resubmitted: 0, resumed: 0, adopted: 0, tokens: 0, truncated: 0 };
}

/**
 * What a job's batches are tagged with: the source file and everything that decides which
 * texts are sent and how (model, width, scope), so a resumed run finds exactly its own.
 */
export function batchJobTag(p: { sourceSha256: string; model: string; dimensions: number; scope: string }): string {
  return 'mm-' + createHash('sha256').update(`${p.sourceSha256}|${p.model}|${p.dimensions}|${p.scope}`, 'utf8').digest('hex').slice(0, 40);
}

/** The run was stopped (SIGINT/SIGTERM) while batches were being written or polled. */
export class BatchWaitStopped extends Error {
  constructor() {
    super('stopped while waiting for Batch API batches');
  }
}

export interface BatchStatusEvent {
  batchId: string;
  status: string;
  completed: number;
  failed: number;
  total: number;
}

export interface BatchEmbedderOptions {
  db: Db;
  cache: EmbeddingCache;
  apiKey: string;
  baseURL: string;
  model: string;
  dimensions: number;
  sendDimensions: boolean;
  jobTag: string;
  /** Inputs and tokens per request line (as online). */
  maxInputs: number;
  maxTokens: number;
  maxInputTokens: number;
  pollSeconds?: number;
  /** Where JSONL files are written before upload (default: a folder in the OS temp dir). */
  workDir?: string;
  stats?: BatchApiStats;
  signal?: AbortSignal;
  onStatus?: (e: BatchStatusEvent) => void;
  /** Custom fetch (tests). */
  fetch?: typeof fetch;
}

interface OpenFile {
  path: string;
  fh: FileHandle;
  hash: ReturnType<typeof createHash>;
  lines: Record<string, BatchInputRef[]>;
  lineCount: number;
  inputCount: number;
  bytes: number;
  /** Keys in this file: a text repeated within a file is sent once. */
  keys: Set<string>;
}

interface Line {
  texts: string[];
  refs: BatchInputRef[];
  tokens: number;
}

export class BatchEmbedder {
  readonly stats: BatchApiStats;
  /** Cache key → reason, for inputs of failed lines: the load rejects them, never resends. */
  readonly rejected = new Map<string, string>();
  private readonly o: BatchEmbedderOptions;
  private readonly client: OpenAI;
  private readonly pollMs: number;
  private readonly workDir: string;
  private readonly open: EmbeddingBatchRow[] = [];
  private file: OpenFile | null = null;
  private line: Line = { texts: [], refs: [], tokens: 0 };
  private fileNo = 0;
  private lineNo = 0;
  /** This job's batches as the API lists them, by inputs_sha256 (read once, when needed). */
  private tagged: Map<string, OpenAI.Batches.Batch> | null = null;

  constructor(o: BatchEmbedderOptions) {
    this.o = o;
    this.stats = o.stats ?? emptyBatchApiStats();
    this.pollMs = Math.max(1, Math.round((o.pollSeconds ?? DEFAULT_BATCH_POLL_SECONDS) * 1000));
    // Per process: two runs of one job (two targets) never share a file name.
    this.workDir = o.workDir ?? join(tmpdir(), 'memory-migrate-batches', `${o.jobTag}-${process.pid}`);
    // Uploads and polls are retried by the client (429/5xx/connection errors, with backoff).
    this.client = new OpenAI({ apiKey: o.apiKey, baseURL: o.baseURL, maxRetries: 5, ...(o.fetch ? { fetch: o.fetch } : {}) });
  }

  /** Takes up the job's batches an earlier run left open, and what its failed lines rejected. */
  async resume(): Promise<number> {
    for (const [k, v] of await failedInputs(this.o.db, this.o.jobTag)) this.rejected.set(k, v);
    const rows = await openBatches(this.o.db, this.o.jobTag);
    for (const row of rows) {
      if (row.batchId === null) await this.createOrAdopt(row);
      this.open.push(row);
    }
    this.stats.resumed += rows.length;
    return rows.length;
  }

  /** Queues the texts that still need a vector (not cached, not refused before) into batch files. */
  async add(inputs: EmbedInput[]): Promise<void> {
    if (inputs.length === 0) return;
    const { model, dimensions } = this.o;
    const keyed = inputs.map((input) => ({ input, key: cacheKeyForText(model, dimensions, input.text) }));
    const hits = await this.o.cache.getMany(keyed.map((k) => k.key));
    for (const { input, key } of keyed) {
      if (hits.has(key) || this.rejected.has(key)) continue;
      if (this.file?.keys.has(key) || this.line.refs.some((r) => r[0] === key)) continue;
      const canonical = canonicalize(input.text);
      const t = truncateToTokens(canonical.endsWith('\n') ? canonical.slice(0, -1) : canonical, this.o.maxInputTokens);
      if (t.truncated) this.stats.truncated++;
      if (this.line.texts.length >= this.o.maxInputs || (this.line.texts.length > 0 && this.line.tokens + t.tokens > this.o.maxTokens)) {
        await this.flushLine();
      }
      this.line.texts.push(t.text);
      this.line.refs.push([key, input.ref?.id ?? null, input.ref?.user ?? null]);
      this.line.tokens += t.tokens;
    }
  }

  /** Sends what is queued: the last line, the last file. */
  async flush(): Promise<void> {
    await this.flushLine();
    await this.submitFile();
  }

  /**
   * Polls every open batch until it ends, loading its answers into the cache as it does;
   * expired and cancelled batches have their unanswered lines sent again and waited for.
   */
  async waitAll(): Promise<void> {
    for (;;) {
      for (const row of [...this.open]) {
        this.checkStopped();
        await this.poll(row);
      }
      if (this.open.length === 0) return;
      await this.sleep(this.pollMs);
    }
  }

  /** A stopped run: the file being written is dropped (its texts are collected again next time). */
  async abandon(): Promise<void> {
    const f = this.file;
    this.file = null;
    if (!f) return;
    await f.fh.close().catch(() => {});
    rmSync(f.path, { force: true });
  }

  /** Removes the work folder's leftovers (files of finished batches are removed as they finish). */
  cleanup(): void {
    if (this.open.length === 0 && this.file === null) rmSync(this.workDir, { recursive: true, force: true });
  }

  // ------------------------------------------------------------------ writing batch files

  private async flushLine(): Promise<void> {
    const line = this.line;
    if (line.texts.length === 0) return;
    this.line = { texts: [], refs: [], tokens: 0 };
    const customId = `l${++this.lineNo}`;
    const body: Record<string, unknown> = { model: this.o.model, input: line.texts, encoding_format: 'base64' };
    if (this.o.sendDimensions) body['dimensions'] = this.o.dimensions;
    const text = JSON.stringify({ custom_id: customId, method: 'POST', url: '/v1/embeddings', body }) + '\n';
    const bytes = Buffer.byteLength(text, 'utf8');
    let f = this.file;
    if (
      f &&
      (f.lineCount + 1 > BATCH_MAX_REQUESTS || f.inputCount + line.texts.length > BATCH_MAX_INPUTS || f.bytes + bytes > BATCH_MAX_FILE_BYTES)
    ) {
      await this.submitFile();
      f = null;
    }
    f ??= await this.newFile();
    await f.fh.write(text);
    f.hash.update(text, 'utf8');
    f.lines[customId] = line.refs;
    f.lineCount++;
    f.inputCount += line.texts.length;
    f.bytes += bytes;
    for (const r of line.refs) f.keys.add(r[0]);
  }

  private async newFile(): Promise<OpenFile> {
    mkdirSync(this.workDir, { recursive: true });
    const path = join(this.workDir, `part-${process.pid}-${Date.now()}-${++this.fileNo}.jsonl`);
    const fh = await open(path, 'w');
    this.file = { path, fh, hash: createHash('sha256'), lines: {}, lineCount: 0, inputCount: 0, bytes: 0, keys: new Set() };
    return this.file;
  }

  /** Uploads the current file, records it, creates its batch. */
  private async submitFile(resubmitOf?: number): Promise<void> {
    const f = this.file;
    if (!f) return;
    this.file = null;
    await f.fh.close();
    if (f.lineCount === 0) {
      rmSync(f.path, { force: true });
      return;
    }
    this.checkStopped();
    const sha = f.hash.digest('hex');
    // Named by content, so that a resubmission after a move to another machine can be found.
    const named = join(this.workDir, `${sha}.jsonl`);
    renameSync(f.path, named);
    const uploaded = await this.client.files.create({ file: createReadStream(named), purpose: 'batch' });
    const id = await recordUpload(this.o.db, {
      jobTag: this.o.jobTag,
      inputsSha256: sha,
      model: this.o.model,
      dimensions: this.o.dimensions,
      inputFileId: uploaded.id,
      lines: f.lines,
      lineCount: f.lineCount,
      inputCount: f.inputCount,
      ...(resubmitOf !== undefined ? { resubmitOf } : {}),
    });
    const row: EmbeddingBatchRow = {
      id,
      jobTag: this.o.jobTag,
      inputsSha256: sha,
      inputFileId: uploaded.id,
      batchId: null,
      state: 'uploaded',
      batchStatus: null,
      lineCount: f.lineCount,
      inputCount: f.inputCount,
      resubmitOf: resubmitOf ?? null,
    };
    await this.create(row);
    this.open.push(row);
  }

  /** A recorded upload without a batch id: the batch a killed run created, or a new one. */
  private async createOrAdopt(row: EmbeddingBatchRow): Promise<void> {
    if (this.tagged === null) {
      this.tagged = new Map();
      for await (const b of this.client.batches.list({ limit: 100 })) {
        const meta = (b.metadata ?? {}) as Record<string, string>;
        if (meta['memory_migrate_run'] === this.o.jobTag && meta['inputs_sha256'] && !this.tagged.has(meta['inputs_sha256'])) {
          this.tagged.set(meta['inputs_sha256'], b);
        }
      }
    }
    const found = this.tagged.get(row.inputsSha256);
    if (found) {
      await recordBatchCreated(this.o.db, row.id, found.id, found.status);
      row.batchId = found.id;
      row.state = 'submitted';
      this.stats.adopted++;
      return;
    }
    await this.create(row);
  }

  private async create(row: EmbeddingBatchRow): Promise<void> {
    const batch = await this.client.batches.create({
      input_file_id: row.inputFileId,
      endpoint: '/v1/embeddings',
      completion_window: '24h',
      metadata: { memory_migrate_run: this.o.jobTag, inputs_sha256: row.inputsSha256 },
    });
    await recordBatchCreated(this.o.db, row.id, batch.id, batch.status);
    row.batchId = batch.id;
    row.state = 'submitted';
    this.stats.batches++;
    this.stats.requests += row.lineCount;
  }

  // ------------------------------------------------------------------ polling and results

  private async poll(row: EmbeddingBatchRow): Promise<void> {
    const batch = await this.client.batches.retrieve(row.batchId!);
    const counts = batch.request_counts ?? { total: row.lineCount, completed: 0, failed: 0 };
    if (batch.status !== row.batchStatus || !TERMINAL.has(batch.status)) await recordPoll(this.o.db, row.id, batch.status, counts);
    row.batchStatus = batch.status;
    this.o.onStatus?.({ batchId: batch.id, status: batch.status, completed: counts.completed, failed: counts.failed, total: counts.total });
    if (!TERMINAL.has(batch.status)) return;
    await this.finish(row, batch);
    this.open.splice(this.open.indexOf(row), 1);
  }

  private async finish(row: EmbeddingBatchRow, batch: OpenAI.Batches.Batch): Promise<void> {
    if (batch.status === 'failed') {
      // The batch was refused as a whole (validation, or the account's enqueued-token limit):
      // nothing in it was paid for, and its texts are not cached, so a re-run sends them again.
      await recordDone(this.o.db, row.id, batch.status, {});
      const why = (batch.errors?.data ?? []).map((e) => e.message ?? e.code).filter(Boolean).join('; ') || 'no reason given';
      throw new RunError(`the Batch API refused batch ${batch.id}: ${redact(why)}; fix that and run the same command again`, 1);
    }
    // Only the batch being loaded has its line map in memory, however many are open.
    const lines = await batchLines(this.o.db, row.id);
    const answered = new Set<string>();
    const failed: Record<string, string> = {};
    let entries: CacheEntry[] = [];
    const store = async (force: boolean) => {
      if (entries.length >= 500 || (force && entries.length > 0)) {
        const chunk = entries;
        entries = [];
        await this.o.cache.putMany(chunk);
      }
    };
    for (const fileId of [batch.output_file_id, batch.error_file_id]) {
      if (!fileId) continue;
      for await (const text of this.fileLines(fileId)) {
        let o: any;
        try {
          o = JSON.parse(text);
        } catch {
          continue;
        }
        const customId = String(o?.custom_id ?? '');
        const refs = lines[customId];
        if (!refs || answered.has(customId)) continue;
        const response = o.response;
        if (response && response.status_code === 200 && response.body) {
          try {
            const vectors = decodeEmbeddings(response.body, refs.length, this.o.dimensions, this.o.model);
            refs.forEach(([key], k) => entries.push({ key, model: this.o.model, dimensions: this.o.dimensions, vector: vectors[k]! }));
            answered.add(customId);
            this.stats.completed++;
            this.stats.tokens += Number(response.body?.usage?.prompt_tokens ?? 0) || 0;
            await store(false);
            continue;
          } catch (err) {
            this.failLine(customId, refs, `malformed answer: ${describeError(err)}`, failed, answered);
            continue;
          }
        }
        const error = o.error ?? response?.body?.error;
        const code = String(error?.code ?? '');
        // Not run before the batch expired or was cancelled: sent again below.
        if (code === 'batch_expired' || code === 'batch_cancelled') continue;
        const status = response?.status_code ? `HTTP ${response.status_code}: ` : '';
        this.failLine(customId, refs, `${status}${String(error?.message ?? 'no answer')}`, failed, answered);
      }
    }
    await store(true);
    if (batch.status === 'expired') this.stats.expired++;
    if (batch.status === 'cancelled') this.stats.cancelled++;
    const rest = Object.keys(lines).filter((id) => !answered.has(id));
    if (rest.length > 0 && !(await hasResubmission(this.o.db, row.id))) await this.resubmit(row, lines, rest);
    await recordDone(this.o.db, row.id, batch.status, failed);
    for (const [k, v] of Object.entries(failed)) this.rejected.set(k, v);
    rmSync(join(this.workDir, `${row.inputsSha256}.jsonl`), { force: true });
  }

  private failLine(customId: string, refs: BatchInputRef[], reason: string, failed: Record<string, string>, answered: Set<string>) {
    for (const [key] of refs) failed[key] = `Batch API: ${redact(reason)}`;
    answered.add(customId);
    this.stats.failedLines++;
  }

  /** A new batch of the lines of `row` that got no answer. */
  private async resubmit(row: EmbeddingBatchRow, lines: Record<string, BatchInputRef[]>, customIds: string[]): Promise<void> {
    const wanted = new Set(customIds);
    const local = join(this.workDir, `${row.inputsSha256}.jsonl`);
    const source = existsSync(local) ? readLocalLines(local) : this.fileLines(row.inputFileId);
    const f = await this.newFile();
    for await (const text of source) {
      let customId = '';
      try {
        customId = String(JSON.parse(text)?.custom_id ?? '');
      } catch {
        continue;
      }
      if (!wanted.has(customId)) continue;
      const line = text + '\n';
      await f.fh.write(line);
      f.hash.update(line, 'utf8');
      f.lines[customId] = lines[customId]!;
      f.lineCount++;
      f.inputCount += lines[customId]!.length;
      f.bytes += Buffer.byteLength(line, 'utf8');
    }
    this.stats.resubmitted += f.lineCount;
    await this.submitFile(row.id);
  }

  private async *fileLines(fileId: string): AsyncGenerator<string> {
    const res = await this.client.files.content(fileId);
    if (!res.body) return;
    const rl = createInterface({ input: Readable.fromWeb(res.body as import('node:stream/web').ReadableStream), crlfDelay: Infinity });
    for await (const line of rl) if (line.trim()) yield line;
  }

  private checkStopped(): void {
    if (this.o.signal?.aborted) throw new BatchWaitStopped();
  }

  private sleep(ms: number): Promise<void> {
    this.checkStopped();
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        clearTimeout(timer);
        reject(new BatchWaitStopped());
      };
      const timer = setTimeout(() => {
        this.o.signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      this.o.signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}

async function* readLocalLines(path: string): AsyncGenerator<string> {
  const rl = createInterface({ input: createReadStream(path), crlfDelay: Infinity });
  for await (const line of rl) if (line.trim()) yield line;
}

/**
 * The provider of the load after the batches: the inputs of failed batch lines are rejected
 * (reject file, counted) as the online path rejects what the API refuses, never sent again;
 * anything else (nothing, normally: every vector is in the cache by then) goes online.
 */
export class BatchRejectsProvider implements EmbeddingProvider {
  constructor(
    private readonly inner: EmbeddingProvider,
    private readonly rejected: ReadonlyMap<string, string>,
    private readonly rejectFile?: string,
  ) {}

  get model(): string {
    return this.inner.model;
  }
  get dimensions(): number {
    return this.inner.dimensions;
  }
  get queuedTokens(): number {
    return (this.inner as { queuedTokens?: number }).queuedTokens ?? 0;
  }
  get lookaheadTokens(): number {
    return (this.inner as { lookaheadTokens?: number }).lookaheadTokens ?? 0;
  }
  get inflight(): number {
    return (this.inner as { inflight?: number }).inflight ?? 0;
  }
  async cancelQueued(): Promise<void> {
    const c = (this.inner as { cancelQueued?: () => Promise<void> }).cancelQueued;
    if (typeof c === 'function') await c.call(this.inner);
  }

  async embed(inputs: EmbedInput[], stats: EmbedStats, options: EmbedCallOptions = {}): Promise<EmbedResult[]> {
    const out: EmbedResult[] = new Array(inputs.length);
    const rest: number[] = [];
    const lines: Array<{ id: string | null; user: string | null; reason: string }> = [];
    inputs.forEach((input, i) => {
      const reason = this.rejected.get(cacheKeyForText(this.model, this.dimensions, input.text));
      if (reason === undefined) {
        rest.push(i);
        return;
      }
      out[i] = { rejected: reason };
      stats.rejected++;
      lines.push({ id: input.ref?.id ?? null, user: input.ref?.user ?? null, reason });
    });
    if (this.rejectFile && lines.length > 0) await appendRejects(this.rejectFile, lines);
    if (rest.length > 0) {
      const onResults = options.onResults;
      const answered = await this.inner.embed(
        rest.map((i) => inputs[i]!),
        stats,
        onResults ? { onResults: (r) => onResults(r.map(({ index, result }) => ({ index: rest[index]!, result }))) } : {},
      );
      rest.forEach((i, k) => (out[i] = answered[k]!));
    }
    return out;
  }
}

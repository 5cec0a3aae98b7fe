// Embeddings through the official `openai` client, against OpenAI or any compatible server
// (Azure's /openai/v1, Ollama, vLLM, TEI, a local test server).
//
// Every embed() call puts its texts in one queue the provider works through in order, so
// calls made ahead of time (the pipeline embeds batches before they are written) keep the API
// busy while there is work. One dispatcher sends from the queue:
// - requests are packed token-exact (planBatches) per call, and sized to the server's token
//   limit once an answer has said what it is (an eighth of the per-minute bucket), so a
//   request never comes near "Request too large"; one that gets it anyway is sized again,
//   and an input that can never pass is rejected, not the run;
// - a request goes out when the model of the server's rate-limit buckets (rate-limit.ts) says
//   it fits, at most `concurrency` in flight: the run sends at the refill rate the limit
//   allows instead of running into 429s;
// - the very first request is sent alone (and small), so a bad key costs exactly one, and its
//   answer brings the limits before anything else is sized;
// - retries on 408/409/429/5xx and connection errors / timeouts, exponential backoff with
//   jitter, honouring retry-after-ms / Retry-After (capped at 60 s); a 429 for the rate limit
//   does not use up --max-retries (the budget waits it out), one for an exhausted quota stops;
// - 401/403 (credentials) and 404 (model / endpoint) stop the whole run at once, abandoning
//   requests in flight;
// - a 400 on a batch is bisected down to the inputs the server refuses, which are rejected
//   (and written to the reject file) while everything else is embedded.
// The client's own retries are switched off (maxRetries: 0), so every attempt is counted.
import { setMaxListeners } from 'node:events';
import OpenAI, { APIConnectionError, APIError, APIUserAbortError } from 'openai';
import { RunError, UsageError } from '../errors.js';
import { maskUrl, redact, registerSecret } from '../secrets.js';
import { DEFAULT_MAX_INPUTS, DEFAULT_MAX_TOKENS, planBatches } from './batching.js';
import { DEFAULT_MAX_INPUT_TOKENS, DEFAULT_OPENAI_MODEL, resolveDimensions } from './models.js';
import { truncateToTokens } from './tokens.js';
import { EmbedCancelled, type EmbedCallOptions, type EmbedInput, type EmbedResult, type EmbedStats, type EmbeddingProvider } from './types.js';
import { BadInputError, classifyApiError, decodeEmbeddings, describeError } from './api-response.js';
import { parseRateLimitMessage, RateBudget, retryAfterFromHeaders, type SendTicket } from './rate-limit.js';
import { appendRejects } from './reject-file.js';

export const DEFAULT_OPENAI_BASE_URL = 'https://api.openai.com/v1';
export const DEFAULT_CONCURRENCY = 8;
export const DEFAULT_MAX_RETRIES = 6;
export const DEFAULT_TIMEOUT_MS = 120_000;
/** The first request is small: everything waits for it, and its answer sizes the rest. */
export const PROBE_MAX_TOKENS = 8192;
/** 429s for the rate limit one request may meet before the run gives up on the server. */
const RATE_LIMIT_RETRIES = 100;

export interface EmbedProgress {
  /** Inputs finished (embedded or rejected) in the current embed() call. */
  done: number;
  total: number;
  /** HTTP requests in flight right now. */
  inflight: number;
}

export interface OpenAIProviderOptions {
  /**
   * Required, always: OpenAI needs it, and a local server accepts any value (Ollama, vLLM
   * and TEI ignore it; pass e.g. OPENAI_API_KEY=local). The constructor does not read the
   * environment: createProvider() does.
   */
  apiKey?: string;
  /** Default https://api.openai.com/v1. Must be an http(s) URL. */
  baseURL?: string;
  /** Default text-embedding-3-small. */
  model?: string;
  /** --dimensions; required for a model this tool does not know. */
  dimensions?: number;
  /** Most HTTP requests in flight (default 8); the rate limit may allow fewer. */
  concurrency?: number;
  /** Retries per request after 408/409/429/5xx/network errors (default 6). */
  maxRetries?: number;
  /** Inputs per request (default 2,048). */
  maxInputs?: number;
  /** Tokens per request (default 300,000). */
  maxTokens?: number;
  /** Tokens per input; longer inputs are truncated for embedding only (default 8,191). */
  maxInputTokens?: number;
  /** Per-request timeout (default 120 s). */
  timeoutMs?: number;
  /** JSON Lines file that rejected inputs are appended to: {"id","user","reason"}. */
  rejectFile?: string;
  /** 'base64' (default, compact) or 'float'. Either way a server answering with the other works. */
  encodingFormat?: 'base64' | 'float';
  /** First backoff delay in ms (default 250); doubles per retry, with jitter. */
  retryBaseMs?: number;
  /** Longest backoff delay in ms (default 20,000). */
  retryMaxMs?: number;
  /** Called after every finished request. */
  onProgress?: (p: EmbedProgress) => void;
  /** Custom fetch (tests, proxies). */
  fetch?: typeof fetch;
}

/** One embed() call: its inputs and where their results go. */
interface Call {
  inputs: EmbedInput[];
  stats: EmbedStats;
  results: (EmbedResult | undefined)[];
  /** Inputs without a result yet. */
  left: number;
  total: number;
  onResults?: EmbedCallOptions['onResults'];
  settled: boolean;
  resolve: (r: EmbedResult[]) => void;
  reject: (err: unknown) => void;
}

/** A text to send, truncated and counted. */
interface Item {
  call: Call;
  index: number;
  text: string;
  tokens: number;
}

/** A call's texts not sent yet, and its requests as last planned (for the cap they were planned for). */
interface Segment {
  unsent: Item[];
  jobs: Item[][] | null;
  cap: number;
}

/** One request: sent, or to be sent again (after a failure, or as half of a split). */
interface Job {
  items: Item[];
  tokens: number;
  /** Failures that count against --max-retries. */
  failures: number;
  /** 429s for the rate limit (they do not). */
  rateRetries: number;
  /** Not before this time (backoff). */
  notBefore: number;
}

export class OpenAIProvider implements EmbeddingProvider {
  readonly model: string;
  readonly dimensions: number;
  /** Whether requests carry `dimensions`. */
  readonly sendDimensions: boolean;
  readonly baseURL: string;
  readonly concurrency: number;
  readonly maxRetries: number;
  readonly maxInputs: number;
  readonly maxTokens: number;
  readonly maxInputTokens: number;
  readonly rejectFile?: string;
  /** The server's rate-limit buckets as we model them. */
  readonly rate = new RateBudget();
  onProgress?: (p: EmbedProgress) => void;

  private readonly client: OpenAI;
  private readonly encodingFormat: 'base64' | 'float';
  private readonly retryBaseMs: number;
  private readonly retryMaxMs: number;
  /** Requests in flight. */
  private active = 0;
  /** Set once a request got an answer that proves the credentials and URL work. */
  private verified = false;
  /** The single request sent while unverified is in flight. */
  private probing = false;
  private rejectWrites: Promise<void> = Promise.resolve();

  /** Calls in the queue, in order; requests sent again (retries, split halves) go first. */
  private readonly segments: Segment[] = [];
  private readonly again: Job[] = [];
  private readonly calls = new Set<Call>();
  private queued = 0;
  private controller = new AbortController();
  private fatal: unknown = undefined;
  private pumping = false;
  private dirty = false;
  private timer: NodeJS.Timeout | null = null;
  private idleWaiters: Array<() => void> = [];

  constructor(opts: OpenAIProviderOptions) {
    const apiKey = opts.apiKey;
    if (!apiKey) {
      throw new UsageError('OPENAI_API_KEY is not set; set it, or use --embedder local for an offline trial run');
    }
    registerSecret(apiKey);
    this.baseURL = validateBaseURL(opts.baseURL ?? DEFAULT_OPENAI_BASE_URL);
    this.model = opts.model ?? DEFAULT_OPENAI_MODEL;
    const dims = resolveDimensions(this.model, opts.dimensions);
    this.dimensions = dims.dimensions;
    this.sendDimensions = dims.send;
    this.concurrency = positiveInt('--concurrency', opts.concurrency ?? DEFAULT_CONCURRENCY);
    this.maxRetries = nonNegativeInt('--max-retries', opts.maxRetries ?? DEFAULT_MAX_RETRIES);
    this.maxInputs = positiveInt('max inputs per request', opts.maxInputs ?? DEFAULT_MAX_INPUTS);
    this.maxTokens = positiveInt('max tokens per request', opts.maxTokens ?? DEFAULT_MAX_TOKENS);
    this.maxInputTokens = positiveInt('max tokens per input', opts.maxInputTokens ?? DEFAULT_MAX_INPUT_TOKENS);
    this.rejectFile = opts.rejectFile;
    this.encodingFormat = opts.encodingFormat ?? 'base64';
    this.retryBaseMs = opts.retryBaseMs ?? 250;
    this.retryMaxMs = opts.retryMaxMs ?? 20_000;
    this.onProgress = opts.onProgress;
    this.client = new OpenAI({
      apiKey,
      baseURL: this.baseURL,
      maxRetries: 0,
      timeout: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
      ...(opts.fetch ? { fetch: opts.fetch } : {}),
    });
    setMaxListeners(0, this.controller.signal);
  }

  /** HTTP requests in flight (for a progress bar). */
  get inflight(): number {
    return this.active;
  }

  /** Tokens queued and not sent yet. */
  get queuedTokens(): number {
    return this.queued;
  }

  /** Tokens worth queueing ahead so that every request slot has a full request to send. */
  get lookaheadTokens(): number {
    return 2 * this.concurrency * this.requestCap(false);
  }

  /** Largest input we send: the per-input limit, and never more than a whole request. */
  get perInputLimit(): number {
    return Math.min(this.maxInputTokens, this.maxTokens);
  }

  /** Tokens per request now: --max-batch-tokens, within the rate limit, small for the first request. */
  requestCap(probe: boolean): number {
    let cap = this.maxTokens;
    const q = this.rate.requestCap();
    if (q !== undefined) cap = Math.min(cap, q);
    if (probe) cap = Math.min(cap, PROBE_MAX_TOKENS);
    return Math.max(1, cap);
  }

  /**
   * Dry-run preflight: tokens and requests for these (distinct, uncached) texts, as one call
   * would send them (`first`: the run's first call, whose first request is the small probe).
   * Sends nothing; the server's rate limit is not known yet, so requests may be more.
   */
  plan(texts: string[], opts: { first?: boolean } = {}): { tokens: number; requests: number; truncated: number } {
    let tokens = 0;
    let truncated = 0;
    const items: { tokens: number }[] = [];
    for (const text of texts) {
      if (text.length === 0) continue;
      const t = truncateToTokens(text, this.perInputLimit);
      if (t.truncated) truncated++;
      tokens += t.tokens;
      items.push({ tokens: t.tokens });
    }
    let requests = 0;
    let rest = items;
    if (opts.first && !this.verified && items.length > 0) {
      const probe = planBatches(items, { maxInputs: this.maxInputs, maxTokens: this.requestCap(true) })[0]!;
      const sent = new Set(probe);
      rest = items.filter((_, i) => !sent.has(i));
      requests = 1;
    }
    requests += planBatches(rest, { maxInputs: this.maxInputs, maxTokens: this.requestCap(false) }).length;
    return { tokens, requests, truncated };
  }

  embed(inputs: EmbedInput[], stats: EmbedStats, options: EmbedCallOptions = {}): Promise<EmbedResult[]> {
    // A run that failed is over; a later call (a test's next step) starts afresh.
    if (this.fatal !== undefined && this.active === 0) this.restart();
    if (this.fatal !== undefined) return Promise.reject(this.fatal);
    return new Promise<EmbedResult[]>((resolve, reject) => {
      const call: Call = {
        inputs,
        stats,
        results: new Array(inputs.length),
        left: inputs.length,
        total: inputs.length,
        ...(options.onResults ? { onResults: options.onResults } : {}),
        settled: false,
        resolve,
        reject,
      };
      this.calls.add(call);
      const items: Item[] = [];
      for (let i = 0; i < inputs.length; i++) {
        const text = inputs[i]!.text;
        if (text.length === 0) {
          // The API answers 400 to an empty string; no need to spend a request learning that.
          this.rejectItem({ call, index: i, text, tokens: 0 }, 'empty text: the embeddings API does not accept empty input', 'empty text');
          continue;
        }
        const t = truncateToTokens(text, this.perInputLimit);
        if (t.truncated) stats.truncated++;
        items.push({ call, index: i, text: t.text, tokens: t.tokens });
      }
      if (items.length > 0) {
        this.segments.push({ unsent: items, jobs: null, cap: 0 });
        this.queued += items.reduce((s, it) => s + it.tokens, 0);
        this.pump();
      }
      this.maybeFinish(call);
    });
  }

  /**
   * Stops sending: every text not sent yet is dropped and its call rejected with
   * EmbedCancelled; resolves once the requests in flight are answered (and their results
   * handed over, so what was paid for is kept).
   */
  async cancelQueued(): Promise<void> {
    const err = new EmbedCancelled();
    const dropped = new Set<Call>();
    for (const seg of this.segments) for (const it of seg.unsent) dropped.add(it.call);
    for (const job of this.again) for (const it of job.items) dropped.add(it.call);
    this.segments.length = 0;
    this.again.length = 0;
    this.queued = 0;
    for (const call of dropped) this.settle(call, err);
    await this.idle();
  }

  /** Resolves when no request is in flight. */
  idle(): Promise<void> {
    if (this.active === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  // ------------------------------------------------------------ the dispatcher

  private pump(): void {
    if (this.pumping) {
      this.dirty = true;
      return;
    }
    this.pumping = true;
    this.dispatch()
      .catch((err: unknown) => this.fail(err))
      .finally(() => {
        this.pumping = false;
        if (this.dirty) {
          this.dirty = false;
          this.pump();
        }
      });
  }

  /** Sends while a request slot, the probe rule and the rate budget allow; returns when blocked. */
  private async dispatch(): Promise<void> {
    for (;;) {
      this.dirty = false;
      if (this.fatal !== undefined) return;
      if (!this.verified && this.probing) return;
      if (this.active >= this.concurrency) return;
      const probe = !this.verified;
      const next = this.nextJob(probe);
      if (next === null) return;
      if (typeof next === 'number') {
        this.wakeIn(next);
        return;
      }
      const job = next;
      if (probe) this.probing = true;
      let ticket: SendTicket;
      const waitStart = Date.now();
      try {
        ticket = await this.rate.spend(job.tokens, this.controller.signal);
      } catch (err) {
        if (probe) this.probing = false;
        if (this.fatal === undefined) this.again.unshift(job);
        if (err instanceof APIUserAbortError) return;
        throw err;
      }
      const stats = job.items[0]!.call.stats;
      stats.throttledMs += Date.now() - waitStart;
      this.active++;
      void this.send(job, ticket, probe);
    }
  }

  /** The next request to send, the ms until one may be sent (backoff), or null for none. */
  private nextJob(probe: boolean): Job | number | null {
    const now = Date.now();
    let soonest = Infinity;
    for (let i = 0; i < this.again.length; i++) {
      const job = this.again[i]!;
      if (job.notBefore <= now) {
        this.again.splice(i, 1);
        const cap = this.requestCap(probe);
        if (job.items.length > 1 && job.tokens > cap) {
          // Sized before the limit was known (or it is lower now): sized again.
          const parts = planBatches(job.items, { maxInputs: this.maxInputs, maxTokens: cap }).map((b) => ({
            ...newJob(b.map((k) => job.items[k]!)),
            notBefore: job.notBefore,
          }));
          this.again.splice(i, 0, ...parts.slice(1));
          this.queued -= parts[0]!.tokens;
          return parts[0]!;
        }
        this.queued -= job.tokens;
        return job;
      }
      soonest = Math.min(soonest, job.notBefore);
    }
    while (this.segments.length > 0) {
      const items = this.takeFromSegments(probe);
      if (items.length > 0) return { items, tokens: sumTokens(items), failures: 0, rateRetries: 0, notBefore: 0 };
    }
    return soonest === Infinity ? null : soonest - now;
  }

  /**
   * The next request from the calls in order: the head call's next planned request. Requests
   * never mix calls: packing a call's remainder with the next call's texts would make the
   * request count depend on timing, and the dry run promises the real run's count exactly.
   */
  private takeFromSegments(probe: boolean): Item[] {
    const cap = this.requestCap(probe);
    const seg = this.segments[0]!;
    const ceiling = this.rate.inputCeiling();
    if (ceiling !== undefined) {
      // Over the whole per-minute limit: no request holding it can ever pass.
      const tooBig = seg.unsent.filter((it) => it.tokens > ceiling);
      if (tooBig.length > 0) {
        for (const it of tooBig) {
          this.queued -= it.tokens;
          this.rejectItem(it, `input of ${it.tokens} tokens is over the API's rate limit of ${this.rate.tokens.limit} tokens per minute`);
        }
        seg.unsent = seg.unsent.filter((it) => it.tokens <= ceiling);
        seg.jobs = null;
      }
    }
    if (seg.unsent.length === 0) {
      this.segments.shift();
      return [];
    }
    if (!seg.jobs || seg.cap !== cap) {
      seg.jobs = planBatches(seg.unsent, { maxInputs: this.maxInputs, maxTokens: cap }).map((b) => b.map((k) => seg.unsent[k]!));
      seg.cap = cap;
    }
    const items = seg.jobs.shift()!;
    const taken = new Set(items);
    seg.unsent = seg.unsent.filter((it) => !taken.has(it));
    if (seg.unsent.length === 0) this.segments.shift();
    const tokens = sumTokens(items);
    this.queued -= tokens;
    return items;
  }

  private wakeIn(ms: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.pump();
    }, Math.max(1, ms));
  }

  // ------------------------------------------------------------ one request

  private async send(job: Job, ticket: SendTicket, probe: boolean): Promise<void> {
    const stats = job.items[0]!.call.stats;
    try {
      stats.requests++;
      const texts = job.items.map((it) => it.text);
      let res: { data: OpenAI.CreateEmbeddingResponse; headers: Headers };
      res = await this.request(texts, this.controller.signal);
      this.verified = true;
      this.rate.update(res.headers, ticket);
      stats.rateLimit = this.rate.perMinute;
      const vectors = decodeEmbeddings(res.data, texts.length, this.dimensions, this.model);
      await this.deliver(job.items.map((it, k) => [it, { vector: vectors[k]! }] as const));
      for (const it of job.items) it.call.stats.tokens += it.tokens;
    } catch (err) {
      await this.failed(job, ticket, err).catch((e: unknown) => this.fail(e));
    } finally {
      this.active--;
      if (probe) this.probing = false;
      if (this.active === 0) for (const w of this.idleWaiters.splice(0)) w();
      this.pump();
    }
  }

  /** What a failed request means: retry it, split it, reject its inputs, or stop the run. */
  private async failed(job: Job, ticket: SendTicket, err: unknown): Promise<void> {
    if (this.fatal !== undefined) return;
    const stats = job.items[0]!.call.stats;
    if (err instanceof APIError && err.status !== undefined && err.status !== 401 && err.status !== 403) this.verified = true;
    if (err instanceof APIError && err.status === 429) {
      stats.rateLimited++;
      this.rate.update(err.headers, ticket);
      const info = parseRateLimitMessage(err.message);
      if (err.code === 'insufficient_quota' || /exceeded your current quota/i.test(err.message)) {
        throw new RunError(
          `the embedding API refused the request: the account's quota is used up (429: ${redact(err.message)}); add credit or use another key`,
          1,
        );
      }
      const retryMs = retryAfterFromHeaders(err.headers) ?? info.retryMs;
      this.rate.rejected(ticket, info, job.tokens, retryMs);
      stats.rateLimit = this.rate.perMinute;
      if (info.kind === 'too-large') {
        if (job.items.length === 1) {
          await this.rejectItem(job.items[0]!, `HTTP 429: ${redact(err.message)}`);
          return;
        }
        // Split in two and go on: the halves are sized again from what the server said.
        const [a, b] = halves(job.items);
        this.requeue(newJob(b), newJob(a));
        return;
      }
      if (info.kind === 'rate' || retryMs !== undefined || this.rate.tokens.limit !== undefined) {
        // The budget waits it out; only a server that never lets anything through ends the run.
        if (++job.rateRetries > RATE_LIMIT_RETRIES) throw this.exhausted(err, RATE_LIMIT_RETRIES);
        stats.retries++;
        if (retryMs !== undefined && this.rate.tokens.limit === undefined) this.rate.pause(retryMs);
        job.notBefore = Date.now() + (retryMs ?? (this.rate.tokens.limit === undefined ? this.backoffMs(job.rateRetries) : 0));
        this.requeue(job);
        return;
      }
    }
    const c = classifyApiError(err, this.model, this.baseURL);
    if (c.kind === 'retry') {
      if (++job.failures > this.maxRetries) throw this.exhausted(err, this.maxRetries);
      stats.retries++;
      if (c.retryAfterMs !== undefined && c.retryAfterMs > 0) this.rate.pause(c.retryAfterMs);
      job.notBefore = Date.now() + (c.retryAfterMs ?? this.backoffMs(job.failures));
      this.requeue(job);
      return;
    }
    if (c.error instanceof BadInputError) {
      if (job.items.length === 1) {
        await this.rejectItem(job.items[0]!, c.error.reason);
        return;
      }
      // Bisect: each half is within the limits since the whole was.
      const mid = Math.ceil(job.items.length / 2);
      this.requeue(newJob(job.items.slice(mid)), newJob(job.items.slice(0, mid)));
      return;
    }
    throw c.error;
  }

  private exhausted(err: unknown, retries: number): RunError {
    const n = `${retries} ${retries === 1 ? 'retry' : 'retries'}`;
    if (err instanceof APIConnectionError) {
      return new RunError(
        `cannot reach the embedding API at ${maskUrl(this.baseURL)} after ${n}: ${describeError(err)} (check OPENAI_BASE_URL and the network; ` +
          `--max-retries sets how long to keep trying)`,
        1,
      );
    }
    return new RunError(`embedding request failed after ${n}: ${describeError(err)} (raise --max-retries or lower --concurrency)`, 1);
  }

  /** Puts requests back at the front of the queue; the last argument goes out first. */
  private requeue(...jobs: Job[]): void {
    for (const job of jobs) {
      this.again.unshift(job);
      this.queued += job.tokens;
    }
  }

  /** Exponential backoff with equal jitter: base·2^(n-1), capped, then 50–100% of it. */
  backoffMs(retryNumber: number): number {
    const exp = Math.min(this.retryMaxMs, this.retryBaseMs * 2 ** Math.max(0, retryNumber - 1));
    return Math.round(exp / 2 + Math.random() * (exp / 2));
  }

  private async request(texts: string[], signal: AbortSignal) {
    const body: OpenAI.EmbeddingCreateParams = {
      model: this.model,
      input: texts,
      encoding_format: this.encodingFormat,
      ...(this.sendDimensions ? { dimensions: this.dimensions } : {}),
    };
    const { data, response } = await this.client.embeddings.create(body, { signal }).withResponse();
    return { data, headers: response.headers };
  }

  // ------------------------------------------------------------ results

  /** Hands results to their calls: each call's onResults first (the cache write), then the results. */
  private async deliver(pairs: ReadonlyArray<readonly [Item, EmbedResult]>): Promise<void> {
    const byCall = new Map<Call, Array<readonly [Item, EmbedResult]>>();
    for (const p of pairs) {
      const list = byCall.get(p[0].call) ?? [];
      list.push(p);
      byCall.set(p[0].call, list);
    }
    for (const [call, list] of byCall) {
      if (call.onResults) await call.onResults(list.map(([it, r]) => ({ index: it.index, result: r })));
      for (const [it, r] of list) {
        if (call.results[it.index] === undefined) call.left--;
        call.results[it.index] = r;
      }
      if (!call.settled) this.onProgress?.({ done: call.total - call.left, total: call.total, inflight: this.active });
      this.maybeFinish(call);
    }
  }

  private async rejectItem(it: Item, reason: string, fileReason = reason): Promise<void> {
    it.call.stats.rejected++;
    const write = this.writeReject(it.call.inputs[it.index]!, fileReason);
    await this.deliver([[it, { rejected: reason }]]);
    await write;
  }

  private maybeFinish(call: Call): void {
    if (call.left > 0 || call.settled) return;
    call.settled = true;
    this.calls.delete(call);
    // The reject file is complete for the call before it returns.
    const results = call.results.map((r, i) => r ?? { rejected: `internal error: no result for input ${i}` });
    this.rejectWrites.then(
      () => call.resolve(results),
      (err: unknown) => call.reject(err),
    );
  }

  private settle(call: Call, err: unknown): void {
    if (call.settled) return;
    call.settled = true;
    this.calls.delete(call);
    call.reject(err);
  }

  /** A fatal error: every call fails with it, requests in flight are abandoned. */
  private fail(err: unknown): void {
    if (this.fatal !== undefined) return;
    this.fatal = err;
    this.controller.abort();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.segments.length = 0;
    this.again.length = 0;
    this.queued = 0;
    for (const call of [...this.calls]) this.settle(call, err);
  }

  private restart(): void {
    this.fatal = undefined;
    this.controller = new AbortController();
    setMaxListeners(0, this.controller.signal);
  }

  // ------------------------------------------------------------ reject file

  private writeReject(input: EmbedInput, reason: string): Promise<void> {
    if (!this.rejectFile) return Promise.resolve();
    this.rejectWrites = appendRejects(this.rejectFile, [{ id: input.ref?.id ?? null, user: input.ref?.user ?? null, reason }]);
    return this.rejectWrites;
  }
}

function sumTokens(items: readonly Item[]): number {
  let s = 0;
  for (const it of items) s += it.tokens;
  return s;
}

function newJob(items: Item[]): Job {
  return { items, tokens: sumTokens(items), failures: 0, rateRetries: 0, notBefore: 0 };
}

/** Two requests of about half the tokens each. */
function halves(items: Item[]): [Item[], Item[]] {
  const total = sumTokens(items);
  let acc = 0;
  let k = 0;
  while (k < items.length - 1 && acc + items[k]!.tokens <= total / 2) acc += items[k++]!.tokens;
  if (k === 0) k = 1;
  return [items.slice(0, k), items.slice(k)];
}

// ------------------------------------------------------------ helpers

export function validateBaseURL(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UsageError(`OPENAI_BASE_URL is not a URL: ${maskUrl(raw)} (expected e.g. https://api.openai.com/v1)`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new UsageError(`OPENAI_BASE_URL must be an http(s) URL, got ${maskUrl(raw)} (expected e.g. https://api.openai.com/v1)`);
  }
  return raw.replace(/\/+$/, '');
}

function positiveInt(name: string, n: number): number {
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`${name} must be a positive integer (got ${n})`);
  return n;
}

function nonNegativeInt(name: string, n: number): number {
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`${name} must be a non-negative integer (got ${n})`);
  return n;
}



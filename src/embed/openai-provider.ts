// Embeddings through the official `openai` client, against OpenAI or any compatible server
// (Azure's /openai/v1, Ollama, vLLM, TEI, a local test server).
//
// The client's own retries are switched off (maxRetries: 0) and done here with p-retry, so
// every attempt and every retry is counted, and a 401 is never retried. What this adds:
// - token-exact batching (planBatches) and truncation of inputs over the per-input limit;
// - retries on 408/409/429/5xx and connection errors / timeouts, exponential backoff with
//   jitter, honouring retry-after-ms / Retry-After (capped at 60 s);
// - 401/403 (credentials) and 404 (model / endpoint) stop the whole run at once, abandoning
//   requests in flight; the very first request is sent alone, so a bad key costs exactly one;
// - a 400 on a batch is bisected down to the inputs the server refuses, which are rejected
//   (and written to the reject file) while everything else is embedded;
// - rate control from x-ratelimit-remaining-* / x-ratelimit-reset-* headers: when the budget
//   the server reported is used up, wait for its reset instead of running into a 429;
// - at most `concurrency` HTTP requests in flight.
import { setMaxListeners } from 'node:events';
import OpenAI, { APIConnectionError, APIError, APIUserAbortError } from 'openai';
import pRetry, { AbortError } from 'p-retry';
import { RunError, UsageError } from '../errors.js';
import { maskUrl, registerSecret } from '../secrets.js';
import { DEFAULT_MAX_INPUTS, DEFAULT_MAX_TOKENS, planBatches } from './batching.js';
import { DEFAULT_MAX_INPUT_TOKENS, DEFAULT_OPENAI_MODEL, resolveDimensions } from './models.js';
import { truncateToTokens } from './tokens.js';
import type { EmbedInput, EmbedResult, EmbedStats, EmbeddingProvider } from './types.js';
import { BadInputError, classifyApiError, decodeEmbeddings, describeError } from './api-response.js';
import { RateBudget, RequestSlots, sleep } from './rate-limit.js';
import { appendRejects } from './reject-file.js';

export const DEFAULT_OPENAI_BASE_URL = 'https://api.openai.com/v1';
export const DEFAULT_CONCURRENCY = 4;
export const DEFAULT_MAX_RETRIES = 6;
export const DEFAULT_TIMEOUT_MS = 120_000;

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
  /** HTTP requests in flight (default 4). */
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
  /** Rate-limit budget as last reported by the server, minus what we sent since. */
  readonly rate = new RateBudget();
  onProgress?: (p: EmbedProgress) => void;

  private readonly client: OpenAI;
  private readonly encodingFormat: 'base64' | 'float';
  private readonly retryBaseMs: number;
  private readonly retryMaxMs: number;
  private active = 0;
  private readonly slots: RequestSlots;
  /** Set once a request got an answer that proves the credentials and URL work. */
  private verified = false;
  /** The single request sent while unverified. */
  private probe: Promise<unknown> | null = null;
  private rejectWrites: Promise<void> = Promise.resolve();

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
    this.slots = new RequestSlots(this.concurrency);
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
  }

  /** HTTP requests in flight (for a progress bar). */
  get inflight(): number {
    return this.active;
  }

  /** Largest input we send: the per-input limit, and never more than a whole request. */
  get perInputLimit(): number {
    return Math.min(this.maxInputTokens, this.maxTokens);
  }

  /** Dry-run preflight: tokens and requests for these (distinct, uncached) texts. Sends nothing. */
  plan(texts: string[]): { tokens: number; requests: number; truncated: number } {
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
    const requests = planBatches(items, { maxInputs: this.maxInputs, maxTokens: this.maxTokens }).length;
    return { tokens, requests, truncated };
  }

  async embed(inputs: EmbedInput[], stats: EmbedStats): Promise<EmbedResult[]> {
    const results: (EmbedResult | undefined)[] = new Array(inputs.length);
    const texts: string[] = new Array(inputs.length);
    const tokens: number[] = new Array(inputs.length);
    const sendable: number[] = [];
    for (let i = 0; i < inputs.length; i++) {
      const text = inputs[i]!.text;
      if (text.length === 0) {
        // The API answers 400 to an empty string; no need to spend a request learning that.
        results[i] = { rejected: 'empty text: the embeddings API does not accept empty input' };
        stats.rejected++;
        await this.writeReject(inputs[i]!, 'empty text');
        continue;
      }
      const t = truncateToTokens(text, this.perInputLimit);
      if (t.truncated) stats.truncated++;
      texts[i] = t.text;
      tokens[i] = t.tokens;
      sendable.push(i);
    }

    const plan = planBatches(
      sendable.map((i) => ({ tokens: tokens[i]! })),
      { maxInputs: this.maxInputs, maxTokens: this.maxTokens },
    ).map((b) => b.map((k) => sendable[k]!));

    const run: RunState = {
      controller: new AbortController(),
      fatal: undefined,
      done: inputs.length - sendable.length,
      total: inputs.length,
    };
    // One abort signal is shared by every request and backoff sleep of the call.
    setMaxListeners(0, run.controller.signal);

    const embedBatch = async (batch: number[]): Promise<void> => {
      try {
        const vectors = await this.requestWithRetries(
          batch.map((i) => texts[i]!),
          batch.reduce((s, i) => s + tokens[i]!, 0),
          stats,
          run,
        );
        batch.forEach((i, k) => (results[i] = { vector: vectors[k]! }));
        run.done += batch.length;
        this.onProgress?.({ done: run.done, total: run.total, inflight: this.active });
      } catch (err) {
        if (!(err instanceof BadInputError)) throw err;
        if (batch.length === 1) {
          const i = batch[0]!;
          results[i] = { rejected: err.reason };
          stats.rejected++;
          await this.writeReject(inputs[i]!, err.reason);
          run.done += 1;
          this.onProgress?.({ done: run.done, total: run.total, inflight: this.active });
          return;
        }
        // Bisect: each half is within the limits since the whole was.
        const mid = Math.ceil(batch.length / 2);
        await Promise.all([embedBatch(batch.slice(0, mid)), embedBatch(batch.slice(mid))]);
      }
    };

    const settled = await Promise.allSettled(
      plan.map((batch) =>
        embedBatch(batch).catch((err: unknown) => {
          // First fatal error stops everything: abandon requests in flight and queued.
          if (!run.fatal) {
            run.fatal = err;
            run.controller.abort();
          }
          throw err;
        }),
      ),
    );
    await this.rejectWrites;
    if (run.fatal) throw run.fatal;
    const failed = settled.find((s) => s.status === 'rejected');
    if (failed) throw (failed as PromiseRejectedResult).reason;
    return results.map((r, i) => r ?? { rejected: `internal error: no result for input ${i}` });
  }

  // ------------------------------------------------------------ one request, with retries

  private async requestWithRetries(
    texts: string[],
    tokens: number,
    stats: EmbedStats,
    run: RunState,
  ): Promise<Float32Array[]> {
    let retryAfterMs: number | undefined;
    let lastWasRetryable = false;
    try {
      return await pRetry(
        async () => {
          retryAfterMs = undefined;
          lastWasRetryable = false;
          if (run.controller.signal.aborted) throw new AbortError(new APIUserAbortError());
          try {
            return await this.attempt(texts, tokens, stats, run);
          } catch (err) {
            const c = classifyApiError(err, this.model, this.baseURL);
            if (c.kind === 'retry') {
              retryAfterMs = c.retryAfterMs;
              lastWasRetryable = true;
              throw err instanceof Error ? err : new Error(String(err));
            }
            // p-retry rethrows an AbortError's original error without retrying.
            throw new AbortError(c.error);
          }
        },
        {
          retries: this.maxRetries,
          // Delays are ours (backoff or the server's Retry-After), slept in onFailedAttempt;
          // p-retry's own delay is zero with these settings.
          minTimeout: 0,
          factor: 1,
          randomize: false,
          onFailedAttempt: async ({ retriesLeft, retriesConsumed }) => {
            if (retriesLeft <= 0) return;
            stats.retries++;
            const delay = retryAfterMs ?? this.backoffMs(retriesConsumed + 1);
            if (retryAfterMs !== undefined && retryAfterMs > 0) {
              // The server asked us to hold off: every request, not just this one.
              this.rate.pause(retryAfterMs);
            }
            await sleep(delay, run.controller.signal);
          },
        },
      );
    } catch (err) {
      if (run.controller.signal.aborted && run.fatal) throw run.fatal;
      if (!lastWasRetryable) throw err;
      if (err instanceof APIConnectionError) {
        throw new RunError(
          `cannot reach the embedding API at ${maskUrl(this.baseURL)} after ${this.maxRetries} ` +
            `${this.maxRetries === 1 ? 'retry' : 'retries'}: ${describeError(err)} (check OPENAI_BASE_URL and the network; ` +
            `--max-retries sets how long to keep trying)`,
          1,
        );
      }
      throw new RunError(
        `embedding request failed after ${this.maxRetries} ${this.maxRetries === 1 ? 'retry' : 'retries'}: ` +
          `${describeError(err)} (raise --max-retries or lower --concurrency)`,
        1,
      );
    }
  }

  /** Exponential backoff with equal jitter: base·2^(n-1), capped, then 50–100% of it. */
  backoffMs(retryNumber: number): number {
    const exp = Math.min(this.retryMaxMs, this.retryBaseMs * 2 ** Math.max(0, retryNumber - 1));
    return Math.round(exp / 2 + Math.random() * (exp / 2));
  }

  private async attempt(texts: string[], tokens: number, stats: EmbedStats, run: RunState): Promise<Float32Array[]> {
    const signal = run.controller.signal;
    // Until one request has proved the key and URL, send one at a time: a bad key costs one request.
    while (!this.verified && this.probe) {
      await this.probe;
    }
    if (signal.aborted) throw new APIUserAbortError();
    let release: (() => void) | undefined;
    let endProbe: (() => void) | undefined;
    if (!this.verified) {
      this.probe = new Promise<void>((resolve) => (endProbe = resolve));
    } else {
      release = await this.slots.acquire(signal);
    }
    try {
      await this.rate.spend(tokens, signal);
      stats.requests++;
      this.active++;
      let res: { data: OpenAI.CreateEmbeddingResponse; headers: Headers };
      try {
        res = await this.send(texts, signal);
      } finally {
        this.active--;
      }
      this.verified = true;
      this.rate.update(res.headers);
      const vectors = decodeEmbeddings(res.data, texts.length, this.dimensions, this.model);
      stats.tokens += tokens;
      return vectors;
    } catch (err) {
      if (err instanceof APIError && err.status !== undefined && err.status !== 401 && err.status !== 403) {
        this.verified = true;
      }
      // A fatal answer stops the run now, before anyone waiting on this request sends another.
      const c = classifyApiError(err, this.model, this.baseURL);
      if (c.kind === 'stop' && c.error instanceof RunError && !run.fatal) {
        run.fatal = c.error;
        run.controller.abort();
      }
      throw err;
    } finally {
      release?.();
      if (endProbe) {
        this.probe = null;
        endProbe();
      }
    }
  }

  private async send(texts: string[], signal: AbortSignal) {
    const body: OpenAI.EmbeddingCreateParams = {
      model: this.model,
      input: texts,
      encoding_format: this.encodingFormat,
      ...(this.sendDimensions ? { dimensions: this.dimensions } : {}),
    };
    const { data, response } = await this.client.embeddings.create(body, { signal }).withResponse();
    return { data, headers: response.headers };
  }


  // ------------------------------------------------------------ reject file

  private writeReject(input: EmbedInput, reason: string): Promise<void> {
    if (!this.rejectFile) return Promise.resolve();
    this.rejectWrites = appendRejects(this.rejectFile, [{ id: input.ref?.id ?? null, user: input.ref?.user ?? null, reason }]);
    return this.rejectWrites;
  }
}

interface RunState {
  controller: AbortController;
  fatal: unknown;
  done: number;
  total: number;
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



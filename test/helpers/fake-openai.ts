// A local OpenAI-compatible embeddings server for tests: node:http on 127.0.0.1, a random
// port. Vectors are a deterministic function of (model, text, dimensions), so a run with
// faults must produce exactly the vectors of a clean run. It counts and records every
// request and can inject faults per request.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createHash } from 'node:crypto';
import type { AddressInfo } from 'node:net';
// Token counts come from the tokenizer's own cl100k_base encoding (what OpenAI's embedding
// models use), not from src/embed/tokens.ts: the fake must not share the code under test.
import { encode as encodeCl100k } from 'gpt-tokenizer/encoding/cl100k_base';
import { createFakeBatches, type FakeBatches, type FakeBatchesOptions } from './fake-openai-batches.js';

export type Fault =
  | { status: 429; retryAfter?: string; retryAfterMs?: number; headers?: Record<string, string> }
  | { status: number; body?: unknown; headers?: Record<string, string> }
  | { delayMs: number }
  /** Answer normally once this settles (holds a request for as long as a test needs). */
  | { hold: Promise<unknown> }
  | { destroy: true };

export interface RecordedRequest {
  /** 1-based request number. */
  n: number;
  method: string;
  path: string;
  authorization: string | undefined;
  body: any;
  /** Inputs in the request (0 for non-embedding requests). */
  inputs: number;
  /** HTTP status answered (0 if the socket was destroyed). */
  status: number;
}

export interface RateHeaders {
  remainingRequests?: number;
  remainingTokens?: number;
  resetRequests?: string;
  resetTokens?: string;
}

/**
 * OpenAI's rate limits, as the real API enforces them: a tokens bucket and a requests bucket,
 * each refilling continuously (limit / window) up to the limit. A request is admitted when
 * both hold enough, and counted with the server's own token estimate (not the tokenizer's
 * exact count). Answers carry x-ratelimit-limit|remaining|reset-*; refusals are 429s with
 * OpenAI's wording and retry-after-ms. Server time grows with the tokens in the request.
 */
export interface FakeRateLimit {
  /** Bucket size = the per-window limit (x-ratelimit-limit-tokens). */
  tokens: number;
  requests: number;
  /** Time a bucket takes to refill from empty (OpenAI: 60,000 ms; tests compress it). */
  windowMs?: number;
  /** Server time: fixed part and per 1,000 tokens (default 2 ms + 0.1 ms per 1k). */
  latencyMs?: number;
  msPer1kTokens?: number;
  /** The server's token count for a request (default: tokenizer count + 3%). */
  estimate?: (tokens: number, inputs: string[]) => number;
}

/** What the rate-limited fake saw. */
export interface FakeRateStats {
  admitted: number;
  /** Tokens admitted, as the server counted them (its estimate). */
  tokens: number;
  /** 429s: rate limit reached / request too large. */
  rateLimited: number;
  tooLarge: number;
  /** When the first request was admitted and the last answer was sent (ms epoch). */
  firstAt: number;
  lastAt: number;
  /** Most requests in flight at once. */
  peakInflight: number;
}

export interface FakeOpenAIOptions {
  /** Continuous-bucket rate limits (see FakeRateLimit). */
  rateLimit?: FakeRateLimit;
  /** When set, requests must carry `Authorization: Bearer <apiKey>`, else 401. */
  apiKey?: string;
  /** Models the server has, with their native width. Default: the three OpenAI embedding models. */
  models?: Record<string, number>;
  /** Any input containing this string gets the whole request a 400. */
  poison?: string;
  /** Any input over this many tokens gets the request a 400 (OpenAI: 8192). */
  maxInputTokens?: number;
  /** Requests with more inputs / tokens than this get a 400. */
  maxInputs?: number;
  maxTokens?: number;
  /** x-ratelimit-* headers on successful answers. */
  rateHeaders?: RateHeaders | ((n: number) => RateHeaders | undefined);
  /** Decides a fault per embeddings request (n is 1-based over all requests). */
  fault?: (n: number, body: any) => Fault | undefined;
  /** Ignore `dimensions` (like a server that does not support it). */
  ignoreDimensions?: boolean;
  /** Serve the Files and Batches endpoints too (fake-openai-batches.ts); without it they are 404s. */
  batches?: FakeBatchesOptions;
}

export interface FakeOpenAI {
  /** Base URL, ending in /v1. */
  url: string;
  requests: RecordedRequest[];
  /** Embedding requests only. */
  readonly embeddingRequests: RecordedRequest[];
  setFaults(fault: FakeOpenAIOptions['fault']): void;
  setOptions(opts: Partial<FakeOpenAIOptions>): void;
  /** The rate-limited mode's counters (reset() clears them and refills the buckets). */
  readonly rateStats: FakeRateStats;
  /** The Files and Batches endpoints (served when started with the `batches` option). */
  readonly batches: FakeBatches;
  reset(): void;
  close(): Promise<void>;
}

const DEFAULT_MODELS: Record<string, number> = {
  'text-embedding-3-small': 1536,
  'text-embedding-3-large': 3072,
  'text-embedding-ada-002': 1536,
};

/** The vector the fake server returns for `text`: seeded by sha256(model|text), unit length. */
export function fakeVector(model: string, text: string, dimensions: number): Float32Array {
  const seed = createHash('sha256').update(`${model}|${text}`, 'utf8').digest();
  let a = seed.readUInt32LE(0);
  const out = new Float32Array(dimensions);
  let norm = 0;
  for (let i = 0; i < dimensions; i++) {
    // mulberry32
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    const r = ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    out[i] = r * 2 - 1;
    norm += out[i]! * out[i]!;
  }
  norm = Math.sqrt(norm);
  for (let i = 0; i < dimensions; i++) out[i] = out[i]! / norm;
  return out;
}

/** Little-endian float32 bytes, base64 (OpenAI's encoding_format: "base64"). */
export function float32ToBase64LE(v: Float32Array): string {
  const buf = Buffer.alloc(v.length * 4);
  for (let i = 0; i < v.length; i++) buf.writeFloatLE(v[i]!, i * 4);
  return buf.toString('base64');
}

/**
 * Tokens in `text` as the embeddings endpoint counts them: cl100k_base, with text such as
 * "<|endoftext|>" read as ordinary text (the API does not treat input as control tokens;
 * gpt-tokenizer would throw on it by default).
 */
function cl100kTokens(text: string): number {
  return encodeCl100k(text, { disallowedSpecial: new Set<string>() }).length;
}

function errorBody(message: string, type: string, code: string | null = null, param: string | null = null) {
  return { error: { message, type, param, code } };
}

/** A duration as OpenAI writes it: "120ms", "2.5s", "6m0s". */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.ceil(ms))}ms`;
  if (ms < 60_000) return `${Number((ms / 1000).toFixed(3))}s`;
  const m = Math.floor(ms / 60_000);
  return `${m}m${Number(((ms - m * 60_000) / 1000).toFixed(3))}s`;
}

function emptyRateStats(): FakeRateStats {
  return { admitted: 0, tokens: 0, rateLimited: 0, tooLarge: 0, firstAt: 0, lastAt: 0, peakInflight: 0 };
}

export async function startFakeOpenAI(initial: FakeOpenAIOptions = {}): Promise<FakeOpenAI> {
  let opts: FakeOpenAIOptions = { ...initial };
  const requests: RecordedRequest[] = [];
  let rateStats = emptyRateStats();
  let inflight = 0;
  // Bucket levels; undefined = full (set on first use, so a later setOptions starts full).
  let buckets: { tokens: number; requests: number; at: number } | undefined;
  const batchesFake = createFakeBatches(
    { vector: fakeVector, toBase64: float32ToBase64LE, tokens: cl100kTokens, models: () => opts.models ?? DEFAULT_MODELS },
    initial.batches ?? {},
  );

  const send = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
    res.end(text);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const rawBytes = Buffer.concat(chunks);
    const raw = rawBytes.toString('utf8');
    let body: any = null;
    try {
      body = raw ? JSON.parse(raw) : null;
    } catch {
      body = raw;
    }
    const path = (req.url ?? '').split('?')[0]!;
    const rec: RecordedRequest = {
      n: requests.length + 1,
      method: req.method ?? '',
      path,
      authorization: req.headers.authorization,
      body,
      inputs: 0,
      status: 0,
    };
    requests.push(rec);
    const reply = (status: number, b: unknown, headers?: Record<string, string>) => {
      rec.status = status;
      send(res, status, b, headers);
    };

    if (opts.apiKey !== undefined && req.headers.authorization !== `Bearer ${opts.apiKey}`) {
      return reply(401, errorBody('Incorrect API key provided.', 'invalid_request_error', 'invalid_api_key'));
    }
    const models = opts.models ?? DEFAULT_MODELS;

    if (req.method === 'GET' && path === '/v1/models') {
      return reply(200, {
        object: 'list',
        data: Object.keys(models).map((id) => ({ id, object: 'model', created: 0, owned_by: 'fake' })),
      });
    }
    if (opts.batches && (path.startsWith('/v1/files') || path.startsWith('/v1/batches'))) {
      const replyText = (status: number, text: string) => {
        rec.status = status;
        res.writeHead(status, { 'content-type': 'application/octet-stream', 'content-length': Buffer.byteLength(text) });
        res.end(text);
      };
      if (await batchesFake.handle(req, rawBytes, reply, replyText)) return;
    }
    if (req.method !== 'POST' || path !== '/v1/embeddings') {
      return reply(404, errorBody(`Unknown route ${req.method} ${path}`, 'invalid_request_error'));
    }

    const input: unknown = body?.input;
    const inputs: string[] = typeof input === 'string' ? [input] : Array.isArray(input) ? input : [];
    rec.inputs = inputs.length;

    const fault = opts.fault?.(rec.n, body);
    if (fault) {
      if ('destroy' in fault) {
        req.socket.destroy();
        return;
      }
      if ('delayMs' in fault || 'hold' in fault) {
        await ('hold' in fault ? fault.hold.catch(() => {}) : new Promise((r) => setTimeout(r, fault.delayMs)));
        if (res.destroyed || req.socket.destroyed) return;
      } else {
        const headers: Record<string, string> = { ...(fault.headers ?? {}) };
        if ('retryAfter' in fault && fault.retryAfter !== undefined) headers['retry-after'] = fault.retryAfter;
        if ('retryAfterMs' in fault && fault.retryAfterMs !== undefined) headers['retry-after-ms'] = String(fault.retryAfterMs);
        const b =
          'body' in fault && fault.body !== undefined
            ? fault.body
            : fault.status === 429
              ? errorBody('Rate limit reached for requests', 'requests', 'rate_limit_exceeded')
              : fault.status === 401
                ? errorBody('Incorrect API key provided.', 'invalid_request_error', 'invalid_api_key')
                : errorBody('The server had an error while processing your request.', 'server_error');
        return reply(fault.status, b, headers);
      }
    }

    const model = String(body?.model ?? '');
    const native = models[model];
    if (native === undefined) {
      return reply(
        404,
        errorBody(`The model \`${model}\` does not exist or you do not have access to it.`, 'invalid_request_error', 'model_not_found'),
      );
    }
    if (inputs.length === 0 || inputs.some((s) => typeof s !== 'string')) {
      return reply(400, errorBody("'$.input' is invalid.", 'invalid_request_error', null, 'input'));
    }
    if (inputs.some((s) => s.length === 0)) {
      return reply(400, errorBody("'$.input' is invalid: empty string.", 'invalid_request_error', null, 'input'));
    }
    if (opts.maxInputs !== undefined && inputs.length > opts.maxInputs) {
      return reply(400, errorBody(`Too many inputs: ${inputs.length} > ${opts.maxInputs}`, 'invalid_request_error', null, 'input'));
    }
    if (opts.poison !== undefined && inputs.some((s) => s.includes(opts.poison!))) {
      return reply(400, errorBody('Invalid input: contains forbidden content.', 'invalid_request_error', null, 'input'));
    }
    const tokens = inputs.map((s) => cl100kTokens(s));
    const maxInputTokens = opts.maxInputTokens ?? 8192;
    if (tokens.some((t) => t > maxInputTokens)) {
      return reply(
        400,
        errorBody(
          `This model's maximum context length is ${maxInputTokens} tokens, however you requested ${Math.max(...tokens)} tokens.`,
          'invalid_request_error',
          null,
          'input',
        ),
      );
    }
    const total = tokens.reduce((a, b) => a + b, 0);
    if (opts.maxTokens !== undefined && total > opts.maxTokens) {
      return reply(400, errorBody(`Too many tokens: ${total} > ${opts.maxTokens}`, 'invalid_request_error', null, 'input'));
    }
    let dims = native;
    if (body?.dimensions !== undefined && !opts.ignoreDimensions) {
      if (!Number.isInteger(body.dimensions) || body.dimensions < 1 || body.dimensions > native) {
        return reply(400, errorBody(`Invalid dimensions ${body.dimensions}`, 'invalid_request_error', null, 'dimensions'));
      }
      dims = body.dimensions;
    }
    const rl = opts.rateLimit;
    const rateHeaders: Record<string, string> = {};
    if (rl) {
      const windowMs = rl.windowMs ?? 60_000;
      const now = Date.now();
      const b = (buckets ??= { tokens: rl.tokens, requests: rl.requests, at: now });
      b.tokens = Math.min(rl.tokens, b.tokens + ((now - b.at) * rl.tokens) / windowMs);
      b.requests = Math.min(rl.requests, b.requests + ((now - b.at) * rl.requests) / windowMs);
      b.at = now;
      const estimate = rl.estimate ? rl.estimate(total, inputs) : total + Math.ceil(total * 0.03);
      const headersNow = () => {
        rateHeaders['x-ratelimit-limit-tokens'] = String(rl.tokens);
        rateHeaders['x-ratelimit-limit-requests'] = String(rl.requests);
        rateHeaders['x-ratelimit-remaining-tokens'] = String(Math.max(0, Math.floor(b.tokens)));
        rateHeaders['x-ratelimit-remaining-requests'] = String(Math.max(0, Math.floor(b.requests)));
        rateHeaders['x-ratelimit-reset-tokens'] = formatDuration(((rl.tokens - b.tokens) * windowMs) / rl.tokens);
        rateHeaders['x-ratelimit-reset-requests'] = formatDuration(((rl.requests - b.requests) * windowMs) / rl.requests);
      };
      const where = `for ${model} in organization org-fake`;
      if (estimate > rl.tokens) {
        rateStats.tooLarge++;
        headersNow();
        return reply(
          429,
          errorBody(
            `Request too large ${where} on tokens per min (TPM): Limit ${rl.tokens}, Requested ${estimate}. ` +
              'The input or output tokens must be reduced in order to run successfully. Visit https://platform.openai.com/account/rate-limits to learn more.',
            'tokens',
            'rate_limit_exceeded',
          ),
          rateHeaders,
        );
      }
      const refuse = (unit: 'requests' | 'tokens', limit: number, level: number, requested: number) => {
        rateStats.rateLimited++;
        const waitMs = Math.ceil(((requested - level) * windowMs) / limit);
        headersNow();
        return reply(
          429,
          errorBody(
            `Rate limit reached ${where} on ${unit} per min (${unit === 'tokens' ? 'TPM' : 'RPM'}): Limit ${limit}, ` +
              `Used ${Math.ceil(limit - level)}, Requested ${requested}. Please try again in ${formatDuration(waitMs)}. ` +
              'Visit https://platform.openai.com/account/rate-limits to learn more.',
            unit,
            'rate_limit_exceeded',
          ),
          { ...rateHeaders, 'retry-after-ms': String(waitMs) },
        );
      };
      if (b.requests < 1) return refuse('requests', rl.requests, b.requests, 1);
      if (b.tokens < estimate) return refuse('tokens', rl.tokens, b.tokens, estimate);
      b.tokens -= estimate;
      b.requests -= 1;
      headersNow();
      rateStats.admitted++;
      rateStats.tokens += estimate;
      if (rateStats.firstAt === 0) rateStats.firstAt = now;
      inflight++;
      rateStats.peakInflight = Math.max(rateStats.peakInflight, inflight);
      try {
        await new Promise((r) => setTimeout(r, (rl.latencyMs ?? 2) + (estimate / 1000) * (rl.msPer1kTokens ?? 0.1)));
      } finally {
        inflight--;
      }
      if (res.destroyed || req.socket.destroyed) return;
    }
    const base64 = body?.encoding_format === 'base64';
    const data = inputs.map((text, index) => {
      const v = fakeVector(model, text, dims);
      const embedding = base64 ? float32ToBase64LE(v) : Array.from(v);
      return { object: 'embedding', index, embedding };
    });
    const headers: Record<string, string> = { ...rateHeaders };
    const rh = typeof opts.rateHeaders === 'function' ? opts.rateHeaders(rec.n) : opts.rateHeaders;
    if (rh) {
      if (rh.remainingRequests !== undefined) headers['x-ratelimit-remaining-requests'] = String(rh.remainingRequests);
      if (rh.remainingTokens !== undefined) headers['x-ratelimit-remaining-tokens'] = String(rh.remainingTokens);
      if (rh.resetRequests !== undefined) headers['x-ratelimit-reset-requests'] = rh.resetRequests;
      if (rh.resetTokens !== undefined) headers['x-ratelimit-reset-tokens'] = rh.resetTokens;
    }
    reply(200, { object: 'list', data, model, usage: { prompt_tokens: total, total_tokens: total } }, headers);
    if (rl) rateStats.lastAt = Date.now();
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((err) => {
      if (!res.headersSent) res.writeHead(500);
      res.end(String(err));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;

  return {
    url: `http://127.0.0.1:${port}/v1`,
    requests,
    get embeddingRequests() {
      return requests.filter((r) => r.path === '/v1/embeddings');
    },
    setFaults(fault) {
      opts.fault = fault;
    },
    setOptions(o) {
      opts = { ...opts, ...o };
    },
    get rateStats() {
      return rateStats;
    },
    batches: batchesFake,
    reset() {
      requests.length = 0;
      rateStats = emptyRateStats();
      buckets = undefined;
    },
    close() {
      server.closeAllConnections();
      return new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
    },
  };
}

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

export interface FakeOpenAIOptions {
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
}

export interface FakeOpenAI {
  /** Base URL, ending in /v1. */
  url: string;
  requests: RecordedRequest[];
  /** Embedding requests only. */
  readonly embeddingRequests: RecordedRequest[];
  setFaults(fault: FakeOpenAIOptions['fault']): void;
  setOptions(opts: Partial<FakeOpenAIOptions>): void;
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

export async function startFakeOpenAI(initial: FakeOpenAIOptions = {}): Promise<FakeOpenAI> {
  let opts: FakeOpenAIOptions = { ...initial };
  const requests: RecordedRequest[] = [];

  const send = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
    res.end(text);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks).toString('utf8');
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
    const base64 = body?.encoding_format === 'base64';
    const data = inputs.map((text, index) => {
      const v = fakeVector(model, text, dims);
      const embedding = base64 ? float32ToBase64LE(v) : Array.from(v);
      return { object: 'embedding', index, embedding };
    });
    const headers: Record<string, string> = {};
    const rh = typeof opts.rateHeaders === 'function' ? opts.rateHeaders(rec.n) : opts.rateHeaders;
    if (rh) {
      if (rh.remainingRequests !== undefined) headers['x-ratelimit-remaining-requests'] = String(rh.remainingRequests);
      if (rh.remainingTokens !== undefined) headers['x-ratelimit-remaining-tokens'] = String(rh.remainingTokens);
      if (rh.resetRequests !== undefined) headers['x-ratelimit-reset-requests'] = rh.resetRequests;
      if (rh.resetTokens !== undefined) headers['x-ratelimit-reset-tokens'] = rh.resetTokens;
    }
    reply(200, { object: 'list', data, model, usage: { prompt_tokens: total, total_tokens: total } }, headers);
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
    reset() {
      requests.length = 0;
    },
    close() {
      server.closeAllConnections();
      return new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
    },
  };
}

// The HTTP client of the memory-plugin v1 contract (/v1/health, namespaces, memories,
// search), as the backfill and verify use it. Every request goes through one retry policy and
// one circuit breaker per client:
//   - 5xx, 408, 429 and transport errors are retried with exponential backoff (p-retry);
//   - any other 4xx is the plugin's answer about that request: returned to the caller as a
//     PluginRejection, never retried;
//   - a request that fails every attempt opens the breaker: every request in flight stops
//     retrying, nothing new is sent, and the caller gets PluginUnavailable. So a plugin that
//     is down sees at most concurrency × attempts requests, spaced by the backoff, and then
//     none.
// The bearer token is sent when set and never appears in an error message.
import pRetry, { AbortError } from 'p-retry';
import { maskUrl } from '../secrets.js';

export interface PluginHealth {
  status: string;
  version: string;
  capabilities: string[];
}

export interface PluginMemory {
  id: string;
  namespace: string;
  content: string;
  kind: string;
  source: string;
  expires_at?: string;
  propagation?: unknown;
  pin?: boolean;
  created_at?: string;
  score?: number;
}

export interface MemoryWrite {
  id: string;
  content: string;
  kind: 'fact' | 'summary' | 'checkpoint';
  source: 'agent' | 'runtime' | 'user';
  embedding?: number[];
}

export interface SearchRequest {
  namespaces: string[];
  query?: string;
  kinds?: string[];
  limit?: number;
  embedding?: number[];
}

/** A 4xx the plugin answered about one request (its envelope's code and message). */
export class PluginRejection extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    readonly detail: string,
  ) {
    super(`${status} ${code}: ${detail}`);
    this.name = 'PluginRejection';
  }
}

/** The breaker is open: the plugin failed a request on every attempt. */
export class PluginUnavailable extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PluginUnavailable';
  }
}

/** One failed attempt that is worth retrying: a 5xx/408/429 or a transport error. */
class RetryableFailure extends Error {}

export interface PluginClientOptions {
  token?: string;
  /** Retries after the first attempt (default 3: four attempts, 0.25 + 0.5 + 1 s apart). */
  retries?: number;
  minTimeoutMs?: number;
  /** Per attempt (default 30 s). */
  timeoutMs?: number;
}

export const DEFAULT_PLUGIN_RETRIES = 3;

export class PluginClient {
  readonly baseUrl: string;
  /** Every attempt sent (for the report). */
  attempts = 0;
  retried = 0;
  private readonly breaker = new AbortController();
  private openReason: string | null = null;

  constructor(
    url: string,
    private readonly opts: PluginClientOptions = {},
  ) {
    this.baseUrl = url.replace(/\/+$/, '');
  }

  /** The URL as it may be printed (a password in it masked). */
  get displayUrl(): string {
    return maskUrl(this.baseUrl);
  }

  get isOpen(): boolean {
    return this.openReason !== null;
  }

  /** Opens the breaker by hand (the run is stopping for another reason): nothing more is sent. */
  stop(reason: string): void {
    this.trip(reason);
  }

  health(): Promise<PluginHealth> {
    return this.request<PluginHealth>('GET', '/v1/health');
  }

  upsertNamespace(name: string, kind: string): Promise<unknown> {
    return this.request('PUT', `/v1/namespaces/${encodeURIComponent(name).replace(/%3A/g, ':')}`, { kind });
  }

  commit(namespace: string, body: MemoryWrite): Promise<{ id: string; namespace: string }> {
    return this.request('POST', `/v1/namespaces/${encodeURIComponent(namespace).replace(/%3A/g, ':')}/memories`, body);
  }

  async search(body: SearchRequest): Promise<PluginMemory[]> {
    const res = await this.request<{ memories: PluginMemory[] | null }>('POST', '/v1/search', body);
    // The reference plugin answers null for no rows (the spec says an array).
    return res?.memories ?? [];
  }

  /** One request with the retry policy; the parsed JSON body (undefined for 204). */
  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    if (this.openReason !== null) throw new PluginUnavailable(this.openReason);
    const retries = this.opts.retries ?? DEFAULT_PLUGIN_RETRIES;
    try {
      return await pRetry(() => this.attempt<T>(method, path, body), {
        retries,
        minTimeout: this.opts.minTimeoutMs ?? 250,
        factor: 2,
        randomize: false,
        signal: this.breaker.signal,
        shouldRetry: ({ error }) => error instanceof RetryableFailure && this.openReason === null,
        onFailedAttempt: ({ error }) => {
          if (error instanceof RetryableFailure && this.openReason === null) this.retried++;
        },
      });
    } catch (err) {
      if (err instanceof PluginRejection) throw err;
      if (this.openReason !== null) throw new PluginUnavailable(this.openReason);
      const what = err instanceof Error ? err.message : String(err);
      const reason = `the plugin at ${this.displayUrl} failed ${method} ${path} on all ${retries + 1} attempts (last: ${what})`;
      this.trip(reason);
      throw new PluginUnavailable(reason);
    }
  }

  private trip(reason: string): void {
    if (this.openReason !== null) return;
    this.openReason = reason;
    this.breaker.abort(new PluginUnavailable(reason));
  }

  private async attempt<T>(method: string, path: string, body: unknown): Promise<T> {
    if (this.openReason !== null) throw new AbortError(new PluginUnavailable(this.openReason));
    this.attempts++;
    const headers: Record<string, string> = { accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (this.opts.token) headers['authorization'] = `Bearer ${this.opts.token}`;
    let res: Response;
    let text: string;
    try {
      res = await fetch(this.baseUrl + path, {
        method,
        headers,
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal: AbortSignal.any([this.breaker.signal, AbortSignal.timeout(this.opts.timeoutMs ?? 30_000)]),
      });
      text = await res.text();
    } catch (err) {
      if (this.openReason !== null) throw new AbortError(new PluginUnavailable(this.openReason));
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      const why = cause?.code ?? cause?.message ?? (err instanceof Error ? err.message : String(err));
      throw new RetryableFailure(`no answer (${why})`);
    }
    if (res.status < 300) {
      if (res.status === 204 || text.length === 0) return undefined as T;
      try {
        return JSON.parse(text) as T;
      } catch {
        throw new RetryableFailure(`${res.status} with a body that is not JSON`);
      }
    }
    const envelope = parseEnvelope(text, res.status);
    if (res.status >= 500 || res.status === 408 || res.status === 429) {
      throw new RetryableFailure(`${res.status} ${envelope.code}: ${envelope.message}`);
    }
    throw new AbortError(new PluginRejection(res.status, envelope.code, envelope.message));
  }
}

/** The error envelope, or the client's fallback code for the status (as the reference client does). */
function parseEnvelope(text: string, status: number): { code: string; message: string } {
  try {
    const j = JSON.parse(text) as { code?: unknown; message?: unknown };
    if (typeof j.code === 'string' && j.code !== '') return { code: j.code, message: typeof j.message === 'string' ? j.message : '' };
  } catch {
    /* not JSON */
  }
  const code = status === 404 ? 'not_found' : status === 403 ? 'forbidden' : status >= 500 ? 'internal' : 'bad_request';
  return { code, message: text.slice(0, 256).replace(/\s+/g, ' ').trim() };
}

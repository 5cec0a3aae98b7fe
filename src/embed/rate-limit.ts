// How fast the embedding client may send. OpenAI limits tokens and requests per minute, each
// as a bucket that refills continuously (limit / 60 s) up to the limit, not as a window that
// resets. Every answer says where both buckets stand (x-ratelimit-limit-*, -remaining-*,
// -reset-* = time until the bucket is full again), so we keep a model of each: its level now
// is what the server last said, plus what refilled since, minus what we sent since. A request
// goes out when the model says it fits, so a run sends at the refill rate instead of running
// into 429s or waiting for a full reset.
//
// All waits end on the run's abort signal, so a fatal error ends every wait at once.
import { APIUserAbortError } from 'openai';

/** The longest we wait on the server's word at a time (Retry-After, or a reset). */
export const RETRY_AFTER_CAP_MS = 60_000;
/** The longest a request waits on the model before looking at it again. */
const RECHECK_MS = 1000;
/** OpenAI's limits are per minute. */
export const DEFAULT_WINDOW_MS = 60_000;
/**
 * Headroom over our own token count before a request goes out: the server counts tokens with
 * an estimate of its own, close to but not equal to the tokenizer's.
 */
const TOKEN_MARGIN = 1.05;

/** One of the server's two buckets (tokens or requests), as we model it. */
export class Bucket {
  /** Bucket size, from x-ratelimit-limit-*; unknown until an answer carries it. */
  limit?: number;
  /** Time the bucket takes to refill from empty (60 s at OpenAI; inferred from the headers). */
  windowMs = DEFAULT_WINDOW_MS;
  /** Level at `at` (may be negative: we sent more than the server has yet counted back). */
  private level = 0;
  private at = 0;
  /** Without a limit header: the server's remaining and when it is full again (old servers). */
  private legacy?: { remaining: number; resetAt: number };
  /** Units sent in total; a request remembers the value when it was sent. */
  sentTotal = 0;
  private windowSamples: number[] = [];

  /** Whether the window was read from this bucket's own headers. */
  get windowInferred(): boolean {
    return this.windowSamples.length > 0;
  }

  /** Refill rate in units per ms (0 when the limit is unknown). */
  get rate(): number {
    return this.limit ? this.limit / this.windowMs : 0;
  }

  levelAt(now: number): number | undefined {
    if (this.limit === undefined) return undefined;
    return Math.min(this.limit, this.level + (now - this.at) * this.rate);
  }

  /** Ms until `n` units fit (0 = now); n above the limit waits for a full bucket. */
  waitMs(n: number, now: number): number {
    if (this.limit !== undefined) {
      const need = Math.min(n, this.limit);
      const level = this.levelAt(now)!;
      return level >= need ? 0 : Math.ceil((need - level) / this.rate);
    }
    const l = this.legacy;
    if (l && l.remaining < n && l.resetAt > now) return Math.min(l.resetAt - now, RETRY_AFTER_CAP_MS);
    return 0;
  }

  spend(n: number, now: number): void {
    this.sentTotal += n;
    if (this.limit !== undefined) {
      this.level = this.levelAt(now)! - n;
      this.at = now;
    } else if (this.legacy) {
      if (this.legacy.resetAt <= now) this.legacy = undefined;
      else this.legacy.remaining -= n;
    }
  }

  /** A request of `n` units that the server did not count (a 429): it is not spent after all. */
  refund(n: number, now: number): void {
    this.sentTotal -= n;
    if (this.limit !== undefined) {
      this.level = this.levelAt(now)! + n;
      this.at = now;
    }
  }

  /**
   * The server's word, from the answer to a request: the level when it was admitted was
   * `remaining`, and we have sent `sentAfter` since it was sent.
   */
  observe(o: { limit?: number; remaining?: number; resetMs?: number; sentAt: number; sentAfter: number; now: number }): void {
    const { limit, remaining, resetMs, now } = o;
    if (limit !== undefined && limit > 0) {
      this.limit = limit;
      if (remaining !== undefined && resetMs !== undefined) this.inferWindow(limit, remaining, resetMs);
    }
    if (remaining === undefined) return;
    if (this.limit === undefined) {
      this.legacy = { remaining, resetAt: now + (resetMs ?? 1000) };
      return;
    }
    // The server counted `remaining` when it admitted the request: some time after we sent it
    // (a busy event loop, the network) and before its answer. Counting the refill from when
    // we sent overstates the level by that delay and runs into 429s; from the answer, it gives
    // up the refill of the server time, which slows a run whose bucket then fills up. Half way
    // between is close on both counts.
    const level = remaining + ((now - o.sentAt) / 2) * this.rate - o.sentAfter;
    this.level = Math.min(this.limit, level);
    this.at = now;
  }

  /**
   * The reset header is the time to a FULL bucket, so (limit − remaining) / reset is the refill
   * rate. OpenAI's is limit / 60 s; a server with another window (a test server compressing
   * time) says so through the same headers. Taken only from samples precise enough to tell.
   */
  private inferWindow(limit: number, remaining: number, resetMs: number): void {
    // `remaining` is a whole number rounded down: what was used is half a unit less, on average.
    const used = limit - remaining - 0.5;
    if (used < 1 || resetMs < 20 || used < limit * 0.01) return;
    const w = (resetMs * limit) / used;
    this.windowSamples.push(w);
    if (this.windowSamples.length > 7) this.windowSamples.shift();
    const sorted = [...this.windowSamples].sort((a, b) => a - b);
    const median = sorted[Math.floor(sorted.length / 2)]!;
    // Within 10% of a minute it is a minute (the header is rounded); else believe the server.
    this.windowMs = Math.abs(median - DEFAULT_WINDOW_MS) <= DEFAULT_WINDOW_MS * 0.1 ? DEFAULT_WINDOW_MS : Math.min(Math.max(median, 250), 3_600_000);
  }

  /** Sets the level from a 429 that says when `requested` units will fit. */
  levelFromRetry(requested: number, retryMs: number, now: number): void {
    if (this.limit === undefined) return;
    this.level = Math.min(this.level, requested - retryMs * this.rate);
    this.at = now;
  }
}

/** What a request was sent with, so its answer can be placed in the model. */
export interface SendTicket {
  tokens: number;
  sentAt: number;
  tokensSentTotal: number;
  requestsSentTotal: number;
}

/** The server's two buckets, a pause the server asked for, and what waiting cost. */
export class RateBudget {
  readonly tokens = new Bucket();
  readonly requests = new Bucket();
  /** Server tokens per tokenizer token, learned from the "Requested N" of 429 messages. */
  ratio = 1;
  /** Nobody sends before this (set from Retry-After on a 429). */
  pauseUntil = 0;
  /** Time requests were held back by the budget, summed over the waits of the dispatcher. */
  throttledMs = 0;

  /** The limits the server reported, per minute (undefined until an answer carried them). */
  get perMinute(): { tokensPerMin: number; requestsPerMin: number } | null {
    const t = this.tokens.limit;
    const r = this.requests.limit;
    if (t === undefined && r === undefined) return null;
    return {
      tokensPerMin: t !== undefined ? Math.round((t * 60_000) / this.tokens.windowMs) : 0,
      requestsPerMin: r !== undefined ? Math.round((r * 60_000) / this.requests.windowMs) : 0,
    };
  }

  /** Tokens the server will count for a request we count as `tokens`. */
  serverTokens(tokens: number): number {
    return Math.ceil(tokens * this.ratio);
  }

  /**
   * What a request is charged in the model: the server's count with some headroom, since its
   * estimate is not the tokenizer's. Charging a little high only lowers the model's level
   * until the next answer puts it right; charging low runs into 429s.
   */
  private charge(tokens: number): number {
    return Math.ceil(this.serverTokens(tokens) * TOKEN_MARGIN);
  }

  /**
   * The largest request (in our tokens) that is well inside the token limit: an eighth of the
   * bucket, so requests never come near "Request too large", the bucket drains and refills in
   * small steps, and the last request of a run (whose server time nothing overlaps) is short.
   * Undefined while the limit is unknown.
   */
  requestCap(): number | undefined {
    const limit = this.tokens.limit;
    if (limit === undefined) return undefined;
    return Math.max(1, Math.floor(limit / 8 / this.ratio));
  }

  /** The largest single input that can ever pass (our tokens); undefined while unknown. */
  inputCeiling(): number | undefined {
    const limit = this.tokens.limit;
    if (limit === undefined) return undefined;
    return Math.floor(limit / this.ratio / TOKEN_MARGIN);
  }

  /** Every request holds off until `ms` from now (the server asked for it). */
  pause(ms: number): void {
    this.pauseUntil = Math.max(this.pauseUntil, Date.now() + ms);
  }

  /** Ms until a request of `tokens` (ours) fits both buckets and any pause; 0 = now. */
  waitMs(tokens: number, now = Date.now()): number {
    return Math.max(this.pauseUntil - now, this.tokens.waitMs(this.charge(tokens), now), this.requests.waitMs(1, now), 0);
  }

  /**
   * Waits until a request of `tokens` fits, then spends it from both buckets. The caller sends
   * one request at a time through here, so the check and the spend see the same model.
   */
  async spend(tokens: number, signal: AbortSignal): Promise<SendTicket> {
    const started = Date.now();
    for (;;) {
      const wait = this.waitMs(tokens);
      if (wait <= 0) break;
      // Looked at again every second at most: an answer meanwhile may change the model.
      await sleep(Math.min(wait, RECHECK_MS), signal);
    }
    const now = Date.now();
    this.throttledMs += now - started;
    const server = this.charge(tokens);
    this.tokens.spend(server, now);
    this.requests.spend(1, now);
    return { tokens: server, sentAt: now, tokensSentTotal: this.tokens.sentTotal, requestsSentTotal: this.requests.sentTotal };
  }

  /** Takes the budget from an answer's x-ratelimit-* headers (a 429's included). */
  update(headers: Headers | undefined, ticket: SendTicket | undefined, now = Date.now()): void {
    if (!headers) return;
    const sentAt = ticket?.sentAt ?? now;
    this.tokens.observe({
      limit: numberHeader(headers, 'x-ratelimit-limit-tokens'),
      remaining: numberHeader(headers, 'x-ratelimit-remaining-tokens'),
      resetMs: parseDurationMs(headers.get('x-ratelimit-reset-tokens')),
      sentAt,
      sentAfter: ticket ? this.tokens.sentTotal - ticket.tokensSentTotal : 0,
      now,
    });
    this.requests.observe({
      limit: numberHeader(headers, 'x-ratelimit-limit-requests'),
      remaining: numberHeader(headers, 'x-ratelimit-remaining-requests'),
      resetMs: parseDurationMs(headers.get('x-ratelimit-reset-requests')),
      sentAt,
      sentAfter: ticket ? this.requests.sentTotal - ticket.requestsSentTotal : 0,
      now,
    });
    // A few requests say little about their window; the server uses one window for both.
    if (!this.requests.windowInferred && this.tokens.windowInferred) this.requests.windowMs = this.tokens.windowMs;
    else if (!this.tokens.windowInferred && this.requests.windowInferred) this.tokens.windowMs = this.requests.windowMs;
  }

  /**
   * A 429: the request was not counted. What its message says is learned: the limit, the
   * server's count of this request (so later requests are counted as the server counts), and
   * when the server expects it to fit.
   */
  rejected(ticket: SendTicket | undefined, info: RateLimitMessage, ourTokens: number, retryMs: number | undefined): void {
    const now = Date.now();
    if (ticket) {
      this.tokens.refund(ticket.tokens, now);
      this.requests.refund(1, now);
    }
    if (info.limit !== undefined) {
      const b = info.unit === 'requests' ? this.requests : this.tokens;
      b.limit = info.limit;
    }
    if (info.unit !== 'requests' && info.requested !== undefined && ourTokens > 0) {
      // Only ever raised: counting high costs a little speed, counting low costs 429s.
      const r = info.requested / ourTokens;
      if (r > this.ratio && r < 4) this.ratio = r;
    }
    if (retryMs !== undefined && info.kind === 'rate') {
      if (info.unit === 'requests') this.requests.levelFromRetry(1, retryMs, now);
      else if (info.requested !== undefined) this.tokens.levelFromRetry(info.requested, retryMs, now);
    }
  }
}

/** What a 429's message says (OpenAI's wording). */
export interface RateLimitMessage {
  /** 'too-large': "Request too large ...", never passes at this size; 'rate': try again later. */
  kind: 'too-large' | 'rate' | 'other';
  unit?: 'tokens' | 'requests';
  limit?: number;
  requested?: number;
  /** "Please try again in 1.2s" / "in 588ms". */
  retryMs?: number;
}

/**
 * Reads OpenAI's 429 messages: "Rate limit reached for text-embedding-3-small in organization
 * org-x on tokens per min (TPM): Limit 1000000, Used 985316, Requested 24570. Please try again
 * in 588ms." and "Request too large for text-embedding-3-small in organization org-x on tokens
 * per min (TPM): Limit 60000, Requested 123138. The input or output tokens must be reduced...".
 */
export function parseRateLimitMessage(message: string): RateLimitMessage {
  const kind = /request too large/i.test(message) ? 'too-large' : /rate limit/i.test(message) ? 'rate' : 'other';
  const unit = /requests per min|\(RPM\)/i.test(message) ? 'requests' : /tokens per min|\(TPM\)/i.test(message) ? 'tokens' : undefined;
  const num = (re: RegExp) => {
    const m = re.exec(message);
    return m ? Number(m[1]!.replace(/,/g, '')) : undefined;
  };
  const limit = num(/Limit:?\s*([\d,]+)/i);
  const requested = num(/Requested:?\s*([\d,]+)/i);
  const m = /try again in\s*([\dhms.]+)/i.exec(message);
  const retryMs = m ? parseDurationMs(m[1]!.replace(/\.$/, '')) : undefined;
  return {
    kind,
    ...(unit ? { unit } : {}),
    ...(limit !== undefined ? { limit } : {}),
    ...(requested !== undefined ? { requested } : {}),
    ...(retryMs !== undefined ? { retryMs } : {}),
  };
}

/** At most `limit` holders at once; the rest wait in order. */
export class RequestSlots {
  /** Slots taken from acquire() to release (a rate-budget wait included). */
  private reserved = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(readonly limit: number) {}

  async acquire(signal: AbortSignal): Promise<() => void> {
    while (this.reserved >= this.limit) {
      await new Promise<void>((resolve) => this.waiting.push(resolve));
      if (signal.aborted) {
        // Pass the wake-up on, so every waiter of an aborted run gets to leave.
        this.waiting.shift()?.();
        throw new APIUserAbortError();
      }
    }
    this.reserved++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.reserved--;
      this.waiting.shift()?.();
    };
  }
}

function numberHeader(headers: Headers, name: string): number | undefined {
  const v = headers.get(name);
  if (v === null || v.trim() === '') return undefined;
  const n = Number(v);
  return Number.isFinite(n) ? n : undefined;
}

/**
 * OpenAI's reset durations: "1s", "6m0s", "20ms", "1h2m3.5s", "0.5s"; a bare number is
 * seconds. Returns milliseconds, or undefined if unparseable.
 */
export function parseDurationMs(value: string | null | undefined): number | undefined {
  if (value == null) return undefined;
  const v = value.trim();
  if (v === '') return undefined;
  if (/^\d+(\.\d+)?$/.test(v)) return Number(v) * 1000;
  const re = /(\d+(?:\.\d+)?)(ms|h|m|s)/gy;
  let total = 0;
  let pos = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(v)) !== null) {
    const n = Number(m[1]);
    total += m[2] === 'h' ? n * 3_600_000 : m[2] === 'm' ? n * 60_000 : m[2] === 's' ? n * 1000 : n;
    pos = re.lastIndex;
  }
  return pos === v.length && pos > 0 ? total : undefined;
}

/** retry-after-ms (ms), else Retry-After (seconds or an HTTP date); capped at 60 s. */
export function retryAfterFromHeaders(headers: Headers | undefined, now = Date.now()): number | undefined {
  if (!headers) return undefined;
  let ms: number | undefined;
  const msHeader = headers.get('retry-after-ms');
  if (msHeader !== null && msHeader.trim() !== '' && Number.isFinite(Number(msHeader))) {
    ms = Number(msHeader);
  } else {
    const ra = headers.get('retry-after');
    if (ra !== null && ra.trim() !== '') {
      if (Number.isFinite(Number(ra))) ms = Number(ra) * 1000;
      else {
        const at = Date.parse(ra);
        if (Number.isFinite(at)) ms = at - now;
      }
    }
  }
  if (ms === undefined || Number.isNaN(ms)) return undefined;
  return Math.min(Math.max(0, ms), RETRY_AFTER_CAP_MS);
}

/** Resolves after `ms`, or rejects as soon as the signal aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (ms <= 0) return signal?.aborted ? Promise.reject(new APIUserAbortError()) : Promise.resolve();
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new APIUserAbortError());
    const onAbort = () => {
      clearTimeout(t);
      reject(new APIUserAbortError());
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

// How fast the embedding client may send: at most `limit` requests in flight, and no faster
// than the budget the server reports in its x-ratelimit-* headers (or asks for with
// Retry-After). Both wait on the run's abort signal, so a fatal error ends every wait at once.
import { APIUserAbortError } from 'openai';

/** The longest we wait on the server's word at a time (Retry-After, or a reset). */
export const RETRY_AFTER_CAP_MS = 60_000;

/** What the server said about its rate limits, with the resets as absolute times (ms epoch). */
export interface RateState {
  remainingRequests?: number;
  remainingTokens?: number;
  resetRequestsAt?: number;
  resetTokensAt?: number;
  /** Nobody sends before this (set from Retry-After on a 429). */
  pauseUntil?: number;
}

/** The server's rate-limit budget as last reported, minus what was sent since. */
export class RateBudget {
  readonly state: RateState = {};

  /** Every request holds off until `ms` from now (the server asked for it). */
  pause(ms: number): void {
    this.state.pauseUntil = Math.max(this.state.pauseUntil ?? 0, Date.now() + ms);
  }

  /**
   * Waits while the budget the server reported is used up (or a Retry-After pause is on),
   * then spends from it. Waits at most 60 s at a time: OpenAI's reset times are until the
   * budget is FULL again, while it refills continuously, so after a long wait the old numbers
   * are dropped and the next answer brings fresh ones.
   */
  async spend(tokens: number, signal: AbortSignal): Promise<void> {
    const r = this.state;
    const now = Date.now();
    let until = r.pauseUntil && r.pauseUntil > now ? r.pauseUntil : 0;
    if (r.remainingRequests !== undefined && r.remainingRequests <= 0 && (r.resetRequestsAt ?? 0) > now) {
      until = Math.max(until, r.resetRequestsAt!);
    }
    if (r.remainingTokens !== undefined && r.remainingTokens < tokens && (r.resetTokensAt ?? 0) > now) {
      until = Math.max(until, r.resetTokensAt!);
    }
    if (until > now) {
      await sleep(Math.min(until - now, RETRY_AFTER_CAP_MS), signal);
      // We waited for the reset (or as long as we are willing to): the numbers are stale.
      r.remainingRequests = r.remainingTokens = r.resetRequestsAt = r.resetTokensAt = undefined;
    }
    // After a reset the server's budget is full again: forget the stale numbers.
    const later = Date.now();
    if (r.resetRequestsAt !== undefined && r.resetRequestsAt <= later) {
      r.remainingRequests = undefined;
      r.resetRequestsAt = undefined;
    }
    if (r.resetTokensAt !== undefined && r.resetTokensAt <= later) {
      r.remainingTokens = undefined;
      r.resetTokensAt = undefined;
    }
    // Spend from the budget locally, so requests sent before the next answer are accounted.
    if (r.remainingRequests !== undefined) r.remainingRequests -= 1;
    if (r.remainingTokens !== undefined) r.remainingTokens -= tokens;
  }

  /** Takes the budget from a response's x-ratelimit-* headers. */
  update(headers: Headers): void {
    const now = Date.now();
    const rr = numberHeader(headers, 'x-ratelimit-remaining-requests');
    const rt = numberHeader(headers, 'x-ratelimit-remaining-tokens');
    const resetR = parseDurationMs(headers.get('x-ratelimit-reset-requests'));
    const resetT = parseDurationMs(headers.get('x-ratelimit-reset-tokens'));
    if (rr !== undefined) {
      this.state.remainingRequests = rr;
      this.state.resetRequestsAt = now + (resetR ?? 1000);
    }
    if (rt !== undefined) {
      this.state.remainingTokens = rt;
      this.state.resetTokensAt = now + (resetT ?? 1000);
    }
  }
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

// Progress for long work. On a terminal: a live cli-progress bar with rows done/total, rows/s,
// ETA, embedding requests in flight, tokens per minute against the API's rate limit, cache
// hits and retries, and a second bar for the index build. Elsewhere (stdout not a TTY, or CI=true): a plain line every few seconds at most.
// --quiet shows neither. Bars are drawn on stderr, so stdout keeps only the summary (or the
// one --json object).
import cliProgress from 'cli-progress';
import type { Output } from './output.js';
import type { MemoryCounts } from './report.js';
import type { EmbedStats } from './embed/types.js';

export interface Progress {
  update(done: number, counts?: MemoryCounts): void;
  stop(): void;
}

/** Where and how to draw; the defaults are the real terminal. Tests pass their own. */
export interface ProgressEnv {
  /** Draw a live bar (default: isInteractive()). */
  interactive?: boolean;
  /** Stream the bar is drawn on (default process.stderr). */
  stream?: NodeJS.WritableStream;
  /** Clock (default Date.now). */
  now?: () => number;
  /** How often the bar's embedding counters are refreshed between updates, ms (default 500). */
  refreshMs?: number;
}

export interface ProgressSource extends ProgressEnv {
  label: string;
  total: number;
  service?: { stats: EmbedStats };
  provider?: { inflight?: number };
  /** Interval for plain progress lines, ms (default 5000). */
  plainIntervalMs?: number;
}

/** The default interval between plain progress lines. */
export const PLAIN_INTERVAL_MS = 5000;

/** A live bar only when a person is watching: stdout and stderr on a terminal, and not CI. */
export function isInteractive(env: NodeJS.ProcessEnv = process.env): boolean {
  const ci = env['CI'];
  if (ci !== undefined && ci !== '' && ci !== '0' && ci.toLowerCase() !== 'false') return false;
  return Boolean(process.stdout.isTTY) && Boolean(process.stderr.isTTY);
}

function formatSeconds(s: number): string {
  if (!Number.isFinite(s) || s < 0) return '?';
  if (s < 60) return `${Math.round(s)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s - m * 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** Tokens sent per minute over the last minute (or since the start), from samples of the total. */
export function tokensPerMinute(samples: Array<{ at: number; tokens: number }>, at: number, tokens: number): number {
  samples.push({ at, tokens });
  while (samples.length > 2 && samples[1]!.at <= at - 60_000) samples.shift();
  const first = samples[0]!;
  const ms = at - first.at;
  return ms > 0 ? ((tokens - first.tokens) * 60_000) / ms : 0;
}

/** "tokens/min 52,000 of 60,000" (the limit as the API reports it), or "" before any token. */
export function formatTokenRate(tpm: number, limit: number | undefined): string {
  if (tpm <= 0 && !limit) return '';
  const n = (x: number) => Math.round(x).toLocaleString('en-US');
  return `tokens/min ${n(tpm)}${limit ? ` of ${n(limit)}` : ''}`;
}

export function createProgress(out: Output, src: ProgressSource): Progress {
  if (out.quiet || src.total === 0) return { update() {}, stop() {} };
  const now = src.now ?? Date.now;
  const started = now();
  const samples: Array<{ at: number; tokens: number }> = [{ at: started, tokens: src.service?.stats.tokens ?? 0 }];
  const embedFields = () => {
    const stats = src.service?.stats;
    const tpm = stats ? tokensPerMinute(samples, now(), stats.tokens) : 0;
    const rate = formatTokenRate(tpm, stats?.rateLimit?.tokensPerMin || undefined);
    return {
      inflight: src.provider?.inflight ?? 0,
      cached: stats?.cached ?? 0,
      retries: stats?.retries ?? 0,
      requests: stats?.requests ?? 0,
      tokenRate: rate ? ` | ${rate}` : '',
    };
  };
  const rateOf = (done: number) => {
    const secs = (now() - started) / 1000;
    return secs > 0 ? done / secs : 0;
  };

  if (src.interactive ?? isInteractive()) {
    const bar = new cliProgress.SingleBar(
      {
        format:
          `${src.label} {bar} {percentage}% | {value}/{total} rows | {rate} rows/s | ETA {eta_formatted} | ` +
          `requests {requests} ({inflight} in flight){tokenRate} | cache hits {cached} | retries {retries}`,
        stream: src.stream ?? process.stderr,
        hideCursor: true,
        etaBuffer: 50,
        barsize: 20,
      },
      cliProgress.Presets.shades_classic,
    );
    let done = 0;
    bar.start(src.total, 0, { rate: '0', ...embedFields() });
    // Requests in flight change while a batch is being embedded, between row updates.
    const timer = setInterval(() => bar.update({ ...embedFields() }), src.refreshMs ?? 500);
    timer.unref();
    return {
      update(d) {
        done = d;
        bar.update(done, { rate: Math.round(rateOf(done)).toString(), ...embedFields() });
      },
      stop() {
        clearInterval(timer);
        bar.update(done, { rate: Math.round(rateOf(done)).toString(), ...embedFields() });
        bar.stop();
      },
    };
  }

  const interval = src.plainIntervalMs ?? PLAIN_INTERVAL_MS;
  let last = started;
  let lastDone = -1;
  const line = (done: number) => {
    const rate = rateOf(done);
    const eta = rate > 0 ? (src.total - done) / rate : NaN;
    const e = embedFields();
    out.info(
      `${src.label}: ${done}/${src.total} rows (${Math.floor((100 * done) / src.total)}%), ${Math.round(rate)} rows/s, ` +
        `ETA ${done >= src.total ? '0 s' : formatSeconds(eta)}, requests ${e.requests} (in flight ${e.inflight}), ` +
        `${e.tokenRate ? `${e.tokenRate.slice(3)}, ` : ''}cache hits ${e.cached}, retries ${e.retries}`,
    );
    lastDone = done;
  };
  return {
    update(done) {
      const t = now();
      // At most one line per interval; the last line (100%) always.
      if (t - last < interval && done < src.total) return;
      if (done === lastDone) return;
      last = t;
      line(done);
    },
    stop() {},
  };
}

/** Progress through a few named steps (the index build): a bar with a ticking clock on a
 * terminal, the step's log lines elsewhere. */
export interface StepProgress {
  /** A step begins; `detail` is shown on the bar (and printed when not on a terminal). */
  start(step: string, detail?: string): void;
  /** The current step is done. */
  finish(): void;
  /** A log line: printed (on a terminal, kept for after the bar). */
  log(line: string): void;
  stop(): void;
}

export function createStepProgress(out: Output, src: ProgressEnv & { label: string; total: number }): StepProgress {
  if (out.quiet) return { start() {}, finish() {}, log() {}, stop() {} };
  if (!(src.interactive ?? isInteractive())) {
    // Not on a terminal the build's own log lines say what is happening.
    return {
      start() {},
      finish() {},
      log(line) {
        out.info(line);
      },
      stop() {},
    };
  }
  const bar = new cliProgress.SingleBar(
    {
      format: `${src.label} {bar} {value}/{total} | {step} | {duration_formatted}`,
      stream: src.stream ?? process.stderr,
      hideCursor: true,
      barsize: 20,
    },
    cliProgress.Presets.shades_classic,
  );
  const held: string[] = [];
  let value = 0;
  let started = false;
  const ensure = () => {
    if (!started) {
      bar.start(src.total, 0, { step: 'starting' });
      started = true;
    }
  };
  return {
    start(step, detail) {
      ensure();
      bar.update(value, { step: `${step}${detail ? ` (${detail})` : ''}` });
    },
    finish() {
      ensure();
      value = Math.min(src.total, value + 1);
      bar.update(value, {});
    },
    log(line) {
      held.push(line);
    },
    stop() {
      if (started) {
        bar.update(value, { step: 'done' });
        bar.stop();
      }
      for (const l of held) out.info(l);
    },
  };
}

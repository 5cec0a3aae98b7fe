// Progress for long work. On a terminal: a live cli-progress bar with rows, rate, ETA and the
// embedding counters. Elsewhere (pipes, CI=true): a plain line every few seconds at most.
import cliProgress from 'cli-progress';
import type { Output } from './output.js';
import type { MemoryCounts } from './report.js';
import type { EmbedStats } from './embed/types.js';

export interface Progress {
  update(done: number, counts?: MemoryCounts): void;
  stop(): void;
}

export interface ProgressSource {
  label: string;
  total: number;
  service?: { stats: EmbedStats };
  provider?: { inflight?: number };
  /** Interval for plain progress lines, ms (default 5000). */
  plainIntervalMs?: number;
}

export function isInteractive(): boolean {
  return Boolean(process.stderr.isTTY) && process.env['CI'] !== 'true' && process.env['CI'] !== '1';
}

export function createProgress(out: Output, src: ProgressSource): Progress {
  if (out.quiet || src.total === 0) return { update() {}, stop() {} };
  const started = Date.now();
  const embedFields = () => ({
    inflight: src.provider?.inflight ?? 0,
    cached: src.service?.stats.cached ?? 0,
    retries: src.service?.stats.retries ?? 0,
    requests: src.service?.stats.requests ?? 0,
  });
  if (isInteractive() && !out.json) {
    const bar = new cliProgress.SingleBar(
      {
        format: `${src.label} [{bar}] {value}/{total} | {rate} rows/s | ETA {eta_formatted} | requests {requests} in flight {inflight} | cached {cached} | retries {retries}`,
        stream: process.stderr,
        hideCursor: true,
        etaBuffer: 50,
      },
      cliProgress.Presets.shades_classic,
    );
    bar.start(src.total, 0, { rate: '0', ...embedFields() });
    return {
      update(done) {
        const secs = (Date.now() - started) / 1000;
        bar.update(done, { rate: secs > 0 ? Math.round(done / secs).toString() : '0', ...embedFields() });
      },
      stop() {
        bar.stop();
      },
    };
  }
  const interval = src.plainIntervalMs ?? 5000;
  let last = 0;
  return {
    update(done) {
      const now = Date.now();
      if (now - last < interval && done < src.total) return;
      last = now;
      const secs = (now - started) / 1000;
      const rate = secs > 0 ? done / secs : 0;
      const eta = rate > 0 ? Math.round((src.total - done) / rate) : 0;
      const e = embedFields();
      out.info(
        `${src.label}: ${done}/${src.total} (${Math.round((100 * done) / src.total)}%), ${Math.round(rate)} rows/s, ETA ${eta} s, ` +
          `requests ${e.requests}, cached ${e.cached}, retries ${e.retries}`,
      );
    },
    stop() {},
  };
}

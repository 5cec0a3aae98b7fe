// `npm run bench -- --embed`: how close a migration that must embed everything comes to what
// the API's rate limit allows. The real CLI migrates a generated file (no stored vectors
// reused) against a local OpenAI-compatible fake that enforces OpenAI's limits: a continuous
// token bucket (x-ratelimit-* headers, 429 "Rate limit reached ... try again in" and "Request
// too large"), its own token estimate, server time growing with the tokens. Two quotas, each
// with its minute compressed so a run takes seconds:
//   small  60,000 tokens/min, the minute compressed 30×: the bucket is the bottleneck;
//   large  a bucket of 100,000 tokens refilled at 50,000 tokens/s (3M tokens/min), from a
//          server that takes 3.3 s per 100k tokens: one request at a time would get 30,000
//          tokens/s, so the limit is reached only with several in flight.
// The target: PostgreSQL at $BENCH_DATABASE_URL or $TEST_DATABASE_URL (a fresh database per
// run), else PGlite.
// For each: the tokens the server counted, the time the limit allows ((tokens − bucket) /
// refill rate), the embedding time (first request in to last answer out, at the server),
// efficiency (allowed / taken) and the 429s.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import postgres from 'postgres';
import { makeFixture } from './make-fixture.js';
import { startFakeOpenAI, type FakeRateLimit } from '../test/helpers/fake-openai.js';

const CLI = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'cli.js');

interface Scenario {
  name: string;
  /** What the quota is in OpenAI's terms. */
  label: string;
  limit: FakeRateLimit;
}

const SCENARIOS: Scenario[] = [
  {
    name: 'small',
    label: '60k tokens/min, minute = 2 s',
    // Server time 1 s per 100k tokens, compressed like the minute.
    limit: { tokens: 60_000, requests: 3_000, windowMs: 2_000, latencyMs: 1, msPer1kTokens: 10 / 30 },
  },
  {
    name: 'large',
    label: '3M tokens/min (bucket 100k refilled in 2 s), server 3.3 s/100k tokens',
    limit: { tokens: 100_000, requests: 10_000, windowMs: 2_000, latencyMs: 5, msPer1kTokens: 33 },
  },
];

interface Row {
  scenario: Scenario;
  rows: number;
  tokens: number;
  requests: number;
  allowedS: number;
  embedS: number;
  efficiency: number;
  r429: number;
  loadS: number;
  exit: number | null;
}

function runCli(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, CI: 'true', DATABASE_URL: '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** CLI flags for a fresh target: a new database on the bench server, else a PGlite directory. */
async function freshTarget(work: string, name: string): Promise<string[]> {
  const url = process.env['BENCH_DATABASE_URL'] || process.env['TEST_DATABASE_URL'];
  if (!url) return ['--pglite-dir', join(work, `pg-${name}`)];
  const db = `mm_bench_embed_${name}_${process.pid}`;
  const admin = postgres(url, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`DROP DATABASE IF EXISTS ${db}`);
    await admin.unsafe(`CREATE DATABASE ${db}`);
  } finally {
    await admin.end();
  }
  const u = new URL(url);
  u.pathname = `/${db}`;
  created.push(db);
  return ['--database-url', u.toString()];
}

const created: string[] = [];

async function dropCreated(): Promise<void> {
  const url = process.env['BENCH_DATABASE_URL'] || process.env['TEST_DATABASE_URL'];
  if (!url || created.length === 0) return;
  const admin = postgres(url, { max: 1, onnotice: () => {} });
  try {
    for (const db of created.splice(0)) await admin.unsafe(`DROP DATABASE IF EXISTS ${db}`);
  } finally {
    await admin.end();
  }
}

async function one(s: Scenario, fixture: string, rows: number, work: string): Promise<Row> {
  const api = await startFakeOpenAI({ apiKey: 'bench' });
  try {
    api.setOptions({ rateLimit: s.limit });
    const target = await freshTarget(work, s.name);
    const r = await runCli(
      ['migrate', '--sqlite', fixture, ...target, '--model', 'text-embedding-3-small', '--dimensions', '64', '--skip-test', '--json'],
      { OPENAI_API_KEY: 'bench', OPENAI_BASE_URL: api.url },
    );
    if (r.code !== 0) process.stderr.write(r.stderr);
    const report = r.code === 0 ? JSON.parse(r.stdout) : null;
    const st = api.rateStats;
    const rate = s.limit.tokens / (s.limit.windowMs ?? 60_000); // tokens per ms
    const allowed = Math.max(0, st.tokens - s.limit.tokens) / rate;
    const taken = st.lastAt - st.firstAt;
    return {
      scenario: s,
      rows,
      tokens: st.tokens,
      requests: api.embeddingRequests.length,
      allowedS: allowed / 1000,
      embedS: taken / 1000,
      efficiency: taken > 0 ? allowed / taken : 0,
      r429: st.rateLimited + st.tooLarge,
      loadS: (report?.timings?.loadMs ?? 0) / 1000,
      exit: r.code,
    };
  } finally {
    await api.close();
  }
}

export async function benchEmbed(argv: string[]): Promise<void> {
  const rowsArg = argv.indexOf('--rows');
  const rows = rowsArg >= 0 ? Number(argv[rowsArg + 1]) : 30_000;
  if (!Number.isInteger(rows) || rows < 100) throw new Error('--rows: an integer >= 100');
  const work = mkdtempSync(join(tmpdir(), 'mm-bench-embed-'));
  try {
    const fixture = join(work, 'memory.db');
    // Stored vectors of another width: nothing is reused, every row is embedded.
    makeFixture({ out: fixture, rows, dims: 8, users: 20, seed: 7 });
    const results: Row[] = [];
    for (const s of SCENARIOS) {
      process.stderr.write(`embedding bench: ${s.name} quota (${s.label}), ${rows} rows...\n`);
      results.push(await one(s, fixture, rows, work));
    }
    const head = ['quota', 'rows', 'tokens', 'requests', 'limit allows', 'embedding took', 'efficiency', '429s', 'load (whole run)'];
    const body = results.map((r) => [
      `${r.scenario.name}: ${r.scenario.label}`,
      String(r.rows),
      r.tokens.toLocaleString('en-US'),
      String(r.requests),
      `${r.allowedS.toFixed(2)} s`,
      `${r.embedS.toFixed(2)} s`,
      r.efficiency.toFixed(2),
      `${r.r429} (${((100 * r.r429) / Math.max(1, r.requests)).toFixed(1)}%)`,
      r.exit === 0 ? `${r.loadS.toFixed(2)} s` : `exit ${r.exit}`,
    ]);
    const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
    const line = (cells: string[]) => `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')} |`;
    console.log(line(head));
    console.log(`|${widths.map((w, i) => (i === 0 ? ':' : '-') + '-'.repeat(w) + (i === 0 ? '-' : ':')).join('|')}|`);
    for (const b of body) console.log(line(b));
    console.log(
      '\nlimit allows = (tokens − bucket) / refill rate, tokens as the server counted them; embedding took = first request in to ' +
        'last answer out at the server (the first request is sent alone); efficiency = allows / took.',
    );
    if (results.some((r) => r.exit !== 0)) process.exitCode = 1;
  } finally {
    await dropCreated().catch(() => {});
    rmSync(work, { recursive: true, force: true });
  }
}

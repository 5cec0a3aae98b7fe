// `npm run bench -- --scale`: how the load grows with the file (issue 19). The real CLI
// migrates generated files whose stored vectors are reused (f32 blobs, --source-model = --model,
// the local embedder for the few rows that need one, so no API), into a fresh PostgreSQL
// database each, at 100k, 1M and 10M rows × 64 dimensions and 100k × 1,536. For each:
//   load time (the CLI's timings.loadMs) and rows/s;
//   peak RSS of the Node process;
//   Node CPU seconds (process.cpuUsage of the CLI process, read at its exit) and the CPU
//   seconds of the server backends that served it (/proc/<pid>/stat of every backend of its
//   database, polled while it runs), and their ratio; and that ratio per row, with the fixed
//   costs (startup, the file's sha256, the schema) taken out of both sides by a second run of
//   the same file's first 1,000 rows.
// CPU time is the measure: wall time on these shared 2-CPU machines moves with the neighbours.
// The 10M run needs about 8 GB for its file and as much for the database: it is skipped, with a
// message, when the disk holding the temp folder has less than 20 GB free.
//
//   node dist/scripts/bench.js --scale [--sizes 100000x64,1000000x64] [--keep]
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import postgres from 'postgres';

const HERE = dirname(fileURLToPath(import.meta.url));
const CLI = join(HERE, '..', 'src', 'cli.js');
const MAKE_FIXTURE = join(HERE, 'make-fixture.js');
const MODEL = 'local-hash-v1';
const MIN_FREE_FOR_10M = 20 * 1024 ** 3;
/** Linux reports /proc/<pid>/stat times in clock ticks of 1/100 s on every platform we run. */
const TICKS_PER_SECOND = 100;

export interface ScaleSize {
  rows: number;
  dims: number;
}

export const DEFAULT_SCALE_SIZES: ScaleSize[] = [
  { rows: 100_000, dims: 64 },
  { rows: 1_000_000, dims: 64 },
  { rows: 10_000_000, dims: 64 },
  { rows: 100_000, dims: 1536 },
];

interface ScaleResult {
  size: ScaleSize;
  skipped?: string;
  loadSeconds?: number;
  indexSeconds?: number;
  peakRssMb?: number;
  nodeCpuSeconds?: number;
  serverCpuSeconds?: number;
  /** The server's CPU seconds until the vector index build started: the load's. */
  serverLoadCpuSeconds?: number;
  /** The same figures for the first FIXED_COST_ROWS rows of the same file. */
  fixedNodeCpuSeconds?: number;
  fixedServerLoadCpuSeconds?: number;
}

export function parseScaleSizes(arg: string | undefined): ScaleSize[] {
  if (!arg) return DEFAULT_SCALE_SIZES;
  return arg.split(',').map((s) => {
    const m = /^(\d+)x(\d+)$/.exec(s.trim());
    if (!m) throw new Error(`--sizes takes ROWSxDIMS[,ROWSxDIMS…], e.g. 100000x64; got ${s}`);
    return { rows: Number(m[1]), dims: Number(m[2]) };
  });
}

/** CPU seconds of every backend serving `database`, sampled until stop() (the last sample of each pid). */
function watchBackends(sql: postgres.Sql, database: string) {
  const last = new Map<number, number>();
  let stopped = false;
  const sample = async () => {
    const pids = await sql<{ pid: number }[]>`SELECT pid FROM pg_stat_activity WHERE datname = ${database} AND pid <> pg_backend_pid()`;
    for (const { pid } of pids) {
      try {
        // Fields after the parenthesised command name: utime and stime are the 12th and 13th.
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
        const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
        last.set(pid, (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND);
      } catch {
        // Gone between the query and the read, or not readable (another user's server).
      }
    }
  };
  const loop = (async () => {
    while (!stopped) {
      await sample().catch(() => {});
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  const total = () => (last.size === 0 ? undefined : [...last.values()].reduce((a, b) => a + b, 0));
  return {
    /** The CPU seconds so far, sampled now. */
    async now(): Promise<number | undefined> {
      await sample().catch(() => {});
      return total();
    },
    async stop(): Promise<number | undefined> {
      stopped = true;
      await loop;
      return total();
    },
  };
}

/**
 * Writes the generated file in a child process: the generator plans the whole file in memory
 * (unique texts, where the duplicates go), some 6 GB at 10M rows, more than Node's default heap.
 * That is the fixture's memory, not the migration's.
 */
function writeFixture(file: string, size: ScaleSize): void {
  const heapMb = Math.max(4096, Math.ceil(size.rows / 1_000_000) * 1400);
  const args = [`--max-old-space-size=${heapMb}`, MAKE_FIXTURE, '--out', file, '--rows', String(size.rows),
    '--dims', String(size.dims), '--encoding', 'f32', '--users', '8'];
  const r = spawnSync(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`make-fixture exited ${r.status ?? r.signal}: ${(r.stderr ?? '').trim().split('\n').pop()}`);
}

/**
 * Runs the CLI with a preload that writes its own CPU time and peak RSS when it exits;
 * onLine(line) for each line it writes to stderr.
 */
function runMigrate(args: string[], usageFile: string, onLine: (line: string) => void): Promise<{ code: number; stdout: string; stderr: string }> {
  const preload = join(HERE, 'bench-scale-usage.js');
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', preload, CLI, ...args], {
      env: { ...process.env, BENCH_USAGE_FILE: usageFile },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    let partial = '';
    child.stderr.on('data', (d) => {
      stderr += d;
      const lines = (partial + d).split('\n');
      partial = lines.pop()!;
      for (const line of lines) onLine(line);
    });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}

/** Rows of the small run beside each size: its CPU is the run's fixed cost (startup, the file's sha256, schema). */
const FIXED_COST_ROWS = 1000;

interface RunFigures {
  loadSeconds: number;
  indexSeconds: number;
  peakRssMb: number;
  nodeCpuSeconds: number;
  serverCpuSeconds?: number;
  serverLoadCpuSeconds?: number;
}

/** Migrates `file` (its first `limit` rows when given) into a fresh database of the server. */
async function migrateOnce(admin: postgres.Sql, serverUrl: string, file: string, size: ScaleSize, dir: string, tag: string, limit?: number): Promise<RunFigures> {
  const database = `mm_scale_${process.pid}_${size.rows}_${size.dims}_${tag}`;
  await admin.unsafe(`CREATE DATABASE ${database}`);
  const url = new URL(serverUrl);
  url.pathname = `/${database}`;
  const usageFile = join(dir, 'usage.json');
  try {
    const backends = watchBackends(admin, database);
    // The server's CPU for the load alone: sampled when the CLI says the first vector index
    // build starts (the btree indexes a first load builds again are part of its load).
    let loadServerCpu: Promise<number | undefined> | undefined;
    const run = await runMigrate(
      ['migrate', '--sqlite', file, '--database-url', url.toString(), '--embedder', 'local', '--model', MODEL,
        '--source-model', MODEL, '--dimensions', String(size.dims), '--skip-test', '--json',
        ...(limit === undefined ? [] : ['--limit', String(limit)])],
      usageFile,
      (line) => {
        if (loadServerCpu === undefined && line.startsWith('building ivfflat index')) loadServerCpu = backends.now();
      },
    );
    const serverCpu = await backends.stop();
    const serverLoadCpu = await loadServerCpu;
    if (run.code !== 0) throw new Error(`migrate exited ${run.code}: ${run.stderr.trim().split('\n').pop()}`);
    const report = JSON.parse(run.stdout);
    const usage = JSON.parse(readFileSync(usageFile, 'utf8')) as { cpuMicros: number; maxRssKb: number };
    return {
      loadSeconds: report.timings.loadMs / 1000,
      indexSeconds: report.timings.indexMs / 1000,
      peakRssMb: usage.maxRssKb / 1024,
      nodeCpuSeconds: usage.cpuMicros / 1e6,
      ...(serverCpu !== undefined ? { serverCpuSeconds: serverCpu } : {}),
      ...(serverLoadCpu !== undefined ? { serverLoadCpuSeconds: serverLoadCpu } : {}),
    };
  } finally {
    await admin.unsafe(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`).catch(() => {});
  }
}

async function measure(serverUrl: string, size: ScaleSize, dir: string, keep: boolean): Promise<ScaleResult> {
  const free = statfsSync(dir);
  if (size.rows >= 10_000_000 && free.bavail * free.bsize < MIN_FREE_FOR_10M) {
    return { size, skipped: `skipped: ${(free.bavail * free.bsize / 1024 ** 3).toFixed(1)} GB free in ${dir}, the 10M run needs 20 GB` };
  }
  const file = join(dir, `scale-${size.rows}x${size.dims}.db`);
  process.stderr.write(`scale bench: writing ${size.rows.toLocaleString('en-US')} rows × ${size.dims}…\n`);
  writeFixture(file, size);
  const admin = postgres(serverUrl, { max: 1, onnotice: () => {} });
  try {
    process.stderr.write(`scale bench: migrating ${size.rows.toLocaleString('en-US')} rows × ${size.dims}…\n`);
    const full = await migrateOnce(admin, serverUrl, file, size, dir, 'all');
    // The same file, its first rows only: the CPU both runs share (startup, the file's sha256,
    // the schema), so the difference is what the other rows cost each side.
    const small = await migrateOnce(admin, serverUrl, file, size, dir, 'first', FIXED_COST_ROWS);
    return {
      size,
      ...full,
      fixedNodeCpuSeconds: small.nodeCpuSeconds,
      ...(small.serverLoadCpuSeconds !== undefined ? { fixedServerLoadCpuSeconds: small.serverLoadCpuSeconds } : {}),
    };
  } finally {
    if (!keep) rmSync(file, { force: true });
    await admin.end();
  }
}

/** Node's CPU per row over the server's, once the fixed costs of a run are taken out of both. */
function perRowRatio(r: ScaleResult): number | undefined {
  if (r.serverLoadCpuSeconds === undefined || r.fixedNodeCpuSeconds === undefined || r.fixedServerLoadCpuSeconds === undefined) return undefined;
  const server = r.serverLoadCpuSeconds - r.fixedServerLoadCpuSeconds;
  return server > 0 ? (r.nodeCpuSeconds! - r.fixedNodeCpuSeconds) / server : undefined;
}

const fmt = (n: number | undefined, digits = 2) => (n === undefined ? '—' : n.toFixed(digits));

export async function runScaleBench(serverUrl: string, sizes: ScaleSize[], keep: boolean): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'mm-bench-scale-'));
  const results: ScaleResult[] = [];
  try {
    for (const size of sizes) {
      const r = await measure(serverUrl, size, dir, keep);
      if (r.skipped) process.stderr.write(`scale bench: ${size.rows} × ${size.dims} ${r.skipped}\n`);
      results.push(r);
    }
  } finally {
    if (!keep) rmSync(dir, { recursive: true, force: true });
  }
  const base = results.find((r) => r.size.rows === 100_000 && r.size.dims === 64 && !r.skipped);
  const lines = [
    '| rows | dims | load | rows/s | rows/s vs 100k | indexes | peak RSS | RSS vs 100k | Node CPU | server CPU, load | Node ÷ server, load | Node ÷ server, per row | server CPU, with indexes |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of results) {
    const label = `| ${r.size.rows.toLocaleString('en-US')} | ${r.size.dims} |`;
    if (r.skipped) {
      lines.push(`${label} ${r.skipped} | | | | | | | | | | |`);
      continue;
    }
    const rate = r.size.rows / r.loadSeconds!;
    const baseRate = base ? base.size.rows / base.loadSeconds! : undefined;
    const sameDims = base && r.size.dims === base.size.dims;
    lines.push(
      `${label} ${fmt(r.loadSeconds)} s | ${Math.round(rate).toLocaleString('en-US')} | ${sameDims ? fmt(rate / baseRate!) + '×' : '—'} | ` +
        `${fmt(r.indexSeconds)} s | ${fmt(r.peakRssMb, 0)} MB | ${sameDims ? fmt(r.peakRssMb! / base.peakRssMb!) + '×' : '—'} | ` +
        `${fmt(r.nodeCpuSeconds)} s | ${r.serverLoadCpuSeconds === undefined ? 'not readable' : fmt(r.serverLoadCpuSeconds) + ' s'} | ` +
        `${r.serverLoadCpuSeconds ? fmt(r.nodeCpuSeconds! / r.serverLoadCpuSeconds) : '—'} | ${fmt(perRowRatio(r))} | ` +
        `${r.serverCpuSeconds === undefined ? 'not readable' : fmt(r.serverCpuSeconds) + ' s'} |`,
    );
  }
  console.log(lines.join('\n'));
  console.log(
    '\nload = the CLI\'s timings.loadMs (rows read to last batch committed, indexes not included); Node CPU = user + system ' +
      'of the CLI process over the whole run (it idles while the server builds the vector indexes); server CPU = ' +
      'user + system of every backend of the run\'s database (/proc/<pid>/stat, sampled every 200 ms), until the ' +
      'first vector index build starts ("load") and to the end ("with indexes"). Per row = (Node CPU − Node CPU of a ' +
      `run of the file's first ${FIXED_COST_ROWS} rows) ÷ (the same for the server's load CPU): the fixed costs both runs ` +
      "share (startup, the file's sha256, the schema) left out.",
  );
  writeFileSync(join(tmpdir(), 'memory-migrate-bench-scale.json'), JSON.stringify(results, null, 2));
}

/** `--scale [--sizes 100000x64,…] [--keep]` from bench.ts, against the server it found. */
export function benchScale(argv: string[], serverUrl: string): Promise<void> {
  const at = argv.indexOf('--sizes');
  return runScaleBench(serverUrl, parseScaleSizes(at >= 0 ? argv[at + 1] : undefined), argv.includes('--keep'));
}

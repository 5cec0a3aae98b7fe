// Shared pieces of the re-run suites (rerun, dedup, ledger, shard): a CLI child the test can
// signal, an ordered dump of the migrated tables to compare two targets exactly, and a
// hand-written EspressoBot-layout file for rows the generated fixture does not pin down.
import { spawn, type ChildProcess } from 'node:child_process';
import { cpSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { openDb, withDb, type Db, type TargetOptions } from '../../src/postgres/connection.js';

export { withDb };
import { CLI, type CliResult } from './cli.js';
import type { TestTarget } from './targets.js';

let pgliteTemplate: Promise<string> | undefined;

/**
 * target.fresh(), but a fresh PGlite directory is a copy of one initialised once per test
 * process (initdb costs seconds per directory; a copy of the empty cluster is the same thing).
 */
export async function freshTarget(target: TestTarget): Promise<TargetOptions> {
  if (target.name !== 'pglite') return target.fresh();
  // initdb runs in a child process: in this one it would block the event loop for seconds,
  // and with it the fake API servers other suites' CLI runs are talking to.
  pgliteTemplate ??= new Promise<string>((resolve, reject) => {
    const dir = mkdtempSync(join(tmpdir(), 'mm-pglite-template-'));
    const connection = new URL('../../src/postgres/connection.js', import.meta.url).href;
    const script = `const { openDb } = await import(${JSON.stringify(connection)}); const db = await openDb({ pgliteDir: process.argv[1] }); await db.close();`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, dir], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr!.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(dir) : reject(new Error(`PGlite template initdb failed (${code}): ${err}`))));
  });
  const template = await pgliteTemplate;
  const dir = mkdtempSync(join(tmpdir(), 'mm-pglite-'));
  cpSync(template, dir, { recursive: true });
  return { pgliteDir: dir };
}


export async function count(db: Db, sql: string, params: unknown[] = []): Promise<number> {
  const [row] = await db.query<{ n: number }>(sql, params);
  return Number(row!.n);
}

export interface RunningCli {
  child: ChildProcess;
  readonly stdout: string;
  readonly stderr: string;
  /** Resolves on the first stdout/stderr line matching re. */
  waitFor(re: RegExp): Promise<void>;
  done: Promise<CliResult>;
}

/** Starts the real CLI like runCli, but hands back the child so the test can signal it. */
export function startCli(args: string[], env: Record<string, string | undefined> = {}, timeoutMs = 120_000): RunningCli {
  const childEnv: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...process.env, CI: 'true', DATABASE_URL: undefined, ...env })) {
    if (v !== undefined) childEnv[k] = v;
  }
  const child = spawn(process.execPath, [CLI, ...args], { env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  const waiters: { re: RegExp; resolve: () => void }[] = [];
  const check = () => {
    for (let i = waiters.length - 1; i >= 0; i--) {
      if (waiters[i]!.re.test(stdout) || waiters[i]!.re.test(stderr)) {
        waiters[i]!.resolve();
        waiters.splice(i, 1);
      }
    }
  };
  child.stdout!.on('data', (d) => {
    stdout += d;
    check();
  });
  child.stderr!.on('data', (d) => {
    stderr += d;
    check();
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const done = new Promise<CliResult>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      for (const w of waiters) w.resolve();
      resolve({ code, signal, stdout, stderr });
    });
  });
  return {
    child,
    get stdout() {
      return stdout;
    },
    get stderr() {
      return stderr;
    },
    waitFor(re) {
      return new Promise<void>((resolve) => {
        waiters.push({ re, resolve });
        check();
      });
    },
    done,
  };
}

export interface TableDump {
  memories: Record<string, unknown>[];
  duplicates: Record<string, unknown>[];
  fragments: Record<string, unknown>[];
  skips: Record<string, unknown>[];
  /** The indexes of the migrated tables (a first load drops and rebuilds the btree ones). */
  indexes: Record<string, unknown>[];
}

/**
 * Every migrated table in a fixed order, as text. Left out: columns a run legitimately sets
 * to its own clock (memory_duplicates/migration_skips.created_at, the default fragments'
 * timestamps, which have no source row) and the ledger, cache and analytics tables.
 */
export async function dumpTables(opts: TargetOptions): Promise<TableDump> {
  return withDb(opts, dumpDb);
}

export async function dumpDb(db: Db): Promise<TableDump> {
  {
    const memories = await db.query(
      `SELECT id, user_id, content, content_hash, dedup_hash, embedding::text AS embedding, embedding_model,
              metadata::text AS metadata, category, importance_score::text AS importance_score, access_count,
              extract(epoch FROM created_at)::text AS created_at, extract(epoch FROM updated_at)::text AS updated_at
         FROM memories ORDER BY id COLLATE "C"`,
    );
    const duplicates = await db.query(
      `SELECT original_id, duplicate_id, user_id, duplicate_hash, similarity_score::text AS similarity, dedup_type
         FROM memory_duplicates ORDER BY duplicate_id COLLATE "C", dedup_type`,
    );
    const fragments = await db.query(
      `SELECT id, category, priority, content, content_hash, tags::text AS tags, embedding::text AS embedding, embedding_model,
              agent_type, context_tier, is_active, metadata::text AS metadata,
              CASE WHEN id LIKE 'default:%' THEN NULL ELSE extract(epoch FROM created_at)::text END AS created_at,
              CASE WHEN id LIKE 'default:%' THEN NULL ELSE extract(epoch FROM updated_at)::text END AS updated_at
         FROM prompt_fragments ORDER BY id COLLATE "C"`,
    );
    const skips = await db.query(`SELECT source_id, user_id, reason FROM migration_skips ORDER BY source_id COLLATE "C"`);
    const indexes = await db.query(
      `SELECT tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = current_schema() AND tablename IN ('memories', 'memory_duplicates', 'prompt_fragments', 'migration_skips')
        ORDER BY tablename, indexname COLLATE "C"`,
    );
    return { memories, duplicates, fragments, skips, indexes };
  }
}

/** deepEqual with a short message (the full diff of 300 rows is unreadable). */
export function dumpDiff(a: TableDump, b: TableDump): string | null {
  for (const table of ['memories', 'duplicates', 'fragments', 'skips', 'indexes'] as const) {
    const x = a[table];
    const y = b[table];
    if (x.length !== y.length) return `${table}: ${x.length} rows vs ${y.length} rows`;
    for (let i = 0; i < x.length; i++) {
      const l = JSON.stringify(x[i]);
      const r = JSON.stringify(y[i]);
      if (l !== r) return `${table} row ${i} differs:\n  ${l.slice(0, 600)}\n  ${r.slice(0, 600)}`;
    }
  }
  return null;
}

export interface HandRow {
  id: string;
  user: string | null;
  content: string;
  metadata?: string | null;
  created?: string;
  updated?: string;
}

/** Writes an EspressoBot-layout memories file with exactly these rows, in this order. */
export function writeMemoryFile(path: string, rows: HandRow[]): void {
  const db = new Database(path);
  try {
    db.exec(`CREATE TABLE memories (
      id TEXT PRIMARY KEY, user_id TEXT, content TEXT NOT NULL, embedding BLOB, metadata TEXT,
      created_at DATETIME DEFAULT CURRENT_TIMESTAMP, updated_at DATETIME DEFAULT CURRENT_TIMESTAMP)`);
    const ins = db.prepare('INSERT INTO memories (id, user_id, content, embedding, metadata, created_at, updated_at) VALUES (?, ?, ?, NULL, ?, ?, ?)');
    rows.forEach((r, i) => {
      const t = new Date(Date.UTC(2024, 0, 1) + i * 60_000).toISOString().slice(0, 19).replace('T', ' ');
      ins.run(r.id, r.user, r.content, r.metadata === undefined ? '{"agent":"EspressoBot"}' : r.metadata, r.created ?? t, r.updated ?? r.created ?? t);
    });
  } finally {
    db.close();
  }
}

/** All texts the fake server was asked to embed, in order. */
export function sentTexts(requests: { body: any }[]): string[] {
  const out: string[] = [];
  for (const r of requests) {
    const input = r.body?.input;
    if (typeof input === 'string') out.push(input);
    else if (Array.isArray(input)) out.push(...input);
  }
  return out;
}

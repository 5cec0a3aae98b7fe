// Adopting an app's own tables: the app made `memories` with its own DDL (SERIAL or UUID ids,
// columns of its own with defaults, TIMESTAMPTZ or TIMESTAMP, JSONB or TEXT metadata) and
// memory-migrate writes into it without changing a column, keeping its links and hashes in
// schema memory_migrate. The app's own statements run on the result; re-runs, --limit,
// --dry-run, --mirror-deletes, kill -9, verify and rollback all work in this mode.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { copyFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testTargets } from '../helpers/targets.js';
import { FIXTURE, runCli, targetArgs, parseJson } from '../helpers/cli.js';
import { freshTarget, startCli } from '../helpers/rerun.js';
import { startFakeOpenAI } from '../helpers/fake-openai.js';
import { withDb, type Db, type TargetOptions } from '../../src/postgres/connection.js';
import { contentHash, dedupHash } from '../../src/source/canonical.js';
import { rowUuid } from '../../src/postgres/row-uuid.js';

const dir = mkdtempSync(join(tmpdir(), 'mm-adopt-'));

/** An app's own DDL: SERIAL ids, a status and a decay score with defaults, TIMESTAMPTZ. */
const SERIAL_APP = `
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE memories (
  id          SERIAL PRIMARY KEY,
  user_id     VARCHAR(255) NOT NULL,
  content     TEXT NOT NULL,
  embedding   vector(384),
  metadata    JSONB DEFAULT '{}',
  status      TEXT NOT NULL DEFAULT 'active',
  decay_score REAL NOT NULL DEFAULT 1.0,
  created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
  updated_at  TIMESTAMPTZ DEFAULT now()
);`;

/** BIGINT identity ids (GENERATED ALWAYS: an INSERT may not give one). */
const IDENTITY_APP = SERIAL_APP.replace('id          SERIAL PRIMARY KEY', 'id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY');

/** TEXT ids with no default (the source id is kept), JSON metadata. */
const TEXT_APP = `
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE memories (
  id          TEXT PRIMARY KEY,
  user_id     TEXT,
  content     TEXT NOT NULL,
  embedding   vector(384),
  metadata    JSON,
  created_at  TIMESTAMPTZ DEFAULT now()
);`;

/** Another app: UUID ids with no default, TEXT metadata, TIMESTAMP, no user column, its own HNSW index. */
const UUID_APP = `
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE memories (
  id          UUID PRIMARY KEY,
  content     TEXT NOT NULL,
  embedding   vector(384),
  metadata    TEXT,
  created_at  TIMESTAMP NOT NULL DEFAULT now(),
  usage_count INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX app_memories_hnsw ON memories USING hnsw (embedding vector_l2_ops);`;

async function appTarget(target: Parameters<typeof freshTarget>[0], ddl: string): Promise<TargetOptions> {
  const t = await freshTarget(target);
  await withDb(t, (db) => db.exec(ddl));
  return t;
}

function copyOfFixture(name: string): string {
  const path = join(dir, name);
  copyFileSync(FIXTURE, path);
  return path;
}

async function migrate(file: string, t: TargetOptions, extra: string[] = []) {
  const res = await runCli(['migrate', '--sqlite', file, ...targetArgs(t), '--embedder', 'local', '--skip-test', '--json', ...extra]);
  assert.equal(res.code, 0, res.stderr);
  return { report: parseJson(res), stderr: res.stderr };
}

async function n(db: Db, sql: string, params: unknown[] = []): Promise<number> {
  const [r] = await db.query<{ n: number }>(sql, params);
  return Number(r!.n);
}

/** The app's columns, as its own DDL made them. */
async function appColumns(db: Db): Promise<string[]> {
  const rows = await db.query<{ c: string }>(
    `SELECT column_name || ' ' || data_type || ' ' || is_nullable || ' ' || COALESCE(column_default, '') AS c
       FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'memories' ORDER BY ordinal_position`,
  );
  return rows.map((r) => r.c);
}

/** Rows of the app's table whose link's hashes differ from the JavaScript hashes of their content. */
async function linkHashMismatches(db: Db, idType: string): Promise<number> {
  const rows = await db.query<{ content: string; content_hash: string; dedup_hash: string }>(
    `SELECT a.content, l.content_hash, l.dedup_hash FROM memory_migrate.memory_links l JOIN public.memories a ON a.id = l.target_id::${idType}`,
  );
  assert.ok(rows.length > 100);
  return rows.filter((r) => r.content_hash !== contentHash(r.content) || r.dedup_hash !== dedupHash(r.content)).length;
}

for (const target of testTargets()) {
  describe(`adopting an app's own memories table (${target.name})`, { concurrency: 2 }, () => {
    test('SERIAL ids and app columns: loaded in place, app SQL works, re-run, verify, rollback', async () => {
      const t = await appTarget(target, SERIAL_APP);
      const before = await withDb(t, appColumns);
      const { report, stderr } = await migrate(FIXTURE, t);
      assert.match(stderr, /public\.memories is the app's own table \(id integer, from its own default\)/);
      assert.equal(report.cutover.mode, 'adopted');
      assert.equal(report.cutover.table, 'public.memories');
      assert.equal(report.cutover.index, 'memories_embedding_idx', 'the missing vector index is built on the app table');
      assert.equal(report.cutover.uuidColumn, null);
      const migrated = report.memories.migrated;
      assert.ok(migrated > 200, `migrated ${migrated}`);
      await withDb(t, async (db) => {
        assert.deepEqual(await appColumns(db), before, 'no app column is added, dropped, retyped or renamed');
        const publicTables = await db.query<{ t: string }>(`SELECT tablename AS t FROM pg_tables WHERE schemaname = 'public'`);
        assert.deepEqual(publicTables.map((r) => r.t), ['memories'], 'the app schema gains nothing');
        assert.equal(await n(db, `SELECT count(*)::int AS n FROM public.memories`), migrated);
        assert.equal(await n(db, `SELECT count(*)::int AS n FROM public.memories WHERE status = 'active' AND decay_score = 1`), migrated, 'app-only columns take their defaults');
        assert.equal(await n(db, `SELECT count(*)::int AS n FROM memory_migrate.memory_links`), migrated);
        assert.equal(await linkHashMismatches(db, 'integer'), 0);
        // TIMESTAMPTZ holds the source's instant.
        const [ts] = await db.query<{ at: string }>(
          `SELECT to_char(a.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') AS at FROM public.memories a
             JOIN memory_migrate.memory_links l ON a.id = l.target_id::int WHERE l.source_id = 'mem_1705573918277_f6q9vwov8'`,
        );
        assert.equal(ts!.at, '2024-01-18 10:31:58');
        // The printed query form is served by the index it names.
        const plan = await db.transaction(async (tx) => {
          await tx.exec('SET LOCAL enable_seqscan = off');
          const [v] = await tx.query<{ v: string }>(`SELECT embedding::text AS v FROM public.memories LIMIT 1`);
          return tx.query<Record<string, string>>(`EXPLAIN ${report.cutover.query}`, [v!.v, 5]);
        });
        assert.match(plan.map((r) => Object.values(r)[0]).join('\n'), /memories_embedding_idx/);
      });

      const again = await migrate(FIXTURE, t);
      assert.deepEqual([again.report.memories.migrated, again.report.memories.updated], [0, 0], 'a re-run writes nothing');
      const clean = await runCli(['verify', '--sqlite', FIXTURE, ...targetArgs(t), '--json']);
      assert.equal(clean.code, 0, clean.stdout + clean.stderr);

      // The app's own statements, on its own table, with its own search_path.
      const appRow = await withDb(t, async (db) => {
        const [v] = await db.query<{ v: string }>(`SELECT embedding::text AS v FROM public.memories ORDER BY id LIMIT 1`);
        const [ins] = await db.query<{ id: number }>(
          `INSERT INTO public.memories (user_id, content, embedding, metadata) VALUES ('user_1', 'Switched to decaf after 3pm', $1::vector, '{"n": 12345678901234567890}') RETURNING id`,
          [v!.v],
        );
        assert.equal(typeof ins!.id, 'number');
        await db.query(`UPDATE public.memories SET status = 'archived', decay_score = 0.5 WHERE id = 2`);
        await db.query(`UPDATE public.memories SET content = 'Edited by the app after cutover', updated_at = now() WHERE id = 3`);
        return ins!.id;
      });
      const after = await runCli(['verify', '--sqlite', FIXTURE, ...targetArgs(t), '--json']);
      assert.equal(after.code, 3, 'Postgres is ahead of the file until rollback');
      const v = parseJson(after);
      assert.equal(v.mismatchCount, 0, after.stdout);
      assert.deepEqual({ added: v.sinceMigration.added, changed: v.sinceMigration.changed }, { added: 1, changed: 1 });
      assert.ok(appRow > migrated);

      const file = copyOfFixture(`rollback-${target.name}.db`);
      const rb = await runCli(['rollback', '--sqlite', file, ...targetArgs(t)]);
      assert.equal(rb.code, 0, rb.stderr);
      const sqlite = new Database(file, { readonly: true });
      try {
        const rows = sqlite.prepare(`SELECT content FROM memories WHERE content IN ('Switched to decaf after 3pm', 'Edited by the app after cutover')`).all();
        assert.equal(rows.length, 2);
      } finally {
        sqlite.close();
      }
      const parity = await runCli(['verify', '--sqlite', file, ...targetArgs(t), '--json']);
      assert.equal(parity.code, 0, parity.stdout + parity.stderr);

      // Migrating the rolled-back file again finds the app's row under its app id: nothing twice.
      const roundTrip = await migrate(file, t);
      assert.deepEqual([roundTrip.report.memories.migrated, roundTrip.report.memories.updated], [0, 0]);
      // A migrated row the app deleted is written again by the next run (its stale link is replaced).
      const rows = await withDb(t, async (db) => {
        await db.query(`DELETE FROM public.memories WHERE id = 1`);
        return n(db, `SELECT count(*)::int AS n FROM public.memories`);
      });
      const restored = await migrate(file, t);
      assert.equal(restored.report.memories.migrated, 1);
      await withDb(t, async (db) => {
        assert.equal(await n(db, `SELECT count(*)::int AS n FROM public.memories`), rows + 1);
        assert.equal(await n(db, `SELECT count(*)::int AS n FROM memory_migrate.memory_links l WHERE NOT EXISTS (SELECT 1 FROM public.memories a WHERE a.id = l.target_id::int)`), 0);
      });
    });

    test('UUID ids, TEXT metadata, TIMESTAMP, no user column, its own HNSW index: dry run, --limit, edits, --mirror-deletes', async () => {
      const t = await appTarget(target, UUID_APP);
      const dry = await runCli(['migrate', '--sqlite', FIXTURE, ...targetArgs(t), '--embedder', 'local', '--dry-run']);
      assert.equal(dry.code, 0, dry.stderr);
      assert.match(dry.stderr + dry.stdout, /would write into it/);
      await withDb(t, async (db) => {
        assert.equal(await n(db, `SELECT count(*)::int AS n FROM pg_namespace WHERE nspname = 'memory_migrate'`), 0, 'a dry run writes nothing');
      });
      const limited = await migrate(FIXTURE, t, ['--limit', '50']);
      await withDb(t, async (db) => {
        assert.equal(await n(db, `SELECT count(*)::int AS n FROM public.memories`), limited.report.memories.migrated);
      });
      const { report } = await migrate(FIXTURE, t);
      assert.equal(report.cutover.index, 'app_memories_hnsw', "the app's own index is kept, and no second one built");
      assert.match(report.cutover.query, /embedding <-> \$1::vector\(384\) LIMIT \$2/);
      assert.equal(report.cutover.uuidColumn, 'id');
      await withDb(t, async (db) => {
        const links = await db.query<{ source_id: string; target_id: string; user_id: string }>(`SELECT source_id, target_id, user_id FROM memory_migrate.memory_links`);
        assert.ok(links.length > 200);
        assert.ok(links.every((l) => l.target_id === rowUuid(l.source_id)), 'a UUID id with no default is derived from the source id');
        assert.ok(links.every((l) => /^user_\d+$/.test(l.user_id)), 'the user is kept in the links when the app has no column for it');
        assert.equal(await n(db, `SELECT count(*)::int AS n FROM pg_indexes WHERE tablename = 'memories' AND indexname = 'memories_embedding_idx'`), 0);
        assert.equal(await n(db, `SELECT count(*)::int AS n FROM public.memories WHERE metadata::jsonb ? 'agent' AND usage_count = 0`) > 100, true);
        assert.equal(await linkHashMismatches(db, 'uuid'), 0);
      });
      assert.equal((await runCli(['verify', '--sqlite', FIXTURE, ...targetArgs(t)])).code, 0);

      // Catch-up: rows edited and deleted in the file reach the app's table.
      const file = copyOfFixture(`edits-${target.name}.db`);
      const sqlite = new Database(file);
      const [edited, gone] = sqlite.prepare(`SELECT id FROM memories WHERE user_id = 'user_1' ORDER BY rowid LIMIT 2`).all().map((r: any) => r.id as string);
      sqlite.prepare(`UPDATE memories SET content = 'Edited in SQLite before cutover', updated_at = '2025-01-01 00:00:00' WHERE id = ?`).run(edited);
      sqlite.prepare(`DELETE FROM memories WHERE id = ?`).run(gone);
      sqlite.close();
      const catchUp = await migrate(file, t, ['--mirror-deletes']);
      assert.equal(catchUp.report.memories.updated, 1);
      await withDb(t, async (db) => {
        const [row] = await db.query<{ content: string }>(`SELECT content FROM public.memories WHERE id = $1::uuid`, [rowUuid(edited!)]);
        assert.equal(row!.content, 'Edited in SQLite before cutover');
        assert.equal(await n(db, `SELECT count(*)::int AS n FROM public.memories WHERE id = $1::uuid`, [rowUuid(gone!)]), 0);
        assert.equal(await n(db, `SELECT count(*)::int AS n FROM memory_migrate.memory_links WHERE source_id = $1`, [gone]), 0);
        assert.equal(await linkHashMismatches(db, 'uuid'), 0);
      });
      const parity = await runCli(['verify', '--sqlite', file, ...targetArgs(t)]);
      assert.equal(parity.code, 0, parity.stdout + parity.stderr);
    });

    test('BIGINT identity ids: --shard 0/2 and 1/2, then --user: every row once, parity', async () => {
      const t = await appTarget(target, IDENTITY_APP);
      const one = await migrate(FIXTURE, t, ['--shard', '0/2']);
      const two = await migrate(FIXTURE, t, ['--shard', '1/2']);
      assert.ok(one.report.memories.migrated > 0 && two.report.memories.migrated > 0);
      const user = await migrate(FIXTURE, t, ['--user', 'user_1']);
      assert.deepEqual([user.report.memories.migrated, user.report.memories.updated], [0, 0]);
      await withDb(t, async (db) => {
        const total = await n(db, `SELECT count(*)::int AS n FROM public.memories`);
        assert.equal(total, one.report.memories.migrated + two.report.memories.migrated);
        assert.equal(await n(db, `SELECT count(*)::int AS n FROM memory_migrate.memory_links`), total);
      });
      const parity = await runCli(['verify', '--sqlite', FIXTURE, ...targetArgs(t)]);
      assert.equal(parity.code, 0, parity.stdout + parity.stderr);
    });

    test('tables it cannot fill are refused with exit 2, before anything is written', async () => {
      const cases: { ddl: string; args?: string[]; message: RegExp }[] = [
        { ddl: SERIAL_APP.replace('vector(384)', 'vector(1536)'), message: /vector\(1536\) but this run embeds with 384 dimensions: pass --dimensions 1536/ },
        { ddl: SERIAL_APP.replace("status      TEXT NOT NULL DEFAULT 'active'", 'tenant_id INTEGER NOT NULL'), message: /NOT NULL column tenant_id with no default/ },
        { ddl: SERIAL_APP, args: ['--force-recreate'], message: /--force-recreate would move the app's own table public\.memories aside/ },
      ];
      for (const c of cases) {
        const t = await appTarget(target, c.ddl);
        const before = await withDb(t, appColumns);
        const res = await runCli(['migrate', '--sqlite', FIXTURE, ...targetArgs(t), '--embedder', 'local', '--skip-test', ...(c.args ?? [])]);
        assert.equal(res.code, 2, res.stderr);
        assert.match(res.stderr, c.message);
        assert.equal(res.stderr.trim().split('\n').filter((l) => /memory-migrate:/.test(l)).length, 1, res.stderr);
        await withDb(t, async (db) => {
          assert.deepEqual(await appColumns(db), before);
          assert.equal(await n(db, `SELECT count(*)::int AS n FROM public.memories`), 0);
          assert.equal(await n(db, `SELECT count(*)::int AS n FROM pg_namespace WHERE nspname = 'memory_migrate'`), 0);
        });
      }
    });

    test('TEXT ids: kill -9 mid-run, then the same command: no row twice, every row linked once', async () => {
      const api = await startFakeOpenAI();
      try {
        const t = await appTarget(target, TEXT_APP);
        const args = ['migrate', '--sqlite', FIXTURE, ...targetArgs(t), '--model', 'text-embedding-3-small', '--dimensions', '384', '--batch-size', '40', '--skip-test', '--json'];
        const env = { OPENAI_API_KEY: 'sk-test-adopt-0001', OPENAI_BASE_URL: api.url };
        // Killed the moment the CLI logs a committed batch. Without a terminal it logs progress
        // at most every 5 s, after a commit: the first answer comes after 5.2 s, so the first
        // commit is logged; from the 4th request on answers are slow, so the run cannot finish first.
        api.setFaults((_n, body) => {
          if (body?.input === undefined) return undefined;
          const k = api.embeddingRequests.length;
          return k === 1 ? { delayMs: 5200 } : k >= 4 ? { delayMs: 3000 } : undefined;
        });
        const running = startCli(args, env);
        await running.waitFor(/^memories: \d+\/\d+ rows \(\d+%\)/m);
        running.child.kill('SIGKILL');
        const killed = await running.done;
        assert.equal(killed.signal, 'SIGKILL', `the run finished before the kill (exit ${killed.code}):\n${killed.stderr}`);
        const committed = await withDb(t, (db) => n(db, `SELECT count(*)::int AS n FROM public.memories`));
        assert.ok(committed > 0, 'batches were committed before the kill');
        api.setFaults(undefined);
        const res = await runCli(args, env);
        assert.equal(res.code, 0, res.stderr);
        await withDb(t, async (db) => {
          const total = await n(db, `SELECT count(*)::int AS n FROM public.memories`);
          assert.equal(await n(db, `SELECT count(DISTINCT (user_id, content))::int AS n FROM public.memories`), total, 'no row twice');
          assert.equal(await n(db, `SELECT count(*)::int AS n FROM memory_migrate.memory_links`), total);
          assert.equal(total, committed + parseJson(res).memories.migrated);
          assert.equal(await n(db, `SELECT count(*)::int AS n FROM memory_migrate.memory_links WHERE target_id <> source_id`), 0, 'a TEXT id with no default is the source id');
        });
        assert.equal((await runCli(['verify', '--sqlite', FIXTURE, ...targetArgs(t)])).code, 0);
      } finally {
        await api.close();
      }
    });
  });
}

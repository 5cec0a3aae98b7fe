// End to end: the real CLI migrates a generated EspressoBot-layout file into each target,
// and the assertions read the rows back from Postgres and the bytes of the SQLite file.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testTargets } from '../helpers/targets.js';
import { runCli, targetArgs, sha256File, parseJson } from '../helpers/cli.js';
import { startFakeOpenAI, type FakeOpenAI } from '../helpers/fake-openai.js';
import { makeFixture, type FixtureSummary } from '../../scripts/make-fixture.js';
import { openDb, type Db } from '../../src/postgres/connection.js';
import { openSource } from '../../src/source/reader.js';
import { parseVectorText } from '../../src/postgres/vector-text.js';

const dir = mkdtempSync(join(tmpdir(), 'mm-migrate-'));
const fixturePath = join(dir, 'memory.db');
let fixture: FixtureSummary;

before(() => {
  fixture = makeFixture({ out: fixturePath, rows: 240, dims: 1536, encoding: 'mixed', users: 6, seed: 7 });
});

async function withDb<T>(opts: Parameters<typeof openDb>[0], fn: (db: Db) => Promise<T>): Promise<T> {
  const db = await openDb(opts);
  try {
    return await fn(db);
  } finally {
    await db.close();
  }
}

async function count(db: Db, sql: string, params: unknown[] = []): Promise<number> {
  const [row] = await db.query<{ n: number }>(sql, params);
  return Number(row!.n);
}

for (const target of testTargets()) {
  describe(`migrate on ${target.name}`, () => {
    test('migrates the fixture, self-tests, and a second run writes nothing', async () => {
      const t = await target.fresh();
      const before = sha256File(fixturePath);
      const first = await runCli(['migrate', '--sqlite', fixturePath, ...targetArgs(t), '--embedder', 'local', '--json']);
      assert.equal(first.code, 0, first.stderr);
      const r = parseJson(first);
      assert.equal(r.ok, true);
      for (const k of ['read', 'migrated', 'skipped', 'errors']) assert.equal(typeof r.memories[k], 'number', k);
      for (const k of ['migrated', 'defaults']) assert.equal(typeof r.fragments[k], 'number', k);
      assert.equal(r.embeddings.model, 'local-hash-v1');
      assert.equal(r.embeddings.dimensions, 384);
      assert.equal(r.selftest.ran, true);
      assert.equal(r.selftest.passed, true, JSON.stringify(r.selftest.checks));
      assert.ok(r.selftest.checks.length >= 7);
      assert.equal(typeof r.durationMs, 'number');
      assert.equal(r.fragments.defaults, 7);
      assert.equal(r.fragments.migrated, fixture.systemPrompts);
      assert.equal(r.memories.duplicates.exact, fixture.exactDuplicates.total);
      assert.equal(r.memories.read, fixture.rows - fixture.systemPrompts);
      assert.equal(r.memories.read, r.memories.migrated + r.memories.skipped + r.memories.duplicates.total);
      assert.equal(sha256File(fixturePath), before, 'the source file changed');

      await withDb(t, async (db) => {
        assert.equal(await count(db, 'SELECT count(*) AS n FROM memories'), r.memories.migrated);
        assert.equal(await count(db, 'SELECT count(*) AS n FROM memories WHERE embedding IS NULL'), 0);
        assert.equal(await count(db, `SELECT count(*) AS n FROM memories WHERE user_id LIKE 'system_%'`), 0);
        assert.equal(await count(db, 'SELECT count(*) AS n FROM prompt_fragments'), 7 + fixture.systemPrompts);
        assert.equal(await count(db, `SELECT count(*) AS n FROM memory_duplicates WHERE dedup_type = 'exact'`), fixture.exactDuplicates.total);
        assert.equal(await count(db, `SELECT count(*) AS n FROM memories WHERE user_id LIKE 'memory_migrate_selftest%'`), 0);
        // Source ids are kept, content byte-identical: every source row is stored under its own
        // id, except system prompts (they become fragments) and the rows recorded as skipped or
        // as duplicates.
        const notStored = new Set(
          (await db.query<{ id: string }>('SELECT source_id AS id FROM migration_skips UNION SELECT duplicate_id FROM memory_duplicates')).map((d) => d.id),
        );
        const src = openSource(fixturePath);
        let compared = 0;
        try {
          for (const row of src.rows({ limit: 40 })) {
            if (row.userId?.startsWith('system_') || notStored.has(row.id)) continue;
            const [m] = await db.query<{ content: string }>('SELECT content FROM memories WHERE id = $1', [row.id]);
            assert.ok(m, `source row ${row.id} is not in memories`);
            assert.equal(m.content, row.content, `content of ${row.id}`);
            compared++;
          }
        } finally {
          src.close();
        }
        assert.ok(compared >= 20, `compared only ${compared} of the first 40 source rows`);
        // The ivfflat index exists and was built after the load.
        assert.equal(await count(db, `SELECT count(*) AS n FROM pg_indexes WHERE indexname = 'memories_embedding_idx'`), 1);
      });

      const second = parseJson(await runCli(['migrate', '--sqlite', fixturePath, ...targetArgs(t), '--embedder', 'local', '--json', '--skip-test']));
      assert.equal(second.memories.migrated, 0);
      assert.equal(second.memories.updated, 0);
      assert.equal(second.memories.unchanged, r.memories.migrated);
      assert.equal(second.embeddings.computed, 0);
      assert.equal(second.fragments.defaults, 0);
      assert.equal(sha256File(fixturePath), before);
    });

    test('reuses stored vectors bit for bit and asks the API only for what it lacks', async () => {
      const t = await target.fresh();
      const api: FakeOpenAI = await startFakeOpenAI();
      try {
        const env = { OPENAI_API_KEY: 'sk-test-key-123456', OPENAI_BASE_URL: api.url };
        const args = ['migrate', '--sqlite', fixturePath, ...targetArgs(t), '--model', 'text-embedding-3-small', '--source-model', 'text-embedding-3-small', '--json', '--skip-test'];
        const res = await runCli(args, env);
        assert.equal(res.code, 0, res.stderr);
        const r = parseJson(res);
        assert.ok(r.embeddings.reused > 0);
        assert.equal(r.embeddings.reused + r.embeddings.computed + r.embeddings.cached, r.memories.migrated + fixture.systemPrompts + 7);
        assert.equal(r.embeddings.requests, api.embeddingRequests.length);
        assert.ok(r.embeddings.invalidStored >= 1, 'the fixture has invalid stored vectors');
        // Every reused vector is bit-identical to the source.
        await withDb(t, async (db) => {
          const src = openSource(fixturePath);
          let compared = 0;
          try {
            for (const row of src.rows()) {
              if (!row.embedding.vector || row.embedding.vector.length !== 1536) continue;
              const [m] = await db.query<{ v: string }>('SELECT embedding::text AS v FROM memories WHERE id = $1', [row.id]);
              if (!m) continue;
              const got = parseVectorText(m.v);
              assert.deepEqual(Buffer.from(got.buffer), Buffer.from(row.embedding.vector.buffer), `vector of ${row.id}`);
              compared++;
            }
          } finally {
            src.close();
          }
          assert.ok(compared > 100, `compared ${compared}`);
        });
        api.reset();
        const again = parseJson(await runCli(args, env));
        assert.equal(again.embeddings.requests, 0);
        assert.equal(api.embeddingRequests.length, 0, 'a second run must not call the API');
      } finally {
        await api.close();
      }
    });

    test('--force-recreate twice loses nothing: the first load is in the backup schema', async () => {
      const t = await target.fresh();
      const base = ['migrate', '--sqlite', fixturePath, ...targetArgs(t), '--embedder', 'local', '--skip-test', '--json'];
      const first = parseJson(await runCli(base));
      const second = parseJson(await runCli([...base, '--force-recreate']));
      assert.match(second.backupSchema, /^memory_backup_\d{8}t\d{6}z/);
      const third = parseJson(await runCli([...base, '--force-recreate']));
      assert.notEqual(third.backupSchema, second.backupSchema);
      await withDb(t, async (db) => {
        assert.equal(await count(db, `SELECT count(*) AS n FROM ${second.backupSchema}.memories`), first.memories.migrated);
        assert.equal(await count(db, `SELECT count(*) AS n FROM ${third.backupSchema}.memories`), first.memories.migrated);
        assert.equal(await count(db, 'SELECT count(*) AS n FROM memories'), first.memories.migrated);
      });
      const dropped = await runCli([...base, '--force-recreate', '--no-backup']);
      assert.equal(dropped.code, 0, dropped.stderr);
      assert.equal(parseJson(dropped).backupSchema, null);
    });

    test('3072 dimensions: halfvec ivfflat expression index, used by the search query', async () => {
      const t = await target.fresh();
      const res = await runCli(['migrate', '--sqlite', fixturePath, ...targetArgs(t), '--embedder', 'local', '--dimensions', '3072', '--json', '--limit', '60']);
      assert.equal(res.code, 0, res.stderr);
      const r = parseJson(res);
      assert.equal(r.embeddings.dimensions, 3072);
      const indexCheck = r.selftest.checks.find((c: { name: string }) => c.name === 'search uses the vector index');
      assert.equal(indexCheck.ok, true, indexCheck.detail);
      await withDb(t, async (db) => {
        const [ix] = await db.query<{ def: string }>(`SELECT indexdef AS def FROM pg_indexes WHERE indexname = 'memories_embedding_idx'`);
        assert.match(ix!.def, /ivfflat/);
        assert.match(ix!.def, /halfvec\(3072\)/);
        assert.match(ix!.def, /halfvec_cosine_ops/);
      });
    });

    test('a zero-byte file is "exists but is empty": 0 rows, defaults, exit 0', async () => {
      const t = await target.fresh();
      const empty = join(dir, `empty-${target.name}.db`);
      writeFileSync(empty, '');
      const res = await runCli(['migrate', '--sqlite', empty, ...targetArgs(t), '--embedder', 'local']);
      assert.equal(res.code, 0, res.stderr);
      assert.match(res.stdout, /SQLite database exists but is empty/);
      await withDb(t, async (db) => {
        assert.equal(await count(db, 'SELECT count(*) AS n FROM memories'), 0);
        assert.equal(await count(db, 'SELECT count(*) AS n FROM prompt_fragments'), 7);
      });
    });

    test('a file that is not SQLite exits 2 with one line and writes nothing', async () => {
      const t = await target.fresh();
      const bogus = join(dir, `bogus-${target.name}.db`);
      writeFileSync(bogus, 'this is a text file, not a database\n'.repeat(20));
      const res = await runCli(['migrate', '--sqlite', bogus, ...targetArgs(t), '--embedder', 'local']);
      assert.equal(res.code, 2);
      assert.equal(res.stderr.trim().split('\n').length, 1, res.stderr);
      assert.match(res.stderr, /not a SQLite database/);
      if (t.pgliteDir) {
        assert.equal(existsSync(join(t.pgliteDir, 'PG_VERSION')), false, 'nothing may be written to the target');
      } else {
        await withDb(t, async (db) => {
          assert.equal(await count(db, `SELECT count(*) AS n FROM pg_tables WHERE tablename = 'memories'`), 0);
        });
      }
    });

    test('schema command is re-runnable and keeps $$ bodies whole', async () => {
      const t = await target.fresh();
      for (let i = 0; i < 2; i++) {
        const res = await runCli(['schema', ...targetArgs(t), '--embedder', 'local']);
        assert.equal(res.code, 0, res.stderr);
      }
      await withDb(t, async (db) => {
        assert.equal(await count(db, `SELECT count(*) AS n FROM pg_trigger WHERE tgname = 'memories_touch_updated_at'`), 1);
        await db.query(`INSERT INTO memories (id, user_id, content, content_hash, dedup_hash, updated_at) VALUES ('m1', 'u', 'x', 'h', 'd', '2020-01-01')`);
        await db.query(`UPDATE memories SET content = 'y' WHERE id = 'm1'`);
        const [row] = await db.query<{ y: number }>(`SELECT extract(year FROM updated_at)::int AS y FROM memories WHERE id = 'm1'`);
        assert.ok(Number(row!.y) > 2020, 'the trigger bumps updated_at on a content change');
      });
    });
  });
}

after(() => rmSync(dir, { recursive: true, force: true }));

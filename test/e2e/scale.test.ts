// A 10,000-row end-to-end load (1536-d vectors stored as f32 blobs, reused via
// --source-model) on every target: the real CLI, no embedding request, every memory row in
// Postgres, and an unchanged second run. No timing assertions (the benchmark measures speed:
// npm run bench).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testTargets } from '../helpers/targets.js';
import { runCli, targetArgs, parseJson } from '../helpers/cli.js';
import { makeFixture, type FixtureSummary } from '../../scripts/make-fixture.js';
import { seedEmbeddingCache, startNoEmbeddingApi, BENCH_MODEL, type NoEmbeddingApi } from '../../scripts/bench.js';
import { withDb, count } from '../helpers/rerun.js';
import { ivfflatLists } from '../../src/postgres/indexes.js';

const ROWS = 10_000;
const DIMS = 1536;
const dir = mkdtempSync(join(tmpdir(), 'mm-scale-'));
const fixturePath = join(dir, 'memory-10k.db');
let fixture: FixtureSummary;
let api: NoEmbeddingApi;

before(async () => {
  fixture = makeFixture({ out: fixturePath, rows: ROWS, dims: DIMS, encoding: 'f32', seed: 11 });
  api = await startNoEmbeddingApi([BENCH_MODEL]);
});

after(async () => {
  await api?.close();
  rmSync(dir, { recursive: true, force: true });
});


for (const target of testTargets()) {
  describe(`10k-row load on ${target.name}`, () => {
    test('every memory row lands with its stored vector, no embedding request; a second run changes nothing', async () => {
      const t = await target.fresh();
      // Texts with no reusable stored vector (system prompts, the 7 default fragments, rows
      // with broken vectors) are answered from the embedding cache: the API is never needed.
      await seedEmbeddingCache(t, fixturePath, BENCH_MODEL, DIMS);
      const args = [
        'migrate', '--sqlite', fixturePath, ...targetArgs(t),
        '--model', BENCH_MODEL, '--source-model', BENCH_MODEL, '--skip-test', '--json',
      ];
      const env = { OPENAI_API_KEY: 'sk-unused-000000', OPENAI_BASE_URL: api.url };
      api.refused = 0;

      const res = await runCli(args, env, 600_000);
      assert.equal(res.code, 0, res.stderr);
      const r = parseJson(res);
      assert.equal(r.ok, true, r.error);
      assert.equal(r.embeddings.requests, 0);
      assert.equal(api.refused, 0, 'the run asked the API for embeddings');
      assert.equal(r.memories.errors, 0);
      assert.equal(r.memories.read, fixture.rows - fixture.systemPrompts);
      assert.equal(r.memories.duplicates.exact, fixture.exactDuplicates.total);
      assert.equal(r.memories.read, r.memories.migrated + r.memories.skipped + r.memories.duplicates.total);
      assert.ok(r.memories.migrated > ROWS * 0.9, `migrated ${r.memories.migrated}`);
      assert.ok(r.embeddings.reused >= r.memories.migrated - 5, `reused ${r.embeddings.reused}`);

      await withDb(t, async (db) => {
        const stored = await count(db, 'SELECT count(*) AS n FROM memories');
        assert.equal(stored, r.memories.migrated);
        assert.equal(await count(db, 'SELECT count(*) AS n FROM memories WHERE embedding IS NULL'), 0);
        assert.equal(await count(db, `SELECT count(DISTINCT (user_id, dedup_hash)) AS n FROM memories`), stored);
        assert.equal(await count(db, `SELECT count(*) AS n FROM memory_duplicates WHERE dedup_type = 'exact'`), fixture.exactDuplicates.total);
        assert.equal(await count(db, 'SELECT count(*) AS n FROM prompt_fragments'), fixture.systemPrompts + 7);
        const [ix] = await db.query<{ opts: string[] }>(`SELECT reloptions AS opts FROM pg_class WHERE relname = 'memories_embedding_idx'`);
        assert.ok(ix, 'the ivfflat index exists');
        assert.match(String(ix!.opts), new RegExp(`lists=${ivfflatLists(stored)}\\b`));
      });

      const again = await runCli(args, env, 600_000);
      assert.equal(again.code, 0, again.stderr);
      const r2 = parseJson(again);
      assert.equal(r2.embeddings.requests, 0);
      assert.equal(api.refused, 0);
      assert.equal(r2.memories.migrated, 0);
      assert.equal(r2.memories.updated, 0);
      assert.equal(r2.memories.unchanged, r.memories.migrated);
      await withDb(t, async (db) => assert.equal(await count(db, 'SELECT count(*) AS n FROM memories'), r.memories.migrated));
    });
  });
}

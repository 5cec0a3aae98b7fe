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
import Database from 'better-sqlite3';
import type { Db } from '../../src/postgres/connection.js';

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

interface SourceVector {
  id: string;
  vector: Float32Array;
}

/**
 * Every 40th memory row of the fixture (system rows left out) whose embedding is a whole
 * float32 blob of DIMS finite values, decoded here as little-endian float32 by hand.
 */
function sampleSourceVectors(path: string): SourceVector[] {
  const src = new Database(path, { readonly: true });
  try {
    const rows = src
      .prepare(`SELECT id, embedding FROM memories WHERE user_id NOT LIKE 'system\\_%' ESCAPE '\\' ORDER BY rowid`)
      .all() as { id: string; embedding: unknown }[];
    const out: SourceVector[] = [];
    rows.forEach((r, i) => {
      if (i % 40 !== 0) return;
      const b = r.embedding;
      if (!Buffer.isBuffer(b) || b.length !== DIMS * 4) return;
      const v = new Float32Array(DIMS);
      for (let k = 0; k < DIMS; k++) v[k] = b.readFloatLE(k * 4);
      if (v.every(Number.isFinite)) out.push({ id: r.id, vector: v });
    });
    return out;
  } finally {
    src.close();
  }
}

/** The stored vectors of these ids, read back as pgvector text and parsed here. */
async function storedVectors(db: Db, ids: string[]): Promise<Map<string, number[]>> {
  const params = ids.map((_, i) => `$${i + 1}`).join(', ');
  const rows = await db.query<{ id: string; e: string }>(`SELECT id, embedding::text AS e FROM memories WHERE id IN (${params})`, ids);
  return new Map(rows.map((r) => [r.id, r.e.replace(/^\[|\]$/g, '').split(',').map(Number)]));
}


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
        // pgvector's guidance, rows / 1000 lists (at least 10) below 1M rows: 9,000..10,000
        // stored rows give 10 lists.
        assert.ok(stored >= 9000 && stored <= ROWS, `stored ${stored}`);
        assert.match(String(ix!.opts), /(^|\W)lists=10(\W|$)/);

        // Stored vectors are the source blobs, bit for bit: a sample of the f32 blobs in the
        // SQLite file against what pgvector gives back.
        const sample = sampleSourceVectors(fixturePath);
        assert.ok(sample.length >= 200, `sampled ${sample.length} source vectors`);
        const got = await storedVectors(db, sample.map((s) => s.id));
        const notStored = await db.query<{ id: string }>(
          `SELECT duplicate_id AS id FROM memory_duplicates UNION SELECT source_id FROM migration_skips`,
        );
        const removed = new Set(notStored.map((d) => d.id));
        let compared = 0;
        for (const { id, vector } of sample) {
          const v = got.get(id);
          if (v === undefined) {
            assert.ok(removed.has(id), `${id} is neither in memories nor a recorded duplicate or skip`);
            continue;
          }
          assert.equal(v.length, DIMS, `${id}: stored dimensions`);
          for (let k = 0; k < DIMS; k++) {
            if (Math.fround(v[k]!) !== vector[k]) assert.fail(`${id}[${k}]: stored ${v[k]}, source float32 ${vector[k]}`);
          }
          compared++;
        }
        assert.ok(compared >= 190, `compared ${compared} of ${sample.length} sampled vectors`);
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

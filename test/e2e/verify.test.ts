// verify end to end: the real CLI migrates a generated file into each target, then verify
// must pass a clean migration (exit 0), name every row a test corrupts in Postgres (exit 3),
// and report the rows a --limit / --user migration left pending without calling them mismatches.
import { describe, test, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testTargets } from '../helpers/targets.js';
import { runCli, targetArgs, parseJson } from '../helpers/cli.js';
import { startFakeOpenAI } from '../helpers/fake-openai.js';
import { makeFixture, type FixtureSummary } from '../../scripts/make-fixture.js';
import { withDb, type TargetOptions } from '../../src/postgres/connection.js';
import { openSource } from '../../src/source/reader.js';
import { seededSample } from '../../src/verify/sample.js';
import { findProbes } from '../../src/verify/recall.js';

const dir = mkdtempSync(join(tmpdir(), 'mm-verify-'));
const fixturePath = join(dir, 'memory.db');
let fixture: FixtureSummary;

before(() => {
  fixture = makeFixture({ out: fixturePath, rows: 240, dims: 1536, encoding: 'mixed', users: 6, seed: 11 });
});


async function migrateLocal(t: TargetOptions, extra: string[] = []) {
  const res = await runCli(['migrate', '--sqlite', fixturePath, ...targetArgs(t), '--embedder', 'local', '--skip-test', '--quiet', ...extra]);
  assert.equal(res.code, 0, res.stderr);
}

for (const target of testTargets()) {
  describe(`verify on ${target.name}`, () => {
    test('a clean migration verifies: exit 0, the --json shape, a repeatable sample', async () => {
      const t = await target.fresh();
      await migrateLocal(t);
      const res = await runCli(['verify', '--sqlite', fixturePath, ...targetArgs(t), '--json', '--seed', '7']);
      assert.equal(res.code, 0, res.stdout + res.stderr);
      const r = parseJson(res);
      assert.equal(r.ok, true);
      assert.deepEqual(r.mismatches, []);
      assert.equal(r.mismatchCount, 0);
      assert.equal(typeof r.checked, 'number');
      assert.ok(r.checked >= 200, `checked ${r.checked}`);
      assert.equal(r.recall, 1);
      assert.equal(r.index.name, 'memories_embedding_idx');
      assert.equal(r.pending, 0);
      assert.equal(r.seed, 7);
      assert.equal(r.expected.model, 'local-hash-v1');
      assert.equal(r.expected.dimensions, 384);
      const c = r.counts;
      assert.equal(c.sqliteRows, fixture.rows);
      assert.equal(c.sqliteRows, c.memories + c.duplicates + c.skipped + c.fragments + c.pending);
      assert.equal(c.duplicates, fixture.exactDuplicates.total);
      assert.equal(c.fragments, fixture.systemPrompts);
      assert.equal(r.fragments.checked, fixture.systemPrompts);
      for (const [user, n] of Object.entries(fixture.perUser)) assert.equal(c.users[user].sqlite, n, user);
      for (const u of Object.values<any>(c.users)) assert.equal(u.postgres, u.sqlite - u.pending);

      // The same seed picks the same rows; another seed other rows.
      const a = parseJson(await runCli(['verify', '--sqlite', fixturePath, ...targetArgs(t), '--json', '--sample', '15', '--seed', '42']));
      const b = parseJson(await runCli(['verify', '--sqlite', fixturePath, ...targetArgs(t), '--json', '--sample', '15', '--seed', '42']));
      const other = parseJson(await runCli(['verify', '--sqlite', fixturePath, ...targetArgs(t), '--json', '--sample', '15', '--seed', '43']));
      assert.equal(a.checked, 15);
      assert.deepEqual(a.sampleIds, b.sampleIds);
      assert.notDeepEqual(a.sampleIds, other.sampleIds);

      const human = await runCli(['verify', '--sqlite', fixturePath, ...targetArgs(t)]);
      assert.equal(human.code, 0, human.stderr);
      assert.match(human.stdout, /Index recall@1: 1\.000/);
      assert.match(human.stdout, /Parity verified: no mismatches/);
    });

    test('search: the operator spot-check prints the best memories with scores', async () => {
      const t = await target.fresh();
      await migrateLocal(t);
      let id = '';
      let content = '';
      await withDb(t, async (db) => {
        const [row] = await db.query<{ id: string; content: string }>(`SELECT id, content FROM memories WHERE user_id = 'user_1' ORDER BY id LIMIT 1`);
        id = row!.id;
        content = row!.content;
      });
      // No embedder flags: the query is embedded with the model the ledger recorded.
      const res = await runCli(['search', content, '--user', 'user_1', '--limit', '3', ...targetArgs(t), '--json']);
      assert.equal(res.code, 0, res.stderr);
      const r = parseJson(res);
      assert.equal(r.ok, true);
      assert.equal(r.model, 'local-hash-v1');
      assert.equal(r.hits.length, 3);
      assert.equal(r.hits[0].id, id);
      assert.ok(Math.abs(r.hits[0].similarity - 1) < 1e-3, `similarity ${r.hits[0].similarity}`);
      assert.ok(r.hits[0].similarity >= r.hits[1].similarity && r.hits[1].similarity >= r.hits[2].similarity);
      assert.deepEqual(r.hits.map((h: any) => h.rank), [1, 2, 3]);

      const human = await runCli(['search', content, '--user', 'user_1', ...targetArgs(t)]);
      assert.equal(human.code, 0, human.stderr);
      assert.match(human.stdout, new RegExp(`^  1\\. 1\\.0000  ${id}  \\d{4}-\\d{2}-\\d{2}  `, 'm'));
      assert.equal(human.stdout.split('\n').filter((l) => /^ +\d+\. [01]\.\d{4}  /.test(l)).length, 5, 'default limit 5');

      const nobody = await runCli(['search', 'anything', '--user', 'user_nobody', ...targetArgs(t)]);
      assert.equal(nobody.code, 0);
      assert.match(nobody.stdout, /No memories for user user_nobody/);
      const bad = await runCli(['search', 'anything', ...targetArgs(t)]);
      assert.equal(bad.code, 2, 'a missing --user is a usage error');
    });

    test('corrupted content, a corrupted reused vector and a deleted row: exit 3, each named', async () => {
      const t = await target.fresh();
      const api = await startFakeOpenAI();
      try {
        const env = { OPENAI_API_KEY: 'sk-test-key-123456', OPENAI_BASE_URL: api.url };
        const mig = await runCli(
          ['migrate', '--sqlite', fixturePath, ...targetArgs(t), '--model', 'text-embedding-3-small', '--source-model', 'text-embedding-3-small', '--skip-test', '--quiet'],
          env,
        );
        assert.equal(mig.code, 0, mig.stderr);
      } finally {
        await api.close();
      }
      const clean = await runCli(['verify', '--sqlite', fixturePath, ...targetArgs(t), '--json', '--sample', '1000']);
      assert.equal(clean.code, 0, clean.stdout);
      assert.equal(parseJson(clean).expected.sourceModel, 'text-embedding-3-small', 'the source model comes from the ledger');

      let contentId = '';
      let vectorId = '';
      let deletedId = '';
      let deletedUser = '';
      await withDb(t, async (db) => {
        const stored = new Set((await db.query<{ id: string }>('SELECT id FROM memories')).map((r) => r.id));
        const originals = new Set((await db.query<{ id: string }>('SELECT original_id AS id FROM memory_duplicates')).map((r) => r.id));
        const src = openSource(fixturePath);
        try {
          for (const row of src.rows()) {
            if (!stored.has(row.id)) continue;
            if (!contentId) contentId = row.id;
            else if (!vectorId && row.embedding.vector?.length === 1536) vectorId = row.id;
            else if (!deletedId && !originals.has(row.id)) {
              deletedId = row.id;
              deletedUser = row.userId!;
            }
          }
        } finally {
          src.close();
        }
        assert.ok(contentId && vectorId && deletedId);
        // Damage: the content changed but updated_at did not (an app's UPDATE moves it).
        const [at] = await db.query<{ at: string }>('SELECT updated_at::text AS at FROM memories WHERE id = $1', [contentId]);
        await db.query(`UPDATE memories SET content = content || ' (edited)' WHERE id = $1`, [contentId]);
        await db.query(`UPDATE memories SET updated_at = $2::timestamp WHERE id = $1`, [contentId, at!.at]);
        // One component nudged: same width, same model, no longer the source's vector.
        const [v] = await db.query<{ v: string }>('SELECT embedding::text AS v FROM memories WHERE id = $1', [vectorId]);
        const parts = v!.v.slice(1, -1).split(',').map(Number);
        parts[0] = parts[0]! + 0.25;
        await db.query('UPDATE memories SET embedding = $2::vector WHERE id = $1', [vectorId, `[${parts.join(',')}]`]);
        await db.query(`DELETE FROM memories WHERE id = $1`, [deletedId]);
      });

      const res = await runCli(['verify', '--sqlite', fixturePath, ...targetArgs(t), '--json', '--sample', '1000']);
      assert.equal(res.code, 3, res.stderr);
      const r = parseJson(res);
      assert.equal(r.ok, false);
      const has = (id: string | null, check: string) => r.mismatches.some((m: any) => m.id === id && m.check === check);
      assert.ok(has(contentId, 'content'), JSON.stringify(r.mismatches));
      assert.ok(has(vectorId, 'vector'), JSON.stringify(r.mismatches));
      assert.ok(has(deletedId, 'missing'), JSON.stringify(r.mismatches));
      assert.ok(r.mismatches.some((m: any) => m.id === null && m.user === deletedUser && m.check === 'count'));
      assert.ok(!r.mismatches.some((m: any) => m.check === 'vector' && m.id !== vectorId), 'only the corrupted vector differs');
      assert.equal(r.mismatchCount, r.mismatches.length);

      const human = await runCli(['verify', '--sqlite', fixturePath, ...targetArgs(t), '--sample', '1000']);
      assert.equal(human.code, 3);
      for (const id of [contentId, vectorId, deletedId]) assert.ok(human.stderr.includes(id), `${id} is named:\n${human.stderr}`);
      assert.match(human.stderr, /mismatches/);
    });

    test('after --limit and --user migrations the rest is pending, not a mismatch', async () => {
      const t = await target.fresh();
      await migrateLocal(t, ['--limit', '60']);
      const res = await runCli(['verify', '--sqlite', fixturePath, ...targetArgs(t), '--json']);
      assert.equal(res.code, 0, res.stdout);
      const r = parseJson(res);
      assert.equal(r.ok, true);
      assert.equal(r.run.limit, 60);
      assert.equal(r.counts.inScope, 60);
      assert.equal(r.pending, fixture.rows - 60);
      assert.equal(r.counts.memories + r.counts.duplicates + r.counts.skipped + r.counts.fragments, 60);
      const human = await runCli(['verify', '--sqlite', fixturePath, ...targetArgs(t)]);
      assert.equal(human.code, 0);
      assert.match(human.stdout, new RegExp(`Pending \\(not covered by the last run, not in Postgres\\): ${fixture.rows - 60} rows`));

      // Then one user on top: that user's rows are no longer pending, and nothing else is.
      await migrateLocal(t, ['--user', 'user_2']);
      const u = parseJson(await runCli(['verify', '--sqlite', fixturePath, ...targetArgs(t), '--json']));
      assert.equal(u.ok, true, JSON.stringify(u.mismatches));
      assert.deepEqual(u.run.users, ['user_2']);
      assert.equal(u.counts.users.user_2.pending, 0);
      assert.ok(u.pending < r.pending);

      // A row missing inside the scope is still a mismatch.
      await withDb(t, async (db) => {
        const [row] = await db.query<{ id: string }>(
          `SELECT id FROM memories m WHERE user_id = 'user_2' AND NOT EXISTS (SELECT 1 FROM memory_duplicates d WHERE d.original_id = m.id) ORDER BY id DESC LIMIT 1`,
        );
        await db.query('DELETE FROM memories WHERE id = $1', [row!.id]);
      });
      const broken = await runCli(['verify', '--sqlite', fixturePath, ...targetArgs(t), '--json']);
      assert.equal(broken.code, 3);
    });

    test('verify of a target with nothing migrated is a usage error', async () => {
      const t = await target.fresh();
      const res = await runCli(['verify', '--sqlite', fixturePath, ...targetArgs(t)]);
      assert.equal(res.code, 2, res.stderr);
      assert.match(res.stderr, /no memories table/);
    });
  });
}

describe('verify helpers', () => {
  test('seededSample is repeatable and picks distinct items', () => {
    const items = Array.from({ length: 100 }, (_, i) => i);
    const a = seededSample(items, 10, 5);
    assert.deepEqual(a, seededSample(items, 10, 5));
    assert.equal(new Set(a).size, 10);
    assert.notDeepEqual(a, seededSample(items, 10, 6));
    assert.equal(seededSample(items, 500, 1).length, 100);
  });

  test('findProbes finds the smallest probes that reach the recall target', async () => {
    const tried: number[] = [];
    const fix = await findProbes(async (p) => (tried.push(p), p >= 27 ? 1 : 0.9), 10, 100);
    assert.deepEqual(fix, { probes: 27, recall: 1 });
    assert.ok(tried.length < 10, `tried ${tried.join(',')}`);
    const capped = await findProbes(async () => 0.5, 10, 30);
    assert.deepEqual(capped, { probes: 30, recall: 0.5 });
  });
});

// Nothing lost, and verify says so truthfully. Metadata numbers that a JavaScript round trip
// would round (big integers, long decimals, 1E400) reach jsonb exactly; verify passes on them
// and exits 3 naming the row when one digit changes; each field verify claims to check is
// corrupted once and must be named; rollback writes metadata back exactly.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testTargets } from '../helpers/targets.js';
import { runCli, targetArgs, parseJson } from '../helpers/cli.js';
import { startFakeOpenAI } from '../helpers/fake-openai.js';
import { makeFixture } from '../../scripts/make-fixture.js';
import { withDb, type Db, type TargetOptions } from '../../src/postgres/connection.js';
import { LAYOUT_A_SQL } from '../../src/source/layout.js';

const dir = mkdtempSync(join(tmpdir(), 'mm-fidelity-'));

/** id, user, metadata text exactly as the app stored it. */
const CORPUS: [string, string, string | null][] = [
  ['m_order', 'user_a', '{"order_id": 12345678901234567890, "category": "orders"}'],
  ['m_shopify', 'user_a', '{"shopify_id": 9007199254740993}'],
  ['m_price', 'user_b', '{"price": 0.1000000000000000055511151231257827}'],
  ['m_huge', 'user_b', '{"e": 1E400}'],
  ['m_dupkeys', 'user_a', '{"a": 1, "a": 18446744073709551617}'],
  ['m_nested', 'user_b', '{"nested": {"ids": [18446744073709551617, -0.0]},   "note": "spaces kept"}'],
  ['m_bad', 'user_a', '{"truncated": '],
  ['m_nul', 'user_b', '{"nul": "a\\u0000b"}'],
  ['m_plain1', 'user_a', '{"category": "prefs", "importance": "high"}'],
  ['m_plain2', 'user_b', null],
  ['m_plain3', 'user_a', '{"k": 1}'],
  ['m_plain4', 'user_b', '{"k": 2}'],
  ['m_plain5', 'user_a', '{"k": 3}'],
  ['m_plain6', 'user_b', '{"k": 4}'],
];

/** What jsonb must hold for each row (written by hand, not by the code under test). */
const EXPECTED_JSONB: Record<string, string> = {
  m_order: '{"order_id": 12345678901234567890, "category": "orders"}',
  m_shopify: '{"shopify_id": 9007199254740993}',
  m_price: '{"price": 0.1000000000000000055511151231257827}',
  m_huge: '{"e": 1E400}',
  m_dupkeys: '{"a": 18446744073709551617}',
  m_nested: '{"nested": {"ids": [18446744073709551617, -0.0]}, "note": "spaces kept"}',
  m_bad: '{"raw": "{\\"truncated\\": "}',
  m_nul: '{"raw": "{\\"nul\\": \\"a\\\\u0000b\\"}"}',
  m_plain2: '{}',
};

function corpusFile(name: string): string {
  const path = join(dir, name);
  const db = new Database(path);
  db.exec(LAYOUT_A_SQL);
  const ins = db.prepare('INSERT INTO memories (id, user_id, content, embedding, metadata, created_at, updated_at) VALUES (?, ?, ?, NULL, ?, ?, ?)');
  CORPUS.forEach(([id, user, md], i) => {
    ins.run(id, user, `Memory ${id}: the customer said thing number ${i} about their coffee order.`, md, `2024-01-0${1 + (i % 9)} 10:00:0${i % 10}`, `2024-02-0${1 + (i % 9)} 11:00:0${i % 10}`);
  });
  ins.run('frag_1', 'system_prompts', 'Offer the grinder bundle once per conversation.', '{"type": "system_prompt", "category": "sales_guidelines", "priority": "high", "budget": 12345678901234567890}', '2024-01-01 09:00:00', '2024-01-01 09:00:00');
  db.close();
  return path;
}

async function migrateLocal(file: string, t: TargetOptions) {
  const res = await runCli(['migrate', '--sqlite', file, ...targetArgs(t), '--embedder', 'local', '--skip-test', '--json']);
  assert.equal(res.code, 0, res.stderr);
  return parseJson(res);
}

async function verifyJson(file: string, t: TargetOptions) {
  const res = await runCli(['verify', '--sqlite', file, ...targetArgs(t), '--json', '--sample', '1000']);
  return { code: res.code, r: parseJson(res), stderr: res.stderr };
}

/** Runs an app's UPDATE, then puts updated_at back (the touch trigger moves it on metadata edits). */
async function editKeepingUpdatedAt(db: Db, id: string, sql: string) {
  const [before] = await db.query<{ at: string }>(`SELECT updated_at::text AS at FROM memories WHERE id = $1`, [id]);
  await db.query(sql, [id]);
  await db.query(`UPDATE memories SET updated_at = $2::timestamptz WHERE id = $1`, [id, before!.at]);
}

for (const target of testTargets()) {
  describe(`fidelity on ${target.name}`, () => {
    test('big integers, long decimals and 1E400 reach jsonb exactly; verify passes, then names a one-digit change', async () => {
      const file = corpusFile(`exact-${target.name}.db`);
      const t = await target.fresh();
      const report = await migrateLocal(file, t);
      assert.equal(report.memories.warnings['metadata with duplicate keys (the last one kept, as PostgreSQL does)'], 1);
      assert.equal(report.memories.warnings['metadata not JSON (kept as {raw})'], 2);

      await withDb(t, async (db) => {
        for (const [id, text] of Object.entries(EXPECTED_JSONB)) {
          const [row] = await db.query<{ same: boolean; got: string }>(
            `SELECT metadata = $2::text::jsonb AS same, metadata::text AS got FROM memories WHERE id = $1`,
            [id, text],
          );
          assert.ok(row, `${id} stored`);
          assert.equal(row.same, true, `${id}: stored ${row.got}, expected ${text}`);
        }
        const [o] = await db.query<{ v: string }>(`SELECT metadata->>'order_id' AS v FROM memories WHERE id = 'm_order'`);
        assert.equal(o!.v, '12345678901234567890');
        const [f] = await db.query<{ v: string }>(`SELECT metadata->>'budget' AS v FROM prompt_fragments WHERE id = 'frag_1'`);
        assert.equal(f!.v, '12345678901234567890');
      });

      const clean = await verifyJson(file, t);
      assert.equal(clean.code, 0, JSON.stringify(clean.r.mismatches));
      assert.equal(clean.r.mismatchCount, 0);

      // A second run finds every row unchanged (jsonb compared on the server, not rounded).
      const again = await migrateLocal(file, t);
      assert.equal(again.memories.unchanged, CORPUS.length);
      assert.equal(again.memories.updated, 0);

      await withDb(t, (db) =>
        editKeepingUpdatedAt(db, 'm_order', `UPDATE memories SET metadata = jsonb_set(metadata, '{order_id}', '12345678901234567891'::jsonb) WHERE id = $1`),
      );
      const changed = await verifyJson(file, t);
      assert.equal(changed.code, 3);
      assert.deepEqual(
        changed.r.mismatches.map((m: any) => [m.id, m.check]),
        [['m_order', 'metadata']],
      );
      assert.match(changed.r.mismatches[0].detail, /order_id: 12345678901234567890 → 12345678901234567891/);
      const human = await runCli(['verify', '--sqlite', file, ...targetArgs(t)]);
      assert.equal(human.code, 3);
      assert.match(human.stderr, /m_order/);
    });

    test('each field verify checks, corrupted once, is named: metadata, timestamps, user, extra row, fragment', async () => {
      const file = corpusFile(`corrupt-${target.name}.db`);
      const t = await target.fresh();
      await migrateLocal(file, t);
      assert.equal((await verifyJson(file, t)).code, 0);
      await withDb(t, async (db) => {
        await editKeepingUpdatedAt(db, 'm_plain1', `UPDATE memories SET metadata = metadata || '{"category": "other"}' WHERE id = $1`);
        await db.query(`UPDATE memories SET created_at = created_at + interval '1 millisecond' WHERE id = 'm_plain3'`);
        await db.query(`UPDATE memories SET updated_at = updated_at - interval '1 second' WHERE id = 'm_plain4'`);
        await db.query(`UPDATE memories SET user_id = 'user_b' WHERE id = 'm_plain5'`);
        await db.query(
          `INSERT INTO memories (id, user_id, content, content_hash, dedup_hash, metadata, created_at, updated_at)
           SELECT 'extra_1', user_id, content || ' (copy)', content_hash, dedup_hash, metadata, created_at, updated_at FROM memories WHERE id = 'm_plain6'`,
        );
        await db.query(`UPDATE prompt_fragments SET content = content || ' Always.' WHERE id = 'frag_1'`);
      });
      const { code, r } = await verifyJson(file, t);
      assert.equal(code, 3);
      const named = r.mismatches.filter((m: any) => m.check !== 'count').map((m: any) => `${m.id}:${m.check}`).sort();
      assert.deepEqual(named, ['extra_1:extra', 'frag_1:fragment', 'm_plain1:metadata', 'm_plain3:created_at', 'm_plain4:updated_at', 'm_plain5:user_id']);
      const md = r.mismatches.find((m: any) => m.id === 'm_plain1');
      assert.match(md.detail, /category: "prefs" → "other"/);
    });

    test('rollback writes unchanged metadata back untouched and changed metadata exactly as PostgreSQL holds it', async () => {
      const file = corpusFile(`rollback-${target.name}.db`);
      const t = await target.fresh();
      await migrateLocal(file, t);
      await withDb(t, async (db) => {
        // The app after cutover: one metadata edit, one row inserted with plain SQL.
        await db.query(
          `UPDATE memories SET metadata = jsonb_set(metadata, '{shopify_id}', '9007199254740995'::jsonb), updated_at = now() + interval '1 day' WHERE id = 'm_shopify'`,
        );
        await db.query(
          `INSERT INTO memories (id, user_id, content, content_hash, dedup_hash, metadata, created_at, updated_at)
           VALUES ('app_1', 'user_a', 'Written by the app after cutover.', repeat('0', 64), repeat('0', 64),
                   '{"order_id": 98765432109876543210}', now(), now())`,
        );
      });
      const res = await runCli(['rollback', '--sqlite', file, ...targetArgs(t), '--json']);
      assert.equal(res.code, 0, res.stderr);
      const r = parseJson(res);
      assert.equal(r.inserted, 1);
      assert.equal(r.updated, 1);

      const lite = new Database(file, { readonly: true });
      try {
        const md = (id: string) => (lite.prepare('SELECT metadata FROM memories WHERE id = ?').get(id) as { metadata: string | null } | undefined)?.metadata;
        for (const [id, , text] of CORPUS) if (id !== 'm_shopify') assert.equal(md(id), text, `${id} kept its original text`);
        assert.equal(md('m_shopify'), '{"shopify_id": 9007199254740995}');
        assert.equal(md('app_1'), '{"order_id": 98765432109876543210}');
      } finally {
        lite.close();
      }
    });

    test('a 3072-d migration (halfvec index) verifies, and a changed vector is named', async () => {
      const file = join(dir, `wide-${target.name}.db`);
      makeFixture({ out: file, rows: 40, dims: 3072, encoding: 'f32', users: 3, seed: 5 });
      const t = await target.fresh();
      const api = await startFakeOpenAI();
      const env = { OPENAI_API_KEY: 'sk-test-key-123456', OPENAI_BASE_URL: api.url };
      try {
        const mig = await runCli(
          ['migrate', '--sqlite', file, ...targetArgs(t), '--model', 'text-embedding-3-large', '--source-model', 'text-embedding-3-large', '--skip-test', '--quiet'],
          env,
        );
        assert.equal(mig.code, 0, mig.stderr);
      } finally {
        await api.close();
      }
      const clean = await verifyJson(file, t);
      assert.equal(clean.code, 0, JSON.stringify(clean.r.mismatches));
      assert.equal(clean.r.expected.dimensions, 3072);
      assert.equal(clean.r.recall, 1);
      let id = '';
      await withDb(t, async (db) => {
        const [row] = await db.query<{ id: string; v: string }>(`SELECT id, embedding::text AS v FROM memories ORDER BY id LIMIT 1`);
        id = row!.id;
        const parts = row!.v.slice(1, -1).split(',').map(Number);
        parts[0] = parts[0]! + 0.25;
        await db.query('UPDATE memories SET embedding = $2::vector WHERE id = $1', [id, `[${parts.join(',')}]`]);
      });
      const broken = await verifyJson(file, t);
      assert.equal(broken.code, 3);
      assert.ok(broken.r.mismatches.some((m: any) => m.id === id && m.check === 'vector'), JSON.stringify(broken.r.mismatches));
    });
  });
}


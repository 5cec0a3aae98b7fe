// Cutover: an app written against the schema the seed guide documents runs its own plain SQL
// on a database memory-migrate made. Its INSERTs leave out our extra columns, its UPDATEs
// change content without knowing about the hashes, its functions take the documented types;
// every hash in the database, computed by the database, equals the one the migration
// computed in JavaScript. A database made by memory-migrate 0.1 is upgraded in place.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testTargets } from '../helpers/targets.js';
import { runCli, targetArgs, parseJson } from '../helpers/cli.js';
import { withDb, type Db, type TargetOptions } from '../../src/postgres/connection.js';
import { installSchema } from '../../src/postgres/schema.js';
import { LAYOUT_A_SQL } from '../../src/source/layout.js';
import { contentHash, dedupHash } from '../../src/source/canonical.js';
import { rowUuid } from '../../src/postgres/row-uuid.js';

const dir = mkdtempSync(join(tmpdir(), 'mm-cutover-'));
const OLD_SCHEMA = readFileSync(new URL('../../../test/fixtures/schema-0.1.sql', import.meta.url), 'utf8');

/** Texts whose canonical form differs from the stored one in every way canonicalize knows. */
const TEXTS = [
  'Customer prefers oat milk in every latte.',
  'Line with trailing spaces   \r\nand CRLF endings\r\n\r\n',
  'Ca\u0301fe\u0301 au lait, decomposed accents (NFC matters)',
  'ΟΔΥΣΣΕΥΣ ordered the Greek coffee; final sigma folds',
  'İstanbul roastery, dotted capital I',
  'STRASSE und Straße: the German sharp s',
  'Emoji ☕️ and astral 𐐀 Deseret capital',
  'tabs\t\t\nNBSP\u00a0\nideographic space\u3000\nline separator\u2028\n',
  'Keeps U+0085 at the end\u0085',
  'ALL CAPS SHOUTING ABOUT ESPRESSO',
];

function corpusFile(name: string): string {
  const path = join(dir, name);
  const db = new Database(path);
  db.exec(LAYOUT_A_SQL);
  const ins = db.prepare('INSERT INTO memories (id, user_id, content, embedding, metadata, created_at, updated_at) VALUES (?, ?, ?, NULL, ?, ?, ?)');
  for (let i = 0; i < 40; i++) {
    const text = `${TEXTS[i % TEXTS.length]} (#${i})`;
    ins.run(`mem_${i}`, `user_${i % 3}`, text, JSON.stringify({ category: i % 2 ? 'preferences' : 'orders' }), `2024-03-0${1 + (i % 9)} 10:00:00`, `2024-04-0${1 + (i % 9)} 11:30:00`);
  }
  ins.run('frag_1', 'system_prompts', 'Offer the grinder bundle   \r\nonce per conversation.', '{"type": "system_prompt", "category": "sales_guidelines", "priority": "high"}', '2024-01-01 09:00:00', '2024-01-01 09:00:00');
  db.close();
  return path;
}

async function migrate(file: string, t: TargetOptions) {
  const res = await runCli(['migrate', '--sqlite', file, ...targetArgs(t), '--embedder', 'local', '--skip-test', '--json']);
  assert.equal(res.code, 0, res.stderr);
  return parseJson(res);
}

/** Rows whose stored hashes differ from the ones the database computes from their content. */
async function hashMismatches(db: Db): Promise<string[]> {
  const rows = await db.query<{ id: string }>(
    `SELECT id FROM memories
      WHERE content_hash <> memory_migrate_content_hash(content) OR dedup_hash <> memory_migrate_dedup_hash(content)
     UNION ALL
     SELECT id FROM prompt_fragments WHERE content_hash <> memory_migrate_content_hash(content)`,
  );
  return rows.map((r) => r.id);
}

for (const target of testTargets()) {
  describe(`cutover: an app's plain SQL on the installed schema (${target.name})`, () => {
    test('migrated rows: hashes recomputed in SQL all agree, UUIDs derive from ids, last_accessed_at is set', async () => {
      const t = await target.fresh();
      const report = await migrate(corpusFile(`hash-${target.name}.db`), t);
      assert.equal(report.cutover.mode, 'installed');
      assert.equal(report.cutover.index, 'memories_embedding_idx');
      await withDb(t, async (db) => {
        // The query form the cutover report prints is served by the index it names.
        const plan = await db.transaction(async (tx) => {
          await tx.exec('SET LOCAL enable_seqscan = off');
          const [v] = await tx.query<{ v: string }>(`SELECT embedding::text AS v FROM memories LIMIT 1`);
          return tx.query<Record<string, string>>(`EXPLAIN ${report.cutover.query}`, [v!.v, 5]);
        });
        assert.match(plan.map((r) => Object.values(r)[0]).join('\n'), /memories_embedding_idx/);
        // A client that never sets probes (LangChain) gets the ones the index needs.
        if (target.name === 'postgres') {
          assert.deepEqual(report.cutover.probesDefault, { set: true });
          const [p] = await db.query<{ p: string }>(`SELECT current_setting('ivfflat.probes') AS p`);
          assert.equal(Number(p!.p), report.cutover.probes);
        } else {
          assert.equal(report.cutover.probesDefault.set, false);
        }
        const [{ n }] = (await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM memories`)) as [{ n: number }];
        assert.ok(n >= 30, `migrated ${n} rows`);
        assert.deepEqual(await hashMismatches(db), []);
        // The hashes are not trivially equal: JavaScript's values for a few texts, by hand.
        const [r] = await db.query<{ content: string; content_hash: string; dedup_hash: string }>(
          `SELECT content, content_hash, dedup_hash FROM memories WHERE id = 'mem_1'`,
        );
        assert.equal(r!.content_hash, contentHash(r!.content));
        assert.equal(r!.dedup_hash, dedupHash(r!.content));
        const [u] = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM memories WHERE uuid <> memory_migrate_uuid(id)`);
        assert.equal(u!.n, 0);
        const [one] = await db.query<{ uuid: string }>(`SELECT uuid::text AS uuid FROM memories WHERE id = 'mem_7'`);
        assert.equal(one!.uuid, rowUuid('mem_7'));
        assert.match(one!.uuid, /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
        const [la] = await db.query<{ nulls: number; differ: number }>(
          `SELECT count(*) FILTER (WHERE last_accessed_at IS NULL)::int AS nulls,
                  count(*) FILTER (WHERE last_accessed_at <> updated_at)::int AS differ FROM memories`,
        );
        assert.deepEqual({ ...la }, { nulls: 0, differ: 0 });
        const [ts] = await db.query<{ at: string }>(`SELECT created_at::text AS at FROM memories WHERE id = 'mem_0'`);
        assert.equal(ts!.at, '2024-03-01 10:00:00', 'TIMESTAMP holds the UTC wall time of the source');
      });
    });

    test("the app's INSERT, UPDATE, duplicate record and TIMESTAMP function all work", async () => {
      const t = await target.fresh();
      await migrate(corpusFile(`app-${target.name}.db`), t);
      await withDb(t, async (db) => {
        const [dims] = await db.query<{ d: number }>(`SELECT vector_dims(embedding) AS d FROM memories LIMIT 1`);
        const vec = `[${Array.from({ length: dims!.d }, (_, i) => ((i % 7) - 3) / 10).join(',')}]`;
        // 1. The documented five-column INSERT … RETURNING id.
        const [ins] = await db.query<{ id: string }>(
          `INSERT INTO memories (user_id, content, embedding, metadata, category) VALUES ($1, $2, $3::vector, $4::jsonb, $5) RETURNING id`,
          ['user_1', 'Asked for a decaf   \r\nrecommendation', vec, '{"source": "app"}', 'preferences'],
        );
        const [row] = await db.query<Record<string, string>>(
          `SELECT id, uuid::text AS uuid, user_id, content, content_hash, dedup_hash, last_accessed_at IS NOT NULL AS la FROM memories WHERE id = $1`,
          [ins!.id],
        );
        assert.equal(row!.uuid, ins!.id, 'an app row’s id is its UUID as text');
        assert.match(row!.uuid!, /^[0-9a-f]{8}-[0-9a-f]{4}-4/, 'a random (version 4) UUID, never a derived one');
        assert.equal(row!.content_hash, contentHash(row!.content!));
        assert.equal(row!.dedup_hash, dedupHash(row!.content!));
        // 2. UPDATE content: the hashes follow, updated_at moves.
        const before = await db.query<{ at: string }>(`SELECT updated_at::text AS at FROM memories WHERE id = 'mem_3'`);
        await db.query(`UPDATE memories SET content = $1 WHERE id = $2`, ['Now prefers ΣΟΦΙΑΣ blend, not oat', 'mem_3']);
        const [upd] = await db.query<Record<string, string>>(`SELECT content, content_hash, dedup_hash, updated_at::text AS at FROM memories WHERE id = 'mem_3'`);
        assert.equal(upd!.content_hash, contentHash('Now prefers ΣΟΦΙΑΣ blend, not oat'));
        assert.equal(upd!.dedup_hash, dedupHash('Now prefers ΣΟΦΙΑΣ blend, not oat'));
        assert.notEqual(upd!.at, before[0]!.at);
        // 3. An app's memory with its user in metadata only (LangChain's PGVectorStore sends that).
        const [lc] = await db.query<{ user_id: string }>(
          `INSERT INTO memories (content, embedding, metadata) VALUES ('From a vector-store client', $1::vector, '{"user_id": "user_2"}') RETURNING user_id`,
          [vec],
        );
        assert.equal(lc!.user_id, 'user_2');
        // 4. prompt_fragments: the documented columns only.
        const [frag] = await db.query<{ id: string; content_hash: string }>(
          `INSERT INTO prompt_fragments (category, priority, content, tags, agent_type, context_tier, is_active)
           VALUES ('returns', 6, 'Returns within 30 days.', ARRAY['policy'], NULL, 'standard', true) RETURNING id, content_hash`,
        );
        assert.equal(frag!.content_hash, contentHash('Returns within 30 days.'));
        // 5. memory_duplicates: the documented four-column INSERT.
        await db.query(
          `INSERT INTO memory_duplicates (original_id, duplicate_hash, similarity_score, dedup_type) VALUES ($1, $2, 0.97, 'semantic')`,
          [ins!.id, contentHash('Asked for a decaf recommendation')],
        );
        const [dup] = await db.query<{ user_id: string }>(`SELECT user_id FROM memory_duplicates WHERE original_id = $1`, [ins!.id]);
        assert.equal(dup!.user_id, 'user_1', 'user_id taken from the original memory');
        // 6. A function written for the documented TIMESTAMP and FLOAT columns resolves.
        await db.exec(`CREATE FUNCTION app_decay(last_seen TIMESTAMP, importance FLOAT) RETURNS FLOAT AS $$
                         SELECT importance / (1 + extract(epoch FROM (TIMESTAMP '2025-01-01' - last_seen)) / 86400.0)
                       $$ LANGUAGE sql`);
        const decayed = await db.query<{ d: number }>(`SELECT app_decay(last_accessed_at, importance_score) AS d FROM memories WHERE id = 'mem_0'`);
        assert.ok(decayed[0]!.d > 0 && decayed[0]!.d < 1);
        // 7. The archive job sees migrated rows as accessed when they last changed, not never.
        const [never] = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM memories WHERE last_accessed_at IS NULL`);
        assert.equal(never!.n, 0);
        // Everything the app wrote hashes as the migration would have.
        assert.deepEqual(await hashMismatches(db), []);
      });
    });

    test("rows the app wrote with plain SQL after cutover: verify lists them as added/changed, rollback takes them into SQLite", async () => {
      const t = await target.fresh();
      const file = corpusFile(`roundtrip-${target.name}.db`);
      await migrate(file, t);
      const added = await withDb(t, async (db) => {
        // The app stores a vector with each memory (of the model the migration used).
        const [v] = await db.query<{ v: string }>(`SELECT embedding::text AS v FROM memories WHERE id = 'mem_0'`);
        const [a] = await db.query<{ id: string }>(
          `INSERT INTO memories (user_id, content, embedding, metadata, category) VALUES ('user_0', 'Switched to decaf after 3pm', $1::vector, '{"n": 12345678901234567890}', 'preferences') RETURNING id`,
          [v!.v],
        );
        const [b] = await db.query<{ id: string }>(
          `INSERT INTO memories (content, embedding, metadata) VALUES ('Stored by a vector-store client', $1::vector, '{"user_id": "user_9"}') RETURNING id`,
          [v!.v],
        );
        await db.query(`UPDATE memories SET content = 'Edited in Postgres after cutover' WHERE id = 'mem_5'`);
        const [f] = await db.query<{ id: string }>(
          `INSERT INTO prompt_fragments (category, priority, content, tags, context_tier) VALUES ('returns', 6, 'Returns within 30 days.', ARRAY['policy'], 'standard') RETURNING id`,
        );
        return [a!.id, b!.id, f!.id];
      });
      // verify reports them as the app's writes since the migration, not as damage.
      const before = await runCli(['verify', '--sqlite', file, ...targetArgs(t), '--json', '--sample', '1000']);
      assert.equal(before.code, 3, 'Postgres and the file differ until rollback');
      assert.equal(parseJson(before).mismatchCount, 0, before.stdout);
      const since = parseJson(before).sinceMigration;
      assert.deepEqual({ added: since.added, changed: since.changed }, { added: 3, changed: 1 });
      assert.deepEqual(since.rows.map((r: any) => `${r.id}:${r.check}`).sort(), [...added.map((id) => `${id}:added`), 'mem_5:changed'].sort());
      const human = await runCli(['verify', '--sqlite', file, ...targetArgs(t)]);
      assert.match(human.stdout + human.stderr, /Since the migration, Postgres has 3 rows added and 1 changed by the app/);
      assert.match(human.stderr, /No damage found, but Postgres is ahead of the SQLite file/);
      const rb = await runCli(['rollback', '--sqlite', file, ...targetArgs(t), '--json']);
      assert.equal(rb.code, 0, rb.stderr);
      const sqlite = new Database(file, { readonly: true });
      try {
        const get = sqlite.prepare('SELECT user_id, content, metadata FROM memories WHERE id = ?');
        assert.deepEqual({ ...(get.get(added[0]) as object) }, { user_id: 'user_0', content: 'Switched to decaf after 3pm', metadata: '{"n": 12345678901234567890}' });
        assert.equal((get.get(added[1]) as { user_id: string }).user_id, 'user_9');
        assert.equal((get.get('mem_5') as { content: string }).content, 'Edited in Postgres after cutover');
        // The app's fragment goes back the way the app kept fragments: a system_prompts row.
        const frag = get.get(added[2]) as { user_id: string; content: string; metadata: string };
        assert.equal(frag.user_id, 'system_prompts');
        assert.equal(frag.content, 'Returns within 30 days.');
        assert.deepEqual(JSON.parse(frag.metadata), {
          type: 'system_prompt', category: 'returns', priority: 6, tags: ['policy'], agent_type: 'all', context_tier: 'standard', is_active: true,
        });
      } finally {
        sqlite.close();
      }
      const v = await runCli(['verify', '--sqlite', file, ...targetArgs(t), '--json', '--sample', '1000']);
      assert.equal(v.code, 0, v.stdout + v.stderr);
      assert.deepEqual(parseJson(v).sinceMigration.rows, [], 'after rollback SQLite has them');
    });

    test('--user-in-metadata: metadata carries the user exactly, verify and re-runs expect it, rollback takes it out again', async () => {
      const t = await target.fresh();
      const file = corpusFile(`user-md-${target.name}.db`);
      const sqlite = new Database(file);
      sqlite.prepare(`UPDATE memories SET metadata = '{"order_id": 12345678901234567890}' WHERE id = 'mem_2'`).run();
      sqlite.prepare(`UPDATE memories SET metadata = NULL WHERE id = 'mem_4'`).run();
      sqlite.close();
      const args = ['migrate', '--sqlite', file, ...targetArgs(t), '--embedder', 'local', '--skip-test', '--json', '--user-in-metadata'];
      const first = await runCli(args);
      assert.equal(first.code, 0, first.stderr);
      await withDb(t, async (db) => {
        const rows = await db.query<{ id: string; md: string }>(`SELECT id, metadata::text AS md FROM memories WHERE id IN ('mem_2', 'mem_4') ORDER BY id`);
        assert.deepEqual(
          rows.map((r) => r.md),
          ['{"user_id": "user_2", "order_id": 12345678901234567890}', '{"user_id": "user_1"}'],
        );
      });
      const again = parseJson(await runCli(args));
      assert.deepEqual([again.memories.migrated, again.memories.updated], [0, 0], 'a re-run finds every row unchanged');
      const v = await runCli(['verify', '--sqlite', file, ...targetArgs(t), '--json', '--sample', '1000']);
      assert.equal(v.code, 0, v.stdout);
      // The app edits a row's metadata in Postgres; rollback writes it back without user_id.
      await withDb(t, (db) => db.query(`UPDATE memories SET metadata = metadata || '{"vip": true}' WHERE id = 'mem_2'`));
      const rb = await runCli(['rollback', '--sqlite', file, ...targetArgs(t), '--json']);
      assert.equal(rb.code, 0, rb.stderr);
      const back = new Database(file, { readonly: true });
      const md = (back.prepare(`SELECT metadata FROM memories WHERE id = 'mem_2'`).get() as { metadata: string }).metadata;
      back.close();
      assert.equal(md, '{"vip": true, "order_id": 12345678901234567890}');
      const after = await runCli(['verify', '--sqlite', file, ...targetArgs(t), '--json', '--sample', '1000']);
      assert.equal(after.code, 0, after.stdout);
    });

    test('a database made by memory-migrate 0.1 is upgraded in place, once, losing nothing', async () => {
      const t = await target.fresh();
      await withDb(t, async (db) => {
        await db.exec(OLD_SCHEMA);
        await db.exec(`
          INSERT INTO memories (id, user_id, content, content_hash, dedup_hash, embedding, metadata, created_at, updated_at)
          VALUES ('mem_a', 'u1', 'ΟΔΥΣΣΕΥΣ likes it strong', '${contentHash('ΟΔΥΣΣΕΥΣ likes it strong')}', 'stale-before-the-sigma-fold',
                  '[1,0,0,0,0,0,0,0]', '{"n": 12345678901234567890}', '2024-01-02 03:04:05.123456+00', '2024-02-03 04:05:06.654321+00'),
                 ('mem_b', 'u2', 'plain', '${contentHash('plain')}', '${dedupHash('plain')}', NULL, '{}', '2024-01-01 00:00:00+00', '2024-01-01 00:00:00+00');
          INSERT INTO memory_duplicates (original_id, duplicate_id, user_id, duplicate_hash, similarity_score, dedup_type)
          VALUES ('mem_a', 'mem_c', 'u1', 'h', 1, 'exact');
          INSERT INTO prompt_fragments (id, category, content, content_hash) VALUES ('default:general', 'general', 'Be kind.', '${contentHash('Be kind.')}');
        `);
        await installSchema(db, { dimensions: 8 });
        const snapshot = () =>
          db.query(
            `SELECT id, uuid::text, user_id, content, content_hash, dedup_hash, embedding::text, metadata::text,
                    created_at::text, updated_at::text, last_accessed_at::text FROM memories ORDER BY id`,
          );
        const rows = await snapshot();
        assert.deepEqual(
          rows.map((r) => [r.id, r.uuid, r.created_at, r.updated_at, r.last_accessed_at, r.metadata]),
          [
            ['mem_a', rowUuid('mem_a'), '2024-01-02 03:04:05.123456', '2024-02-03 04:05:06.654321', '2024-02-03 04:05:06.654321', '{"n": 12345678901234567890}'],
            ['mem_b', rowUuid('mem_b'), '2024-01-01 00:00:00', '2024-01-01 00:00:00', '2024-01-01 00:00:00', '{}'],
          ],
        );
        assert.equal(rows[0]!.dedup_hash, dedupHash('ΟΔΥΣΣΕΥΣ likes it strong'), 'dedup_hash recomputed where case folding changed');
        const [types] = await db.query<{ t: string }>(
          `SELECT string_agg(table_name || '.' || column_name || ' ' || data_type, ', ' ORDER BY table_name, column_name) AS t
             FROM information_schema.columns WHERE table_schema = current_schema() AND column_name IN ('created_at', 'updated_at', 'last_accessed_at')
              AND table_name IN ('memories', 'prompt_fragments', 'memory_duplicates', 'memory_analytics')`,
        );
        assert.doesNotMatch(types!.t, /with time zone/);
        const [dup] = await db.query<{ duplicate_id: string }>(`SELECT duplicate_id FROM memory_duplicates`);
        assert.equal(dup!.duplicate_id, 'mem_c');
        // The app's plain INSERT works on the upgraded tables.
        await db.query(`INSERT INTO memories (user_id, content) VALUES ('u1', 'added after the upgrade')`);
        await db.query(`INSERT INTO memory_duplicates (original_id, duplicate_hash, similarity_score, dedup_type) VALUES ('mem_b', 'x', 0.9, 'fuzzy')`);
        // A second install changes nothing.
        const again = await snapshot();
        await installSchema(db, { dimensions: 8 });
        assert.deepEqual(await snapshot(), again);
        assert.deepEqual(await hashMismatches(db), []);
      });
    });
  });
}

// LangChain.js's PGVectorStore (@langchain/community) on the schema memory-migrate installs,
// pointed at the table as an app would: tableName 'memories', LangChain's id = our uuid
// column. A migrated table must be searchable (cosine, through memories_embedding_idx) and
// filterable by metadata, and LangChain's own writes (addDocuments, delete by ids) must land
// as rows memory-migrate would have made: the BEFORE INSERT trigger (sql/008) fills id,
// user_id and the two hashes that PGVectorStore never sends. Every outcome is checked with
// SQL, not only through LangChain. PostgreSQL only: PGVectorStore needs a `pg` Pool, which
// speaks the wire protocol PGlite does not offer here.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { Embeddings } from '@langchain/core/embeddings';
import { PGVectorStore } from '@langchain/community/vectorstores/pgvector';
import { testTargets } from '../helpers/targets.js';
import { runCli, targetArgs, parseJson } from '../helpers/cli.js';
import { LAYOUT_A_SQL } from '../../src/source/layout.js';
import { contentHash, dedupHash } from '../../src/source/canonical.js';
import { localEmbedding } from '../../src/embed/local-provider.js';
import type { TargetOptions } from '../../src/postgres/connection.js';

const dir = mkdtempSync(join(tmpdir(), 'mm-langchain-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const CATEGORIES = ['orders', 'prefs', 'shipping'] as const;

/** 30 memories for two users, metadata with a category (what the filter test narrows on). */
function memoryFile(): string {
  const path = join(dir, 'langchain.db');
  const db = new Database(path);
  db.exec(LAYOUT_A_SQL);
  const ins = db.prepare('INSERT INTO memories (id, user_id, content, embedding, metadata, created_at, updated_at) VALUES (?, ?, ?, NULL, ?, ?, ?)');
  for (let i = 0; i < 30; i++) {
    const category = CATEGORIES[i % 3]!;
    ins.run(
      `m_${String(i).padStart(2, '0')}`,
      i % 2 === 0 ? 'user_a' : 'user_b',
      `Memory ${i} (${category}): the customer mentioned detail number ${i * 7} about their espresso.`,
      JSON.stringify({ category, n: i }),
      `2024-03-${String(1 + (i % 28)).padStart(2, '0')} 08:00:00`,
      `2024-03-${String(1 + (i % 28)).padStart(2, '0')} 09:00:00`,
    );
  }
  db.close();
  return path;
}

/**
 * Deterministic, offline embeddings of the table's width: the same local hashing embedder the
 * migration used (src/embed/local-provider.ts), so LangChain's vectors live in the same space
 * as the migrated ones and no test ever reaches a network.
 */
class LocalTestEmbeddings extends Embeddings {
  readonly dims: number;
  constructor(dims: number) {
    super({});
    this.dims = dims;
  }
  async embedDocuments(texts: string[]): Promise<number[][]> {
    return texts.map((t) => Array.from(localEmbedding(t, this.dims)));
  }
  async embedQuery(text: string): Promise<number[]> {
    return Array.from(localEmbedding(text, this.dims));
  }
}

/** Every SQL text PGVectorStore sends through the pool, so the test can EXPLAIN the real one. */
interface Sent {
  text: string;
  values: unknown[];
}

function recordQueries(pool: pg.Pool): Sent[] {
  const sent: Sent[] = [];
  const original = pool.query.bind(pool) as (text: string, values?: unknown[]) => Promise<pg.QueryResult>;
  // pg.Pool#query has many overloads; PGVectorStore only ever calls query(text, values).
  (pool as unknown as { query: (text: string, values?: unknown[]) => Promise<pg.QueryResult> }).query = (text, values) => {
    if (typeof text === 'string') sent.push({ text, values: values ?? [] });
    return original(text, values);
  };
  return sent;
}

for (const target of testTargets()) {
  if (target.name !== 'postgres') continue;

  describe('LangChain PGVectorStore on the installed schema (postgres)', () => {
    let file: string;
    let t: TargetOptions;
    let pool: pg.Pool; // the store's pool (recorded)
    let sql: pg.Pool; // the test's own pool for SQL assertions
    let sent: Sent[];
    let store: PGVectorStore;
    let dims: number;

    const count = async (where = 'true', params: unknown[] = []) =>
      Number((await sql.query(`SELECT count(*)::int AS n FROM memories WHERE ${where}`, params)).rows[0].n);

    /** A migrated row and its stored vector, as numbers (pgvector's text form is a JSON array). */
    const storedRow = async (id: string) => {
      const { rows } = await sql.query(`SELECT uuid::text AS uuid, content, embedding::text AS v FROM memories WHERE id = $1`, [id]);
      assert.ok(rows[0], `${id} migrated`);
      return { uuid: rows[0].uuid as string, content: rows[0].content as string, vector: JSON.parse(rows[0].v) as number[] };
    };

    before(async () => {
      file = memoryFile();
      t = await target.fresh();
      const res = await runCli(['migrate', '--sqlite', file, ...targetArgs(t), '--embedder', 'local', '--skip-test', '--json']);
      assert.equal(res.code, 0, res.stderr);
      parseJson(res);

      sql = new pg.Pool({ connectionString: t.databaseUrl!, max: 2 });
      // The width comes from the installed table (vector(N)), not from a constant here.
      const { rows } = await sql.query(
        `SELECT format_type(atttypid, atttypmod) AS type FROM pg_attribute WHERE attrelid = 'memories'::regclass AND attname = 'embedding'`,
      );
      const m = /^vector\((\d+)\)$/.exec(rows[0].type);
      assert.ok(m, `memories.embedding is ${rows[0].type}`);
      dims = Number(m[1]);

      pool = new pg.Pool({ connectionString: t.databaseUrl!, max: 2 });
      sent = recordQueries(pool);
      // initialize() is what apps call: its CREATE EXTENSION / CREATE TABLE IF NOT EXISTS must
      // leave our table alone (it only NOTICEs that the table exists).
      store = await PGVectorStore.initialize(new LocalTestEmbeddings(dims), {
        pool,
        tableName: 'memories',
        columns: { idColumnName: 'uuid', vectorColumnName: 'embedding', contentColumnName: 'content', metadataColumnName: 'metadata' },
        distanceStrategy: 'cosine',
      });
    });

    after(async () => {
      await store?.end(); // releases initialize()'s client and ends `pool`
      await sql?.end();
    });

    test('initialize() left the installed table as it was', async () => {
      const { rows } = await sql.query(
        `SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute
          WHERE attrelid = 'memories'::regclass AND attname IN ('id', 'uuid') ORDER BY attname`,
      );
      assert.deepEqual(rows, [
        { attname: 'id', type: 'text' },
        { attname: 'uuid', type: 'uuid' },
      ]);
      assert.equal(await count(), 30);
    });

    test("a search with a migrated row's own vector returns that row first, through memories_embedding_idx", async () => {
      const row = await storedRow('m_07');
      sent.length = 0;
      const hits = await store.similaritySearchVectorWithScore(row.vector, 5);
      assert.equal(hits.length, 5);
      const [doc, distance] = hits[0]!;
      assert.equal(doc.pageContent, row.content);
      assert.equal(doc.id, row.uuid, "LangChain's document id is the row's uuid (memory_migrate_uuid of the source id)");
      assert.deepEqual(doc.metadata, { category: CATEGORIES[7 % 3], n: 7 }, 'the source metadata, as jsonb');
      assert.ok(Math.abs(distance) < 1e-6, `cosine distance to itself is ${distance}`);

      // The query LangChain sent: the cosine operator on the bare column, ordered by its alias.
      const search = sent.find((s) => /_distance/.test(s.text));
      assert.ok(search, `no search query among ${JSON.stringify(sent)}`);
      assert.match(search.text, /SELECT \*, "embedding" <=> \$1 as "_distance"\s+FROM memories\s+ORDER BY "_distance" ASC\s+LIMIT \$2/);

      // The ivfflat index exists (migrate builds it after the load) and the planner can use it
      // for that exact text. On 30 rows a sequential scan is cheaper, so seqscan is switched off
      // for the EXPLAIN only, as src/selftest.ts does.
      const { rows: ix } = await sql.query(`SELECT indexdef FROM pg_indexes WHERE indexname = 'memories_embedding_idx'`);
      assert.match(ix[0]?.indexdef ?? '', /USING ivfflat \(embedding vector_cosine_ops\)/);
      const client = await sql.connect();
      try {
        await client.query('BEGIN');
        await client.query('SET LOCAL enable_seqscan = off');
        const plan = await client.query(`EXPLAIN ${search.text}`, search.values);
        await client.query('COMMIT');
        const text = plan.rows.map((r) => r['QUERY PLAN']).join('\n');
        assert.match(text, /Index Scan using memories_embedding_idx on memories/, text);
      } finally {
        client.release();
      }
    });

    test('a metadata filter narrows the results to the matching rows', async () => {
      const probe = await storedRow('m_00'); // an 'orders' row
      const hits = await store.similaritySearchVectorWithScore(probe.vector, 100, { category: 'prefs' });
      const expected = await count(`metadata->>'category' = 'prefs'`);
      assert.equal(expected, 10);
      // On 30 rows the planner scans the table, so the search is exact and must return all 10.
      assert.equal(hits.length, expected);
      assert.ok(hits.every(([d]) => d.metadata['category'] === 'prefs'));
      // Operators too: n is a JSON number in the source metadata, compared as numeric.
      const low = await store.similaritySearchVectorWithScore(probe.vector, 100, { category: 'orders', n: { lt: 9 } });
      assert.deepEqual(low.map(([d]) => d.metadata['n']).sort((a, b) => a - b), [0, 3, 6]);
    });

    test('addDocuments without ids: the trigger fills id = uuid, the hashes and user_id', async () => {
      const docs = [
        { pageContent: 'LangChain wrote this: Carol prefers oat milk.', metadata: { user_id: 'carol', category: 'prefs' } },
        { pageContent: 'LangChain wrote this: no user in the metadata.\r\n', metadata: { category: 'prefs' } },
        { pageContent: 'LangChain wrote THIS: ΟΔΥΣΣΕΥΣ ordered a grinder.  ', metadata: {} },
      ];
      const before = await count();
      await store.addDocuments(docs);
      assert.equal(await count(), before + 3);

      for (const [i, d] of docs.entries()) {
        const { rows } = await sql.query(
          `SELECT id, uuid::text AS uuid, user_id, content_hash, dedup_hash, vector_dims(embedding) AS dims, metadata
             FROM memories WHERE content = $1`,
          [d.pageContent],
        );
        assert.equal(rows.length, 1, `doc ${i} stored once`);
        const r = rows[0]!;
        assert.equal(r.id, r.uuid, `doc ${i}: id is its uuid as text`);
        assert.match(r.uuid, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, 'a random v4 uuid');
        assert.equal(r.content_hash, contentHash(d.pageContent), `doc ${i}: content_hash as the migration computes it`);
        assert.equal(r.dedup_hash, dedupHash(d.pageContent), `doc ${i}: dedup_hash as the migration computes it`);
        assert.equal(r.user_id, (d.metadata as { user_id?: string }).user_id ?? 'default');
        assert.equal(r.dims, dims);
        assert.deepEqual(r.metadata, d.metadata);
      }
    });

    test('addDocuments with explicit uuids keeps them, and delete({ids}) removes exactly those rows', async () => {
      const ids = [randomUUID(), randomUUID()];
      await store.addDocuments(
        [
          { pageContent: 'LangChain wrote this with id one.', metadata: { category: 'lc-ids' } },
          { pageContent: 'LangChain wrote this with id two.', metadata: { category: 'lc-ids' } },
        ],
        { ids },
      );
      const { rows } = await sql.query(`SELECT id, uuid::text AS uuid FROM memories WHERE uuid = ANY($1::uuid[]) ORDER BY content`, [ids]);
      assert.deepEqual(
        rows,
        ids.map((u) => ({ id: u, uuid: u })),
      );

      const before = await count();
      await store.delete({ ids });
      assert.equal(await count(), before - 2);
      assert.equal(await count('uuid = ANY($1::uuid[])', [ids]), 0);
      assert.equal(await count(`id LIKE 'm\\_%'`), 30, 'no migrated row touched');
    });

    test("scoping by metadata user_id: alice's documents are found for alice, not for bob", async () => {
      const texts = ['Alice likes her cortado extra hot.', 'Alice asked about descaling her machine.'];
      await store.addDocuments(texts.map((pageContent) => ({ pageContent, metadata: { user_id: 'alice' } })));
      await store.addDocuments([{ pageContent: 'Bob likes a flat white.', metadata: { user_id: 'bob' } }]);

      const { rows } = await sql.query(`SELECT user_id FROM memories WHERE content = ANY($1)`, [texts]);
      assert.deepEqual(rows.map((r) => r.user_id), ['alice', 'alice'], 'the user_id column comes from metadata.user_id');

      const query = await new LocalTestEmbeddings(dims).embedQuery(texts[0]!);
      const forAlice = await store.similaritySearchVectorWithScore(query, 10, { user_id: 'alice' });
      assert.deepEqual(forAlice.map(([d]) => d.pageContent).sort(), [...texts].sort());
      assert.equal(forAlice[0]![0].pageContent, texts[0]);
      const forBob = await store.similaritySearchVectorWithScore(query, 10, { user_id: 'bob' });
      assert.deepEqual(forBob.map(([d]) => d.pageContent), ['Bob likes a flat white.']);
    });

    test(
      'migrated rows can be scoped to their user with filter {user_id} after migrate --user-in-metadata',
      async () => {
        const probe = await storedRow('m_00'); // user_a's
        // Without the option the source's metadata is kept as it was: no user_id in it.
        assert.equal((await store.similaritySearchVectorWithScore(probe.vector, 100, { user_id: 'user_a' })).length, 0);
        const res = await runCli(['migrate', '--sqlite', file, ...targetArgs(t), '--embedder', 'local', '--skip-test', '--json', '--user-in-metadata']);
        assert.equal(res.code, 0, res.stderr);
        const hits = await store.similaritySearchVectorWithScore(probe.vector, 100, { user_id: 'user_a' });
        assert.equal(hits.length, await count(`user_id = 'user_a'`));
        assert.ok(hits.every(([d]) => d.metadata.user_id === 'user_a'));
      },
    );

    test('verify names the rows LangChain added as added since the migration, and nothing else', async () => {
      const res = await runCli(['verify', '--sqlite', file, ...targetArgs(t), '--json']);
      assert.equal(res.code, 3, 'Postgres is ahead of the file until rollback');
      const report = parseJson(res);
      assert.deepEqual(report.mismatches, []);
      const { rows } = await sql.query(`SELECT id FROM memories WHERE id NOT LIKE 'm\\_%'`);
      const appIds = new Set(rows.map((r) => r.id as string));
      assert.equal(appIds.size, 6, 'carol, two defaults, two alice, one bob');
      assert.deepEqual(new Set(report.sinceMigration.rows.map((r: { id: string }) => r.id)), appIds);
    });
  });
}

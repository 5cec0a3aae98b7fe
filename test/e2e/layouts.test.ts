// Every source layout memory-migrate reads (src/source/layouts/), end to end through the real
// CLI on each target: each fixture (scripts/layout-fixtures.ts, the sqlite-vec ones written by
// the real extension) arrives row for row with byte-identical content and bit-identical
// vectors, users mapped as the README documents, deleted rows left out, a re-run writes
// nothing, verify passes and the file's bytes never change. Then --map, the --user-from ledger
// refusal, rollback's refusal, and the stores memory-migrate does not read.
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { testTargets } from '../helpers/targets.js';
import { runCli, targetArgs, parseJson, sha256File } from '../helpers/cli.js';
import { freshTarget, withDb } from '../helpers/rerun.js';
import { FIXTURE_LAYOUTS, LAYOUT_DIMS, makeLayoutFixture, type ExpectedRow, type FixtureLayout } from '../../scripts/layout-fixtures.js';
import { parseVectorText } from '../../src/postgres/vector-text.js';
import type { TargetOptions } from '../../src/postgres/connection.js';

const dir = mkdtempSync(join(tmpdir(), 'mm-layouts-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A fresh target (PGlite: a copy of one initialised cluster), removed when the suite ends. */
const pgliteDirs: string[] = [];
after(() => {
  for (const d of pgliteDirs) rmSync(d, { recursive: true, force: true });
});
async function fresh(target: Parameters<typeof freshTarget>[0]): Promise<TargetOptions> {
  const t = await freshTarget(target);
  if (t.pgliteDir) pgliteDirs.push(t.pgliteDir);
  return t;
}

const LOCAL = ['--embedder', 'local', '--dimensions', String(LAYOUT_DIMS), '--skip-test', '--json'];

/** The rows of `rows` that are exact duplicates of an earlier row of the same user. */
function duplicateIds(rows: ExpectedRow[]): Set<string> {
  const seen = new Set<string>();
  const dups = new Set<string>();
  for (const r of rows) {
    const key = `${r.user}\u0000${r.content}`;
    if (seen.has(key)) dups.add(r.id);
    seen.add(key);
  }
  return dups;
}

async function assertArrived(t: TargetOptions, rows: ExpectedRow[], deletedIds: string[]): Promise<void> {
  const dups = duplicateIds(rows);
  await withDb(t, async (db) => {
    const stored = await db.query<{ id: string; user_id: string; content: string; v: string | null; metadata: string }>(
      `SELECT id, user_id, content, embedding::text AS v, metadata::text AS metadata FROM memories`,
    );
    const byId = new Map(stored.map((m) => [m.id, m]));
    const dupRows = await db.query<{ duplicate_id: string; user_id: string }>(`SELECT duplicate_id, user_id FROM memory_duplicates`);
    const dupById = new Map(dupRows.map((d) => [d.duplicate_id, d]));
    assert.equal(stored.length, rows.length - dups.size, 'one memory per non-duplicate source row');
    for (const r of rows) {
      if (dups.has(r.id)) {
        assert.equal(dupById.get(r.id)?.user_id, r.user, `duplicate ${r.id} recorded for ${r.user}`);
        continue;
      }
      const m = byId.get(r.id);
      assert.ok(m, `row ${r.id} arrived`);
      assert.equal(Buffer.compare(Buffer.from(m.content, 'utf8'), Buffer.from(r.content, 'utf8')), 0, `content of ${r.id} byte for byte`);
      assert.equal(m.user_id, r.user, `user of ${r.id}`);
      assert.ok(m.v, `${r.id} has a vector`);
      if (r.vector) {
        const got = parseVectorText(m.v);
        assert.deepEqual(Buffer.from(got.buffer, got.byteOffset, got.byteLength), Buffer.from(r.vector.buffer, r.vector.byteOffset, r.vector.byteLength), `vector of ${r.id} bit for bit`);
      }
      if (r.metadata !== null) {
        const [eq] = await db.query<{ eq: boolean }>(`SELECT $1::text::jsonb = $2::text::jsonb AS eq`, [m.metadata, r.metadata]);
        assert.ok(eq!.eq, `metadata of ${r.id}: ${m.metadata} vs ${r.metadata}`);
      }
    }
    for (const id of deletedIds) assert.ok(!byId.has(id), `deleted row ${id} was not migrated`);
  });
}

for (const target of testTargets('source layouts')) {
  describe(`source layouts (${target.name})`, { concurrency: 4 }, () => {
    for (const layout of FIXTURE_LAYOUTS) {
      test(`${layout}: every row arrives exact, users as documented, re-run writes nothing, verify passes, file unchanged`, async () => {
        const path = join(dir, `${target.name}-${layout}.db`);
        const fx = await makeLayoutFixture(layout as FixtureLayout, path);
        const sha = sha256File(path);
        const t = await fresh(target);
        // llm records its model: the run takes --source-model from the file and says so.
        const model = fx.sourceModel ? [] : ['--source-model', 'local-hash-v1'];
        const first = await runCli(['migrate', '--sqlite', path, ...targetArgs(t), ...LOCAL, ...model]);
        assert.equal(first.code, 0, first.stderr);
        const r1 = parseJson(first);
        assert.equal(r1.source.layout, layout === 'espressobot' ? 'memories' : layout);
        if (fx.sourceModel) assert.match(first.stderr + first.stdout, new RegExp(`source model ${fx.sourceModel} \\(from collections\\.model\\)`));
        const withVector = fx.rows.filter((r) => r.vector).length - [...duplicateIds(fx.rows)].filter((id) => fx.rows.find((x) => x.id === id)!.vector).length;
        assert.equal(r1.embeddings.reused, withVector, 'every stored vector reused');
        await assertArrived(t, fx.rows, fx.deletedIds);

        const again = parseJson(await runCli(['migrate', '--sqlite', path, ...targetArgs(t), ...LOCAL, ...model]));
        assert.equal(again.memories.migrated, 0);
        assert.equal(again.memories.updated, 0);
        assert.equal(again.embeddings.computed, 0);

        const verify = await runCli(['verify', '--sqlite', path, ...targetArgs(t), '--json']);
        assert.equal(verify.code, 0, verify.stdout + verify.stderr);
        assert.equal(sha256File(path), sha, 'the source file is byte-identical');
      });
    }

    test('--map reads any table; flags override single keys; a missing column names itself and the columns that exist', async () => {
      const path = join(dir, `${target.name}-custom.db`);
      const db = new Database(path);
      db.exec(`CREATE TABLE notes (note_id TEXT, owner TEXT, body TEXT, vec TEXT, extra TEXT, ts INTEGER)`);
      const v = new Float32Array([0.25, -0.5, 0.125, 1, -1, 0.75, 0.0625, 0.3]);
      db.prepare('INSERT INTO notes VALUES (?, ?, ?, ?, ?, ?)').run('n1', 'dana', 'Réunion à 9h — café noir', JSON.stringify(Array.from(v)), '{"k":1}', 1735689600000);
      db.prepare('INSERT INTO notes VALUES (?, ?, ?, ?, ?, ?)').run('n2', 'eli', 'Second note', v.join(','), null, 1735689600001);
      db.close();
      const sha = sha256File(path);
      const mapFile = join(dir, `${target.name}-map.json`);
      writeFileSync(mapFile, JSON.stringify({ table: 'notes', id: 'note_id', user: 'owner', content: 'missing_col', embedding: 'vec', encoding: 'auto', metadata: 'extra', created_at: 'ts' }));
      const t = await fresh(target);
      const bad = await runCli(['migrate', '--sqlite', path, ...targetArgs(t), ...LOCAL, '--source-model', 'local-hash-v1', '--map', mapFile]);
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /column "missing_col" is not in notes; columns there: note_id, owner, body, vec, extra, ts/);
      const ok = await runCli(['migrate', '--sqlite', path, ...targetArgs(t), ...LOCAL, '--source-model', 'local-hash-v1', '--map', mapFile, '--map-content', 'body']);
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(parseJson(ok).source.layout, 'map');
      await assertArrived(t, [
        { id: 'n1', user: 'dana', content: 'Réunion à 9h — café noir', vector: v, metadata: '{"k":1}' },
        { id: 'n2', user: 'eli', content: 'Second note', vector: v, metadata: null },
      ], []);
      const verify = await runCli(['verify', '--sqlite', path, ...targetArgs(t), '--json']);
      assert.equal(verify.code, 0, verify.stdout + verify.stderr);
      assert.equal(sha256File(path), sha);
    });

    test('--user-from is recorded in the ledger: a re-run that maps users differently is refused (exit 2), nothing written', async () => {
      const path = join(dir, `${target.name}-userfrom.db`);
      const fx = await makeLayoutFixture('mem0', path);
      const t = await fresh(target);
      const first = await runCli(['migrate', '--sqlite', path, ...targetArgs(t), ...LOCAL, '--source-model', 'local-hash-v1', '--user-from', 'const:team']);
      assert.equal(first.code, 0, first.stderr);
      const users = await withDb(t, (db) => db.query<{ u: string }>(`SELECT DISTINCT user_id AS u FROM memories`));
      assert.deepEqual(users.map((u) => u.u), ['team']);
      const runs = await withDb(t, (db) => db.query<{ o: string }>(`SELECT options->'source'->>'userFrom' AS o FROM migration_runs`));
      assert.deepEqual(runs.map((r) => r.o), ['const:team']);
      const second = await runCli(['migrate', '--sqlite', path, ...targetArgs(t), ...LOCAL, '--source-model', 'local-hash-v1']);
      assert.equal(second.code, 2, second.stderr);
      assert.match(second.stderr, /--user-from const:team, this run from column: users cannot be remapped/);
      const after = await withDb(t, (db) => db.query<{ n: number }>(`SELECT count(*)::int AS n FROM migration_runs`));
      assert.equal(after[0]!.n, 1, 'no run recorded by the refused one');
      assert.equal(fx.rows.length > 0, true);
    });

    test('rollback of a layout it cannot write back exits 2 before touching anything', async () => {
      const path = join(dir, `${target.name}-rollback-llm.db`);
      await makeLayoutFixture('llm', path);
      const sha = sha256File(path);
      const t = await fresh(target);
      const res = await runCli(['rollback', '--sqlite', path, ...targetArgs(t)]);
      assert.equal(res.code, 2, res.stderr);
      assert.match(res.stderr, /cannot roll back into .* \(layout llm\): rollback writes only the EspressoBot memories layout/);
      assert.equal(sha256File(path), sha);
      assert.deepEqual(readdirSync(dir).filter((f) => f.includes('rollback-llm.db.bak')), []);
    });
  });
}

describe('stores memory-migrate does not read: exit 2 with one line saying what to do', () => {
  const refuse = async (path: string, pattern: RegExp) => {
    const res = await runCli(['migrate', '--sqlite', path, '--pglite-dir', join(dir, 'never-created'), ...LOCAL]);
    assert.equal(res.code, 2, res.stderr);
    assert.match(res.stderr, pattern);
    assert.equal(res.stderr.trim().split('\n').length, 1, res.stderr);
    assert.ok(!existsSync(join(dir, 'never-created')), 'no target was created');
  };
  test("mem0's local Qdrant (pickled points)", async () => {
    const p = join(dir, 'storage.sqlite');
    const db = new Database(p);
    db.exec('CREATE TABLE points (id TEXT PRIMARY KEY, point BLOB)');
    db.prepare('INSERT INTO points VALUES (?, ?)').run('gASVBQ==', Buffer.from([0x80, 4, 0x95, 0x2e]));
    db.close();
    await refuse(p, /qdrant-client's local storage .* pickled Python objects/);
  });
  test('a LanceDB directory', async () => {
    const p = join(dir, 'lancedb');
    mkdirSync(join(p, 'memories.lance'), { recursive: true });
    await refuse(p, /LanceDB directory, not a SQLite file/);
  });
  test('a LlamaIndex JSON store', async () => {
    const p = join(dir, 'default__vector_store.json');
    writeFileSync(p, JSON.stringify({ embedding_dict: { a: [0.1, 0.2] }, text_id_to_ref_doc_id: {}, metadata_dict: {} }));
    await refuse(p, /LlamaIndex JSON store/);
  });
  test('an encrypted file', async () => {
    const p = join(dir, 'encrypted.db');
    writeFileSync(p, Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 73 + 11) % 256)));
    await refuse(p, /is not a SQLite database .* encrypted \(SQLCipher\), decrypt it first/);
  });
  test('an unknown layout names the tables found; an ambiguous one the layouts', async () => {
    const p = join(dir, 'unknown.db');
    const db = new Database(p);
    db.exec('CREATE TABLE notes (a TEXT); CREATE TABLE tags (b TEXT)');
    db.close();
    await refuse(p, /not a memory layout memory-migrate knows \(tables found: notes, tags\); describe its table with --map FILE/);
    const q = join(dir, 'ambiguous.db');
    const db2 = new Database(q);
    db2.exec(`CREATE TABLE vectors (id TEXT PRIMARY KEY, vector BLOB NOT NULL, payload TEXT NOT NULL);
      CREATE TABLE store (prefix TEXT, key TEXT, value TEXT); CREATE TABLE store_vectors (prefix TEXT, key TEXT, field_name TEXT, embedding BLOB)`);
    db2.close();
    await refuse(q, /matches several layouts \(langgraph, mem0\); choose one with --layout NAME/);
  });
});

// rollback end to end: migrate a generated file with the real CLI, add and change memories
// through the Postgres store (as the app would after cutover), then roll back. The SQLite
// file must then hold every memory with its latest content, every row that was not changed
// must be byte-identical (raw column bytes and storage classes), the backup must equal the
// original bytes, a dry run must write nothing, and Postgres must not change.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { existsSync, mkdtempSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { testTargets } from '../helpers/targets.js';
import { runCli, targetArgs, parseJson, sha256File } from '../helpers/cli.js';
import { makeFixture } from '../../scripts/make-fixture.js';
import { withDb, type Db } from '../../src/postgres/connection.js';
import { PostgresMemoryStore } from '../../src/store/postgres-store.js';
import { SqliteMemoryStore } from '../../src/store/sqlite-store.js';
import { parseVectorText } from '../../src/postgres/vector-text.js';
import { LocalProvider } from '../../src/embed/local-provider.js';
import { emptyEmbedStats } from '../../src/embed/types.js';
import type { TextEmbedder } from '../../src/store/types.js';

const dir = mkdtempSync(join(tmpdir(), 'mm-rollback-'));

function localEmbedder(): TextEmbedder {
  const provider = new LocalProvider();
  return {
    model: provider.model,
    dimensions: provider.dimensions,
    async embed(texts: string[]) {
      const out = await provider.embed(texts.map((text) => ({ text })), emptyEmbedStats());
      return out.map((r) => {
        if (!('vector' in r)) throw new Error(r.rejected);
        return r.vector;
      });
    },
  };
}


interface RawRow {
  r: number;
  id: string | null;
  bytes: string;
}

/** Every row's raw column bytes and storage classes, keyed by rowid. */
function rawRows(path: string): Map<number, RawRow> {
  const db = new Database(path, { readonly: true });
  try {
    const cols = ['id', 'user_id', 'content', 'embedding', 'metadata', 'created_at', 'updated_at'];
    const rows = db
      .prepare(`SELECT rowid AS r, CAST(id AS TEXT) AS tid, ${cols.map((c) => `typeof(${c}) AS t_${c}, CAST(${c} AS BLOB) AS b_${c}`).join(', ')} FROM memories`)
      .all() as Record<string, any>[];
    return new Map(
      rows.map((row) => [
        Number(row['r']),
        {
          r: Number(row['r']),
          id: row['tid'],
          bytes: cols.map((c) => `${row[`t_${c}`]}:${row[`b_${c}`] === null ? 'NULL' : Buffer.from(row[`b_${c}`]).toString('hex')}`).join('|'),
        },
      ]),
    );
  } finally {
    db.close();
  }
}

function sqliteRow(path: string, id: string): Record<string, any> | undefined {
  const db = new Database(path, { readonly: true });
  try {
    return db
      .prepare(`SELECT id, user_id, content, typeof(embedding) AS emb_type, embedding, metadata, created_at, updated_at FROM memories WHERE id = ?`)
      .get(id) as Record<string, any> | undefined;
  } finally {
    db.close();
  }
}

/** A fingerprint of everything rollback could have touched in Postgres. */
async function pgFingerprint(db: Db): Promise<string> {
  const [m] = await db.query<{ f: string }>(
    `SELECT md5(COALESCE(string_agg(id || '|' || user_id || '|' || content || '|' || metadata::text || '|' || updated_at::text || '|' ||
            access_count::text || '|' || COALESCE(embedding::text, ''), E'\\n' ORDER BY id), '')) AS f FROM memories`,
  );
  const [o] = await db.query<{ f: string }>(
    `SELECT (SELECT count(*) FROM memory_duplicates)::text || '/' || (SELECT count(*) FROM prompt_fragments)::text || '/' ||
            (SELECT count(*) FROM memory_analytics)::text || '/' || (SELECT count(*) FROM migration_runs)::text AS f`,
  );
  return `${m!.f}/${o!.f}`;
}

function backups(file: string): string[] {
  return readdirSync(dir).filter((f) => f.startsWith(`${basename(file)}.bak-`));
}

for (const target of testTargets()) {
  describe(`rollback on ${target.name}`, () => {
    test('round trip: migrate, add and update through the Postgres store, dry run, roll back', async () => {
      const file = join(dir, `rt-${target.name}.db`);
      makeFixture({ out: file, rows: 160, dims: 1536, encoding: 'mixed', users: 4, seed: 23 });
      const t = await target.fresh();
      const mig = await runCli(['migrate', '--sqlite', file, ...targetArgs(t), '--embedder', 'local', '--skip-test', '--quiet']);
      assert.equal(mig.code, 0, mig.stderr);
      const original = sha256File(file);
      const before = rawRows(file);

      // After cutover the app writes to Postgres.
      let added1 = '';
      let added2 = '';
      let edited = '';
      let retagged = '';
      let deleted = '';
      let fingerprint = '';
      await withDb(t, async (db) => {
        const store = await PostgresMemoryStore.open(db, localEmbedder());
        added1 = (await store.add({ userId: 'user_1', content: 'After cutover: Zoë switched to Swiss Water decaf.', metadata: { category: 'preferences', agent: 'EspressoBot' } })).id;
        added2 = (await store.add({ userId: 'user_new', content: 'A new customer asked about the Lelit Bianca.' })).id;
        const ids = (await db.query<{ id: string; user_id: string }>(
          `SELECT id, user_id FROM memories m WHERE user_id = 'user_2' AND NOT EXISTS (SELECT 1 FROM memory_duplicates d WHERE d.original_id = m.id) ORDER BY id LIMIT 3`,
        ));
        edited = ids[0]!.id;
        retagged = ids[1]!.id;
        deleted = ids[2]!.id;
        const previous = (await store.get(edited))!;
        const e = await store.add({ id: edited, userId: 'user_2', content: 'Updated after cutover: the customer now orders 4 bags a month.', metadata: previous.metadata });
        assert.equal(e.duplicate, false);
        await db.query(`UPDATE memories SET metadata = metadata || '{"vip": true}'::jsonb WHERE id = $1`, [retagged]);
        assert.equal(await store.delete(deleted), true);
        fingerprint = await pgFingerprint(db);
      });

      // Dry run: the list, and nothing written (no backup either).
      const dry = await runCli(['rollback', '--sqlite', file, ...targetArgs(t), '--dry-run', '--json']);
      assert.equal(dry.code, 0, dry.stderr);
      const d = parseJson(dry);
      assert.equal(d.dryRun, true);
      assert.equal(d.backup, null);
      assert.equal(d.inserted, 2);
      assert.equal(d.updated, 2);
      const byId = new Map(d.rows.map((r: any) => [r.id, r]));
      assert.deepEqual(byId.get(added1), { id: added1, user: 'user_1', action: 'insert', changes: ['new'] });
      assert.equal((byId.get(added2) as any).action, 'insert');
      assert.deepEqual((byId.get(edited) as any).changes, ['content']);
      assert.deepEqual((byId.get(retagged) as any).changes, ['metadata']);
      assert.equal(sha256File(file), original, 'a dry run writes nothing');
      assert.deepEqual(backups(file), [], 'a dry run makes no backup');
      const dryHuman = await runCli(['rollback', '--sqlite', file, ...targetArgs(t), '--dry-run']);
      assert.match(dryHuman.stdout, new RegExp(`would insert ${added1} \\(user_1\\)`));
      assert.match(dryHuman.stdout, new RegExp(`would update ${edited} \\(user_2\\): content`));
      assert.equal(sha256File(file), original);

      // The real thing.
      const res = await runCli(['rollback', '--sqlite', file, ...targetArgs(t), '--json']);
      assert.equal(res.code, 0, res.stderr);
      const r = parseJson(res);
      assert.equal(r.ok, true);
      assert.equal(r.inserted, 2);
      assert.equal(r.updated, 2);
      assert.equal(r.switch, 'export MEMORY_TYPE=sqlite');
      assert.match(basename(r.backup), /^rt-.*\.db\.bak-\d{8}T\d{6}Z(-\d+)?$/);
      assert.ok(existsSync(r.backup));
      assert.equal(sha256File(r.backup), original, 'the backup holds the original bytes');
      assert.notEqual(sha256File(file), original);

      // Postgres untouched.
      await withDb(t, async (db) => assert.equal(await pgFingerprint(db), fingerprint));

      // Every memory in Postgres is in SQLite with its latest content.
      await withDb(t, async (db) => {
        const pg = await db.query<{ id: string; user_id: string; content: string; metadata: string; vec: string; created: string }>(
          `SELECT id, user_id, content, metadata::text AS metadata, embedding::text AS vec, created_at::text AS created FROM memories`,
        );
        for (const m of pg) {
          const row = sqliteRow(file, m.id);
          assert.ok(row, `${m.id} is in SQLite`);
          assert.equal(row.content, m.content, m.id);
          assert.equal(row.user_id, m.user_id, m.id);
        }
        for (const id of [added1, added2]) {
          const row = sqliteRow(file, id)!;
          const m = pg.find((x) => x.id === id)!;
          assert.equal(row.emb_type, 'text', 'embeddings go back as JSON text');
          const back = Float32Array.from(JSON.parse(row.embedding));
          assert.deepEqual(Buffer.from(back.buffer), Buffer.from(parseVectorText(m.vec).buffer), 'the vector survives bit for bit');
          assert.deepEqual(JSON.parse(row.metadata), JSON.parse(m.metadata));
          // The file's format, with the fraction of a second a row written at now() has, so
          // that verify finds the same instant.
          assert.match(row.created_at, /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{3}(\d{3})?)?$/, "timestamps in the file's format");
          const bare = (t: string) => t.replace(/(\.\d*?)0+$/, '$1').replace(/\.$/, '');
          assert.equal(bare(row.created_at), bare(m.created), 'the exact instant');
          assert.match(row.updated_at, /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{3}(\d{3})?)?$/);
        }
        assert.equal(JSON.parse(sqliteRow(file, retagged)!.metadata).vip, true);
      });

      // Rows not changed in Postgres are byte-identical, the deleted one included.
      const after = rawRows(file);
      const changed = new Set([edited, retagged]);
      let same = 0;
      for (const [rowid, b] of before) {
        const a = after.get(rowid);
        assert.ok(a, `row ${rowid} (${b.id}) still exists`);
        if (b.id !== null && changed.has(b.id)) {
          assert.notEqual(a.bytes, b.bytes, `${b.id} was updated`);
          // Only the changed columns (and updated_at) moved: id, user_id and created_at kept.
          const keep = (x: RawRow) => x.bytes.split('|').filter((_, i) => [0, 1, 5].includes(i)).join('|');
          assert.equal(keep(a), keep(b), `${b.id}: id, user_id and created_at are unchanged`);
          continue;
        }
        assert.equal(a.bytes, b.bytes, `${b.id} is byte-identical`);
        same++;
      }
      assert.equal(same, before.size - 2);
      assert.equal(after.size, before.size + 2);
      assert.ok(sqliteRow(file, deleted), 'a memory deleted in Postgres after cutover is kept in SQLite');

      // The app, switched back, finds the memory written after cutover.
      const lite = await SqliteMemoryStore.open(file, localEmbedder(), { create: false });
      try {
        assert.equal((await lite.get(added1))?.content, 'After cutover: Zoë switched to Swiss Water decaf.');
        assert.equal((await lite.get(edited))?.content, 'Updated after cutover: the customer now orders 4 bags a month.');
        const hits = await lite.search('Swiss Water decaf', 'user_1', 3);
        assert.equal(hits[0]?.id, added1);
      } finally {
        await lite.close();
      }

      // Again (here through migrate --rollback): nothing left to write; a new backup is still made.
      const again = await runCli(['migrate', '--rollback', '--sqlite', file, ...targetArgs(t)]);
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stdout, /wrote back 0 new and 0 changed/);
      assert.match(again.stdout, /export MEMORY_TYPE=sqlite/);
      assert.match(again.stdout, /Backup: .*\.bak-/);
      assert.equal(backups(file).length, 2);
      const lastRows = rawRows(file);
      for (const [rowid, a] of after) assert.equal(lastRows.get(rowid)?.bytes, a.bytes);
    });

    test('rollback into an empty (zero-byte) file writes every memory in Layout A', async () => {
      const src = join(dir, `src-${target.name}.db`);
      makeFixture({ out: src, rows: 80, dims: 1536, encoding: 'json', users: 3, seed: 5 });
      const t = await target.fresh();
      const mig = await runCli(['migrate', '--sqlite', src, ...targetArgs(t), '--embedder', 'local', '--skip-test', '--quiet']);
      assert.equal(mig.code, 0, mig.stderr);
      const empty = join(dir, `empty-${target.name}.db`);
      writeFileSync(empty, '');
      const res = await runCli(['rollback', '--sqlite', empty, ...targetArgs(t), '--json']);
      assert.equal(res.code, 0, res.stderr);
      const r = parseJson(res);
      await withDb(t, async (db) => {
        const [{ n }] = (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM memories')) as [{ n: number }];
        assert.equal(r.inserted, Number(n));
      });
      const db = new Database(empty, { readonly: true });
      try {
        const cols = (db.prepare('PRAGMA table_info(memories)').all() as { name: string }[]).map((c) => c.name);
        assert.deepEqual(cols, ['id', 'user_id', 'content', 'embedding', 'metadata', 'created_at', 'updated_at']);
        // The migrated prompt fragments go into the empty file too, as system_prompts rows.
        assert.ok(r.fragmentsInserted > 0);
        assert.equal(Number(db.prepare(`SELECT count(*) FROM memories WHERE user_id = 'system_prompts'`).pluck().get()), r.fragmentsInserted);
        assert.equal(Number(db.prepare('SELECT count(*) FROM memories').pluck().get()), r.inserted + r.fragmentsInserted);
      } finally {
        db.close();
      }
      assert.equal(statSync(r.backup).size, 0, 'the backup of an empty file is empty');
    });
  });
}

// The layout readers against the real writers: sqlite-vec's shadow-table reader (no extension
// loaded) must give exactly what the extension itself returns for every live row, with
// partition keys, TEXT primary keys, auxiliary columns, several chunks and deleted rows; and
// detection, --map and --user-from as the reader applies them.
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import * as sqliteVec from 'sqlite-vec';
import { openSource } from '../../../src/source/reader.js';
import { loadColumnMap, parseUserFrom } from '../../../src/source/layouts/index.js';
import { FIXTURE_LAYOUTS, makeLayoutFixture, type FixtureLayout } from '../../../scripts/layout-fixtures.js';

const dir = mkdtempSync(join(tmpdir(), 'mm-layouts-unit-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function vec(n: number, dims: number): Float32Array {
  return Float32Array.from({ length: dims }, (_, j) => Math.fround(Math.cos(n * 3.1 + j) * (j + 1)));
}

describe('sqlite-vec shadow tables, read without the extension', () => {
  test('every live row, its vector bit for bit and its partition key, as the extension itself reads them', () => {
    const p = join(dir, 'vec.db');
    const db = new Database(p);
    sqliteVec.load(db);
    db.exec(`CREATE TABLE notes (id TEXT PRIMARY KEY, content TEXT, metadata TEXT);
      CREATE VIRTUAL TABLE vec_notes USING vec0(id TEXT PRIMARY KEY, user_id text partition key, embedding float[5], +kind text, chunk_size=8)`);
    const ins = db.prepare('INSERT INTO vec_notes (id, user_id, embedding, kind) VALUES (?, ?, ?, ?)');
    const note = db.prepare('INSERT INTO notes VALUES (?, ?, ?)');
    for (let n = 1; n <= 40; n++) {
      const v = vec(n, 5);
      ins.run(`n${n}`, `u${n % 3}`, Buffer.from(v.buffer), 'fact');
      note.run(`n${n}`, `note ${n} — ünïcödé`, n % 2 ? '{"n":' + n + '}' : null);
    }
    db.prepare(`DELETE FROM vec_notes WHERE id IN ('n3', 'n17', 'n18', 'n40')`).run();
    const truth = db.prepare('SELECT id, user_id, embedding FROM vec_notes').all() as { id: string; user_id: string; embedding: Buffer }[];
    db.close();
    assert.equal(truth.length, 36);

    const src = openSource(p);
    try {
      assert.equal(src.info.layout, 'sqlite-vec');
      assert.equal(src.info.userFrom, 'partition');
      const rows = [...src.rows()];
      assert.equal(rows.length, truth.length);
      const byId = new Map(rows.map((r) => [r.id, r]));
      for (const t of truth) {
        const r = byId.get(t.id);
        assert.ok(r, t.id);
        assert.equal(r.userId, t.user_id);
        assert.equal(r.content, `note ${t.id.slice(1)} — ünïcödé`);
        assert.deepEqual(Buffer.from(r.embedding.vector!.buffer, r.embedding.vector!.byteOffset, r.embedding.vector!.byteLength), t.embedding);
      }
      assert.deepEqual(src.users().map((u) => u.userId), ['u0', 'u1', 'u2']);
      assert.equal(src.count({ users: ['u1'] }), truth.filter((t) => t.user_id === 'u1').length);
    } finally {
      src.close();
    }
  });
});

describe('every fixture layout reads back what it was written with', () => {
  for (const layout of FIXTURE_LAYOUTS) {
    test(layout, async () => {
      const p = join(dir, `${layout}.db`);
      const fx = await makeLayoutFixture(layout as FixtureLayout, p);
      const src = openSource(p);
      try {
        const rows = [...src.rows()];
        assert.deepEqual(rows.map((r) => r.id).sort(), fx.rows.map((r) => r.id).sort());
        const byId = new Map(rows.map((r) => [r.id, r]));
        for (const want of fx.rows) {
          const got = byId.get(want.id)!;
          assert.equal(got.content, want.content, want.id);
          assert.equal(got.userId, want.user, want.id);
          if (want.vector) assert.deepEqual(Array.from(got.embedding.vector ?? []), Array.from(want.vector), want.id);
          else assert.equal(got.embedding.vector, null, want.id);
        }
        // Checkpoint order: strictly increasing.
        for (let i = 1; i < rows.length; i++) assert.ok(rows[i]!.rowid > rows[i - 1]!.rowid);
        // keys() and ids() walk the same rows.
        assert.deepEqual([...src.ids()], rows.map((r) => r.id));
        assert.equal([...src.keys()].length, rows.length);
      } finally {
        src.close();
      }
    });
  }
});

describe('--user-from and --map', () => {
  test('metadata:<key> and const:<value>; a layout without partitions refuses partition', async () => {
    const p = join(dir, 'mem0-user.db');
    await makeLayoutFixture('mem0', p);
    const byHash = openSource(p, { userFrom: parseUserFrom('metadata:hash') });
    assert.ok([...byHash.rows()].every((r) => /^h\d+$/.test(r.userId ?? '')));
    byHash.close();
    const constant = openSource(p, { userFrom: parseUserFrom('const:team') });
    assert.deepEqual(constant.users(), [{ userId: 'team', count: 14 }]);
    constant.close();
    assert.throws(() => openSource(p, { userFrom: parseUserFrom('partition') }), /has no partition key; use one of column, collection/);
    assert.throws(() => parseUserFrom('owner'), /invalid --user-from "owner"/);
  });

  test('a read-only SELECT; f32le refuses text; a query that writes is refused', () => {
    const p = join(dir, 'query.db');
    const db = new Database(p);
    db.exec(`CREATE TABLE a (k INTEGER PRIMARY KEY, body TEXT); CREATE TABLE b (k INTEGER, v BLOB, who TEXT)`);
    db.prepare('INSERT INTO a VALUES (1, ?)').run('joined text');
    db.prepare('INSERT INTO b VALUES (1, ?, ?)').run(Buffer.from(new Float32Array([1, 2, 3]).buffer), 'zoe');
    db.prepare('INSERT INTO a VALUES (2, ?)').run('text vector');
    db.prepare('INSERT INTO b VALUES (2, ?, ?)').run('[1,2,3]', 'zoe');
    db.close();
    const map = loadColumnMap(undefined, { query: 'SELECT a.k, a.body, b.v, b.who FROM a JOIN b ON b.k = a.k ORDER BY a.k', id: 'k', content: 'body', embedding: 'v', user: 'who', encoding: 'f32le' });
    const src = openSource(p, { map });
    const rows = [...src.rows()];
    src.close();
    assert.deepEqual(rows.map((r) => [r.id, r.userId, r.content]), [['1', 'zoe', 'joined text'], ['2', 'zoe', 'text vector']]);
    assert.deepEqual(Array.from(rows[0]!.embedding.vector!), [1, 2, 3]);
    assert.equal(rows[1]!.embedding.vector, null);
    assert.match(rows[1]!.embedding.problem!, /expected an f32le blob/);
    assert.throws(() => openSource(p, { map: loadColumnMap(undefined, { query: 'DELETE FROM a RETURNING body', content: 'body' }) }), /must be one read-only SELECT/);
  });
});

// The SQLite reader: embedding decoding, timestamps, canonical text and hashes, streaming
// with filters and shards, every unusable-file case, and the fixture generator.
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
  writeSync,
  closeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { UsageError } from '../../../src/errors.js';
import { decodeEmbedding, encodeEmbeddingJson } from '../../../src/source/decode-embedding.js';
import { parseTimestamp } from '../../../src/source/timestamps.js';
import { canonicalize, contentHash, dedupHash } from '../../../src/source/canonical.js';
import { openSource } from '../../../src/source/reader.js';
import { shardOf } from '../../../src/source/shard.js';
import { describeFsError, describeSqliteError } from '../../../src/source/sqlite-file.js';
import { makeFixture } from '../../../scripts/make-fixture.js';
import type { SourceRow } from '../../../src/source/types.js';

const root = mkdtempSync(join(tmpdir(), 'mm-source-'));
after(() => {
  try {
    chmodSync(root, 0o700);
  } catch {
    /* already gone */
  }
  rmSync(root, { recursive: true, force: true });
});
let counter = 0;
function tmpPath(name = 'src.db'): string {
  const dir = join(root, `t${++counter}`);
  mkdirSync(dir, { recursive: true });
  return join(dir, name);
}

const LAYOUT_A = `
  CREATE TABLE memories (
    id TEXT PRIMARY KEY, user_id TEXT NOT NULL, content TEXT NOT NULL, embedding BLOB, metadata TEXT,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP, updated_at DATETIME DEFAULT CURRENT_TIMESTAMP);
  CREATE INDEX idx_user_id ON memories(user_id);
  CREATE INDEX idx_created_at ON memories(created_at);`;

/** Writes a Layout A file with `n` simple rows spread over `users` users. */
function makeDb(path: string, n: number, users = 5, schema = LAYOUT_A): void {
  const db = new Database(path);
  db.exec(schema);
  const ins = db.prepare('INSERT INTO memories (id, user_id, content, embedding, metadata, created_at) VALUES (?, ?, ?, ?, ?, ?)');
  db.transaction(() => {
    for (let i = 0; i < n; i++) {
      ins.run(`mem_${i}`, `user_${i % users}`, `memory number ${i} `.repeat(8), JSON.stringify([1, i + 1, 0.5]), '{"k":1}', '2024-01-02 03:04:05');
    }
  })();
  db.close();
}

function fileSha(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

function f32Bytes(v: Float32Array): Buffer {
  return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
}

// ---------------------------------------------------------------------------------------
describe('decodeEmbedding', () => {
  test('JSON array text, as a string and as bytes', () => {
    const a = decodeEmbedding('[0.5, -0.25, 1e-3]');
    assert.equal(a.encoding, 'json');
    assert.deepEqual(Array.from(a.vector!), [0.5, -0.25, Math.fround(1e-3)]);
    const b = decodeEmbedding(Buffer.from('[0.5,-0.25,0.125]', 'utf8'));
    assert.equal(b.encoding, 'json');
    assert.deepEqual(Array.from(b.vector!), [0.5, -0.25, 0.125]);
    assert.equal(b.problem, undefined);
  });

  test('comma-separated floats without brackets, as a string and as UTF-8 bytes', () => {
    const a = decodeEmbedding('0.5, -0.25,0.125\n');
    assert.equal(a.encoding, 'csv');
    assert.deepEqual(Array.from(a.vector!), [0.5, -0.25, 0.125]);
    const b = decodeEmbedding(Buffer.from('1.5E-1,-2,3', 'utf8'));
    assert.equal(b.encoding, 'csv');
    assert.deepEqual(Array.from(b.vector!), [Math.fround(0.15), -2, 3]);
  });

  test('raw float32 LE blob decodes bit-exactly, also from an unaligned Buffer', () => {
    const v = new Float32Array([0.1, -0.2, 3.4028234663852886e38, 1.401298464324817e-45, -0, 0.333, 7, -1e-20]);
    const bytes = f32Bytes(v);
    const d = decodeEmbedding(bytes);
    assert.equal(d.encoding, 'f32');
    assert.deepEqual(f32Bytes(d.vector!), bytes);
    // Unaligned: the blob starts at byte offset 1 of a larger allocation.
    const big = Buffer.alloc(bytes.length + 1);
    bytes.copy(big, 1);
    const unaligned = big.subarray(1);
    // Really unaligned: a zero-copy Float32Array view of these bytes is impossible.
    assert.equal(unaligned.byteOffset % 4, 1);
    assert.throws(() => new Float32Array(unaligned.buffer, unaligned.byteOffset, v.length), RangeError);
    const u = decodeEmbedding(unaligned);
    assert.equal(u.encoding, 'f32');
    assert.deepEqual(f32Bytes(u.vector!), bytes);
    assert.notEqual(u.vector!.buffer, big.buffer, 'decoded into memory of its own');
    // The result owns its memory: changing the source bytes does not change the vector.
    big.fill(0);
    assert.deepEqual(f32Bytes(u.vector!), bytes);
  });

  test('a float32 blob that happens to start with "[" (0x5B) or 0x80 is still float32', () => {
    const v = new Float32Array(16).map((_, i) => (i + 1) / 16);
    const bytes = Buffer.from(f32Bytes(v));
    bytes[0] = 0x5b; // low mantissa byte of element 0
    const d = decodeEmbedding(bytes);
    assert.equal(d.encoding, 'f32');
    assert.deepEqual(f32Bytes(d.vector!), bytes);
    bytes[0] = 0x80;
    bytes[1] = 0x04; // like a pickle PROTO 4 opcode, but no STOP at the end
    const e = decodeEmbedding(bytes);
    assert.equal(e.encoding, 'f32');
    // Four text-looking bytes that are not valid number text: read as one float32.
    const t = decodeEmbedding(Buffer.from('[1,2', 'latin1'));
    assert.equal(t.encoding, 'f32');
    assert.equal(t.vector!.length, 1);
  });

  test('NULL, empty string, empty buffer, whitespace and []', () => {
    assert.equal(decodeEmbedding(null).encoding, 'null');
    assert.equal(decodeEmbedding(undefined).encoding, 'null');
    assert.equal(decodeEmbedding(null).vector, null);
    assert.equal(decodeEmbedding('').encoding, 'empty');
    assert.equal(decodeEmbedding(Buffer.alloc(0)).encoding, 'empty');
    assert.equal(decodeEmbedding('  \n').encoding, 'empty');
    assert.equal(decodeEmbedding('[]').encoding, 'empty');
  });

  test('bad values: pickle, NaN, Infinity, null element, zero norm, garbage', () => {
    const pickle = Buffer.concat([Buffer.from([0x80, 0x04, 0x95]), Buffer.alloc(8), Buffer.from(']\x94(G', 'latin1'), Buffer.alloc(8), Buffer.from('e.', 'latin1')]);
    const p = decodeEmbedding(pickle);
    assert.equal(p.encoding, 'bad');
    assert.match(p.problem!, /pickle/);
    assert.equal(p.vector, null);

    const nanF32 = decodeEmbedding(f32Bytes(new Float32Array([0.1, NaN, 0.2, 0.3])));
    assert.equal(nanF32.encoding, 'bad');
    assert.match(nanF32.problem!, /NaN at index 1/);
    assert.match(decodeEmbedding('[0.1, NaN, 0.2]').problem!, /NaN/); // Python json.dumps
    assert.match(decodeEmbedding('0.1,nan,0.2').problem!, /NaN/);
    assert.match(decodeEmbedding('[0.1, Infinity]').problem!, /Infinity/);
    assert.match(decodeEmbedding('[0.1, 1e39]').problem!, /Infinity/); // overflows float32
    assert.match(decodeEmbedding('[0.1, null]').problem!, /null/); // JSON.stringify(NaN)
    const zero = decodeEmbedding(f32Bytes(new Float32Array(8)));
    assert.equal(zero.encoding, 'bad');
    assert.match(zero.problem!, /zero/);
    assert.equal(decodeEmbedding('[0, 0, 0]').encoding, 'bad');
    assert.equal(decodeEmbedding('hello world').encoding, 'bad');
    assert.equal(decodeEmbedding('[1, 2').encoding, 'bad');
    assert.equal(decodeEmbedding('[[1, 2]]').encoding, 'bad');
    assert.equal(decodeEmbedding('0x10,2').encoding, 'bad');
    assert.equal(decodeEmbedding(Buffer.from([1, 2, 3, 200, 201])).encoding, 'bad'); // 5 bytes, not text
    assert.equal(decodeEmbedding(42).encoding, 'bad');
  });

  test('wrong length when expectedDims is given', () => {
    const v = new Float32Array(1535).fill(0.01);
    const d = decodeEmbedding(f32Bytes(v), 1536);
    assert.equal(d.encoding, 'bad');
    assert.equal(d.problem, 'wrong length 1535, expected 1536');
    assert.equal(decodeEmbedding(encodeEmbeddingJson(v), 1535).encoding, 'json');
    assert.equal(decodeEmbedding(Array.from(v).join(','), 1536).problem, 'wrong length 1535, expected 1536');
  });

  test('encodeEmbeddingJson writes what the app wrote and round-trips bit-exactly', () => {
    const v = new Float32Array(1536);
    let x = 12345;
    for (let i = 0; i < v.length; i++) {
      x = (x * 1103515245 + 12345) % 2147483648;
      v[i] = x / 2147483648 - 0.5;
    }
    const text = encodeEmbeddingJson(v);
    assert.equal(text, JSON.stringify(Array.from(v)));
    const d = decodeEmbedding(text, 1536);
    assert.equal(d.encoding, 'json');
    assert.deepEqual(f32Bytes(d.vector!), f32Bytes(v));
  });
});

// ---------------------------------------------------------------------------------------
describe('parseTimestamp', () => {
  test("SQLite 'YYYY-MM-DD HH:MM:SS' is UTC, with optional fractional seconds", () => {
    assert.equal(parseTimestamp('2024-03-05 14:07:09')!.toISOString(), '2024-03-05T14:07:09.000Z');
    assert.equal(parseTimestamp('2024-03-05 14:07:09.123')!.toISOString(), '2024-03-05T14:07:09.123Z');
    assert.equal(parseTimestamp('2024-03-05 14:07:09.123456')!.toISOString(), '2024-03-05T14:07:09.123Z');
    assert.equal(parseTimestamp('2024-03-05')!.toISOString(), '2024-03-05T00:00:00.000Z');
  });

  test('ISO 8601 with T and Z or an offset', () => {
    assert.equal(parseTimestamp('2024-03-05T14:07:09Z')!.toISOString(), '2024-03-05T14:07:09.000Z');
    assert.equal(parseTimestamp('2024-03-05T14:07:09.5+02:00')!.toISOString(), '2024-03-05T12:07:09.500Z');
    assert.equal(parseTimestamp('2024-03-05T14:07:09-0530')!.toISOString(), '2024-03-05T19:37:09.000Z');
    assert.equal(parseTimestamp('2024-12-31T23:30:00-01:00')!.toISOString(), '2025-01-01T00:30:00.000Z');
  });

  test('epoch seconds vs milliseconds decided by magnitude, numbers and numeric strings', () => {
    const expected = '2024-03-05T14:07:09.000Z';
    assert.equal(parseTimestamp(1709647629)!.toISOString(), expected);
    assert.equal(parseTimestamp(1709647629000)!.toISOString(), expected);
    assert.equal(parseTimestamp('1709647629')!.toISOString(), expected);
    assert.equal(parseTimestamp('1709647629000')!.toISOString(), expected);
    assert.equal(parseTimestamp(1709647629000n)!.toISOString(), expected);
    assert.equal(parseTimestamp(1709647629.25)!.toISOString(), '2024-03-05T14:07:09.250Z');
    assert.equal(parseTimestamp(99_999_999_999)!.getUTCFullYear(), 5138); // < 1e11: seconds
    assert.equal(parseTimestamp(100_000_000_000)!.getUTCFullYear(), 1973); // >= 1e11: ms
  });

  test('null, empty and unparseable values give null', () => {
    for (const v of [null, undefined, '', '   ', 'yesterday', '2024-02-30 00:00:00', '2024-13-01', '2024-01-01 25:00:00', NaN, {}, true]) {
      assert.equal(parseTimestamp(v), null, `expected null for ${String(v)}`);
    }
  });
});

// ---------------------------------------------------------------------------------------
describe('canonical form and hashes', () => {
  test('canonicalize: NFC, CRLF/CR to LF, trailing whitespace, one final newline', () => {
    assert.equal(canonicalize('a\r\nb  \r\n\r\n'), 'a\nb\n');
    assert.equal(canonicalize('a\rb'), 'a\nb\n');
    assert.equal(canonicalize('Cafe\u0301 \t'), 'Caf\u00e9\n');
    assert.equal(canonicalize('  indented stays\n\n\n'), '  indented stays\n');
    assert.equal(canonicalize('x'), 'x\n');
    assert.equal(canonicalize(''), '\n');
    assert.equal(canonicalize('line1  \nline2\t\n'), 'line1\nline2\n');
  });

  test('contentHash ignores only canonical differences; dedupHash also ignores case', () => {
    const a = 'Maria prefers Kenya AA.\nShip Mondays';
    const ws = 'Maria prefers Kenya AA.  \r\nShip Mondays\r\n\r\n';
    const nfd = a.replace('a', 'a').normalize('NFD');
    const upper = a.toUpperCase();
    assert.equal(contentHash(a), createHash('sha256').update(canonicalize(a)).digest('hex'));
    assert.match(contentHash(a), /^[0-9a-f]{64}$/);
    assert.equal(contentHash(ws), contentHash(a));
    assert.equal(contentHash(nfd), contentHash(a));
    assert.notEqual(contentHash(upper), contentHash(a));
    assert.equal(dedupHash(upper), dedupHash(a));
    assert.equal(dedupHash(a), createHash('sha256').update(canonicalize(a).toLowerCase()).digest('hex'));
    assert.notEqual(dedupHash('Maria prefers Kenya AB.'), dedupHash('Maria prefers Kenya AA.'));
    assert.equal(contentHash('Zoë ☕️'), contentHash('Zoe\u0308 ☕️'));
  });
});

// ---------------------------------------------------------------------------------------
describe('openSource: reading rows', () => {
  test('reads every field: ids, users, content bytes, metadata forms, embeddings, timestamps', () => {
    const p = tmpPath();
    const db = new Database(p);
    db.exec(LAYOUT_A.replace('user_id TEXT NOT NULL', 'user_id TEXT'));
    const ins = db.prepare('INSERT INTO memories (id, user_id, content, embedding, metadata, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)');
    const vec = new Float32Array([0.25, -0.5, 0.75]);
    ins.run('mem_a', 'user_1', 'Zoë likes ☕️ and 寿司', JSON.stringify(Array.from(vec)), '{"agent":"EspressoBot"}', '2024-01-02 03:04:05', '2024-01-02T03:04:06Z');
    ins.run(42n, null, 'integer id, no user', f32Bytes(vec), '[1,2]', 1709647629000, null);
    ins.run('mem_c', 'user_1', 'bad metadata', Buffer.from('0.25,-0.5,0.75'), '{"truncated": ', null, '');
    ins.run('mem_d', 'user_2', '\ufeffkeeps its BOM', null, 'null', 'garbage', null);
    ins.run('mem_e', 'user_2', 'scalar metadata', '', '"just text"', null, null);
    db.prepare("INSERT INTO memories (id, user_id, content) VALUES ('mem_f', 'user_3', CAST(X'4361666AE9' AS TEXT))").run();
    db.close();

    const src = openSource(p);
    assert.equal(src.info.layout, 'memories');
    assert.equal(src.info.metadataColumn, 'metadata');
    assert.equal(src.info.journalMode, 'delete');
    const rows = [...src.rows()];
    src.close();
    assert.equal(rows.length, 6);
    assert.deepEqual(rows.map((r) => r.rowid), [1, 2, 3, 4, 5, 6]);
    const [a, b, c, d, e, f] = rows as [SourceRow, SourceRow, SourceRow, SourceRow, SourceRow, SourceRow];

    assert.equal(a.id, 'mem_a');
    assert.equal(a.userId, 'user_1');
    assert.equal(a.content, 'Zoë likes ☕️ and 寿司');
    assert.equal(a.contentBytes, Buffer.byteLength(a.content));
    assert.equal(a.contentProblem, undefined);
    assert.equal(a.embedding.encoding, 'json');
    assert.deepEqual(f32Bytes(a.embedding.vector!), f32Bytes(vec));
    assert.deepEqual(a.metadata.fields, { agent: 'EspressoBot' });
    assert.equal(a.createdAt!.toISOString(), '2024-01-02T03:04:05.000Z');
    assert.equal(a.updatedAt!.toISOString(), '2024-01-02T03:04:06.000Z');

    assert.equal(b.id, '42');
    assert.equal(b.userId, null);
    assert.equal(b.embedding.encoding, 'f32');
    assert.deepEqual(b.metadata.fields, { value: [1, 2] });
    assert.equal(b.createdAt!.toISOString(), '2024-03-05T14:07:09.000Z');
    assert.equal(b.updatedAt, null);

    assert.equal(c.embedding.encoding, 'csv');
    assert.deepEqual(c.metadata.fields, { raw: '{"truncated": ' });
    assert.match(c.metadata.warning!, /not valid JSON/);
    assert.equal(c.metadata.json, '{"raw":"{\\"truncated\\": "}');
    assert.equal(c.createdAt, null);

    assert.equal(d.content, '\ufeffkeeps its BOM');
    assert.equal(d.embedding.encoding, 'null');
    assert.deepEqual(d.metadata.fields, {});
    assert.equal(d.metadata.warning, undefined);
    assert.equal(d.metadata.json, '{}');
    assert.equal(d.createdAt, null);

    assert.equal(e.embedding.encoding, 'empty');
    assert.deepEqual(e.metadata.fields, { value: 'just text' });

    // 'Cafj' + 0xE9: Latin-1 bytes stored as TEXT, not valid UTF-8.
    assert.equal(f.contentProblem, 'content is not valid UTF-8');
    assert.equal(f.contentBytes, 5);
    assert.equal(f.content, 'Cafj\ufffd');
    assert.deepEqual(f.metadata.fields, {});
  });

  test('meta_data is read as the metadata column; missing optional columns give null/{}', () => {
    const p = tmpPath();
    const db = new Database(p);
    // The SQLAlchemy model: integer ids and user ids, meta_data, epoch-second timestamps.
    db.exec('CREATE TABLE memories (id INTEGER PRIMARY KEY, user_id INTEGER, content TEXT, meta_data TEXT, created_at INTEGER)');
    db.prepare('INSERT INTO memories VALUES (?, ?, ?, ?, ?)').run(7, 1, 'hello there', '{"category":"prefs"}', 1709647629);
    db.close();
    const src = openSource(p);
    assert.equal(src.info.metadataColumn, 'meta_data');
    const [row] = [...src.rows()];
    assert.equal(src.count({ users: ['1'] }), 1);
    src.close();
    assert.equal(row!.id, '7');
    assert.equal(row!.rowid, 7);
    assert.equal(row!.userId, '1');
    assert.deepEqual(row!.metadata.fields, { category: 'prefs' });
    assert.equal(row!.embedding.encoding, 'null');
    assert.equal(row!.createdAt!.toISOString(), '2024-03-05T14:07:09.000Z');
    assert.equal(row!.updatedAt, null);

    const q = tmpPath();
    const db2 = new Database(q);
    db2.exec('CREATE TABLE memories (id, user_id, content)');
    db2.prepare('INSERT INTO memories VALUES (?, ?, ?)').run('m1', 'u', 'only three columns');
    db2.close();
    const src2 = openSource(q);
    assert.equal(src2.info.metadataColumn, null);
    const [r2] = [...src2.rows()];
    src2.close();
    assert.deepEqual(r2!.metadata.fields, {});
    assert.equal(r2!.embedding.encoding, 'null');
    assert.equal(r2!.createdAt, null);
  });

  test('a memories table without content / user_id is a UsageError naming the column', () => {
    for (const [cols, missing] of [
      ['id, user_id, body', 'content'],
      ['id, owner, content', 'user_id'],
      ['key, user_id, content', 'id'],
    ] as const) {
      const p = tmpPath('x.db');
      const db = new Database(p);
      db.exec(`CREATE TABLE memories (${cols})`);
      db.close();
      assert.throws(
        () => openSource(p),
        (err: unknown) =>
          err instanceof UsageError &&
          err.message.includes(`memories table in ${p} has no ${missing} column`) &&
          err.message.includes('expected columns id, user_id, content') &&
          !err.message.includes('\n'),
      );
    }
  });

  test('zero-byte file is layout "empty"; an empty mem0 vector store reads as mem0 with no rows', () => {
    const p = tmpPath('empty.db');
    writeFileSync(p, '');
    const src = openSource(p);
    assert.equal(src.info.layout, 'empty');
    assert.equal(src.count(), 0);
    assert.deepEqual([...src.rows()], []);
    assert.deepEqual(src.users(), []);
    src.close();
    assert.equal(statSync(p).size, 0);

    const q = tmpPath('other.db');
    const db = new Database(q);
    db.exec('CREATE TABLE vectors (id TEXT PRIMARY KEY, vector BLOB NOT NULL, payload TEXT NOT NULL)');
    db.close();
    const src2 = openSource(q);
    assert.equal(src2.info.layout, 'mem0');
    assert.deepEqual(src2.info.tables, ['vectors']);
    assert.equal(src2.count(), 0);
    assert.deepEqual([...src2.rows()], []);
    src2.close();
  });

  test('the committed fixtures/empty.db is zero bytes and reads as empty', () => {
    const p = fileURLToPath(new URL('../../../../fixtures/empty.db', import.meta.url));
    assert.equal(statSync(p).size, 0);
    const src = openSource(p);
    assert.equal(src.info.layout, 'empty');
    assert.equal(src.count(), 0);
    src.close();
  });
});

// ---------------------------------------------------------------------------------------
describe('openSource: filters, shards, streaming', () => {
  const p = tmpPath('filters.db');
  makeDb(p, 100, 7);

  test('users, afterRowid and limit filters, alone and combined; count agrees with rows', () => {
    const src = openSource(p);
    const all = [...src.rows()];
    assert.equal(all.length, 100);
    assert.equal(src.count(), 100);
    const u = [...src.rows({ users: ['user_1', 'user_3', 'nobody'] })];
    assert.equal(u.length, all.filter((r) => r.userId === 'user_1' || r.userId === 'user_3').length);
    assert.ok(u.every((r) => r.userId === 'user_1' || r.userId === 'user_3'));
    assert.equal(src.count({ users: ['user_1', 'user_3'] }), u.length);
    const after = [...src.rows({ afterRowid: 90 })];
    assert.deepEqual(after.map((r) => r.rowid), [91, 92, 93, 94, 95, 96, 97, 98, 99, 100]);
    const lim = [...src.rows({ limit: 5 })];
    assert.deepEqual(lim.map((r) => r.rowid), [1, 2, 3, 4, 5]);
    assert.equal(src.count({ limit: 5 }), 5);
    const combo = [...src.rows({ users: ['user_2'], afterRowid: 20, limit: 3 })];
    assert.deepEqual(combo.map((r) => r.rowid), [24, 31, 38]);
    assert.equal(src.count({ users: ['user_2'], afterRowid: 20, limit: 3 }), 3);
    assert.deepEqual([...src.rows({ limit: 0 })], []);
    assert.deepEqual([...src.rows({ users: [] })], []);
    assert.deepEqual(
      src.users({ users: ['user_2', 'user_4'] }),
      [
        { userId: 'user_2', count: 14 },
        { userId: 'user_4', count: 14 },
      ],
    );
    assert.deepEqual(src.users({ limit: 3 }), [
      { userId: 'user_0', count: 1 },
      { userId: 'user_1', count: 1 },
      { userId: 'user_2', count: 1 },
    ]);
    src.close();
  });

  test('shardOf is sha256(user_id)[0..4] big-endian mod count', () => {
    for (const u of ['user_1', 'system_prompts', '', 'Zoë']) {
      const expected = createHash('sha256').update(u, 'utf8').digest().readUInt32BE(0) % 7;
      assert.equal(shardOf(u, 7), expected);
    }
    assert.equal(shardOf(null, 5), shardOf('', 5));
    assert.equal(shardOf('anything', 1), 0);
    assert.throws(() => shardOf('x', 0), RangeError);
  });

  test('shards 0..2 of 3 cover every row exactly once, each whole users only', () => {
    const src = openSource(p);
    const seen = new Map<number, number>();
    let total = 0;
    for (let index = 0; index < 3; index++) {
      const rows = [...src.rows({ shard: { index, count: 3 } })];
      assert.equal(src.count({ shard: { index, count: 3 } }), rows.length);
      for (const r of rows) {
        assert.equal(shardOf(r.userId, 3), index);
        seen.set(r.rowid, (seen.get(r.rowid) ?? 0) + 1);
      }
      total += rows.length;
      const users = src.users({ shard: { index, count: 3 } });
      assert.equal(users.reduce((s, x) => s + x.count, 0), rows.length);
    }
    assert.equal(total, 100);
    assert.equal(seen.size, 100);
    assert.ok([...seen.values()].every((n) => n === 1));
    assert.throws(() => src.count({ shard: { index: 3, count: 3 } }), UsageError);
    src.close();
  });

  test('rows stream in pages, in rowid order, and the connection stays usable between rows', () => {
    const src = openSource(p, { pageSize: 7 });
    const ids: number[] = [];
    for (const r of src.rows({ afterRowid: 10 })) {
      ids.push(r.rowid);
      if (ids.length === 3) assert.equal(src.count(), 100); // a query mid-stream works
    }
    assert.deepEqual(ids, Array.from({ length: 90 }, (_, i) => i + 11));
    const lim = [...src.rows({ limit: 15 })];
    assert.equal(lim.length, 15);
    src.close();
  });

  test('reading leaves the file byte-identical; sha256() matches the file', () => {
    const before = fileSha(p);
    const src = openSource(p);
    assert.equal(src.sha256(), before);
    [...src.rows()];
    src.count({ shard: { index: 1, count: 3 } });
    src.users();
    src.close();
    assert.equal(fileSha(p), before);
    assert.equal(existsSync(p + '-journal'), false);
    assert.equal(existsSync(p + '-wal'), false);
  });
});

// ---------------------------------------------------------------------------------------
describe('openSource: WAL files', () => {
  test('rows still in the -wal of an open writer are read; the main file is untouched', () => {
    const p = tmpPath('wal.db');
    const writer = new Database(p);
    try {
      writer.pragma('journal_mode = WAL');
      writer.exec(LAYOUT_A);
      const ins = writer.prepare('INSERT INTO memories (id, user_id, content) VALUES (?, ?, ?)');
      for (let i = 0; i < 25; i++) ins.run(`m${i}`, 'user_1', `wal row ${i}`);
      assert.ok(statSync(p + '-wal').size > 0);
      // The main file alone does not hold the rows yet.
      const mainOnly = tmpPath('main-only.db');
      copyFileSync(p, mainOnly);
      const alone = openSource(mainOnly);
      assert.equal(alone.count(), 0);
      alone.close();

      const before = fileSha(p);
      const src = openSource(p);
      assert.equal(src.info.journalMode, 'wal');
      assert.equal(src.count(), 25);
      assert.deepEqual([...src.rows()].map((r) => r.content), Array.from({ length: 25 }, (_, i) => `wal row ${i}`));
      src.close();
      assert.equal(fileSha(p), before);
    } finally {
      writer.close();
    }
  });

  test('a -wal left by a writer that was killed is read', () => {
    const p = tmpPath('killed.db');
    const script = `
      const Database = require(${JSON.stringify(require_('better-sqlite3'))});
      const db = new Database(${JSON.stringify(p)});
      db.pragma('journal_mode = WAL');
      db.pragma('wal_autocheckpoint = 0');
      db.exec(${JSON.stringify(LAYOUT_A)});
      const ins = db.prepare('INSERT INTO memories (id, user_id, content) VALUES (?, ?, ?)');
      for (let i = 0; i < 40; i++) ins.run('m' + i, 'user_' + (i % 2), 'committed before the crash ' + i);
      process.kill(process.pid, 'SIGKILL');`;
    const res = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    assert.equal(res.signal, 'SIGKILL', res.stderr);
    assert.ok(statSync(p + '-wal').size > 0);
    const before = fileSha(p);
    const src = openSource(p);
    assert.equal(src.count(), 40);
    assert.deepEqual(src.users(), [
      { userId: 'user_0', count: 20 },
      { userId: 'user_1', count: 20 },
    ]);
    src.close();
    assert.equal(fileSha(p), before);
  });
});

// ---------------------------------------------------------------------------------------
describe('openSource: files it cannot use are UsageErrors with a fix', () => {
  const isOneLineUsage = (re: RegExp) => (err: unknown) =>
    err instanceof UsageError && err.exitCode === 2 && re.test(err.message) && !err.message.includes('\n');

  test('missing file', () => {
    const p = join(root, 'nope', 'missing.db');
    assert.throws(() => openSource(p), isOneLineUsage(/does not exist; check the --sqlite path/));
    assert.equal(existsSync(p), false); // not created by opening
  });

  test('a directory', () => {
    const d = join(root, 'a-directory.db');
    mkdirSync(d);
    assert.throws(() => openSource(d), isOneLineUsage(/is a directory, not a SQLite file/));
  });

  test('unreadable (EACCES): mapping, and a real reader without permission', () => {
    const e = Object.assign(new Error('EACCES: permission denied'), { code: 'EACCES' });
    assert.ok(isOneLineUsage(/cannot read \/x\.db \(permission denied\)/)(describeFsError(e, '/x.db')));

    // Tests run as root, which reads anything: run the reader as 'nobody' on a mode-000 file.
    const dir = join(root, 'noperm');
    mkdirSync(dir);
    const p = join(dir, 'secret.db');
    makeDb(p, 3);
    chmodSync(root, 0o755);
    chmodSync(dir, 0o755);
    chmodSync(p, 0o000);
    const moduleUrl = pathToFileURL(fileURLToPath(new URL('../../../src/source/reader.js', import.meta.url))).href;
    const script = `
      const { openSource } = await import(${JSON.stringify(moduleUrl)});
      try { openSource(${JSON.stringify(p)}); console.log('OPENED'); }
      catch (err) { console.log(err.name + ': ' + err.message); }`;
    const res = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      uid: 65534,
      gid: 65534,
      encoding: 'utf8',
    });
    chmodSync(root, 0o700);
    assert.equal(res.error, undefined);
    assert.match(res.stdout, /^UsageError: cannot read .*secret\.db \(permission denied\); run as a user that can read it/, res.stderr);
  });

  test('not a SQLite file (random bytes, text, SQLCipher-like)', () => {
    const p = tmpPath('random.db');
    const buf = Buffer.alloc(8192);
    for (let i = 0; i < buf.length; i++) buf[i] = (i * 7919 + 13) & 0xff;
    writeFileSync(p, buf);
    const before = fileSha(p);
    assert.throws(() => openSource(p), isOneLineUsage(/is not a SQLite database \(unknown header\); if it is encrypted \(SQLCipher\), decrypt it first/));
    const t = tmpPath('notes.txt');
    writeFileSync(t, 'hello, this is text\n');
    const textBefore = fileSha(t);
    assert.throws(() => openSource(t), isOneLineUsage(/is not a SQLite database/));
    // The refused files are left exactly as they were, with no journal or WAL beside them.
    assert.equal(fileSha(p), before);
    assert.equal(fileSha(t), textBefore);
    for (const f of [p, t]) for (const side of ['-journal', '-wal', '-shm']) assert.equal(existsSync(f + side), false, `${f}${side} was created`);
  });

  test('corrupt: bytes overwritten in the middle of a page', () => {
    const p = tmpPath('corrupt.db');
    makeDb(p, 400);
    const size = statSync(p).size;
    const fd = openSync(p, 'r+');
    // Page 3 onward: b-tree page headers and cells replaced with junk.
    writeSync(fd, Buffer.alloc(2048, 0xa7), 0, 2048, 4096 * 2);
    writeSync(fd, Buffer.alloc(2048, 0x3c), 0, 2048, Math.floor(size / 2));
    closeSync(fd);
    assert.throws(() => {
      const src = openSource(p);
      src.count();
      for (const _ of src.rows()) void _;
    }, isOneLineUsage(/is corrupt \(.*\); salvage it with `sqlite3 .*corrupt\.db \.recover/));
  });

  test('corrupt: truncated file', () => {
    const p = tmpPath('truncated.db');
    makeDb(p, 400);
    truncateSync(p, Math.floor(statSync(p).size / 3));
    assert.throws(() => {
      const src = openSource(p);
      src.count();
      for (const _ of src.rows()) void _;
    }, isOneLineUsage(/is corrupt/));
    const q = tmpPath('header-only.db');
    writeFileSync(q, Buffer.from('SQLite format 3\0abc', 'latin1'));
    assert.throws(() => openSource(q), isOneLineUsage(/is corrupt \(truncated/));
  });

  test('locked by a writer: gives up after the busy timeout', () => {
    const p = tmpPath('locked.db');
    makeDb(p, 10);
    const writer = new Database(p);
    try {
      writer.exec('BEGIN EXCLUSIVE');
      writer.prepare("INSERT INTO memories (id, user_id, content) VALUES ('x', 'u', 'uncommitted')").run();
      const started = Date.now();
      assert.throws(
        () => openSource(p, { busyTimeoutMs: 300 }),
        isOneLineUsage(/is locked by another connection \(still locked after 300 ms\); stop the app that is writing to it, or copy the file/),
      );
      const waited = Date.now() - started;
      assert.ok(waited >= 250 && waited < 5000, `waited ${waited} ms`);
      writer.exec('ROLLBACK');
      const src = openSource(p, { busyTimeoutMs: 300 });
      assert.equal(src.count(), 10);
      src.close();
    } finally {
      writer.close();
    }
  });

  test('a hot rollback journal left by a killed writer: a read-only reader cannot roll it back', () => {
    const p = tmpPath('hot.db');
    const script = `
      const Database = require(${JSON.stringify(require_('better-sqlite3'))});
      const db = new Database(${JSON.stringify(p)});
      db.exec(${JSON.stringify(LAYOUT_A)});
      const ins = db.prepare('INSERT INTO memories (id, user_id, content) VALUES (?, ?, ?)');
      db.transaction(() => { for (let i = 0; i < 2000; i++) ins.run('m' + i, 'u', 'x'.repeat(500)); })();
      db.pragma('cache_size = 2');
      db.exec('BEGIN');
      db.exec("UPDATE memories SET content = content || 'y'");
      process.kill(process.pid, 'SIGKILL');`;
    const res = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    assert.equal(res.signal, 'SIGKILL', res.stderr);
    assert.ok(statSync(p + '-journal').size > 0);
    const before = fileSha(p);
    const journalBefore = fileSha(p + '-journal');
    assert.throws(() => openSource(p), isOneLineUsage(/has a hot journal .* copy both files together/));
    assert.equal(fileSha(p), before);
    assert.equal(fileSha(p + '-journal'), journalBefore);
  });

  test('SQLite error codes map to the right one-line messages', () => {
    const mk = (code: string, msg: string) => new Database.SqliteError(msg, code);
    assert.ok(isOneLineUsage(/not a SQLite database/)(describeSqliteError(mk('SQLITE_NOTADB', 'file is not a database'), 'a.db')));
    assert.ok(isOneLineUsage(/a\.db is corrupt .*\.recover/)(describeSqliteError(mk('SQLITE_CORRUPT', 'database disk image is malformed'), 'a.db')));
    assert.ok(isOneLineUsage(/locked .*after 5000 ms/)(describeSqliteError(mk('SQLITE_BUSY', 'database is locked'), 'a.db')));
    assert.ok(isOneLineUsage(/cannot open a\.db/)(describeSqliteError(mk('SQLITE_CANTOPEN', 'unable to open database file'), 'a.db')));
    assert.ok(isOneLineUsage(/hot journal/)(describeSqliteError(mk('SQLITE_READONLY_ROLLBACK', 'attempt to write a readonly database'), 'a.db')));
    const other = new Error('something else');
    assert.equal(describeSqliteError(other, 'a.db'), other);
    assert.ok(isOneLineUsage(/does not exist/)(describeFsError(Object.assign(new Error('x'), { code: 'ENOENT' }), 'a.db')));
  });
});

// ---------------------------------------------------------------------------------------
describe('fixture generator', () => {
  test('makeFixture writes what its summary claims', () => {
    const out = tmpPath('fx.db');
    const s = makeFixture({ out, rows: 300, dims: 64, encoding: 'mixed', users: 4, seed: 7 });
    assert.equal(s.rows, 300);
    const src = openSource(out);
    const rows = [...src.rows()];
    const users = src.users();
    src.close();
    assert.equal(rows.length, 300);
    assert.deepEqual(Object.fromEntries(users.map((u) => [u.userId, u.count])), s.perUser);
    assert.deepEqual(
      Object.keys(s.perUser).sort(),
      ['system_metrics', 'system_prompts', 'user_1', 'user_2', 'user_3', 'user_4'],
    );

    // Embeddings, decoded with the declared dimensions.
    const enc: Record<string, number> = {};
    let nan = 0;
    let wrong = 0;
    let pickle = 0;
    for (const r of rows) {
      const d = decodeEmbedding(rowEmbeddingRaw(out, r.rowid), 64);
      enc[d.encoding] = (enc[d.encoding] ?? 0) + 1;
      if (d.problem?.includes('NaN')) nan++;
      if (d.problem === 'wrong length 63, expected 64') wrong++;
      if (d.problem?.includes('pickle')) pickle++;
      if (d.vector) {
        const norm = Math.sqrt(d.vector.reduce((a, x) => a + x * x, 0));
        assert.ok(Math.abs(norm - 1) < 1e-5, `row ${r.rowid} norm ${norm}`);
      }
    }
    assert.equal(enc.json, s.embeddings.json);
    assert.equal(enc.csv, s.embeddings.csv);
    assert.equal(enc.f32, s.embeddings.f32);
    assert.equal(enc.null, 1);
    assert.equal(enc.empty, 1);
    assert.equal(nan, 1);
    assert.equal(wrong, 1);
    assert.equal(pickle, 1);
    assert.ok(s.embeddings.json > 50 && s.embeddings.csv > 50 && s.embeddings.f32 > 50);

    // System rows.
    const prompts = rows.filter((r) => r.userId === 'system_prompts');
    assert.equal(prompts.length, 5);
    for (const p of prompts) {
      assert.equal(p.metadata.fields.type, 'system_prompt');
      assert.ok(['high', 'medium', 'low'].includes(p.metadata.fields.priority as string));
      assert.ok(Array.isArray(p.metadata.fields.tags));
      assert.ok(['all', 'sales'].includes(p.metadata.fields.agent_type as string));
    }
    assert.ok(prompts.some((p) => p.metadata.fields.context_tier === 'core'));
    assert.ok(prompts.some((p) => p.metadata.fields.context_tier === undefined));
    assert.equal(rows.filter((r) => r.userId === 'system_metrics').length, 2);

    // Duplicates within a user, by the same hashes the pipeline uses.
    const byDedup = new Set<string>();
    const byContentHash = new Set<string>();
    const byExact = new Set<string>();
    let identical = 0;
    let whitespace = 0;
    let caseOnly = 0;
    for (const r of rows) {
      const u = r.userId ?? '';
      const dk = `${u}|${dedupHash(r.content)}`;
      const ck = `${u}|${contentHash(r.content)}`;
      const ek = `${u}|${r.content}`;
      if (byDedup.has(dk)) {
        if (byExact.has(ek)) identical++;
        else if (byContentHash.has(ck)) whitespace++;
        else caseOnly++;
      }
      byDedup.add(dk);
      byContentHash.add(ck);
      byExact.add(ek);
    }
    assert.deepEqual(
      { total: identical + whitespace + caseOnly, identical, caseOnly, whitespaceOnly: whitespace },
      s.exactDuplicates,
    );
    assert.ok(s.exactDuplicates.total >= 10);
    assert.ok(s.exactDuplicates.caseOnly >= 1 && s.exactDuplicates.whitespaceOnly >= 1);

    // Cross-user: the same text stored under two users.
    const usersByText = new Map<string, Set<string>>();
    for (const r of rows) {
      if (!r.userId?.startsWith('user_')) continue;
      const k = dedupHash(r.content);
      usersByText.set(k, (usersByText.get(k) ?? new Set()).add(r.userId));
    }
    assert.equal([...usersByText.values()].reduce((n, s2) => n + s2.size - 1, 0), s.crossUserCopies);
    assert.ok(s.crossUserCopies >= 1);

    // Near duplicates: not an exact duplicate, but an earlier row of the same user has the
    // same words except one. (Random texts may add a few beyond the deliberate ones.)
    let near = 0;
    const earlier = new Map<string, string[][]>();
    const dedupSeen = new Set<string>();
    for (const r of rows) {
      const words = canonicalize(r.content).trim().split(/\s+/);
      const list = earlier.get(r.userId ?? '') ?? [];
      const dk = `${r.userId}|${dedupHash(r.content)}`;
      if (!dedupSeen.has(dk) && list.some((w) => w.length === words.length && w.filter((x, i) => x !== words[i]).length === 1)) near++;
      dedupSeen.add(dk);
      list.push(words);
      earlier.set(r.userId ?? '', list);
    }
    assert.ok(near >= s.nearDuplicates, `${near} near duplicates found, ${s.nearDuplicates} claimed`);
    assert.ok(s.nearDuplicates >= 2);

    // Content shapes.
    assert.equal(rows.filter((r) => r.content === '').length, s.emptyContent);
    assert.equal(s.emptyContent, 1);
    assert.equal(rows.filter((r) => r.content.length > 0 && r.content.length < 10).length, s.shortContent);
    assert.equal(rows.filter((r) => /[^\x00-\x7f]/.test(r.content)).length, s.unicodeContent);
    assert.ok(rows.some((r) => /[\u4e00-\u9fff]/.test(r.content)), 'CJK');
    assert.ok(rows.some((r) => /\p{Extended_Pictographic}/u.test(r.content)), 'emoji');
    assert.ok(rows.some((r) => /[éëöüç]/.test(r.content)), 'accents');
    assert.equal(rows.filter((r) => r.content.includes('\r\n')).length, s.crlfContent);
    assert.ok(s.crlfContent >= 1);
    assert.equal(rows.filter((r) => r.metadata.warning).length, s.invalidMetadata);
    assert.equal(s.invalidMetadata, 1);
    assert.ok(rows.every((r) => r.contentProblem === undefined));

    // Ids and timestamps.
    assert.ok(rows.every((r) => /^mem_(\d{13}_[0-9a-z]{9}|[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12})$/.test(r.id)));
    assert.equal(rows.filter((r) => /^mem_\d{13}_/.test(r.id)).length, s.ids.timestamped);
    assert.equal(new Set(rows.map((r) => r.id)).size, 300);
    assert.ok(rows.every((r) => r.createdAt !== null && r.updatedAt !== null && r.updatedAt >= r.createdAt));
    for (let i = 1; i < rows.length; i++) assert.ok(rows[i]!.createdAt! > rows[i - 1]!.createdAt!);
    const db = new Database(out, { readonly: true });
    const fmt = db
      .prepare(
        `SELECT SUM(typeof(created_at) = 'integer') AS epoch, SUM(created_at LIKE '____-__-__T%Z') AS iso,
                SUM(created_at LIKE '____-__-__ __:__:__') AS sqlite FROM memories`,
      )
      .get() as { epoch: number; iso: number; sqlite: number };
    const schema = db.prepare("SELECT group_concat(name) FROM sqlite_master WHERE type = 'index' AND name LIKE 'idx_%'").pluck().get();
    db.close();
    assert.deepEqual({ sqlite: fmt.sqlite, iso: fmt.iso, epochMs: fmt.epoch }, s.timestamps);
    assert.ok(s.timestamps.iso > 0 && s.timestamps.epochMs > 0);
    assert.deepEqual(String(schema).split(',').sort(), ['idx_created_at', 'idx_user_id']);
  });

  test('same seed gives the same file; another seed gives another', () => {
    const a = tmpPath('a.db');
    const b = tmpPath('b.db');
    const c = tmpPath('c.db');
    makeFixture({ out: a, rows: 120, dims: 32, seed: 3 });
    makeFixture({ out: b, rows: 120, dims: 32, seed: 3 });
    makeFixture({ out: c, rows: 120, dims: 32, seed: 4 });
    assert.equal(fileSha(a), fileSha(b));
    assert.notEqual(fileSha(a), fileSha(c));
  });

  test('single encodings: json is TEXT, csv is UTF-8 bytes, f32 is 4 bytes per dimension', () => {
    for (const encoding of ['json', 'csv', 'f32'] as const) {
      const out = tmpPath(`${encoding}.db`);
      const s = makeFixture({ out, rows: 80, dims: 16, encoding, seed: 2 });
      assert.equal(s.embeddings[encoding], 80 - 5);
      const db = new Database(out, { readonly: true });
      const types = db.prepare('SELECT typeof(embedding) AS t, length(embedding) AS n FROM memories').all() as { t: string; n: number }[];
      db.close();
      const expectType = encoding === 'json' ? 'text' : 'blob';
      assert.ok(types.filter((x) => x.t === expectType).length >= 75, `${encoding}: ${JSON.stringify(types.slice(0, 3))}`);
      if (encoding === 'f32') assert.ok(types.filter((x) => x.t === 'blob' && x.n === 64).length >= 74);
    }
  });

  test('the committed fixture holds several users, every encoding, prompts and duplicates', () => {
    const p = fileURLToPath(new URL('../../../../fixtures/espressobot_memory.db', import.meta.url));
    assert.ok(statSync(p).size < 4.5 * 1024 * 1024);
    const src = openSource(p);
    const rows = [...src.rows()];
    src.close();
    const real = rows.filter((r) => r.userId?.startsWith('user_'));
    assert.ok(real.length >= 200, `${real.length} user memories`);
    assert.ok(new Set(real.map((r) => r.userId)).size >= 3);
    const encodings = new Set(rows.map((r) => decodeEmbedding(rowEmbeddingRaw(p, r.rowid), 1536).encoding));
    for (const e of ['json', 'csv', 'f32', 'null', 'empty', 'bad']) assert.ok(encodings.has(e as never), e);
    assert.ok(rows.filter((r) => r.userId === 'system_prompts').length >= 3);
    const keys = real.map((r) => `${r.userId}|${dedupHash(r.content)}`);
    assert.ok(new Set(keys).size < keys.length, 'has exact duplicates');
    assert.ok(real.some((r) => /[^\x00-\x7f]/.test(r.content)));
  });
});

/** The raw stored embedding of one row (to decode with expectedDims). */
function rowEmbeddingRaw(path: string, rowid: number): unknown {
  const db = new Database(path, { readonly: true });
  try {
    return db.prepare('SELECT embedding FROM memories WHERE rowid = ?').pluck().get(rowid);
  } finally {
    db.close();
  }
}

function require_(name: string): string {
  // Absolute path of an installed package, for scripts run with `node -e`.
  return fileURLToPath(new URL(`../../../../node_modules/${name}/lib/index.js`, import.meta.url));
}

// The PGCOPY binary encoder and the staging-table bulk loader, byte for byte and against
// every database target (PGlite in memory, PGlite on disk, and PostgreSQL when
// TEST_DATABASE_URL is set).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Db } from '../../../src/postgres/connection.js';
import {
  BinaryCopyWriter,
  CopyEncodeError,
  encodeCopyBinary,
  float32BitsToHalf,
  halfBitsToNumber,
  toHalf,
  type CopyColumnType,
} from '../../../src/postgres/copy-binary.js';
import { freshDb, memoryDb, testTargets } from '../../helpers/targets.js';

// ---------------------------------------------------------------- helpers

const hex = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');

function f32hex(values: ArrayLike<number>): string {
  const b = Buffer.alloc(values.length * 4);
  for (let i = 0; i < values.length; i++) b.writeFloatBE(values[i]!, i * 4);
  return b.toString('hex');
}

function f64hex(x: number): string {
  const b = Buffer.alloc(8);
  b.writeDoubleBE(x);
  return b.toString('hex');
}

/** Bitwise equality of two float32 arrays (so -0 ≠ 0 and NaN = NaN). */
function assertSameFloat32(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string) {
  const a = Float32Array.from(actual);
  const e = Float32Array.from(expected);
  assert.equal(a.length, e.length, `${what}: length`);
  const ua = new Uint32Array(a.buffer);
  const ue = new Uint32Array(e.buffer);
  for (let i = 0; i < a.length; i++) {
    if (ua[i] !== ue[i]) assert.fail(`${what}: index ${i} is ${a[i]} (0x${ua[i]!.toString(16)}), expected ${e[i]} (0x${ue[i]!.toString(16)})`);
  }
}

/** pgvector's text output, parsed back to float32 values. */
function parseVectorText(s: string): Float32Array {
  return Float32Array.from(JSON.parse(s) as number[]);
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms (hang)`)), ms);
    }),
  ]);
}

/** Deterministic pseudo-random float32 values in [-1, 1). */
function randomVector(dims: number, seed: number): Float32Array {
  const v = new Float32Array(dims);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < dims; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    v[i] = (s / 2 ** 31) - 1;
  }
  return v;
}

// ---------------------------------------------------------------- encoder, no database

describe('BinaryCopyWriter encoding', () => {
  test('golden bytes for a tiny stream', () => {
    const w = new BinaryCopyWriter(['int4', 'text', 'bool', 'vector', 'text[]', 'halfvec', 'jsonb']);
    w.addRow([1, 'hé', true, [1.5, -2], [], [1, -0.5], { a: 1 }]);
    w.addRow([null, undefined, null, null, ['x', null], null, null]);
    const expected = Uint8Array.from([
      // header
      0x50, 0x47, 0x43, 0x4f, 0x50, 0x59, 0x0a, 0xff, 0x0d, 0x0a, 0x00, // PGCOPY\n\xff\r\n\0
      0, 0, 0, 0, // flags
      0, 0, 0, 0, // extension length
      // row 1
      0, 7, // 7 fields
      0, 0, 0, 4, 0, 0, 0, 1, // int4 1
      0, 0, 0, 3, 0x68, 0xc3, 0xa9, // 'hé'
      0, 0, 0, 1, 1, // true
      0, 0, 0, 12, 0, 2, 0, 0, 0x3f, 0xc0, 0, 0, 0xc0, 0, 0, 0, // vector [1.5,-2]
      0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 25, // text[] {} : ndim 0, flags 0, oid 25
      0, 0, 0, 8, 0, 2, 0, 0, 0x3c, 0x00, 0xb8, 0x00, // halfvec [1,-0.5]
      0, 0, 0, 8, 1, 0x7b, 0x22, 0x61, 0x22, 0x3a, 0x31, 0x7d, // jsonb v1 {"a":1}
      // row 2
      0, 7,
      0xff, 0xff, 0xff, 0xff,
      0xff, 0xff, 0xff, 0xff,
      0xff, 0xff, 0xff, 0xff,
      0xff, 0xff, 0xff, 0xff,
      // text[] {x,NULL}: len 29 = 20 + (4+1) + 4; ndim 1, has-null 1, oid 25, dim 2, lbound 1, 'x', NULL
      0, 0, 0, 29, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 25, 0, 0, 0, 2, 0, 0, 0, 1,
      0, 0, 0, 1, 0x78, 0xff, 0xff, 0xff, 0xff,
      0xff, 0xff, 0xff, 0xff,
      0xff, 0xff, 0xff, 0xff,
      // trailer
      0xff, 0xff,
    ]);
    assert.equal(w.rowCount, 2);
    assert.equal(w.byteLength, expected.length - 2);
    assert.equal(hex(w.finish()), hex(expected));
    // finish() is idempotent until reset()
    assert.equal(hex(w.finish()), hex(expected));
  });

  test('golden bytes: timestamptz, float8, int8', () => {
    const w = new BinaryCopyWriter(['timestamptz', 'timestamptz', 'float8', 'int8', 'int8']);
    // 2000-01-01T00:00:00.001Z = 1000 µs; 1999-12-31T23:59:59.999Z = -1000 µs
    w.addRow([new Date('2000-01-01T00:00:00.001Z'), new Date('1999-12-31T23:59:59.999Z'), -0, -2, 2n ** 40n]);
    const body = hex(w.finish()).slice(38, -4); // drop header (19 bytes) and trailer
    assert.equal(
      body,
      '0005' +
        '00000008' + '00000000000003e8' +
        '00000008' + 'fffffffffffffc18' +
        '00000008' + '8000000000000000' +
        '00000008' + 'fffffffffffffffe' +
        '00000008' + '0000010000000000',
    );
  });

  test('an empty stream is header + trailer', () => {
    const w = new BinaryCopyWriter(['text']);
    assert.equal(hex(w.finish()), '5047434f50590aff0d0a00' + '00000000' + '00000000' + 'ffff');
  });

  test('grows from a tiny buffer, reset() reuses it, encodeCopyBinary matches', () => {
    const types: CopyColumnType[] = ['text', 'vector', 'text[]'];
    const rows = Array.from({ length: 200 }, (_, i) => [`row ${i} ${'ü'.repeat(i)}`, randomVector(64, i + 1), ['a', `${i}`]]);
    const w = new BinaryCopyWriter(types, 16);
    for (const r of rows) w.addRow(r);
    const first = hex(w.finish());
    assert.equal(first, hex(encodeCopyBinary(types, rows)));
    w.reset();
    assert.equal(w.rowCount, 0);
    for (const r of rows) w.addRow(r);
    assert.equal(hex(w.finish()), first);
    assert.throws(() => w.addRow(rows[0]!), /after finish/);
  });

  test('a rejected row leaves the stream unchanged, with row and column in the error', () => {
    const w = new BinaryCopyWriter(['text', 'vector'], { columnNames: ['content', 'embedding'] });
    w.addRow(['ok', [1, 2]]);
    const before = hex(w.finish().slice(0, w.byteLength));
    w.reset();
    w.addRow(['ok', [1, 2]]);
    assert.throws(
      () => w.addRow(['a long text that gets written first', [1, NaN]]),
      (err: unknown) =>
        err instanceof CopyEncodeError &&
        err.row === 1 &&
        err.column === 1 &&
        err.columnName === 'embedding' &&
        /row 1, column embedding \(vector\).*index 1.*NaN/.test(err.message),
    );
    assert.equal(w.rowCount, 1);
    assert.equal(hex(w.finish().slice(0, w.byteLength)), before);
  });

  test('refuses values PostgreSQL would reject or mangle, with clear messages', () => {
    const one = (type: CopyColumnType, value: unknown) => () => new BinaryCopyWriter([type]).addRow([value]);
    assert.throws(one('text', 'a\0b'), /NUL/);
    assert.throws(one('text', 'a\ud800b'), /surrogate/);
    assert.throws(one('text', 42), /expected a string/);
    assert.throws(one('text[]', ['ok', 'x\0']), /NUL.*element 1/);
    assert.throws(one('text[]', ['ok', 3]), /element 1/);
    assert.throws(one('text[]', 'abc'), /expected an array/);
    assert.throws(one('jsonb', { s: 'a\0b' }), /\\u0000/);
    assert.doesNotThrow(one('jsonb', { s: 'a\\u0000b' })); // an escaped backslash, not a NUL
    assert.throws(one('jsonb', () => 1), /no JSON representation/);
    assert.throws(one('timestamptz', new Date('nope')), /invalid Date/);
    assert.throws(one('timestamptz', '2024-01-01'), /expected a Date/);
    assert.throws(one('int4', 2 ** 31), /not an int4/);
    assert.throws(one('int4', 1.5), /not an int4/);
    assert.throws(one('int8', 2 ** 53), /safe integer/);
    assert.throws(one('int8', 2n ** 63n), /out of range/);
    assert.throws(one('bool', 'yes'), /boolean/);
    assert.throws(one('float8', '1.5'), /expected a number/);
    assert.throws(one('vector', []), /at least 1 dimension/);
    assert.throws(one('vector', new Float32Array(16001)), /16000/);
    assert.throws(one('vector', [1, Infinity]), /infinite/);
    assert.throws(one('vector', [1e39]), /infinite as float32/);
    assert.throws(one('vector', Float32Array.of(0, NaN)), /NaN/);
    // Float32Array takes the bulk-copy path: every position of a 4-wide step, and the tail.
    for (let at = 0; at < 7; at++) {
      const v = new Float32Array(7).fill(0.5);
      v[at] = at % 2 ? -Infinity : NaN;
      assert.throws(one('vector', v), new RegExp(`index ${at} is ${at % 2 ? 'infinite' : 'not a number'}`));
    }
    assert.throws(one('vector', 'abc'), /Float32Array/);
    assert.throws(one('halfvec', [65520]), /out of range for halfvec/);
    assert.throws(one('halfvec', [-70000]), /out of range for halfvec/);
    assert.throws(one('halfvec', [NaN]), /NaN/);
    assert.doesNotThrow(one('halfvec', [65519.99])); // rounds to 65504, as pgvector does
    assert.throws(() => new BinaryCopyWriter(['text', 'money' as CopyColumnType]), /unknown column type/);
    assert.throws(() => new BinaryCopyWriter(['text']).addRow(['a', 'b']), /2 values, expected 1/);
  });

  test('half precision: every finite half round-trips, ties go to even, overflow is refused', () => {
    const f32 = new Float32Array(1);
    const u32 = new Uint32Array(f32.buffer);
    const bits = (x: number) => ((f32[0] = x), float32BitsToHalf(u32[0]!));
    const finite: number[] = [];
    for (let h = 0; h < 0x10000; h++) {
      if ((h & 0x7c00) === 0x7c00) continue; // Inf / NaN
      const x = halfBitsToNumber(h);
      assert.equal(bits(x), h, `half 0x${h.toString(16)} (${x})`);
      if (h < 0x8000) finite.push(x);
    }
    // Between consecutive positive halves: the midpoint goes to the even one, and the
    // float32 neighbours of the midpoint go to the nearer one.
    const next32 = (x: number, dir: 1 | -1) => {
      f32[0] = x;
      u32[0] = u32[0]! + dir;
      return f32[0]!;
    };
    for (let i = 0; i + 1 < finite.length; i++) {
      const lo = finite[i]!;
      const hi = finite[i + 1]!;
      const mid = (lo + hi) / 2; // exact in float32 (12 significant bits)
      assert.equal(Math.fround(mid), mid);
      const loBits = bits(lo);
      const even = loBits % 2 === 0 ? loBits : loBits + 1;
      assert.equal(bits(mid), even, `tie between ${lo} and ${hi}`);
      assert.equal(bits(next32(mid, -1)), loBits, `just below ${mid}`);
      assert.equal(bits(next32(mid, 1)), loBits + 1, `just above ${mid}`);
      assert.equal(bits(-mid), even | 0x8000, `negative tie ${-mid}`);
    }
    assert.equal(bits(65519.99), 0x7bff);
    assert.equal(bits(65520), -1);
    assert.equal(bits(Infinity), -1);
    assert.equal(bits(NaN), -1);
    assert.equal(bits(2 ** -25), 0); // tie with zero → zero
    assert.equal(bits(next32(2 ** -25, 1)), 1);
    assert.equal(bits(1e-30), 0);
    assert.equal(bits(-1e-30), 0x8000);
    assert.equal(toHalf(0.1), 0.0999755859375);
    assert.equal(toHalf(2049), 2048);
    assert.equal(toHalf(2051), 2052);
  });
});

// ---------------------------------------------------------------- against the databases

interface TargetCase {
  name: string;
  open(): Promise<Db>;
}

const targets: TargetCase[] = [
  { name: 'pglite (memory)', open: () => memoryDb() },
  ...testTargets().map((t) => ({ name: t.name, open: async () => (await freshDb(t)).db })),
];

const ALL_TYPES_COLUMNS = ['id', 't', 'j', 'ts', 'f', 'i4', 'i8', 'b', 'a', 'v', 'h'];
const ALL_TYPES: CopyColumnType[] = ['int4', 'text', 'jsonb', 'timestamptz', 'float8', 'int4', 'int8', 'bool', 'text[]', 'vector', 'halfvec'];

const SCHEMA = `
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE all_types (
  id  INTEGER PRIMARY KEY,
  t   TEXT, j JSONB, ts TIMESTAMPTZ, f DOUBLE PRECISION, i4 INTEGER, i8 BIGINT, b BOOLEAN,
  a   TEXT[], v vector, h halfvec
);
CREATE TABLE vec3 (id TEXT PRIMARY KEY, v vector(3) NOT NULL);
CREATE TABLE vecs (id INTEGER PRIMARY KEY, v vector, h halfvec);
CREATE TABLE items (
  id         TEXT PRIMARY KEY,
  user_id    VARCHAR(255) NOT NULL,
  content    TEXT NOT NULL,
  hash       CHAR(8) NOT NULL,
  embedding  vector(3),
  tags       TEXT[] NOT NULL DEFAULT '{}',
  metadata   JSONB NOT NULL DEFAULT '{}'::jsonb,
  score      DOUBLE PRECISION NOT NULL DEFAULT 1.0,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
`;

for (const target of targets) {
  describe(`COPY binary on ${target.name}`, () => {
    let db: Db;
    before(async () => {
      db = await target.open();
      await db.exec(SCHEMA);
    });
    after(async () => {
      await db?.close();
    });

    test('every type round-trips exactly, NULLs included', async () => {
      const PG_EPOCH_MS = Date.UTC(2000, 0, 1);
      const dates: Array<[unknown, bigint]> = [
        // [input, expected µs since the Unix epoch]
        [new Date('2024-05-06T07:08:09.123Z'), 1714979289123000n],
        [new Date('1999-12-31T23:59:59.999Z'), BigInt(PG_EPOCH_MS - 1) * 1000n],
        [new Date('1969-07-20T20:17:40.001Z'), -14182939999000n],
        [new Date(PG_EPOCH_MS), BigInt(PG_EPOCH_MS) * 1000n],
        [new Date('1900-01-01T00:00:00.500Z'), -2208988799500000n],
        [1714979289123.456, 1714979289123456n], // epoch ms with microseconds
        [1714979289123456n + 1n, 1714979289123457n], // epoch µs as bigint
        [new Date('2500-12-31T23:59:59.999Z'), 16756761599999000n], // beyond 2^53 µs from 2000
        [new Date('1000-01-01T00:00:00.001Z'), -30610224000000000n + 1000n],
      ];
      const floats = [-0, 0, 1e-300, 5e-324, -1.7976931348623157e308, 0.1, NaN, Infinity, -Infinity];
      const texts = ['', 'plain', '日本語のテキスト', 'emoji 🦄👩‍👩‍👧 and ZWJ', 'quote \' " \\ tab\t nl\n cr\r', 'ü'.repeat(5000)];
      const arrays: Array<Array<string | null>> = [[], ['a', null, '日本語', '🦄', ''], [null], ['{}', 'a,b', '"q"', 'NULL']];
      const jsons: unknown[] = [{}, { a: 1, nested: { b: [true, null, 'ü🦄'] } }, [1, 'two', 3.5], 'null', '"a string"', { big: 12345678901234 }];
      const int8s: Array<number | bigint> = [0, -1, Number.MAX_SAFE_INTEGER, -(2n ** 63n), 2n ** 63n - 1n];
      const int4s = [0, -2147483648, 2147483647];
      const bools: unknown[] = [true, false, 1, 0];

      const n = Math.max(dates.length, floats.length, texts.length, arrays.length, jsons.length, int8s.length);
      const rows: unknown[][] = [];
      for (let i = 0; i < n; i++) {
        rows.push([
          i,
          texts[i],
          jsons[i],
          dates[i]?.[0],
          floats[i],
          int4s[i],
          int8s[i],
          bools[i],
          arrays[i],
          i < 3 ? [i, -i / 3, 0.1] : undefined,
          i < 2 ? [i, 0.5] : null,
        ]);
      }
      rows.push([n, null, null, null, null, null, null, null, null, null, null]);
      const w = new BinaryCopyWriter(ALL_TYPES, { columnNames: ALL_TYPES_COLUMNS });
      for (const r of rows) w.addRow(r);
      await db.copyBinary('all_types', ALL_TYPES_COLUMNS, w.finish());

      const got = await db.query<Record<string, any>>(`
        SELECT id, t, t IS NULL AS t_null, octet_length(t) AS t_bytes,
               j::text AS j, (extract(epoch FROM ts) * 1000000)::bigint::text AS ts_us,
               encode(float8send(f), 'hex') AS f_hex, f::text AS f_text,
               i4, i8::text AS i8, b::text AS b,
               array_to_json(a)::text AS a_json, a::text AS a_text, array_ndims(a) AS a_ndims,
               v::text AS v, h::text AS h
        FROM all_types ORDER BY id`);
      assert.equal(got.length, rows.length);
      for (let i = 0; i < n; i++) {
        const g = got[i]!;
        const ctx = `row ${i}`;
        if (texts[i] === undefined) assert.equal(g.t_null, true, ctx);
        else {
          assert.equal(g.t, texts[i], ctx);
          assert.equal(Number(g.t_bytes), Buffer.byteLength(texts[i]!), ctx);
        }
        if (jsons[i] === undefined) assert.equal(g.j, null, ctx);
        else {
          const j = jsons[i];
          assert.deepEqual(JSON.parse(g.j), typeof j === 'string' ? JSON.parse(j) : j, ctx);
        }
        assert.equal(g.ts_us, dates[i] ? dates[i]![1].toString() : null, ctx);
        if (i < floats.length) assert.equal(g.f_hex, f64hex(floats[i]!), `${ctx} float8 ${floats[i]}`);
        else assert.equal(g.f_hex, null, ctx);
        assert.equal(g.i4 === null ? null : Number(g.i4), i < int4s.length ? int4s[i] : null, ctx);
        assert.equal(g.i8, i < int8s.length ? String(int8s[i]) : null, ctx);
        assert.equal(g.b, i < bools.length ? (bools[i] === true || bools[i] === 1 ? 'true' : 'false') : null, ctx);
        if (arrays[i] === undefined) assert.equal(g.a_json, null, ctx);
        else {
          assert.deepEqual(JSON.parse(g.a_json), arrays[i], ctx);
          assert.equal(g.a_ndims, arrays[i]!.length === 0 ? null : 1, ctx);
        }
        if (i < 3) assertSameFloat32(parseVectorText(g.v), [i, -i / 3, 0.1], `${ctx} vector`);
        else assert.equal(g.v, null, ctx);
        if (i < 2) assertSameFloat32(parseVectorText(g.h), [i, 0.5], `${ctx} halfvec`);
        else assert.equal(g.h, null, ctx);
      }
      // Spot checks of the server's own text forms.
      assert.equal(got[0]!.f_text, '-0');
      assert.equal(got[2]!.f_text, '1e-300');
      assert.equal(got[6]!.f_text, 'NaN');
      assert.equal(got[1]!.a_text, '{a,NULL,日本語,🦄,""}');
      assert.equal(got[0]!.a_text, '{}');
      const last = got[n]!;
      for (const k of ['t', 'j', 'ts_us', 'f_hex', 'i4', 'i8', 'b', 'a_json', 'v', 'h']) assert.equal(last[k], null, `NULL row ${k}`);
      const [ts] = await db.query<{ s: string }>(
        `SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') AS s FROM all_types WHERE id = 5`,
      );
      assert.equal(ts!.s, '2024-05-06 07:08:09.123456');
    });

    test('vectors of 1, 3 and 1536 dimensions are bit-exact', async () => {
      const extremes = [3.4028234663852886e38, -3.4028234663852886e38, 1.401298464324817e-45, -0, 1e-40, 1.1754943508222875e-38];
      const v1536 = randomVector(1536, 42);
      extremes.forEach((x, i) => (v1536[i * 100] = x));
      const vectors: Array<Float32Array | number[]> = [
        [0.1],
        Float32Array.of(1, -2.5, 3.4028234663852886e38),
        v1536,
        Array.from(randomVector(1536, 7), (x) => x * 1.000000001), // number[]: rounded to float32
      ];
      const rows = vectors.map((v, i) => [i + 1, v, null]);
      await db.copyBinary('vecs', ['id', 'v', 'h'], encodeCopyBinary(['int4', 'vector', 'halfvec'], rows));
      const got = await db.query<{ id: number; dims: number; v: string; bin: string }>(
        `SELECT id, vector_dims(v) AS dims, v::text AS v, encode(vector_send(v), 'hex') AS bin FROM vecs WHERE id <= 4 ORDER BY id`,
      );
      assert.equal(got.length, vectors.length);
      got.forEach((g, i) => {
        const expected = Float32Array.from(vectors[i]!);
        assert.equal(Number(g.dims), expected.length);
        assertSameFloat32(parseVectorText(g.v), expected, `vector ${i + 1} (text)`);
        const dims = expected.length.toString(16).padStart(4, '0');
        assert.equal(g.bin, `${dims}0000${f32hex(expected)}`, `vector ${i + 1} (binary)`);
      });
    });

    test('halfvec: exact values stay exact, others round like pgvector', async () => {
      const exact = [0, -0, 1, -2, 0.5, 65504, -65504, 2 ** -14, 2 ** -24, 0.333251953125, 1000.5, 1.5];
      const rounding = [0.1, 1 / 3, 65519, 2049, 2051, 1e-8, 3e-8, 2 ** -25, -0.7, 12345.678];
      await db.copyBinary(
        'vecs',
        ['id', 'h'],
        encodeCopyBinary(['int4', 'halfvec'], [
          [101, exact],
          [102, rounding],
        ]),
      );
      const [ex, ro] = await db.query<{ h: string; bin: string; server: string }>(
        `SELECT h::text AS h, encode(halfvec_send(h), 'hex') AS bin, ($1::text::vector)::halfvec::text AS server
         FROM vecs WHERE id IN (101, 102) ORDER BY id`,
        [`[${rounding.join(',')}]`],
      );
      assertSameFloat32(parseVectorText(ex!.h), exact, 'exact halfvec');
      const bin = Buffer.alloc(exact.length * 2);
      exact.forEach((x, i) => bin.writeUInt16BE(float32BitsToHalf(new Uint32Array(Float32Array.of(x).buffer)[0]!), i * 2));
      assert.equal(ex!.bin, `000c0000${bin.toString('hex')}`);
      assertSameFloat32(parseVectorText(ro!.h), rounding.map(toHalf), 'rounded halfvec vs toHalf');
      assertSameFloat32(parseVectorText(ro!.h), parseVectorText(ro!.server), 'rounded halfvec vs the server cast');
    });

    test('COPY inside a transaction that then throws leaves no rows', async () => {
      const data = encodeCopyBinary(['text', 'vector'], [
        ['rb1', [1, 2, 3]],
        ['rb2', [4, 5, 6]],
      ]);
      await assert.rejects(
        db.transaction(async (tx) => {
          await tx.copyBinary('vec3', ['id', 'v'], data);
          const [c] = await tx.query<{ n: number }>(`SELECT count(*)::int AS n FROM vec3 WHERE id LIKE 'rb%'`);
          assert.equal(Number(c!.n), 2); // visible inside the transaction
          throw new Error('boom');
        }),
        /boom/,
      );
      const [c] = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM vec3 WHERE id LIKE 'rb%'`);
      assert.equal(Number(c!.n), 0);
    });

    test('a COPY the server rejects fails promptly, and the connection stays usable', async () => {
      const bad = encodeCopyBinary(['text', 'vector'], [
        ['ok', [1, 2, 3]],
        ['bad', [1, 2, 3, 4]], // vector(3) column
      ]);
      await assert.rejects(withTimeout(db.copyBinary('vec3', ['id', 'v'], bad), 20_000, 'COPY outside a transaction'), /dimensions/);
      await assert.rejects(
        withTimeout(
          db.transaction(async (tx) => {
            await tx.copyBinary('vec3', ['id', 'v'], bad);
          }),
          20_000,
          'COPY inside a transaction',
        ),
        /dimensions/,
      );
      await assert.rejects(
        withTimeout(db.copyBinary('no_such_table', ['id', 'v'], bad), 20_000, 'COPY into a missing table'),
        /no_such_table/,
      );
      const badJson = encodeCopyBinary(['int4', 'jsonb'], [[1, '{"not": json}']]);
      await assert.rejects(
        withTimeout(
          db.transaction((tx) => tx.copyBinary('all_types', ['id', 'j'], badJson)),
          20_000,
          'COPY with invalid JSON',
        ),
        /json/i,
      );
      // Every pooled connection still works and no transaction was left open.
      for (let i = 0; i < 6; i++) {
        const [r] = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM vec3`);
        assert.equal(Number(r!.n), 0);
      }
      const good = encodeCopyBinary(['text', 'vector'], [['good', [1, 2, 3]]]);
      await db.transaction((tx) => tx.copyBinary('vec3', ['id', 'v'], good));
      const [r] = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM vec3`);
      assert.equal(Number(r!.n), 1);
      await db.query(`DELETE FROM vec3`);
    });

    test('a transaction is all-or-nothing: nested ones are savepoints, and a failed statement that was caught still rolls it back', async () => {
      await db.exec(`CREATE TABLE tx_rows (id TEXT PRIMARY KEY)`);
      await db.transaction(async (tx) => {
        await tx.query(`INSERT INTO tx_rows VALUES ('a')`);
        await assert.rejects(
          tx.transaction(async (inner) => {
            await inner.query(`INSERT INTO tx_rows VALUES ('b')`);
            await inner.query(`INSERT INTO tx_rows VALUES ('a')`);
          }),
          /duplicate key/,
        );
        await tx.query(`INSERT INTO tx_rows VALUES ('c')`);
      });
      const ids = async () => (await db.query<{ id: string }>(`SELECT id FROM tx_rows ORDER BY id`)).map((r) => r.id);
      assert.deepEqual(await ids(), ['a', 'c']);
      // The caller swallowed the error, but the server has aborted the transaction: it must
      // not look committed, and nothing of it may stay.
      await assert.rejects(
        db.transaction(async (tx) => {
          await tx.query(`INSERT INTO tx_rows VALUES ('d')`);
          await tx.query(`INSERT INTO tx_rows VALUES ('a')`).catch(() => {});
        }),
      );
      assert.deepEqual(await ids(), ['a', 'c']);
      // The connection is usable again afterwards.
      await db.transaction((tx) => tx.query(`INSERT INTO tx_rows VALUES ('e')`));
      assert.deepEqual(await ids(), ['a', 'c', 'e']);
    });
  });
}

// The reader's fast paths (timestamps without a regex, canonical form without splitting, number
// lists without JSON.parse, the vector check without per-element tests) must answer exactly
// what the general code answers. Each is checked here against that general code itself.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { decodeEmbedding, parseTokens } from '../../../src/source/decode-embedding.js';
import { parseTimestamp, parseTimestampText } from '../../../src/source/timestamps.js';
import { canonicalize, canonicalizeLines, contentHash, dedupHash } from '../../../src/source/canonical.js';

// Deterministic PRNG so a failure can be reproduced.
let seed = 20240501;
const rnd = (): number => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)]!;

// ---- the general code the fast paths must agree with -----------------------------------------

/** What the general path reads from a list of plain numbers (JSON.parse / the token reader). */
function generalNumbers(t: string, json: boolean): number[] | null {
  if (json) {
    try {
      const v: unknown = JSON.parse(t);
      return Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'number') ? (v as number[]) : null;
    } catch {
      return null;
    }
  }
  const parsed = parseTokens(t, 'comma-separated text');
  if (!('values' in parsed)) return null;
  const values = Array.from(parsed.values);
  return t.split(',').length === values.length ? values : null;
}

// ---- tests ----------------------------------------------------------------------------------

describe('reader fast paths match the general code', () => {
  test('timestamps: exact shapes and near misses', () => {
    const d2 = (x: number): string => String(x).padStart(2, '0');
    const inputs = [
      '2024-01-15 09:07:12',
      '2024-09-09T06:19:35.660Z',
      '2024-02-29 00:00:00',
      '2023-02-29 00:00:00',
      '1900-02-29 12:00:00',
      '2000-02-29T12:00:00Z',
      '0099-12-31 23:59:59',
      '0000-01-01 00:00:00',
      '2024-06-30 23:59:60',
      '2024-06-31 00:00:00',
      '2024-01-01T10:00:00.5Z',
      '2024-01-01T10:00:00,123z',
      '2024-01-01T10:00:00.123+02:00',
      '2024-01-01 10:00:00 Z',
      '2024-01-01 10:00:00UTC',
      '2024-01-01T10:00:00.1234Z',
      '2024-01-01x10:00:00',
      '2024-0a-01 10:00:00',
      ' 2024-01-01 10:00:00\n',
      '2024-01-01',
      '1705573918',
    ];
    for (let f = 0; f < 1000; f++) inputs.push(`2024-03-10T01:02:03.${String(f).padStart(3, '0')}Z`);
    for (let k = 0; k < 20000; k++) {
      const y = String(pick([2024, 2023, 2000, 1900, 2100, 99, 1, 9999, 1600])).padStart(4, '0');
      const sep = pick(['T', 't', ' ', 'x']);
      const frac = pick(['', '', '.123', '.000', ',999', '.1', '.12', '.1234', '.', '.12a']);
      const zone = pick(['', '', 'Z', 'z', 'UTC', '+02:00', '-0530', ' Z', 'ZZ', 'Q']);
      const mo = Math.floor(rnd() * 14);
      const d = Math.floor(rnd() * 33);
      const h = Math.floor(rnd() * 26);
      const mi = Math.floor(rnd() * 62);
      const s = Math.floor(rnd() * 62);
      inputs.push(`${y}-${d2(mo)}-${d2(d)}${sep}${d2(h)}:${d2(mi)}:${d2(s)}${frac}${zone}`);
    }
    for (const s of inputs) {
      const got = parseTimestamp(s);
      const want = /^[+-]?\d+(?:\.\d+)?$/.test(s.trim()) ? got?.getTime() ?? null : parseTimestampText(s.trim())?.getTime() ?? null;
      assert.equal(got === null ? null : got.getTime(), want, JSON.stringify(s));
    }
  });

  test('canonical form: every code unit at a line end, and random texts', () => {
    for (let c = 0; c < 0x10000; c++) {
      const ch = String.fromCharCode(c);
      for (const s of [ch, `a${ch}`, `a${ch}\nb`, `${ch}\n\n`, `x\n${ch}`]) {
        assert.equal(canonicalize(s), canonicalizeLines(s.normalize('NFC')), `U+${c.toString(16)} in ${JSON.stringify(s)}`);
      }
    }
    const alphabet = ['a', 'B', ' ', '\t', '\n', '\n', '\r', '\r\n', '\u00a0', '\u2028', '\u3000', '\ufeff', 'e\u0301', 'é', '☕️', '\ud800', 'İ', '\v', '\u0085'];
    for (let k = 0; k < 20000; k++) {
      let s = '';
      const n = Math.floor(rnd() * 12);
      for (let i = 0; i < n; i++) s += pick(alphabet);
      assert.equal(canonicalize(s), canonicalizeLines(s.normalize('NFC')), JSON.stringify(s));
      assert.equal(contentHash(s), contentHash(`${s}`), 'repeat call gives the same hash');
      assert.equal(dedupHash(s), dedupHash(canonicalizeLines(s.normalize('NFC'))));
    }
  });

  test('embedding number lists: fast reading gives the JSON.parse / Number() values', () => {
    const num = (): string => {
      const v = (rnd() - 0.5) * 10 ** Math.floor(rnd() * 12 - 8);
      return pick([
        () => String(v),
        () => String(Math.fround(v)),
        () => v.toFixed(Math.floor(rnd() * 25)),
        () => v.toExponential(Math.floor(rnd() * 20)),
        () => v.toPrecision(1 + Math.floor(rnd() * 21)),
        () => pick(['0', '-0', '-0.000', '00.5', '+1.5', '.5', '1.', '1e400', '9007199254740993', '0.1234567890123456789']),
        () => `0.${'0'.repeat(Math.floor(rnd() * 30))}123`,
      ])();
    };
    const ws = (): string => pick(['', '', '', ' ', '\t', '\n', '\u00a0']);
    for (let k = 0; k < 20000; k++) {
      const body = Array.from({ length: 1 + Math.floor(rnd() * 5) }, () => ws() + num() + ws()).join(',');
      for (const [t, json] of [
        [body, false],
        [`[${body}]`, true],
      ] as const) {
        const want = generalNumbers(t, json);
        if (want === null) continue; // not a plain list: the general path answers, as before
        const got = decodeEmbedding(t);
        const wantF32 = Float32Array.from(want);
        if (got.vector === null) {
          // Only a non-finite or zero vector may be refused.
          assert.ok(got.encoding === 'bad', JSON.stringify(t));
          assert.ok(wantF32.some((x) => !Number.isFinite(x)) || wantF32.every((x) => x === 0), JSON.stringify(t));
          continue;
        }
        assert.equal(got.encoding, json ? 'json' : 'csv');
        assert.deepEqual(Array.from(got.vector), Array.from(wantF32), JSON.stringify(t));
      }
    }
  });

  test('vector check: first bad index, zero norm, tiny and huge finite values', () => {
    const blob = (...v: number[]): Uint8Array => new Uint8Array(Float32Array.from(v).buffer);
    assert.equal(decodeEmbedding(blob(1, 2, NaN, Infinity, 5)).problem, 'vector contains NaN at index 2');
    assert.equal(decodeEmbedding(blob(1, 2, 3, 4, 5, -Infinity)).problem, 'vector contains Infinity at index 5');
    assert.equal(decodeEmbedding(blob(0, -0, 0, 0, 0, 0, 0)).problem, 'zero vector (norm 0)');
    assert.equal(decodeEmbedding(blob(0, 0, 0, 0, 0, 0, 0, 1e-45)).encoding, 'f32');
    assert.equal(decodeEmbedding(new Uint8Array(new Float32Array(1536).fill(3.4e38).buffer)).encoding, 'f32');
    assert.equal(decodeEmbedding(blob(1, 2, 3), 4).problem, 'wrong length 3, expected 4');
  });
});

// The reader's fast paths (timestamps without a regex, canonical form without splitting, number
// lists without JSON.parse, the vector check without per-element tests) must answer exactly
// what the general code answers. Each is checked here against a copy of that general code.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { decodeEmbedding } from '../../../src/source/decode-embedding.js';
import { parseTimestamp } from '../../../src/source/timestamps.js';
import { canonicalize, contentHash, dedupHash } from '../../../src/source/canonical.js';

// Deterministic PRNG so a failure can be reproduced.
let seed = 20240501;
const rnd = (): number => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)]!;

// ---- reference copies of the general code ---------------------------------------------------

const REF_DATE_TIME =
  /^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?\s*(Z|z|UTC|[+-]\d{2}(?::?\d{2})?)?$/;

function refTimestampText(s: string): number | null {
  const m = REF_DATE_TIME.exec(s.trim());
  if (!m) return null;
  const [, y, mo, d, h = '0', mi = '0', sec = '0', frac, zone] = m;
  const year = Number(y);
  const month = Number(mo);
  const day = Number(d);
  const hour = Number(h);
  const minute = Number(mi);
  const second = Number(sec);
  if (month < 1 || month > 12 || day < 1 || day > 31) return null;
  if (hour > 23 || minute > 59 || second > 60) return null;
  const ms = frac ? Math.floor(Number(`0.${frac}`) * 1000) : 0;
  let t = Date.UTC(year, month - 1, day, hour, minute, Math.min(second, 59), ms);
  const check = new Date(Date.UTC(year, month - 1, day));
  if (check.getUTCFullYear() !== year || check.getUTCMonth() !== month - 1 || check.getUTCDate() !== day) return null;
  if (year < 100) {
    const dd = new Date(t);
    dd.setUTCFullYear(year);
    t = dd.getTime();
  }
  if (zone && zone !== 'Z' && zone !== 'z' && zone !== 'UTC') {
    const zm = /^([+-])(\d{2}):?(\d{2})?$/.exec(zone);
    if (!zm) return null;
    const offH = Number(zm[2]);
    const offM = Number(zm[3] ?? '0');
    if (offH > 23 || offM > 59) return null;
    t -= (offH * 60 + offM) * 60_000 * (zm[1] === '-' ? -1 : 1);
  }
  return Number.isNaN(t) ? null : t;
}

function refCanonicalize(content: string): string {
  const lines = content.normalize('NFC').replace(/\r\n?/g, '\n').split('\n');
  for (let i = 0; i < lines.length; i++) lines[i] = lines[i]!.trimEnd();
  let end = lines.length;
  while (end > 0 && lines[end - 1] === '') end--;
  return lines.slice(0, end).join('\n') + '\n';
}

const REF_NUMBER = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;

/** The values the general path reads from a list of plain numbers (JSON.parse / Number()). */
function refNumbers(t: string, json: boolean): number[] | null {
  if (json) {
    try {
      const v: unknown = JSON.parse(t);
      return Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'number') ? (v as number[]) : null;
    } catch {
      return null;
    }
  }
  const toks = t.split(',').map((x) => x.trim());
  return toks.every((x) => REF_NUMBER.test(x)) ? toks.map(Number) : null;
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
      const want = /^[+-]?\d+(?:\.\d+)?$/.test(s.trim()) ? got?.getTime() ?? null : refTimestampText(s);
      assert.equal(got === null ? null : got.getTime(), want, JSON.stringify(s));
    }
  });

  test('canonical form: every code unit at a line end, and random texts', () => {
    for (let c = 0; c < 0x10000; c++) {
      const ch = String.fromCharCode(c);
      for (const s of [ch, `a${ch}`, `a${ch}\nb`, `${ch}\n\n`, `x\n${ch}`]) {
        assert.equal(canonicalize(s), refCanonicalize(s), `U+${c.toString(16)} in ${JSON.stringify(s)}`);
      }
    }
    const alphabet = ['a', 'B', ' ', '\t', '\n', '\n', '\r', '\r\n', '\u00a0', '\u2028', '\u3000', '\ufeff', 'e\u0301', 'é', '☕️', '\ud800', 'İ', '\v', '\u0085'];
    for (let k = 0; k < 20000; k++) {
      let s = '';
      const n = Math.floor(rnd() * 12);
      for (let i = 0; i < n; i++) s += pick(alphabet);
      assert.equal(canonicalize(s), refCanonicalize(s), JSON.stringify(s));
      assert.equal(contentHash(s), contentHash(`${s}`), 'repeat call gives the same hash');
      assert.equal(dedupHash(s), dedupHash(refCanonicalize(s)));
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
        const want = refNumbers(t, json);
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

// Decodes one stored embedding value, whatever way the app wrote it. The encoding is sniffed
// per value (never per file): JSON array text, comma-separated floats, raw float32 LE bytes,
// NULL, empty, or something that cannot be reused (pickle, NaN, zero norm, wrong length).
import { endianness } from 'node:os';
import type { DecodedEmbedding } from './types.js';

const LITTLE_ENDIAN = endianness() === 'LE';

/**
 * Bytes that may appear in an embedding written as text: digits, separators, brackets,
 * whitespace, exponent/sign/point, and the letters of NaN / Infinity / null / inf.
 * A float32 blob of real embedding values practically never consists of these bytes only;
 * if one does and still fails to parse as text, it is read as float32 anyway.
 */
const TEXT_BYTE = new Uint8Array(256);
for (const ch of '0123456789,[]eE+-. \t\r\nNaInfinityul') TEXT_BYTE[ch.charCodeAt(0)] = 1;

const NUMBER_TOKEN = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;
const SPECIAL_TOKEN = /^([+-]?)(nan|inf|infinity)$/i;

export type Parsed = { values: ArrayLike<number> } | { problem: string } | { empty: true };

/**
 * Decodes a stored embedding. `expectedDims`, when given, turns a vector of another length
 * into a 'bad' one with problem "wrong length N, expected M".
 */
export function decodeEmbedding(value: unknown, expectedDims?: number): DecodedEmbedding {
  if (value === null || value === undefined) {
    return { encoding: 'null', vector: null, problem: 'no embedding stored (NULL)' };
  }
  if (typeof value === 'string') {
    if (value.trim() === '') return emptyResult();
    return fromText(value, expectedDims);
  }
  if (value instanceof Uint8Array) {
    return fromBytes(value, expectedDims);
  }
  if (value instanceof ArrayBuffer) {
    return fromBytes(new Uint8Array(value), expectedDims);
  }
  return bad(`unexpected stored value of type ${typeof value}`);
}

/** Writes a vector as JSON array text, exactly the way the app did: JSON.stringify(Array.from(v)). */
export function encodeEmbeddingJson(v: Float32Array): string {
  return JSON.stringify(Array.from(v));
}

function emptyResult(): DecodedEmbedding {
  return { encoding: 'empty', vector: null, problem: 'empty embedding' };
}

function bad(problem: string): DecodedEmbedding {
  return { encoding: 'bad', vector: null, problem };
}

function fromText(text: string, expectedDims?: number): DecodedEmbedding {
  const t = text.trim();
  const encoding = t.startsWith('[') ? 'json' : 'csv';
  const parsed = encoding === 'json' ? parseJsonArray(t) : parseCsv(t);
  if ('empty' in parsed) return emptyResult();
  if ('problem' in parsed) return bad(parsed.problem);
  return finish(encoding, Float32Array.from(parsed.values), expectedDims);
}

function fromBytes(bytes: Uint8Array, expectedDims?: number): DecodedEmbedding {
  const n = bytes.byteLength;
  if (n === 0) return emptyResult();
  if (looksLikePickle(bytes)) return bad('python pickle (not decoded); re-embed');
  if (isNumericText(bytes)) {
    const text = Buffer.from(bytes.buffer, bytes.byteOffset, n).toString('latin1');
    if (text.trim() === '') return emptyResult();
    const t = text.trim();
    const encoding = t.startsWith('[') ? 'json' : 'csv';
    const parsed = encoding === 'json' ? parseJsonArray(t) : parseCsv(t);
    if ('empty' in parsed) return emptyResult();
    if ('values' in parsed) return finish(encoding, Float32Array.from(parsed.values), expectedDims);
    // Text-looking bytes that do not parse: a float32 blob that happened to look like text.
    if (n % 4 !== 0) return bad(parsed.problem);
  }
  if (n % 4 !== 0) {
    return bad(`undecodable blob of ${n} bytes (not number text, and not float32: length is not a multiple of 4)`);
  }
  return finish('f32', float32FromBytes(bytes), expectedDims);
}

/** Copies float32 little-endian bytes into a fresh, aligned Float32Array. */
function float32FromBytes(bytes: Uint8Array): Float32Array {
  const count = bytes.byteLength / 4;
  if (LITTLE_ENDIAN && bytes.byteOffset === 0 && bytes.buffer.byteLength === bytes.byteLength) {
    // A blob that owns its whole (aligned) memory, as better-sqlite3 returns every blob: view
    // it instead of copying 6 KB per 1536-d row.
    return new Float32Array(bytes.buffer, 0, count);
  }
  if (LITTLE_ENDIAN) {
    const copy = new Uint8Array(bytes.byteLength);
    copy.set(bytes);
    return new Float32Array(copy.buffer, 0, count);
  }
  const out = new Float32Array(count);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < count; i++) out[i] = view.getFloat32(i * 4, true);
  return out;
}

function isNumericText(bytes: Uint8Array): boolean {
  for (let i = 0; i < bytes.length; i++) {
    if (TEXT_BYTE[bytes[i]!] === 0) return false;
  }
  return true;
}

/**
 * Python pickle, protocol 2 or later: PROTO opcode 0x80, a protocol number 2..5, and the
 * STOP opcode '.' at the end. Checking all three keeps a float32 blob whose first byte
 * happens to be 0x80 from being taken for a pickle.
 */
function looksLikePickle(bytes: Uint8Array): boolean {
  const n = bytes.length;
  if (n < 3 || bytes[0] !== 0x80) return false;
  const proto = bytes[1]!;
  if (proto < 2 || proto > 5) return false;
  return bytes[n - 1] === 0x2e || n % 4 !== 0;
}

function parseJsonArray(t: string): Parsed {
  if (!t.endsWith(']')) return { problem: 'unterminated JSON array' };
  // '[' ... ']' around a plain list of JSON numbers: read it without building a JS array.
  const fast = scanNumbers(t, 1, t.length - 1);
  if (fast !== null) return { values: fast };
  let parsed: unknown;
  try {
    parsed = JSON.parse(t);
  } catch {
    // Python's json.dumps writes NaN / Infinity, which JSON.parse rejects: read tokens.
    return parseTokens(t.slice(1, -1), 'JSON array');
  }
  if (!Array.isArray(parsed)) return { problem: 'JSON value is not an array' };
  if (parsed.length === 0) return { empty: true };
  for (let i = 0; i < parsed.length; i++) {
    const x = parsed[i];
    if (typeof x !== 'number') {
      if (x === null) return { problem: `vector contains null at index ${i} (NaN written by JSON.stringify)` };
      return { problem: `vector element ${i} is not a number` };
    }
  }
  return { values: parsed as number[] };
}

function parseCsv(t: string): Parsed {
  const fast = scanNumbers(t, 0, t.length);
  if (fast !== null) return { values: fast };
  return parseTokens(t, 'comma-separated text');
}

/** 10^0 .. 10^22: every one exactly representable as a double. */
const POW10 = Array.from({ length: 23 }, (_, i) => Number(`1e${i}`));

/**
 * Reads s[start, end) when it is exactly: JSON numbers separated by commas, with optional JSON
 * whitespace (space, tab, CR, LF) around each, at least one number. Returns the values, the
 * same doubles JSON.parse and Number() give (both are correctly rounded; short numbers are
 * converted here with one exact-operand multiply or divide, which is correctly rounded too,
 * anything longer by Number() itself). Returns null for anything else, including an empty
 * list, a trailing comma, '+', '.5', '1.', leading zeros, NaN or Infinity: the caller then
 * takes its general path, so the fast path only ever answers where that path gives the same.
 */
function scanNumbers(s: string, start: number, end: number): Float64Array | null {
  let out = scratch;
  let n = 0;
  let i = start;
  for (;;) {
    let c = i < end ? s.charCodeAt(i) : -1;
    while (c === 32 || c === 9 || c === 10 || c === 13) c = ++i < end ? s.charCodeAt(i) : -1;
    // number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
    const numStart = i;
    let negative = false;
    if (c === 45 /* - */) {
      negative = true;
      c = ++i < end ? s.charCodeAt(i) : -1;
    }
    if (c < 48 || c > 57) return null;
    let mantissa = 0;
    let digits = 0;
    if (c === 48) {
      c = ++i < end ? s.charCodeAt(i) : -1;
      if (c >= 48 && c <= 57) return null; // leading zero
    } else {
      while (c >= 48 && c <= 57) {
        mantissa = mantissa * 10 + (c - 48);
        digits++;
        c = ++i < end ? s.charCodeAt(i) : -1;
      }
    }
    let scale = 0;
    if (c === 46 /* . */) {
      c = ++i < end ? s.charCodeAt(i) : -1;
      if (c < 48 || c > 57) return null;
      while (c >= 48 && c <= 57) {
        if (mantissa !== 0 || c !== 48) {
          mantissa = mantissa * 10 + (c - 48);
          digits++;
        }
        scale++;
        c = ++i < end ? s.charCodeAt(i) : -1;
      }
    }
    let exact = digits <= 15 && scale <= 22;
    if (c === 101 || c === 69 /* e E */) {
      c = ++i < end ? s.charCodeAt(i) : -1;
      if (c === 43 || c === 45) c = ++i < end ? s.charCodeAt(i) : -1;
      if (c < 48 || c > 57) return null;
      while (c >= 48 && c <= 57) c = ++i < end ? s.charCodeAt(i) : -1;
      exact = false; // exponents: leave the conversion to Number()
    }
    let value: number;
    if (exact) {
      // mantissa < 10^15 < 2^53 and 10^scale are exact, so one division rounds correctly.
      value = scale === 0 ? mantissa : mantissa / POW10[scale]!;
      if (negative) value = -value;
    } else {
      value = Number(s.slice(numStart, i));
    }
    if (n === out.length) {
      const grown = new Float64Array(out.length * 2);
      grown.set(out);
      scratch = out = grown;
    }
    out[n++] = value;
    while (c === 32 || c === 9 || c === 10 || c === 13) c = ++i < end ? s.charCodeAt(i) : -1;
    if (c === -1) break;
    if (c !== 44 /* , */) return null;
    i++;
  }
  return out.slice(0, n);
}

/** Reused by scanNumbers (grown on demand); only a copy of the used part is handed out. */
let scratch = new Float64Array(2048);

/** The general reading of a number list, token by token (NaN and Infinity words too). */
export function parseTokens(body: string, what: string): Parsed {
  const tokens = body.split(',');
  // Tolerate one trailing separator ("1,2,3,").
  if (tokens.length > 1 && tokens[tokens.length - 1]!.trim() === '') tokens.pop();
  if (tokens.length === 1 && tokens[0]!.trim() === '') return { empty: true };
  const values = new Float64Array(tokens.length);
  for (let i = 0; i < tokens.length; i++) {
    const tok = tokens[i]!.trim();
    if (NUMBER_TOKEN.test(tok)) {
      values[i] = Number(tok);
      continue;
    }
    const special = SPECIAL_TOKEN.exec(tok);
    if (special) {
      const word = special[2]!.toLowerCase();
      values[i] = word === 'nan' ? NaN : special[1] === '-' ? -Infinity : Infinity;
      continue;
    }
    return { problem: `unparseable ${what}: element ${i} is ${JSON.stringify(tok.slice(0, 24))}` };
  }
  return { values };
}

function finish(encoding: 'json' | 'csv' | 'f32', v: Float32Array, expectedDims?: number): DecodedEmbedding {
  if (v.length === 0) return emptyResult();
  if (expectedDims !== undefined && v.length !== expectedDims) {
    return bad(`wrong length ${v.length}, expected ${expectedDims}`);
  }
  // Fast check: the squares are >= 0 (or NaN), so the sum is finite only when every element
  // is finite (a float32's square cannot overflow a double, even summed over any real length),
  // and it is 0 only when every element is 0. Four accumulators keep the loop short; only a
  // vector that fails goes through the element-by-element loop that names the first bad index.
  const n = v.length;
  let s0 = 0;
  let s1 = 0;
  let s2 = 0;
  let s3 = 0;
  let i = 0;
  for (; i + 3 < n; i += 4) {
    const x0 = v[i]!;
    const x1 = v[i + 1]!;
    const x2 = v[i + 2]!;
    const x3 = v[i + 3]!;
    s0 += x0 * x0;
    s1 += x1 * x1;
    s2 += x2 * x2;
    s3 += x3 * x3;
  }
  for (; i < n; i++) {
    const x = v[i]!;
    s0 += x * x;
  }
  const total = s0 + s1 + s2 + s3;
  if (Number.isFinite(total) && total !== 0) return { encoding, vector: v };
  return checkSlow(encoding, v);
}

/** The element-by-element check: the first non-finite element, else a zero norm. */
function checkSlow(encoding: 'json' | 'csv' | 'f32', v: Float32Array): DecodedEmbedding {
  let sum = 0;
  for (let i = 0; i < v.length; i++) {
    const x = v[i]!;
    if (!Number.isFinite(x)) {
      return bad(`vector contains ${Number.isNaN(x) ? 'NaN' : 'Infinity'} at index ${i}`);
    }
    sum += x * x;
  }
  if (sum === 0) return bad('zero vector (norm 0)');
  return { encoding, vector: v };
}

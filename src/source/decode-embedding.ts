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

type Parsed = { values: ArrayLike<number> } | { problem: string } | { empty: true };

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
  return parseTokens(t, 'comma-separated text');
}

function parseTokens(body: string, what: string): Parsed {
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

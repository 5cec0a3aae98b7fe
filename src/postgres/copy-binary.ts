// PGCOPY binary-format encoder: `COPY table (cols) FROM ... WITH (FORMAT binary)`.
//
// Text COPY is the bottleneck for embeddings (a 1536-d vector is ~30 KB of text that Node
// must format and PostgreSQL must parse); binary is ~10x faster on PostgreSQL and ~16x on
// PGlite. No Node library encodes pgvector's binary layout, so this file does it.
//
// Stream layout (PostgreSQL docs, "COPY" → "Binary Format"):
//   header   "PGCOPY\n\xff\r\n\0", int32 flags = 0, int32 header-extension length = 0
//   tuple    int16 field count, then per field int32 byte length (-1 = NULL) + bytes
//   trailer  int16 -1
// All integers are big-endian. Each field's bytes are the type's binary "send" format.
//
// One growable Buffer is reused for the whole stream; values are written into it with DataView /
// Buffer methods (a float32 vector as one bulk copy), so no value gets a buffer of its own. A
// row that fails to encode is rolled back, so the writer stays valid and the caller can decide
// to skip the row.
import { endianness } from 'node:os';

/**
 * Binary wire types the encoder knows. Use the type of the *column*:
 * - `text` also serves `varchar(n)` and `char(n)` columns (same binary format; the server
 *   still enforces the length).
 * - `text[]` must be a `text[]` column (the element OID 25 is checked by the server;
 *   a `varchar[]` column would reject it).
 * - `vector` / `halfvec` are pgvector's types.
 */
export type CopyColumnType =
  | 'text'
  | 'jsonb'
  | 'timestamptz'
  | 'float8'
  | 'int4'
  | 'int8'
  | 'bool'
  | 'text[]'
  | 'vector'
  | 'halfvec'
  | 'timestamp'
  | 'uuid';

export const COPY_COLUMN_TYPES: readonly CopyColumnType[] = [
  'text',
  'jsonb',
  'timestamptz',
  'float8',
  'int4',
  'int8',
  'bool',
  'text[]',
  'vector',
  'halfvec',
  'timestamp',
  'uuid',
];

/** pgvector's limit for both `vector` and `halfvec`. */
export const VECTOR_MAX_DIM = 16000;
/** Largest finite IEEE half-precision value. */
export const HALF_MAX = 65504;

/** A value could not be encoded. `row` is the writer's 0-based row index. */
export class CopyEncodeError extends Error {
  constructor(
    readonly reason: string,
    readonly row: number,
    readonly column: number,
    readonly columnName: string,
    readonly columnType: CopyColumnType,
  ) {
    super(`row ${row}, column ${columnName} (${columnType}): ${reason}`);
    this.name = 'CopyEncodeError';
  }
}

export interface BinaryCopyWriterOptions {
  /** Initial buffer size in bytes (it doubles as needed). Default 64 KiB. */
  initialBytes?: number;
  /** Column names, only used to make error messages readable. */
  columnNames?: readonly string[];
}

/**
 * Values accepted per type (null or undefined is always SQL NULL):
 * - text: string (must not contain U+0000 or lone surrogates: PostgreSQL cannot store them)
 * - jsonb: a string is taken as JSON text as-is; anything else goes through JSON.stringify
 * - timestamptz: Date; number = milliseconds since the Unix epoch (fractions kept to the
 *   microsecond); bigint = microseconds since the Unix epoch. Strings are refused on purpose:
 *   parse them with an explicit time zone first.
 * - timestamp: the same values, written as their UTC wall time (the binary format is the
 *   same; the columns the seed documents are TIMESTAMP, holding UTC)
 * - uuid: string in the 8-4-4-4-12 hex form
 * - float8: number (NaN and ±Infinity are allowed, as in PostgreSQL)
 * - int4 / int8: integer number or bigint in range (int8 numbers must be safe integers)
 * - bool: boolean, or the numbers 0 / 1 (SQLite's booleans)
 * - text[]: array of string | null | undefined
 * - vector: Float32Array, or any array-like of numbers (rounded to float32); 1..16000
 *   dimensions, every value finite
 * - halfvec: same inputs; values are rounded to float32 and then to half precision with
 *   round-to-nearest-even, exactly as pgvector's own `vector → halfvec` cast does. A value
 *   that rounds beyond ±65504 (|x| >= 65520) is refused, like pgvector refuses it.
 */
export class BinaryCopyWriter {
  readonly types: readonly CopyColumnType[];
  private readonly codes: Uint8Array;
  private readonly names: readonly string[];
  private buf: Buffer;
  private dv: DataView;
  private pos = 0;
  private rows = 0;
  private finished = false;

  constructor(types: readonly CopyColumnType[], options: BinaryCopyWriterOptions | number = {}) {
    const opts: BinaryCopyWriterOptions = typeof options === 'number' ? { initialBytes: options } : options;
    if (types.length === 0) throw new Error('BinaryCopyWriter needs at least one column');
    if (types.length > 1600) throw new Error(`BinaryCopyWriter: ${types.length} columns is more than PostgreSQL allows`);
    this.codes = new Uint8Array(types.length);
    types.forEach((t, i) => {
      const code = COPY_COLUMN_TYPES.indexOf(t);
      if (code < 0) throw new Error(`BinaryCopyWriter: unknown column type ${JSON.stringify(t)}`);
      this.codes[i] = code;
    });
    if (opts.columnNames && opts.columnNames.length !== types.length) {
      throw new Error(`BinaryCopyWriter: ${opts.columnNames.length} column names for ${types.length} types`);
    }
    this.types = [...types];
    this.names = opts.columnNames ? [...opts.columnNames] : types.map((_, i) => `#${i + 1}`);
    const initial = Math.max(256, Math.floor(opts.initialBytes ?? 64 * 1024));
    this.buf = Buffer.allocUnsafeSlow(initial);
    this.dv = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength);
    this.writeHeader();
  }

  /** Rows added since construction or the last reset(). */
  get rowCount(): number {
    return this.rows;
  }

  /** Bytes encoded so far (header and rows; the 2-byte trailer is added by finish()). */
  get byteLength(): number {
    return this.pos;
  }

  /**
   * Appends one tuple. `values[i]` is encoded as `types[i]`. Throws CopyEncodeError (and
   * leaves the stream exactly as it was before the call) when a value cannot be encoded.
   */
  addRow(values: ArrayLike<unknown>): void {
    if (this.finished) throw new Error('BinaryCopyWriter: addRow() after finish(); call reset() first');
    const n = this.codes.length;
    if (values.length !== n) {
      throw new Error(`BinaryCopyWriter: row ${this.rows} has ${values.length} values, expected ${n}`);
    }
    const start = this.pos;
    this.ensure(2);
    this.dv.setInt16(this.pos, n);
    this.pos += 2;
    let col = 0;
    try {
      for (; col < n; col++) this.writeField(this.codes[col]!, values[col]);
    } catch (err) {
      this.pos = start;
      if (err instanceof FieldError) {
        throw new CopyEncodeError(err.message, this.rows, col, this.names[col]!, this.types[col]!);
      }
      throw err;
    }
    this.rows++;
  }

  /**
   * Appends the trailer and returns the complete PGCOPY stream. The returned bytes are a
   * view of the writer's buffer: they stay valid until the next reset(). No more rows can be
   * added until reset().
   */
  finish(): Uint8Array {
    if (!this.finished) {
      this.ensure(2);
      this.dv.setInt16(this.pos, -1);
      this.pos += 2;
      this.finished = true;
    }
    return new Uint8Array(this.buf.buffer, this.buf.byteOffset, this.pos);
  }

  /** Starts a new stream, keeping the (grown) buffer. Invalidates earlier finish() results. */
  reset(): void {
    this.pos = 0;
    this.rows = 0;
    this.finished = false;
    this.writeHeader();
  }

  // ---------------------------------------------------------------- internals

  private writeHeader(): void {
    // "PGCOPY\n\377\r\n\0" + int32 flags 0 + int32 header extension length 0
    this.buf.set(HEADER, 0);
    this.pos = HEADER.length;
  }

  private ensure(extra: number): void {
    const need = this.pos + extra;
    if (need <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < need) cap *= 2;
    const next = Buffer.allocUnsafeSlow(cap);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
    this.dv = new DataView(next.buffer, next.byteOffset, next.byteLength);
  }

  private writeField(code: number, v: unknown): void {
    if (v === null || v === undefined) {
      this.ensure(4);
      this.dv.setInt32(this.pos, -1);
      this.pos += 4;
      return;
    }
    switch (code) {
      case T_TEXT:
        return this.writeText(v);
      case T_JSONB:
        return this.writeJsonb(v);
      case T_TIMESTAMPTZ:
      case T_TIMESTAMP:
        return this.writeTimestamptz(v);
      case T_UUID:
        return this.writeUuid(v);
      case T_FLOAT8:
        if (typeof v !== 'number') throw new FieldError(`expected a number, got ${describe(v)}`);
        this.ensure(12);
        this.dv.setInt32(this.pos, 8);
        this.dv.setFloat64(this.pos + 4, v);
        this.pos += 12;
        return;
      case T_INT4:
        return this.writeInt4(v);
      case T_INT8:
        return this.writeInt8(v);
      case T_BOOL: {
        let b: boolean;
        if (typeof v === 'boolean') b = v;
        else if (v === 0 || v === 1) b = v === 1;
        else throw new FieldError(`expected a boolean (or 0/1), got ${describe(v)}`);
        this.ensure(5);
        this.dv.setInt32(this.pos, 1);
        this.buf[this.pos + 4] = b ? 1 : 0;
        this.pos += 5;
        return;
      }
      case T_TEXT_ARRAY:
        return this.writeTextArray(v);
      case T_VECTOR:
        return this.writeVector(v);
      case T_HALFVEC:
        return this.writeHalfvec(v);
    }
    throw new Error(`BinaryCopyWriter: internal error, type code ${code}`);
  }

  /** Writes int32 length + UTF-8 bytes of s at this.pos. */
  private writeText(v: unknown): void {
    if (typeof v !== 'string') throw new FieldError(`expected a string, got ${describe(v)}`);
    checkText(v);
    this.ensure(4 + v.length * 3);
    const n = this.buf.write(v, this.pos + 4, 'utf8');
    this.dv.setInt32(this.pos, n);
    this.pos += 4 + n;
  }

  private writeJsonb(v: unknown): void {
    let json: string;
    if (typeof v === 'string') {
      json = v;
    } else {
      const s = JSON.stringify(v);
      if (typeof s !== 'string') throw new FieldError(`${describe(v)} has no JSON representation`);
      json = s;
    }
    if (json.indexOf('\0') !== -1) throw new FieldError('JSON text contains a NUL character');
    if (json.indexOf('\\u0000') !== -1 && ESCAPED_NUL.test(json)) {
      throw new FieldError('JSON contains \\u0000, which PostgreSQL jsonb cannot store');
    }
    if (!isWellFormed(json)) throw new FieldError('JSON text contains a lone UTF-16 surrogate');
    this.ensure(5 + json.length * 3);
    this.buf[this.pos + 4] = 1; // jsonb binary format version
    const n = this.buf.write(json, this.pos + 5, 'utf8');
    this.dv.setInt32(this.pos, n + 1);
    this.pos += 5 + n;
  }

  private writeUuid(v: unknown): void {
    if (typeof v !== 'string' || !UUID_TEXT.test(v)) throw new FieldError(`expected a UUID string, got ${describe(v)}`);
    this.ensure(20);
    this.dv.setInt32(this.pos, 16);
    this.buf.write(v.replaceAll('-', ''), this.pos + 4, 16, 'hex');
    this.pos += 20;
  }

  private writeTimestamptz(v: unknown): void {
    let micros: number | bigint; // since 2000-01-01 UTC
    if (v instanceof Date) {
      const ms = v.getTime();
      if (ms !== ms) throw new FieldError('invalid Date');
      micros = msToPgMicros(ms);
    } else if (typeof v === 'number') {
      if (!Number.isFinite(v)) throw new FieldError(`timestamp ${v} is not finite`);
      micros = msToPgMicros(v);
    } else if (typeof v === 'bigint') {
      micros = v - PG_EPOCH_MICROS_BIG;
    } else {
      throw new FieldError(`expected a Date (or epoch ms number / epoch µs bigint), got ${describe(v)}`);
    }
    this.ensure(12);
    this.dv.setInt32(this.pos, 8);
    this.writeInt64At(this.pos + 4, micros);
    this.pos += 12;
  }

  private writeInt4(v: unknown): void {
    let n: number;
    if (typeof v === 'number') n = v;
    else if (typeof v === 'bigint') n = Number(v);
    else throw new FieldError(`expected an integer, got ${describe(v)}`);
    if (!Number.isInteger(n) || n < -2147483648 || n > 2147483647) {
      throw new FieldError(`${String(v)} is not an int4 (32-bit integer)`);
    }
    this.ensure(8);
    this.dv.setInt32(this.pos, 4);
    this.dv.setInt32(this.pos + 4, n);
    this.pos += 8;
  }

  private writeInt8(v: unknown): void {
    if (typeof v === 'number') {
      if (!Number.isSafeInteger(v)) {
        throw new FieldError(`${v} is not a safe integer; pass int8 values beyond ±2^53 as bigint`);
      }
    } else if (typeof v === 'bigint') {
      if (v < INT8_MIN || v > INT8_MAX) throw new FieldError(`${v} is out of range for int8`);
    } else {
      throw new FieldError(`expected an integer, got ${describe(v)}`);
    }
    this.ensure(12);
    this.dv.setInt32(this.pos, 8);
    this.writeInt64At(this.pos + 4, v);
    this.pos += 12;
  }

  /** v: safe integer number, or bigint already checked to fit int64. */
  private writeInt64At(at: number, v: number | bigint): void {
    if (typeof v === 'bigint') {
      this.dv.setBigInt64(at, v);
      return;
    }
    const hi = Math.floor(v / 4294967296);
    this.dv.setInt32(at, hi);
    this.dv.setUint32(at + 4, v - hi * 4294967296);
  }

  private writeTextArray(v: unknown): void {
    if (!Array.isArray(v)) throw new FieldError(`expected an array of strings, got ${describe(v)}`);
    const n = v.length;
    const start = this.pos;
    if (n === 0) {
      // ndim 0, no nulls, element type text
      this.ensure(16);
      this.dv.setInt32(start, 12);
      this.dv.setInt32(start + 4, 0);
      this.dv.setInt32(start + 8, 0);
      this.dv.setInt32(start + 12, TEXT_OID);
      this.pos += 16;
      return;
    }
    this.ensure(24);
    // start: total length (patched below); +4 ndim; +8 has-null; +12 oid; +16 dim; +20 lbound
    this.dv.setInt32(start + 4, 1);
    this.dv.setInt32(start + 12, TEXT_OID);
    this.dv.setInt32(start + 16, n);
    this.dv.setInt32(start + 20, 1);
    this.pos += 24;
    let hasNull = 0;
    for (let i = 0; i < n; i++) {
      const e: unknown = v[i];
      if (e === null || e === undefined) {
        hasNull = 1;
        this.ensure(4);
        this.dv.setInt32(this.pos, -1);
        this.pos += 4;
      } else if (typeof e === 'string') {
        checkText(e, i);
        this.ensure(4 + e.length * 3);
        const len = this.buf.write(e, this.pos + 4, 'utf8');
        this.dv.setInt32(this.pos, len);
        this.pos += 4 + len;
      } else {
        throw new FieldError(`array element ${i} is ${describe(e)}, expected a string or null`);
      }
    }
    // ensure() may have moved the buffer: patch through the current DataView.
    this.dv.setInt32(start, this.pos - start - 4);
    this.dv.setInt32(start + 8, hasNull);
  }

  private writeVector(v: unknown): void {
    const x = asNumbers(v);
    const n = x.length;
    checkDims(n);
    const bytes = 4 + n * 4;
    this.ensure(4 + bytes);
    const dv = this.dv;
    let p = this.pos;
    dv.setInt32(p, bytes);
    dv.setInt16(p + 4, n);
    dv.setInt16(p + 6, 0);
    p += 8;
    if (x instanceof Float32Array && LITTLE_ENDIAN && allFinite(x)) {
      // The float32 bits are already there: one bulk copy turned big-endian by Buffer#swap32
      // (native) instead of a DataView.setFloat32 per element, because Node and the server
      // share the cores. A vector with a NaN or an infinity takes the loop below, which
      // names it.
      this.buf.set(new Uint8Array(x.buffer, x.byteOffset, n * 4), p);
      this.buf.subarray(p, p + n * 4).swap32();
      p += n * 4;
    } else if (x instanceof Float32Array) {
      for (let i = 0; i < n; i++) {
        const f = x[i]!;
        if (f - f !== 0) throw new FieldError(nonFinite(f, i));
        dv.setFloat32(p, f);
        p += 4;
      }
    } else {
      for (let i = 0; i < n; i++) {
        const f = Math.fround(x[i] as number);
        if (f - f !== 0) throw new FieldError(nonFinite(f, i, x[i]));
        dv.setFloat32(p, f);
        p += 4;
      }
    }
    this.pos = p;
  }

  private writeHalfvec(v: unknown): void {
    const x = asNumbers(v);
    const n = x.length;
    checkDims(n);
    const bytes = 4 + n * 2;
    this.ensure(4 + bytes);
    const dv = this.dv;
    let p = this.pos;
    dv.setInt32(p, bytes);
    dv.setInt16(p + 4, n);
    dv.setInt16(p + 6, 0);
    p += 8;
    for (let i = 0; i < n; i++) {
      F32[0] = x[i] as number;
      const h = float32BitsToHalf(U32[0]!);
      if (h < 0) {
        const f = F32[0]!;
        throw new FieldError(
          f - f !== 0
            ? nonFinite(f, i, x[i])
            : `value ${x[i]} at index ${i} is out of range for halfvec (|x| must round to at most ${HALF_MAX})`,
        );
      }
      dv.setUint16(p, h);
      p += 2;
    }
    this.pos = p;
  }
}

/** Encodes rows in one go: header + rows + trailer, as a fresh copy. */
export function encodeCopyBinary(types: readonly CopyColumnType[], rows: Iterable<ArrayLike<unknown>>): Uint8Array {
  const w = new BinaryCopyWriter(types);
  for (const r of rows) w.addRow(r);
  return w.finish().slice();
}

/**
 * float32 bit pattern → IEEE 754 binary16 bit pattern, rounding to nearest, ties to even.
 * Returns -1 for NaN, ±Infinity and values that round beyond the largest half (65504).
 * (After numpy's npy_floatbits_to_halfbits.)
 */
export function float32BitsToHalf(f: number): number {
  const sign = (f >>> 16) & 0x8000;
  const exp = f & 0x7f800000;
  // |x| >= 65536, Inf or NaN
  if (exp >= 0x47800000) return -1;
  if (exp <= 0x38000000) {
    // |x| < 2^-14: a subnormal half or zero. Below 2^-25 (half the smallest subnormal,
    // inclusive via ties-to-even) everything rounds to zero.
    if (exp < 0x33000000) return sign;
    const e = exp >>> 23;
    let sig = 0x00800000 + (f & 0x007fffff);
    sig >>>= 113 - e;
    // Round half to even; bits shifted out (at most 11) count as "above half".
    if ((sig & 0x3fff) !== 0x1000 || (f & 0x7ff) !== 0) sig += 0x1000;
    // A carry into the exponent gives the smallest normal half, which is correct.
    return sign + (sig >>> 13);
  }
  const hexp = (exp - 0x38000000) >>> 13;
  let sig = f & 0x007fffff;
  if ((sig & 0x3fff) !== 0x1000) sig += 0x1000;
  const h = hexp + (sig >>> 13); // a carry out of the significand bumps the exponent
  if (h >= 0x7c00) return -1;
  return sign + h;
}

/** IEEE 754 binary16 bit pattern → number (exact). */
export function halfBitsToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1024 + frac) * 2 ** (exp - 25);
}

/** Rounds a number the way a halfvec column stores it (float32, then half). */
export function toHalf(x: number): number {
  F32[0] = x;
  const h = float32BitsToHalf(U32[0]!);
  if (h < 0) throw new RangeError(`${x} cannot be stored in a halfvec`);
  return halfBitsToNumber(h);
}

// ---------------------------------------------------------------- helpers

const HEADER = Uint8Array.from([
  0x50, 0x47, 0x43, 0x4f, 0x50, 0x59, 0x0a, 0xff, 0x0d, 0x0a, 0x00, // PGCOPY\n\xff\r\n\0
  0, 0, 0, 0, // flags
  0, 0, 0, 0, // header extension length
]);

const T_TEXT = 0;
const T_JSONB = 1;
const T_TIMESTAMPTZ = 2;
const T_FLOAT8 = 3;
const T_INT4 = 4;
const T_INT8 = 5;
const T_BOOL = 6;
const T_TEXT_ARRAY = 7;
const T_VECTOR = 8;
const T_HALFVEC = 9;
const T_TIMESTAMP = 10;
const T_UUID = 11;
const UUID_TEXT = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const TEXT_OID = 25;
/** 2000-01-01T00:00:00Z in Unix milliseconds: PostgreSQL's timestamp epoch. */
const PG_EPOCH_MS = 946684800000;
const PG_EPOCH_MICROS_BIG = 946684800000000n;
const INT8_MIN = -(2n ** 63n);
const INT8_MAX = 2n ** 63n - 1n;
/** \u0000 preceded by an even number of backslashes (so it is an escape, not "\\u0000"). */
const ESCAPED_NUL = /(?:^|[^\\])(?:\\\\)*\\u0000/;

const LITTLE_ENDIAN = endianness() === 'LE';

/**
 * True when no element is NaN or ±Infinity: no float32 has all exponent bits set. Adding
 * 2^23 to the exponent bits carries into the sign bit only for exponent 255; four OR
 * accumulators keep the loop free of branches.
 */
function allFinite(x: Float32Array): boolean {
  const bits = new Int32Array(x.buffer, x.byteOffset, x.length);
  const n = bits.length;
  let a = 0;
  let b = 0;
  let c = 0;
  let d = 0;
  let i = 0;
  for (; i + 3 < n; i += 4) {
    a |= (bits[i]! & 0x7f800000) + 0x00800000;
    b |= (bits[i + 1]! & 0x7f800000) + 0x00800000;
    c |= (bits[i + 2]! & 0x7f800000) + 0x00800000;
    d |= (bits[i + 3]! & 0x7f800000) + 0x00800000;
  }
  for (; i < n; i++) a |= (bits[i]! & 0x7f800000) + 0x00800000;
  return ((a | b | c | d) & 0x80000000) === 0;
}

const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);

/** Error carrying just the reason; addRow adds row and column. */
class FieldError extends Error {}

function msToPgMicros(ms: number): number | bigint {
  const rel = ms - PG_EPOCH_MS;
  if (Number.isInteger(rel)) {
    const us = rel * 1000;
    return Number.isSafeInteger(us) ? us : BigInt(rel) * 1000n;
  }
  // Fractional milliseconds: keep whole microseconds.
  const us = Math.round(rel * 1000);
  return Number.isSafeInteger(us) ? us : BigInt(us);
}

function checkText(s: string, element?: number): void {
  const where = element === undefined ? '' : ` (array element ${element})`;
  if (s.indexOf('\0') !== -1) throw new FieldError(`text contains a NUL character${where}, which PostgreSQL cannot store`);
  if (!isWellFormed(s)) throw new FieldError(`text contains a lone UTF-16 surrogate${where}; it is not valid UTF-8`);
}

type WellFormed = { isWellFormed?: () => boolean };
const hasIsWellFormed = typeof ('' as unknown as WellFormed).isWellFormed === 'function';
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

function isWellFormed(s: string): boolean {
  return hasIsWellFormed ? (s as unknown as WellFormed).isWellFormed!() : !LONE_SURROGATE.test(s);
}

function asNumbers(v: unknown): ArrayLike<number> {
  if (v instanceof Float32Array || Array.isArray(v) || v instanceof Float64Array) return v as ArrayLike<number>;
  if (ArrayBuffer.isView(v) && !(v instanceof DataView) && typeof (v as any).length === 'number') {
    return v as unknown as ArrayLike<number>;
  }
  throw new FieldError(`expected a Float32Array or an array of numbers, got ${describe(v)}`);
}

function checkDims(n: number): void {
  if (n < 1) throw new FieldError('a vector needs at least 1 dimension');
  if (n > VECTOR_MAX_DIM) throw new FieldError(`${n} dimensions is more than pgvector's ${VECTOR_MAX_DIM}`);
}

function nonFinite(f: number, i: number, original?: unknown): string {
  const shown = original === undefined ? String(f) : describe(original);
  return Number.isNaN(f)
    ? `value ${shown} at index ${i} is not a number; pgvector does not allow NaN`
    : `value ${shown} at index ${i} is infinite as float32; pgvector does not allow infinite values`;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (typeof v === 'string') return `string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)}`;
  if (typeof v === 'number' || typeof v === 'bigint' || typeof v === 'boolean') return `${typeof v} ${String(v)}`;
  if (Array.isArray(v)) return `array(${v.length})`;
  if (v instanceof Date) return 'Date';
  if (typeof v === 'object') return (v as object).constructor?.name ?? 'object';
  return typeof v;
}

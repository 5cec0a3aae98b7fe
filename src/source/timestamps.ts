// Reads the timestamp shapes met in agent memory files:
//   'YYYY-MM-DD HH:MM:SS[.fff]'   SQLite CURRENT_TIMESTAMP, UTC
//   ISO 8601 with 'T' and 'Z' or an offset ('2024-05-01T10:00:00.123+02:00')
//   integer epoch seconds or milliseconds (numbers or numeric strings)
// Anything else is null: never guess with the local time zone.

const DATE_TIME =
  /^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?\s*(Z|z|UTC|[+-]\d{2}(?::?\d{2})?)?$/;
const NUMERIC = /^[+-]?\d+(?:\.\d+)?$/;

/** Epoch values below this are seconds; at or above, milliseconds (1e11 s is year 5138). */
export const SECONDS_LIMIT = 1e11;

// A Date holds milliseconds; timestamptz holds microseconds. A text with more than three
// fraction digits keeps the microseconds below its millisecond here, beside its Date, so that
// what is stored, compared and written back is the source's instant, not a rounding of it.
const SUB_MILLISECOND = new WeakMap<Date, number>();

/** The instant as microseconds since the Unix epoch, sub-millisecond digits included. */
export function epochMicros(d: Date): bigint {
  return BigInt(d.getTime()) * 1000n + BigInt(SUB_MILLISECOND.get(d) ?? 0);
}

/** The Date itself, or its exact microseconds when it has digits below the millisecond. */
export function exactInstant(d: Date): Date | bigint {
  return SUB_MILLISECOND.has(d) ? epochMicros(d) : d;
}

/** isoInstant of a timestamp that may be missing. */
export function instantText(d: Date | null): string | null {
  return d === null ? null : isoInstant(d);
}

/** ISO 8601 in UTC, with six fraction digits when the instant has digits below the millisecond. */
export function isoInstant(d: Date): string {
  const iso = d.toISOString();
  const micros = SUB_MILLISECOND.get(d);
  return micros === undefined ? iso : `${iso.slice(0, -1)}${String(micros).padStart(3, '0')}Z`;
}

export function parseTimestamp(value: unknown): Date | null {
  if (value === null || value === undefined) return null;
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? null : new Date(value.getTime());
  if (typeof value === 'number') return fromEpoch(value);
  if (typeof value === 'bigint') return fromEpoch(Number(value));
  if (value instanceof Uint8Array) return parseTimestamp(Buffer.from(value).toString('utf8'));
  if (typeof value !== 'string') return null;
  const s = value.trim();
  if (s === '') return null;
  // The common exact shapes first; anything they do not fully accept goes the general way.
  if (s.length >= 19 && s.charCodeAt(4) === 45 /* - */) {
    const t = fastText(s);
    if (t !== undefined) return t;
  }
  if (NUMERIC.test(s)) return fromEpoch(Number(s));
  return parseTimestampText(s);
}

/**
 * What parseTimestampText returns for the exact shapes 'YYYY-MM-DD HH:MM:SS' and
 * 'YYYY-MM-DDTHH:MM:SS[.fff][Z]' (separator T, t or space; zone Z or z; exactly 3 fraction
 * digits), read without a regular expression; undefined for any other shape, which the caller
 * hands to parseTimestampText. Years below 100 are left to it too.
 */
function fastText(s: string): Date | null | undefined {
  const n = s.length;
  const sep = s.charCodeAt(10);
  if (
    s.charCodeAt(7) !== 45 /* - */ ||
    (sep !== 32 /* space */ && sep !== 84 /* T */ && sep !== 116) /* t */ ||
    s.charCodeAt(13) !== 58 /* : */ ||
    s.charCodeAt(16) !== 58 /* : */
  ) {
    return undefined;
  }
  let ms = 0;
  if (n !== 19) {
    // Accepted tails: 'Z' | 'z' | '.fff' | ',fff' | '.fffZ' | ',fffz' ...
    let end = n;
    const last = s.charCodeAt(n - 1);
    if (last === 90 /* Z */ || last === 122 /* z */) end = n - 1;
    if (end !== 19) {
      const point = s.charCodeAt(19);
      if (end !== 23 || (point !== 46 /* . */ && point !== 44) /* , */) return undefined;
      const f = digits3(s, 20);
      if (f < 0) return undefined;
      ms = FRACTION_MS[f]!;
    }
  }
  const year = digits2(s, 0) * 100 + digits2(s, 2);
  const month = digits2(s, 5);
  const day = digits2(s, 8);
  const hour = digits2(s, 11);
  const minute = digits2(s, 14);
  const second = digits2(s, 17);
  // A non-digit makes its pair negative, and so the sum.
  if (year < 100 || month < 0 || day < 0 || hour < 0 || minute < 0 || second < 0) return undefined;
  if (month < 1 || month > 12 || day < 1 || day > 31) return null;
  if (hour > 23 || minute > 59 || second > 60) return null; // 60: a leap second, clamped below
  if (day > daysInMonth(year, month)) return null; // Feb 30 and the like do not exist
  return valid(new Date(Date.UTC(year, month - 1, day, hour, minute, Math.min(second, 59), ms)));
}

/** The number written by the two ASCII digits at s[i], s[i+1]; negative if either is not a digit. */
function digits2(s: string, i: number): number {
  const a = s.charCodeAt(i) - 48;
  const b = s.charCodeAt(i + 1) - 48;
  if (a < 0 || a > 9 || b < 0 || b > 9) return -10_000;
  return a * 10 + b;
}

/** The number written by the three ASCII digits at s[i..i+2]; negative if any is not a digit. */
function digits3(s: string, i: number): number {
  const c = s.charCodeAt(i + 2) - 48;
  if (c < 0 || c > 9) return -1;
  const ab = digits2(s, i);
  return ab < 0 ? -1 : ab * 10 + c;
}

/** parseTimestampText's milliseconds for each 3-digit fraction, computed by its own expression. */
const FRACTION_MS = new Float64Array(1000);
for (let f = 0; f < 1000; f++) FRACTION_MS[f] = Math.floor(Number(`0.${String(f).padStart(3, '0')}`) * 1000);

/** Days in a month of the proleptic Gregorian calendar (the one Date uses). */
function daysInMonth(year: number, month: number): number {
  if (month === 2) return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0 ? 29 : 28;
  return month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31;
}

function fromEpoch(n: number): Date | null {
  if (!Number.isFinite(n)) return null;
  const ms = Math.abs(n) < SECONDS_LIMIT ? n * 1000 : n;
  return valid(new Date(Math.round(ms)));
}

/** The general reading of a date-time text (the regex); fastText answers the common shapes first. */
export function parseTimestampText(s: string): Date | null {
  const m = DATE_TIME.exec(s);
  if (!m) return null;
  const [, y, mo, d, h = '0', mi = '0', sec = '0', frac, zone] = m;
  const year = Number(y);
  const month = Number(mo);
  const day = Number(d);
  const hour = Number(h);
  const minute = Number(mi);
  const second = Number(sec);
  if (month < 1 || month > 12 || day < 1 || day > 31) return null;
  if (hour > 23 || minute > 59 || second > 60) return null; // 60: a leap second, clamped below
  const ms = frac ? Math.floor(Number(`0.${frac}`) * 1000) : 0;
  const micros = frac && frac.length > 3 ? Number(frac.slice(3, 6).padEnd(3, '0')) : 0;
  let t = Date.UTC(year, month - 1, day, hour, minute, Math.min(second, 59), ms);
  // Date.UTC rolls Feb 30 over to March: reject dates that do not exist.
  const check = new Date(Date.UTC(year, month - 1, day));
  if (check.getUTCFullYear() !== year || check.getUTCMonth() !== month - 1 || check.getUTCDate() !== day) {
    return null;
  }
  if (year < 100) t = shiftTwoDigitYear(t, year);
  if (zone && zone !== 'Z' && zone !== 'z' && zone !== 'UTC') {
    const zm = /^([+-])(\d{2}):?(\d{2})?$/.exec(zone);
    if (!zm) return null;
    const offH = Number(zm[2]);
    const offM = Number(zm[3] ?? '0');
    if (offH > 23 || offM > 59) return null;
    const offset = (offH * 60 + offM) * 60_000 * (zm[1] === '-' ? -1 : 1);
    t -= offset;
  }
  const date = valid(new Date(t));
  if (date && micros > 0) SUB_MILLISECOND.set(date, micros);
  return date;
}

/** Date.UTC maps years 0..99 to 1900..1999; a four-digit year in the text means what it says. */
function shiftTwoDigitYear(t: number, year: number): number {
  const d = new Date(t);
  d.setUTCFullYear(year);
  return d.getTime();
}

function valid(d: Date): Date | null {
  return Number.isNaN(d.getTime()) ? null : d;
}

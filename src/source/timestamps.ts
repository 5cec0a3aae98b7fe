// Reads the timestamp shapes met in agent memory files:
//   'YYYY-MM-DD HH:MM:SS[.fff]'   SQLite CURRENT_TIMESTAMP, UTC
//   ISO 8601 with 'T' and 'Z' or an offset ('2024-05-01T10:00:00.123+02:00')
//   integer epoch seconds or milliseconds (numbers or numeric strings)
// Anything else is null: never guess with the local time zone.

const DATE_TIME =
  /^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?\s*(Z|z|UTC|[+-]\d{2}(?::?\d{2})?)?$/;
const NUMERIC = /^[+-]?\d+(?:\.\d+)?$/;

/** Epoch values below this are seconds; at or above, milliseconds (1e11 s is year 5138). */
const SECONDS_LIMIT = 1e11;

export function parseTimestamp(value: unknown): Date | null {
  if (value === null || value === undefined) return null;
  if (value instanceof Date) return Number.isNaN(value.getTime()) ? null : new Date(value.getTime());
  if (typeof value === 'number') return fromEpoch(value);
  if (typeof value === 'bigint') return fromEpoch(Number(value));
  if (value instanceof Uint8Array) return parseTimestamp(Buffer.from(value).toString('utf8'));
  if (typeof value !== 'string') return null;
  const s = value.trim();
  if (s === '') return null;
  if (NUMERIC.test(s)) return fromEpoch(Number(s));
  return fromText(s);
}

function fromEpoch(n: number): Date | null {
  if (!Number.isFinite(n)) return null;
  const ms = Math.abs(n) < SECONDS_LIMIT ? n * 1000 : n;
  return valid(new Date(Math.round(ms)));
}

function fromText(s: string): Date | null {
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
  return valid(new Date(t));
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

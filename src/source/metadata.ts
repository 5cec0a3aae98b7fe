// A memory's metadata as PostgreSQL will hold it. The source JSON text itself goes to jsonb,
// so PostgreSQL parses it and keeps every number exactly (as numeric); JavaScript only looks
// inside, for the few fields the row rules read (category, importance), never to write.
//
// What PostgreSQL's jsonb does and JSON.parse does not (or the other way round) is settled
// here, once, for migrate, verify and rollback alike:
// - duplicate keys: both keep the last one; counted, so the run can warn;
// - \u0000 and unpaired surrogate escapes: jsonb rejects them, so the text is kept as {raw};
// - an exponent beyond ±1000: PostgreSQL 15's numeric rejects it (later versions accept
//   more); kept as {raw} too, so one file gives one result on every server.

export interface SourceMetadata {
  /** JSON text of the object to store in jsonb: the source text for a JSON object. */
  json: string;
  /** The object read by JSON.parse: numbers may be rounded, so only for looking inside. */
  fields: Record<string, unknown>;
  /** Set when the stored value is a wrapper ({raw}) rather than the source's own JSON. */
  warning?: string;
  /** Keys that appear more than once in one object (the last one is kept). */
  duplicateKeys: number;
}

/** Beyond this, PostgreSQL 15's numeric input rejects an exponent (NUMERIC_MAX_PRECISION). */
const MAX_EXPONENT = 1000;

const EMPTY: SourceMetadata = Object.freeze({ json: '{}', fields: Object.freeze({}) as Record<string, unknown>, duplicateKeys: 0 });

/** The metadata column's value as stored in SQLite (text, blob, number or NULL). */
export function readMetadata(value: unknown): SourceMetadata {
  if (value === null || value === undefined) return EMPTY;
  let text: string;
  if (typeof value === 'string') text = value;
  else if (value instanceof Uint8Array) text = Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('utf8');
  else {
    // A number (or bigint) stored in the metadata column.
    return { json: `{"value":${String(value)}}`, fields: { value: typeof value === 'bigint' ? Number(value) : value }, duplicateKeys: 0 };
  }
  if (text.trim() === '') return EMPTY;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    return rawMetadata(text, `metadata is not valid JSON (${err instanceof Error ? err.message : String(err)}); kept as { raw }`);
  }
  const scan = scanJson(text);
  if (scan.problem) return rawMetadata(text, `metadata ${scan.problem}, which PostgreSQL's jsonb rejects; kept as { raw }`);
  if (parsed === null) return EMPTY;
  const duplicateKeys = scan.keys - distinctKeys(parsed);
  if (typeof parsed !== 'object' || Array.isArray(parsed)) {
    return { json: `{"value":${text}}`, fields: { value: parsed }, duplicateKeys };
  }
  return { json: text, fields: parsed as Record<string, unknown>, duplicateKeys };
}

function rawMetadata(text: string, warning: string): SourceMetadata {
  return { json: JSON.stringify({ raw: text }), fields: { raw: text }, warning, duplicateKeys: 0 };
}

/**
 * The metadata text to write back to SQLite for a value PostgreSQL holds (its text form): a
 * {raw} wrapper that the migration itself would make of its string goes back as that string.
 */
export function metadataForSqlite(pgText: string): string {
  const parsed = JSON.parse(pgText) as unknown;
  if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) {
    const keys = Object.keys(parsed);
    const raw = (parsed as Record<string, unknown>)['raw'];
    if (keys.length === 1 && typeof raw === 'string' && readMetadata(raw).warning !== undefined) return raw;
  }
  return pgText;
}

/** Same rule as the app: numeric importance, or critical/high/medium/low, else 1.0. */
export function importanceOf(fields: Record<string, unknown>): number {
  const v = fields['importance_score'] ?? fields['importance'];
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  const named: Record<string, number> = { critical: 1.0, high: 1.0, medium: 0.6, low: 0.3 };
  return typeof v === 'string' && v.toLowerCase() in named ? named[v.toLowerCase()]! : 1.0;
}

/** The metadata's category, at most 100 characters, or null. */
export function categoryOf(fields: Record<string, unknown>): string | null {
  const c = fields['category'];
  return typeof c === 'string' && c.length > 0 ? c.slice(0, 100) : null;
}

/**
 * One pass over valid JSON text (JSON.parse accepted it): counts object keys (a colon outside
 * a string always follows a key) and finds what jsonb rejects.
 */
function scanJson(text: string): { keys: number; problem?: string } {
  let keys = 0;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      for (i++; i < n; i++) {
        const d = text.charCodeAt(i);
        if (d === 0x22) break;
        if (d !== 0x5c /* \ */) continue;
        i++;
        if (text.charCodeAt(i) !== 0x75 /* u */) continue;
        const code = parseInt(text.slice(i + 1, i + 5), 16);
        i += 4;
        if (code === 0) return { keys, problem: 'holds a \\u0000 escape' };
        if (code >= 0xdc00 && code <= 0xdfff) return { keys, problem: 'holds an unpaired surrogate escape' };
        if (code >= 0xd800 && code <= 0xdbff) {
          const low = text.slice(i + 1, i + 3) === '\\u' ? parseInt(text.slice(i + 3, i + 7), 16) : NaN;
          if (!(low >= 0xdc00 && low <= 0xdfff)) return { keys, problem: 'holds an unpaired surrogate escape' };
          i += 6;
        }
      }
    } else if (c === 0x3a /* : */) {
      keys++;
    } else if (c === 0x65 || c === 0x45 /* e E: only in a number, outside strings */) {
      let j = i + 1;
      if (text[j] === '+' || text[j] === '-') j++;
      let exponent = 0;
      for (; j < n; j++) {
        const d = text.charCodeAt(j) - 0x30;
        if (d < 0 || d > 9) break;
        if (exponent <= MAX_EXPONENT) exponent = exponent * 10 + d;
      }
      if (exponent > MAX_EXPONENT) return { keys, problem: `holds a number with an exponent beyond ±${MAX_EXPONENT}` };
      i = j - 1;
    }
  }
  return { keys };
}

/** Keys of every object in a parsed value, each counted once per object. */
function distinctKeys(value: unknown): number {
  if (value === null || typeof value !== 'object') return 0;
  if (Array.isArray(value)) {
    let k = 0;
    for (const v of value) k += distinctKeys(v);
    return k;
  }
  let k = 0;
  for (const key in value as Record<string, unknown>) k += 1 + distinctKeys((value as Record<string, unknown>)[key]);
  return k;
}

/**
 * The metadata JSON text (an object) with the row's user added as `user_id`, for
 * `migrate --user-in-metadata`: clients that filter only inside metadata (LangChain's
 * PGVectorStore) can then scope a search to a user. Appended as text, so every other byte
 * and number stays the source's; as the last key it wins over a user_id the source had, in
 * jsonb as in JSON.parse. migrate, verify and rollback all expect it through this function.
 */
export function withUserId(json: string, user: string): string {
  const end = json.lastIndexOf('}');
  const empty = /^\s*\{\s*\}\s*$/.test(json);
  return `${json.slice(0, end)}${empty ? '' : ','}"user_id":${JSON.stringify(user)}${json.slice(end)}`;
}

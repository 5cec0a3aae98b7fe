// How a SQLite memory file writes its timestamps, so that the store and rollback write new
// ones the way the file already does (parseTimestamp in timestamps.ts reads them all).
import type { SqliteLayout } from './layout.js';
import type { SqliteDb } from './sqlite-file.js';
import { SECONDS_LIMIT, isoInstant } from './timestamps.js';

/** How a file writes its timestamps. */
export type TimestampFormat = 'sqlite' | 'sqlite-ms' | 'iso' | 'epoch-ms' | 'epoch-s';

/** The format of one stored timestamp value, or null when it is none of the known ones. */
export function sniffTimestampFormat(value: unknown): TimestampFormat | null {
  if (typeof value === 'number' || typeof value === 'bigint') return Math.abs(Number(value)) < SECONDS_LIMIT ? 'epoch-s' : 'epoch-ms';
  if (typeof value !== 'string') return null;
  const s = value.trim();
  if (/^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$/.test(s)) return 'sqlite';
  if (/^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d+$/.test(s)) return 'sqlite-ms';
  if (/^\d{4}-\d{2}-\d{2}T/.test(s)) return 'iso';
  if (/^\d+$/.test(s)) return Math.abs(Number(s)) < SECONDS_LIMIT ? 'epoch-s' : 'epoch-ms';
  return null;
}

/**
 * A date in the given format; 'sqlite' is CURRENT_TIMESTAMP's 'YYYY-MM-DD HH:MM:SS' (UTC). The
 * text formats keep a fraction of a second when the instant has one (a row an app wrote in
 * Postgres at now() has microseconds): SQLite's date functions and parseTimestamp read it,
 * and verify compares the instant exactly.
 */
export function formatTimestamp(d: Date, format: TimestampFormat): string | number {
  const iso = isoInstant(d); // '…SS.mmmZ' or '…SS.mmmuuuZ'
  const wall = iso.slice(0, -1).replace('T', ' ');
  switch (format) {
    case 'sqlite':
      return wall.endsWith('.000') ? wall.slice(0, 19) : wall;
    case 'sqlite-ms':
      return wall;
    case 'iso':
      return iso;
    case 'epoch-ms':
      return d.getTime();
    case 'epoch-s':
      return Math.floor(d.getTime() / 1000);
  }
}

/** The format most of the file's recent rows use ('sqlite' for an empty file). */
export function fileTimestampFormat(db: SqliteDb, layout: SqliteLayout): TimestampFormat {
  if (!layout.createdAt) return 'sqlite';
  const values = db
    .prepare(`SELECT ${layout.createdAt} FROM ${layout.table} WHERE ${layout.createdAt} IS NOT NULL ORDER BY rowid DESC LIMIT 200`)
    .pluck()
    .all();
  const votes = new Map<TimestampFormat, number>();
  for (const v of values) {
    const f = sniffTimestampFormat(v);
    if (f) votes.set(f, (votes.get(f) ?? 0) + 1);
  }
  let best: TimestampFormat = 'sqlite';
  let n = 0;
  for (const [f, c] of votes) {
    if (c > n) {
      best = f;
      n = c;
    }
  }
  return best;
}

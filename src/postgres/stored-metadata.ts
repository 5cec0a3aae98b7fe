// Whether stored memories still hold the metadata a source row gives them, asked of PostgreSQL
// itself: jsonb equality is exact for numbers of any size, where a JavaScript round trip would
// round them, and ignores key order and whitespace as jsonb does.
import type { Db } from './connection.js';

/** The ids of `rows` whose stored metadata equals their JSON text (as jsonb). */
export async function idsWithStoredMetadata(db: Db, rows: { id: string; md: string }[]): Promise<Set<string>> {
  if (rows.length === 0) return new Set();
  const same = await db.query<{ id: string }>(
    `SELECT x.id FROM jsonb_to_recordset($1::text::jsonb) AS x(id text, md text)
       JOIN memory_keys($2::text[]) m ON m.id = x.id WHERE m.metadata = x.md::jsonb`,
    [JSON.stringify(rows), rows.map((r) => r.id)],
  );
  return new Set(same.map((r) => r.id));
}

// What the target holds already, asked in one statement per batch: stored ids, recorded
// duplicates, dedup-key owners, fragment hashes and the default fragments.
import type { Db } from '../postgres/connection.js';
import { idsWithStoredMetadata } from '../postgres/stored-metadata.js';
import { defaultFragments, type FragmentRow } from '../postgres/fragments.js';
import type { MemoryRow } from '../postgres/writer.js';
import { dedupKey } from './keys.js';
import type { Existing } from './types.js';

/** True when memories and memory_duplicates hold no row (a first load into this target). */
export async function targetIsEmpty(db: Db): Promise<boolean> {
  const [r] = await db.query<{ empty: boolean }>(
    `SELECT NOT EXISTS (SELECT 1 FROM memories) AND NOT EXISTS (SELECT 1 FROM memory_duplicates) AS empty`,
  );
  return r?.empty === true;
}

/** The stored memory and the exact-duplicate record of each id, where there is one. */
export async function lookupExisting(db: Db, mems: MemoryRow[]): Promise<Map<string, Existing>> {
  const out = new Map<string, Existing>();
  if (mems.length === 0) return out;
  const rows = await db.query<{
    id: string;
    content_hash: string | null;
    dup_of: string | null;
    orig_user: string | null;
    orig_hash: string | null;
  }>(
    `WITH d AS (SELECT duplicate_id, original_id FROM memory_duplicates WHERE duplicate_id = ANY ($1::text[]) AND dedup_type = 'exact')
     SELECT x.id, m.content_hash, d.original_id AS dup_of, o.user_id AS orig_user, o.dedup_hash AS orig_hash
       FROM unnest($1::text[]) AS x(id)
       LEFT JOIN memory_keys($1::text[]) m ON m.id = x.id
       LEFT JOIN d ON d.duplicate_id = x.id
       LEFT JOIN memory_keys(ARRAY(SELECT original_id FROM d)) o ON o.id = d.original_id
      WHERE m.id IS NOT NULL OR d.original_id IS NOT NULL`,
    [mems.map((x) => x.id)],
  );
  if (rows.length === 0) return out;
  // Metadata is compared (on the server, as jsonb) only where it decides: a stored row whose
  // content is unchanged. New rows, the bulk of a resumed or second load, ship only their ids.
  const current = new Map(mems.map((x) => [x.id, x]));
  const sameContent = rows.filter((r) => r.content_hash !== null && r.content_hash.trim() === current.get(r.id)!.contentHash);
  const sameMetadata = await idsWithStoredMetadata(db, sameContent.map((r) => ({ id: r.id, md: current.get(r.id)!.metadata })));
  for (const r of rows) {
    out.set(r.id, {
      contentHash: r.content_hash ? r.content_hash.trim() : null,
      sameMetadata: sameMetadata.has(r.id),
      duplicateOf: r.dup_of,
      originalUser: r.orig_user,
      originalDedupHash: r.orig_hash ? r.orig_hash.trim() : null,
    });
  }
  return out;
}

/** Stored fragment id to its content hash, for the fragments given. */
export async function fragmentHashes(db: Db, fragments: FragmentRow[]): Promise<Map<string, string>> {
  const rows = await db.query<{ id: string; content_hash: string }>(
    `SELECT id, content_hash FROM prompt_fragments WHERE id = ANY($1::text[])`,
    [fragments.map((f) => f.id)],
  );
  return new Map(rows.map((r) => [r.id, r.content_hash.trim()]));
}

/** Dedup key (see dedupKey) to the first stored memory with it, for the keys of `mems` (sql/009). */
export async function lookupDedupOwners(db: Db, mems: MemoryRow[]): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  if (mems.length === 0) return out;
  const rows = await db.query<{ id: string; user_id: string; dedup_hash: string }>(
    `SELECT id, user_id, dedup_hash FROM memory_dedup_owners($1::text[], $2::text[])`,
    [mems.map((x) => x.userId), mems.map((x) => x.dedupHash)],
  );
  for (const r of rows) out.set(dedupKey(r.user_id, r.dedup_hash.trim()), r.id);
  return out;
}

/** The default fragments the target does not hold; all of them when there is no target. */
export async function missingDefaultFragments(db: Db | null): Promise<FragmentRow[]> {
  const defaults = defaultFragments();
  if (!db) return defaults;
  const present = await db.query<{ id: string }>(`SELECT id FROM prompt_fragments WHERE id = ANY($1::text[])`, [
    defaults.map((d) => d.id),
  ]);
  const have = new Set(present.map((p) => p.id));
  return defaults.filter((d) => !have.has(d.id));
}

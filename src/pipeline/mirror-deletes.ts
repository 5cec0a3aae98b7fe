// `migrate --mirror-deletes`: a catch-up run also removes from Postgres the records of source
// rows that were deleted from the SQLite file since an earlier run (a stored memory, a
// duplicate record, a skip record, a prompt fragment). Only rows the migration wrote are
// candidates: a memory or fragment an app inserted in Postgres has a random uuid, not
// memory_migrate_uuid(id), and is never touched, nor are the 'default:<category>' fragments
// or duplicate records an app wrote (duplicate_id NULL).
//
// It runs before the load, in one transaction together with its ledger record. Deleting a
// memory cascades the duplicate records whose original it was; those duplicate rows are
// still in the file and now recorded nowhere, so the load that follows treats them as new:
// each is stored, or recorded again as a duplicate of a row that is stored, and verify finds
// every row of the file accounted for. The report counts them as reloadedDuplicates.
import type { Db } from '../postgres/connection.js';
import { recordCounts } from '../postgres/ledger.js';
import type { SourceFile } from '../source/reader.js';
import { storableText, SYSTEM_PROMPTS_USER } from '../source/rules.js';
import { shardOf } from '../source/shard.js';
import type { DeletedCounts } from '../report.js';

export interface MirrorScope {
  users: string[];
  shard: { index: number; count: number } | null;
}

export function noDeletes(): DeletedCounts {
  return { memories: 0, duplicates: 0, skips: 0, fragments: 0, reloadedDuplicates: 0 };
}

// Source ids sent per statement: the client holds one page, the server the whole id list.
const PAGE = 2000;

const SOURCE = 'mm_mirror_source_ids';
const GONE = 'mm_mirror_gone';
const notInSource = (col: string) => `NOT EXISTS (SELECT 1 FROM ${SOURCE} s WHERE s.id = ${col})`;

export async function mirrorDeletes(
  db: Db,
  source: SourceFile,
  o: { scope: MirrorScope; dryRun: boolean; runId: number | null },
): Promise<DeletedCounts> {
  return db.transaction(async (tx) => {
    await tx.exec(`CREATE TEMP TABLE ${SOURCE} (id text NOT NULL) ON COMMIT DROP`);
    // Every id of the file, not only the scope's: a row whose user changed to one of another
    // shard is still in the file, and that shard's load updates it.
    let page: string[] = [];
    const send = async () => {
      await tx.query(`INSERT INTO ${SOURCE} SELECT unnest($1::text[])`, [page]);
      page = [];
    };
    for (const id of source.ids()) {
      // As the migration records ids (PostgreSQL text cannot hold U+0000).
      page.push(storableText(id));
      if (page.length === PAGE) await send();
    }
    if (page.length > 0) await send();
    await tx.exec(`CREATE INDEX ON ${SOURCE} (id)`);
    await tx.exec(`ANALYZE ${SOURCE}`);

    await tx.exec(`CREATE TEMP TABLE ${GONE} (kind text NOT NULL, id text NOT NULL, user_id text) ON COMMIT DROP`);
    await tx.query(
      `INSERT INTO ${GONE}
       SELECT 'memory', m.id, m.user_id FROM memories m
        WHERE ${notInSource('m.id')} AND m.uuid = memory_migrate_uuid(m.id)
       UNION ALL
       SELECT DISTINCT 'duplicate', d.duplicate_id, d.user_id FROM memory_duplicates d
        WHERE d.duplicate_id IS NOT NULL AND ${notInSource('d.duplicate_id')}
       UNION ALL
       SELECT 'skip', k.source_id, k.user_id FROM migration_skips k
        WHERE ${notInSource('k.source_id')}
       UNION ALL
       SELECT 'fragment', f.id, $1 FROM prompt_fragments f
        WHERE f.id NOT LIKE 'default:%' AND ${notInSource('f.id')} AND f.uuid = memory_migrate_uuid(f.id)`,
      [SYSTEM_PROMPTS_USER],
    );
    await keepScope(tx, o.scope);

    // Counted before anything is deleted: the cascade below would remove these records.
    const [r] = await tx.query<{ n: number }>(
      `SELECT count(DISTINCT d.duplicate_id)::int AS n FROM memory_duplicates d
        WHERE d.original_id IN (SELECT id FROM ${GONE} WHERE kind = 'memory')
          AND d.duplicate_id IS NOT NULL
          AND d.duplicate_id NOT IN (SELECT id FROM ${GONE} WHERE kind = 'duplicate')
          AND NOT EXISTS (SELECT 1 FROM memories m WHERE m.id = d.duplicate_id)`,
    );
    // A dry run counts the rows each DELETE would remove; a real run counts what it removed.
    const remove = async (table: string, column: string, kind: string) => {
      const where = `${column} IN (SELECT id FROM ${GONE} WHERE kind = '${kind}')`;
      const sql = o.dryRun
        ? `SELECT count(*)::int AS n FROM ${table} WHERE ${where}`
        : `WITH gone AS (DELETE FROM ${table} WHERE ${where} RETURNING 1) SELECT count(*)::int AS n FROM gone`;
      const [c] = await tx.query<{ n: number }>(sql);
      return Number(c!.n);
    };
    // Duplicate records first: a vanished duplicate of a vanished memory is counted as a
    // duplicate deleted, not as one that cascaded.
    const duplicates = await remove('memory_duplicates', 'duplicate_id', 'duplicate');
    const skips = await remove('migration_skips', 'source_id', 'skip');
    const fragments = await remove('prompt_fragments', 'id', 'fragment');
    const memories = await remove('memories', 'id', 'memory');
    const deleted: DeletedCounts = { memories, duplicates, skips, fragments, reloadedDuplicates: Number(r!.n) };
    if (!o.dryRun && o.runId !== null) await recordCounts(tx, o.runId, { deleted });
    return deleted;
  });
}

/**
 * Keeps the records of the run's users and shard only. A shard is decided in JavaScript
 * (shardOf, as the reader does): the candidates' distinct users are few next to their rows.
 */
async function keepScope(tx: Db, scope: MirrorScope): Promise<void> {
  if (scope.users.length === 0 && !scope.shard) return;
  const wanted = new Set(scope.users.map(storableText));
  const users = await tx.query<{ u: string | null }>(`SELECT DISTINCT user_id AS u FROM ${GONE}`);
  const keep = users
    .map(({ u }) => u)
    .filter((u) => (wanted.size === 0 || (u !== null && wanted.has(u))) && (!scope.shard || shardOf(u, scope.shard.count) === scope.shard.index));
  await tx.query(
    `DELETE FROM ${GONE} WHERE CASE WHEN user_id IS NULL THEN NOT $2::boolean ELSE user_id <> ALL($1::text[]) END`,
    [keep.filter((u) => u !== null), keep.includes(null)],
  );
}

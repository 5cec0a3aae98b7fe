// Every source row accounted for: stored, a recorded duplicate, a recorded skip, a fragment, or
// pending because the last run was limited to some users, a shard or N rows. A row recorded as
// rejected (PostgreSQL cannot store it) is not accounted for: it is named until it is fixed. Per-user counts
// must add up, nothing may be in Postgres that the file lacks, and each stored row's user,
// metadata and timestamps are compared (by PostgreSQL, so big numbers are exact).
import type { SourceFile } from '../source/reader.js';
import { shardOf } from '../source/shard.js';
import { storableText, SYSTEM_PROMPTS_USER } from '../source/rules.js';
import type { Db } from '../postgres/connection.js';
import { MAX_REPORTED, recordChange, type RecordMismatch, type UserCounts, type VerifyReport } from './report.js';
import { migrationWindow } from '../postgres/ledger.js';
import { instantText } from '../source/timestamps.js';
import { withUserId } from '../source/metadata.js';

const PAGE = 2000;

/** What the last committed run was meant to migrate. */
export interface Scope {
  users: string[];
  limit: number | null;
  shard: { index: number; count: number } | null;
  /** The run kept each memory's user in its metadata (migrate --user-in-metadata). */
  userInMetadata: boolean;
}

export interface Reconciled {
  /** Source rowids of the rows stored in memories: what the sample is drawn from. */
  memoryRowids: number[];
  /** Fragments found in prompt_fragments, and in-scope fragments that are not. */
  fragmentIds: Set<string>;
  fragmentsMissing: number;
  /** Fragments an app added in Postgres since the migration (not in the file). */
  fragmentsAdded: number;
}

const key = (u: string | null) => (u === null ? '(null)' : u);

function emptyCounts(): UserCounts {
  return { sqlite: 0, pending: 0, memories: 0, duplicates: 0, skipped: 0, fragments: 0, postgres: 0 };
}

export async function reconcile(
  db: Db,
  source: SourceFile,
  scope: Scope,
  report: VerifyReport,
  mismatch: RecordMismatch,
): Promise<Reconciled> {
  const users = new Map<string, UserCounts>();
  const u = (user: string | null) => {
    let c = users.get(key(user));
    if (!c) users.set(key(user), (c = emptyCounts()));
    return c;
  };
  const memoryRowids: number[] = [];
  const fragmentIds = new Set<string>();
  const sourceIds = new Set<string>();
  /** Rows the app moved to another user since the migration: [stored under, source's user]. */
  const movedSinceMigration: [string | null, string | null][] = [];
  let fragmentsMissing = 0;
  const c = report.counts;
  const since = await migrationWindow(db);

  const userSet = scope.users.length > 0 ? new Set(scope.users) : null;
  let inFilter = 0;
  for (const page of chunks(source.keys(), PAGE)) {
    const rows = page.map((p) => {
      const passes = (!userSet || (p.userId !== null && userSet.has(p.userId))) && (!scope.shard || shardOf(p.userId, scope.shard.count) === scope.shard.index);
      const inScope = passes && (scope.limit === null || inFilter < scope.limit);
      if (passes) inFilter++;
      // As the migration records them: PostgreSQL text cannot hold U+0000 (see storableText).
      return {
        rowid: p.rowid,
        id: storableText(p.id),
        user: p.userId === null ? null : storableText(p.userId),
        inScope,
        // What the migration stored: with --user-in-metadata, the user added (as a memory).
        md: scope.userInMetadata && p.userId !== null && p.userId !== SYSTEM_PROMPTS_USER ? withUserId(p.metadataJson, p.userId) : p.metadataJson,
        created: instantText(p.createdAt),
        updated: instantText(p.updatedAt ?? p.createdAt),
      };
    });
    // Metadata and timestamps of every stored row, compared by PostgreSQL: jsonb equality
    // is exact for numbers of any size, where a JavaScript round trip would round them.
    const found = await db.query<StoredRowCheck>(
      `SELECT x.id, m.user_id AS m_user,
              m.id IS NOT NULL AND m.metadata IS DISTINCT FROM x.md::jsonb AS md_differs,
              m.id IS NOT NULL AND x.created IS NOT NULL AND m.created_at IS DISTINCT FROM x.created AS created_differs,
              m.id IS NOT NULL AND x.updated IS NOT NULL AND m.updated_at IS DISTINCT FROM x.updated AS updated_differs,
              m.updated_at > $2::timestamptz AS changed_since,
              to_char(m.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.USZ') AS m_created,
              to_char(m.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.USZ') AS m_updated,
              EXISTS (SELECT 1 FROM memory_duplicates d WHERE d.duplicate_id = x.id) AS dup,
              EXISTS (SELECT 1 FROM migration_skips s WHERE s.source_id = x.id AND NOT s.rejected) AS skip,
              (SELECT s.reason FROM migration_skips s WHERE s.source_id = x.id AND s.rejected) AS rejected,
              EXISTS (SELECT 1 FROM prompt_fragments f WHERE f.id = x.id) AS frag
         FROM jsonb_to_recordset($1::text::jsonb) AS x(id text, md text, created timestamptz, updated timestamptz)
         LEFT JOIN memory_keys($3::text[]) m ON m.id = x.id`,
      [JSON.stringify(rows.map((r) => ({ id: r.id, md: r.md, created: r.created, updated: r.updated }))), since.lastFinished, rows.map((r) => r.id)],
    );
    const byId = new Map(found.map((f) => [f.id, f]));
    const metadataDiffers = rows.filter((r) => byId.get(r.id)?.md_differs === true);
    const metadataDetail = metadataDiffers.length > 0 ? await describeMetadataDiffs(db, metadataDiffers) : new Map<string, string>();
    for (const r of rows) {
      sourceIds.add(r.id);
      const uc = u(r.user);
      uc.sqlite++;
      c.sqliteRows++;
      if (r.inScope) c.inScope++;
      const f = byId.get(r.id);
      if (f?.m_user !== null && f?.m_user !== undefined) {
        // updated_at moves with every change of content or metadata (the touch trigger), so a
        // row rollback already took into SQLite has the same updated_at on both sides.
        if (f.changed_since && (f.updated_differs || f.md_differs || f.m_user !== r.user || f.created_differs)) {
          // Written in Postgres after the last run (the app, after cutover): a change since the
          // migration, which rollback takes back into SQLite, not damage. Not sampled: its
          // content and vector are the app's now.
          if (f.m_user !== r.user) movedSinceMigration.push([f.m_user, r.user]);
          const fields = [f.m_user !== r.user && 'user_id', f.md_differs && 'metadata', f.created_differs && 'created_at'].filter(Boolean);
          recordChange(report, {
            id: r.id,
            user: r.user,
            check: 'changed',
            detail: `updated in Postgres at ${f.m_updated}, after the last run${fields.length ? ` (${fields.join(', ')} differ)` : ''}`,
          });
          continue;
        }
        memoryRowids.push(r.rowid);
        if (f.m_user !== r.user) {
          mismatch({ id: r.id, user: r.user, check: 'user_id', detail: `stored under user ${f.m_user}, the source says ${r.user}` });
        }
        if (f.md_differs) mismatch({ id: r.id, user: r.user, check: 'metadata', detail: `metadata differs: ${metadataDetail.get(r.id) ?? 'see the row'}` });
        if (f.created_differs) {
          mismatch({ id: r.id, user: r.user, check: 'created_at', detail: `created_at differs: SQLite ${r.created}, Postgres ${f.m_created}` });
        }
        if (f.updated_differs) {
          mismatch({ id: r.id, user: r.user, check: 'updated_at', detail: `updated_at differs: SQLite ${r.updated}, Postgres ${f.m_updated}` });
        }
      } else if (f?.dup || f?.skip) {
        // Accounted for: a recorded duplicate or a recorded skip.
      } else if (f?.rejected != null) {
        c.rejected++;
        mismatch({ id: r.id, user: r.user, check: 'rejected', detail: `not migrated: ${f.rejected} (fix the row in SQLite and run migrate again)` });
      } else if (f?.frag && r.user === SYSTEM_PROMPTS_USER) {
        fragmentIds.add(r.id);
      } else if (r.inScope) {
        c.missing++;
        if (r.user === SYSTEM_PROMPTS_USER) fragmentsMissing++;
        mismatch({ id: r.id, user: r.user, check: 'missing', detail: 'in SQLite but not in Postgres (not stored, not a recorded duplicate or skip)' });
      } else {
        uc.pending++;
        c.pending++;
      }
    }
  }

  // Rows in Postgres that the SQLite file does not have; those an app added since the
  // migration are listed apart and left out of the per-user counts below.
  const addedPerUser = new Map<string, number>();
  const addedFragments = new Map<string, number>();
  const extraQueries: [string, string][] = [
    // A row the app inserted has a random uuid (the migration's derive from the id), or was
    // created after the migration began.
    [
      'memories',
      `SELECT id, user_id AS u, (uuid <> memory_migrate_uuid(id) OR created_at > $2::timestamptz) AS added,
              to_char(created_at, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS created
         FROM memory_page($1, ${PAGE})`,
    ],
    [
      'memory_duplicates',
      `SELECT DISTINCT duplicate_id AS id, user_id AS u FROM memory_duplicates
        WHERE duplicate_id > $1 AND NOT EXISTS (SELECT 1 FROM memories m WHERE m.id = duplicate_id) ORDER BY duplicate_id LIMIT ${PAGE}`,
    ],
    ['migration_skips', `SELECT source_id AS id, user_id AS u FROM migration_skips WHERE source_id > $1 ORDER BY source_id LIMIT ${PAGE}`],
    [
      'prompt_fragments',
      `SELECT id, '${SYSTEM_PROMPTS_USER}' AS u, (uuid <> memory_migrate_uuid(id) OR created_at > $2::timestamptz) AS added,
              to_char(created_at, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS created
         FROM prompt_fragments WHERE id > $1 AND id NOT LIKE 'default:%' ORDER BY id LIMIT ${PAGE}`,
    ],
  ];
  const mayBeAdded = new Set(['memories', 'prompt_fragments']);
  for (const [table, sql] of extraQueries) {
    let last = '';
    for (;;) {
      const page = await db.query<{ id: string; u: string | null; added?: boolean; created?: string }>(sql, mayBeAdded.has(table) ? [last, since.firstStarted] : [last]);
      if (page.length === 0) break;
      last = page[page.length - 1]!.id;
      for (const r of page) {
        if (sourceIds.has(r.id)) continue;
        if (r.added) {
          const added = table === 'memories' ? addedPerUser : addedFragments;
          added.set(key(r.u), (added.get(key(r.u)) ?? 0) + 1);
          recordChange(report, { id: r.id, user: r.u, check: 'added', detail: `added in Postgres at ${r.created}, not in the SQLite file` });
          continue;
        }
        c.extra++;
        mismatch({ id: r.id, user: r.u, check: 'extra', detail: `in Postgres (${table}) but not in the SQLite file` });
      }
      if (page.length < PAGE) break;
    }
  }
  // The Postgres side, per user. Duplicates and skips are counted once per source id, and not
  // when the id is also stored (a fuzzy match kept as a memory).
  const add = (rows: { u: string | null; n: number }[], field: 'memories' | 'duplicates' | 'skipped' | 'fragments') => {
    for (const r of rows) {
      u(r.u)[field] += Number(r.n);
      c[field] += Number(r.n);
    }
  };
  add(await db.query(`SELECT user_id AS u, count(*)::int AS n FROM memories GROUP BY user_id`), 'memories');
  for (const [user, n] of addedPerUser) {
    u(user === '(null)' ? null : user).memories -= n;
    c.memories -= n;
  }
  for (const [storedUnder, sourceUser] of movedSinceMigration) {
    u(storedUnder).memories--;
    u(sourceUser).memories++;
  }
  add(
    await db.query(
      `SELECT d.user_id AS u, count(DISTINCT d.duplicate_id)::int AS n FROM memory_duplicates d
        WHERE NOT EXISTS (SELECT 1 FROM memories m WHERE m.id = d.duplicate_id) GROUP BY d.user_id`,
    ),
    'duplicates',
  );
  add(
    await db.query(
      `SELECT s.user_id AS u, count(*)::int AS n FROM migration_skips s
        WHERE NOT s.rejected AND NOT EXISTS (SELECT 1 FROM memories m WHERE m.id = s.source_id)
          AND NOT EXISTS (SELECT 1 FROM memory_duplicates d WHERE d.duplicate_id = s.source_id) GROUP BY s.user_id`,
    ),
    'skipped',
  );
  add(
    await db.query(`SELECT '${SYSTEM_PROMPTS_USER}' AS u, count(*)::int AS n FROM prompt_fragments WHERE id NOT LIKE 'default:%' HAVING count(*) > 0`),
    'fragments',
  );
  const fragmentsAdded = addedFragments.get(SYSTEM_PROMPTS_USER) ?? 0;
  if (fragmentsAdded > 0) {
    u(SYSTEM_PROMPTS_USER).fragments -= fragmentsAdded;
    c.fragments -= fragmentsAdded;
  }

  for (const [user, uc] of [...users.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    uc.postgres = uc.memories + uc.duplicates + uc.skipped + uc.fragments;
    const expected = uc.sqlite - uc.pending;
    if (uc.postgres !== expected) {
      mismatch({
        id: null,
        user,
        check: 'count',
        detail:
          `SQLite has ${uc.sqlite} rows${uc.pending ? ` (${uc.pending} pending)` : ''}, so ${expected} expected; Postgres accounts for ${uc.postgres}: ` +
          `${uc.memories} memories + ${uc.duplicates} duplicates + ${uc.skipped} skipped` +
          (uc.fragments ? ` + ${uc.fragments} fragments` : ''),
      });
    }
  }
  report.counts.users = Object.fromEntries(users);
  report.pending = c.pending;

  return { memoryRowids, fragmentIds, fragmentsMissing, fragmentsAdded };
}

/** The items of `items` in arrays of `size` (the last one shorter), each taken as it is reached. */
function* chunks<T>(items: Iterable<T>, size: number): Generator<T[]> {
  let chunk: T[] = [];
  for (const item of items) {
    chunk.push(item);
    if (chunk.length === size) {
      yield chunk;
      chunk = [];
    }
  }
  if (chunk.length > 0) yield chunk;
}

interface StoredRowCheck {
  id: string;
  m_user: string | null;
  md_differs: boolean;
  created_differs: boolean;
  updated_differs: boolean;
  m_created: string | null;
  m_updated: string | null;
  dup: boolean;
  skip: boolean;
  changed_since: boolean | null;
  /** The reason of a rejected record, else null. */
  rejected: string | null;
  frag: boolean;
}

/**
 * For rows whose stored metadata differs from the source's: which top-level keys differ, with
 * both values as PostgreSQL writes them (exact, so a big integer's last digit shows).
 */
async function describeMetadataDiffs(db: Db, rows: { id: string; md: string }[]): Promise<Map<string, string>> {
  const got = await db.query<{ id: string; key: string | null; src: string | null; pg: string | null }>(
    `WITH x AS (SELECT r.id, r.md::jsonb AS md, m.metadata AS pg,
                       jsonb_typeof(r.md::jsonb) = 'object' AND jsonb_typeof(m.metadata) = 'object' AS objects
                  FROM jsonb_to_recordset($1::text::jsonb) AS r(id text, md text) JOIN memory_keys($2::text[]) m ON m.id = r.id)
     SELECT x.id, k.key, (x.md -> k.key)::text AS src, (x.pg -> k.key)::text AS pg
       FROM x CROSS JOIN LATERAL (SELECT jsonb_object_keys(x.md) WHERE x.objects
                                  UNION SELECT jsonb_object_keys(x.pg) WHERE x.objects) AS k(key)
      WHERE (x.md -> k.key) IS DISTINCT FROM (x.pg -> k.key)
     UNION ALL
     SELECT x.id, NULL, x.md::text, x.pg::text FROM x WHERE NOT x.objects
     ORDER BY 1, 2`,
    [JSON.stringify(rows.slice(0, MAX_REPORTED).map((r) => ({ id: r.id, md: r.md }))), rows.slice(0, MAX_REPORTED).map((r) => r.id)],
  );
  const parts = new Map<string, string[]>();
  const cut = (v: string) => (v.length > 60 ? `${v.slice(0, 60)}…` : v);
  for (const g of got) {
    const list = parts.get(g.id) ?? [];
    if (g.key === null) list.push(`SQLite ${cut(g.src ?? 'NULL')}, Postgres ${cut(g.pg ?? 'NULL')}`);
    else if (g.pg === null) list.push(`${g.key} only in SQLite`);
    else if (g.src === null) list.push(`${g.key} only in Postgres`);
    else list.push(`${g.key}: ${cut(g.src)} → ${cut(g.pg)}`);
    parts.set(g.id, list);
  }
  const out = new Map<string, string>();
  for (const [id, list] of parts) out.set(id, list.slice(0, 5).join('; ') + (list.length > 5 ? `; … ${list.length - 5} more keys` : ''));
  return out;
}

// `memory-migrate verify`: the parity gate before cutover. Every source row is accounted for
// (stored, recorded duplicate, recorded skip, fragment, or pending because the last run was
// limited to some users, a shard or N rows), per-user counts add up, a seeded random sample is
// compared field by field with the source, the ivfflat index finds each sampled row from its
// own vector, and the fragments match. Exit 3 on any mismatch, 0 when clean.
import { randomInt } from 'node:crypto';
import { openSource, type SourceFile } from '../source/reader.js';
import { shardOf } from '../source/shard.js';
import type { SourceRow } from '../source/types.js';
import { contentHash } from '../source/canonical.js';
import { tableDimensions } from '../postgres/schema.js';
import { cosineDistanceSql, ivfflatIndexLists, ivfflatProbes } from '../postgres/indexes.js';
import { parseVectorText } from '../postgres/vector-text.js';
import { DEFAULT_OPENAI_MODEL, LOCAL_EMBEDDING_MODEL, modelInfo } from '../embed/models.js';
import { SYSTEM_PROMPTS_USER } from '../source/rules.js';
import type { Db } from '../postgres/connection.js';
import type { Output } from '../output.js';
import { UsageError } from '../errors.js';
import { describeTarget, openTarget, resolveTarget, targetExists, type TargetFlags } from './shared.js';

/** Exit code of a verify run that found a mismatch. */
export const EXIT_MISMATCH = 3;
export const DEFAULT_SAMPLE = 200;
/** Recall@1 below this gets a probes recommendation. */
export const RECALL_TARGET = 0.99;
/** Mismatches kept in the report (the count is always exact). */
const MAX_REPORTED = 1000;
const PAGE = 2000;

export interface VerifyFlags extends TargetFlags {
  sqlite: string;
  sample?: number;
  seed?: number;
  sourceModel?: string;
  embedder?: string;
  model?: string;
  dimensions?: number;
  json?: boolean;
}

export interface VerifyMismatch {
  /** The row (source id), or null for a count or schema mismatch. */
  id: string | null;
  user: string | null;
  /** What was checked: count, missing, extra, user_id, content, metadata, created_at, updated_at, embedding, vector, fragment, schema. */
  check: string;
  detail: string;
}

export interface UserCounts {
  /** Rows of this user in the SQLite file. */
  sqlite: number;
  /** Rows not migrated because the last run did not cover them (--user, --shard, --limit). */
  pending: number;
  /** Postgres side: stored memories, recorded duplicates, recorded skips, fragments. */
  memories: number;
  duplicates: number;
  skipped: number;
  fragments: number;
  postgres: number;
}

export interface VerifyReport {
  ok: boolean;
  command: 'verify';
  source: string;
  target: string;
  /** The ledger row that says what was meant to be migrated. */
  run: { id: number; users: string[]; limit: number | null; shard: string | null; sourceChanged: boolean } | null;
  expected: { model: string | null; dimensions: number | null; sourceModel: string | null };
  seed: number;
  sample: number;
  /** Sampled rows compared field by field. */
  checked: number;
  sampleIds: string[];
  /** recall@1 of the ivfflat index over the sampled rows, at the probes the store uses; null without an index. */
  recall: number | null;
  index: { name: string; lists: number; probes: number; suggestedProbes: number | null; fix: string | null } | null;
  /** Source rows the last run was not meant to migrate and that are not in Postgres. */
  pending: number;
  counts: {
    sqliteRows: number;
    inScope: number;
    memories: number;
    duplicates: number;
    skipped: number;
    fragments: number;
    pending: number;
    missing: number;
    extra: number;
    users: Record<string, UserCounts>;
  };
  fragments: { source: number; target: number; checked: number };
  mismatchCount: number;
  mismatches: VerifyMismatch[];
  notes: string[];
  durationMs: number;
}

interface LedgerRun {
  id: number;
  source_sha256: string;
  options: Record<string, unknown>;
}

/** The last committed migration run, preferring one of this source file. */
export async function lastCommittedRun(db: Db, sourceSha256?: string): Promise<LedgerRun | null> {
  const has = await db.query(`SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = current_schema() AND c.relname = 'migration_runs'`);
  if (has.length === 0) return null;
  const rows = await db.query<{ id: number; source_sha256: string; options: string }>(
    `SELECT id, source_sha256, options::text AS options FROM migration_runs WHERE status = 'committed'
      ORDER BY (source_sha256 = $1) DESC, id DESC LIMIT 1`,
    [sourceSha256 ?? ''],
  );
  const r = rows[0];
  if (!r) return null;
  return { id: Number(r.id), source_sha256: String(r.source_sha256).trim(), options: JSON.parse(r.options) };
}

/** Embedder flags as given, else as the last committed run recorded them. */
export function embedderFromRun(
  flags: { embedder?: string; model?: string; dimensions?: number },
  run: LedgerRun | null,
): { embedder: string; model: string | undefined; dimensions: number | undefined; fromLedger: boolean } {
  if (flags.embedder !== undefined || flags.model !== undefined || !run) {
    const embedder = flags.embedder ?? (flags.model === LOCAL_EMBEDDING_MODEL ? 'local' : 'openai');
    return { embedder, model: flags.model, dimensions: flags.dimensions, fromLedger: false };
  }
  const o = run.options;
  return {
    embedder: typeof o['embedder'] === 'string' ? (o['embedder'] as string) : 'openai',
    model: typeof o['model'] === 'string' ? (o['model'] as string) : undefined,
    dimensions: flags.dimensions ?? (typeof o['dimensions'] === 'number' ? (o['dimensions'] as number) : undefined),
    fromLedger: true,
  };
}

/** mulberry32: small, fast, and the same sequence on every platform. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** k distinct items of `items`, chosen by a seeded partial Fisher-Yates shuffle. */
export function seededSample<T>(items: readonly T[], k: number, seed: number): T[] {
  const a = items.slice();
  const next = prng(seed);
  const n = Math.min(k, a.length);
  for (let i = 0; i < n; i++) {
    const j = i + Math.floor(next() * (a.length - i));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a.slice(0, n);
}

const key = (u: string | null) => (u === null ? '(null)' : u);

function emptyCounts(): UserCounts {
  return { sqlite: 0, pending: 0, memories: 0, duplicates: 0, skipped: 0, fragments: 0, postgres: 0 };
}

/** Where two texts first differ, with a little context from each side. */
export function describeTextDiff(a: string, b: string): string {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  const from = Math.max(0, i - 20);
  const cut = (s: string) => JSON.stringify((from > 0 ? '…' : '') + s.slice(from, i + 30) + (s.length > i + 30 ? '…' : ''));
  return `differs at character ${i} (lengths ${a.length} and ${b.length}): SQLite ${cut(a)}, Postgres ${cut(b)}`;
}

export async function verify(flags: VerifyFlags, out: Output): Promise<{ report: VerifyReport; exitCode: number }> {
  const started = Date.now();
  const sampleSize = flags.sample ?? DEFAULT_SAMPLE;
  const seed = flags.seed ?? randomInt(0, 2 ** 31 - 1);
  const source = openSource(flags.sqlite);
  const target = resolveTarget(flags, out);
  const report: VerifyReport = {
    ok: false,
    command: 'verify',
    source: flags.sqlite,
    target: describeTarget(target),
    run: null,
    expected: { model: null, dimensions: null, sourceModel: null },
    seed,
    sample: sampleSize,
    checked: 0,
    sampleIds: [],
    recall: null,
    index: null,
    pending: 0,
    counts: { sqliteRows: 0, inScope: 0, memories: 0, duplicates: 0, skipped: 0, fragments: 0, pending: 0, missing: 0, extra: 0, users: {} },
    fragments: { source: 0, target: 0, checked: 0 },
    mismatchCount: 0,
    mismatches: [],
    notes: [],
    durationMs: 0,
  };
  const mismatch = (m: VerifyMismatch) => {
    report.mismatchCount++;
    if (report.mismatches.length < MAX_REPORTED) report.mismatches.push(m);
  };

  let db: Db | null = null;
  try {
    if (!targetExists(target)) {
      throw new UsageError(`${report.target} does not exist: nothing was migrated there (run memory-migrate migrate first, or pass the --pglite-dir / --database-url it used)`);
    }
    db = await openTarget(target);
    const tableDims = await tableDimensions(db, 'memories');
    if (tableDims === null) {
      throw new UsageError(`${report.target} has no memories table: nothing was migrated there (run memory-migrate migrate first)`);
    }
    const sha = source.sha256();
    const run = await lastCommittedRun(db, sha);
    const opts = run?.options ?? {};
    const users = Array.isArray(opts['users']) ? (opts['users'] as unknown[]).map(String) : [];
    const limit = typeof opts['limit'] === 'number' ? (opts['limit'] as number) : null;
    const shardText = typeof opts['shard'] === 'string' ? (opts['shard'] as string) : null;
    const shard = shardText && /^\d+\/\d+$/.test(shardText) ? { index: Number(shardText.split('/')[0]), count: Number(shardText.split('/')[1]) } : null;
    if (run) {
      report.run = { id: run.id, users, limit, shard: shardText, sourceChanged: run.source_sha256 !== sha };
      if (run.source_sha256 !== sha) {
        report.notes.push(`the SQLite file changed after run #${run.id} (sha256 differs): rows written since then show up as missing`);
      }
    } else {
      report.notes.push('no committed migration run in the ledger: every source row is expected in Postgres');
    }

    // What the vectors should be.
    const emb = embedderFromRun(flags, run);
    let model = emb.model ?? (emb.embedder === 'local' ? LOCAL_EMBEDDING_MODEL : run || flags.embedder ? DEFAULT_OPENAI_MODEL : undefined);
    if (model === undefined) {
      const [top] = await db.query<{ m: string | null }>(
        `SELECT embedding_model AS m FROM memories WHERE embedding_model IS NOT NULL GROUP BY embedding_model ORDER BY count(*) DESC LIMIT 1`,
      );
      model = top?.m ?? undefined;
    }
    const dims = emb.dimensions ?? (model ? modelInfo(model)?.dimensions : undefined) ?? tableDims;
    const sourceModel = flags.sourceModel ?? (typeof opts['sourceModel'] === 'string' ? (opts['sourceModel'] as string) : null);
    report.expected = { model: model ?? null, dimensions: dims, sourceModel };
    if (tableDims !== dims) {
      mismatch({ id: null, user: null, check: 'schema', detail: `memories.embedding is vector(${tableDims}), expected ${dims} dimensions for ${model}` });
    }

    const reconciled = await reconcile(db, source, { users, limit, shard }, report, mismatch);
    await sampleCheck(db, source, reconciled.memoryRowids, { sampleSize, seed, model: model ?? null, dims, sourceModel }, report, mismatch);
    await checkFragments(db, source, reconciled.fragmentIds, reconciled.fragmentsMissing, report, mismatch);
  } finally {
    await db?.close().catch(() => {});
    source.close();
  }
  report.ok = report.mismatchCount === 0;
  report.durationMs = Date.now() - started;
  return { report, exitCode: report.ok ? 0 : EXIT_MISMATCH };
}

// ---------------------------------------------------------------- every row accounted for

interface Scope {
  users: string[];
  limit: number | null;
  shard: { index: number; count: number } | null;
}

async function reconcile(
  db: Db,
  source: SourceFile,
  scope: Scope,
  report: VerifyReport,
  mismatch: (m: VerifyMismatch) => void,
): Promise<{ memoryRowids: number[]; fragmentIds: Set<string>; fragmentsMissing: number }> {
  const users = new Map<string, UserCounts>();
  const u = (user: string | null) => {
    let c = users.get(key(user));
    if (!c) users.set(key(user), (c = emptyCounts()));
    return c;
  };
  const memoryRowids: number[] = [];
  const fragmentIds = new Set<string>();
  const sourceIds = new Set<string>();
  let fragmentsMissing = 0;
  const c = report.counts;

  const userSet = scope.users.length > 0 ? new Set(scope.users) : null;
  let inFilter = 0;
  for (const page of chunks(source.keys(), PAGE)) {
    const rows = page.map((p) => {
      const passes = (!userSet || (p.userId !== null && userSet.has(p.userId))) && (!scope.shard || shardOf(p.userId, scope.shard.count) === scope.shard.index);
      const inScope = passes && (scope.limit === null || inFilter < scope.limit);
      if (passes) inFilter++;
      return {
        rowid: p.rowid,
        id: p.id,
        user: p.userId,
        inScope,
        md: p.metadataJson,
        created: p.createdAt?.toISOString() ?? null,
        updated: (p.updatedAt ?? p.createdAt)?.toISOString() ?? null,
      };
    });
    // Metadata and timestamps of every stored row, compared by PostgreSQL: jsonb equality
    // is exact for numbers of any size, where a JavaScript round trip would round them.
    const found = await db.query<StoredRowCheck>(
      `SELECT x.id, m.user_id AS m_user,
              m.id IS NOT NULL AND m.metadata IS DISTINCT FROM x.md::jsonb AS md_differs,
              m.id IS NOT NULL AND x.created IS NOT NULL AND m.created_at IS DISTINCT FROM x.created AS created_differs,
              m.id IS NOT NULL AND x.updated IS NOT NULL AND m.updated_at IS DISTINCT FROM x.updated AS updated_differs,
              to_char(m.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.USZ') AS m_created,
              to_char(m.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.USZ') AS m_updated,
              EXISTS (SELECT 1 FROM memory_duplicates d WHERE d.duplicate_id = x.id) AS dup,
              EXISTS (SELECT 1 FROM migration_skips s WHERE s.source_id = x.id) AS skip,
              EXISTS (SELECT 1 FROM prompt_fragments f WHERE f.id = x.id) AS frag
         FROM jsonb_to_recordset($1::text::jsonb) AS x(id text, md text, created timestamptz, updated timestamptz)
         LEFT JOIN memories m ON m.id = x.id`,
      [JSON.stringify(rows.map((r) => ({ id: r.id, md: r.md, created: r.created, updated: r.updated })))],
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

  // The Postgres side, per user. Duplicates and skips are counted once per source id, and not
  // when the id is also stored (a fuzzy match kept as a memory).
  const add = (rows: { u: string | null; n: number }[], field: 'memories' | 'duplicates' | 'skipped' | 'fragments') => {
    for (const r of rows) {
      u(r.u)[field] += Number(r.n);
      c[field] += Number(r.n);
    }
  };
  add(await db.query(`SELECT user_id AS u, count(*)::int AS n FROM memories GROUP BY user_id`), 'memories');
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
        WHERE NOT EXISTS (SELECT 1 FROM memories m WHERE m.id = s.source_id)
          AND NOT EXISTS (SELECT 1 FROM memory_duplicates d WHERE d.duplicate_id = s.source_id) GROUP BY s.user_id`,
    ),
    'skipped',
  );
  add(
    await db.query(`SELECT '${SYSTEM_PROMPTS_USER}' AS u, count(*)::int AS n FROM prompt_fragments WHERE id NOT LIKE 'default:%' HAVING count(*) > 0`),
    'fragments',
  );

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

  // Rows in Postgres that the SQLite file does not have.
  const extraQueries: [string, string][] = [
    ['memories', `SELECT id, user_id AS u FROM memories WHERE id > $1 ORDER BY id LIMIT ${PAGE}`],
    [
      'memory_duplicates',
      `SELECT DISTINCT duplicate_id AS id, user_id AS u FROM memory_duplicates
        WHERE duplicate_id > $1 AND NOT EXISTS (SELECT 1 FROM memories m WHERE m.id = duplicate_id) ORDER BY duplicate_id LIMIT ${PAGE}`,
    ],
    ['migration_skips', `SELECT source_id AS id, user_id AS u FROM migration_skips WHERE source_id > $1 ORDER BY source_id LIMIT ${PAGE}`],
    ['prompt_fragments', `SELECT id, '${SYSTEM_PROMPTS_USER}' AS u FROM prompt_fragments WHERE id > $1 AND id NOT LIKE 'default:%' ORDER BY id LIMIT ${PAGE}`],
  ];
  for (const [table, sql] of extraQueries) {
    let last = '';
    for (;;) {
      const page = await db.query<{ id: string; u: string | null }>(sql, [last]);
      if (page.length === 0) break;
      last = page[page.length - 1]!.id;
      for (const r of page) {
        if (sourceIds.has(r.id)) continue;
        c.extra++;
        mismatch({ id: r.id, user: r.u, check: 'extra', detail: `in Postgres (${table}) but not in the SQLite file` });
      }
      if (page.length < PAGE) break;
    }
  }
  return { memoryRowids, fragmentIds, fragmentsMissing };
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
                  FROM jsonb_to_recordset($1::text::jsonb) AS r(id text, md text) JOIN memories m ON m.id = r.id)
     SELECT x.id, k.key, (x.md -> k.key)::text AS src, (x.pg -> k.key)::text AS pg
       FROM x CROSS JOIN LATERAL (SELECT jsonb_object_keys(x.md) WHERE x.objects
                                  UNION SELECT jsonb_object_keys(x.pg) WHERE x.objects) AS k(key)
      WHERE (x.md -> k.key) IS DISTINCT FROM (x.pg -> k.key)
     UNION ALL
     SELECT x.id, NULL, x.md::text, x.pg::text FROM x WHERE NOT x.objects
     ORDER BY 1, 2`,
    [JSON.stringify(rows.slice(0, MAX_REPORTED).map((r) => ({ id: r.id, md: r.md })))],
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

// ---------------------------------------------------------------- the sample, field by field

interface SampleOptions {
  sampleSize: number;
  seed: number;
  model: string | null;
  dims: number;
  sourceModel: string | null;
}

interface TargetRow {
  id: string;
  user_id: string;
  content: string;
  content_hash: string;
  dims: number | null;
  embedding_model: string | null;
  vec: string | null;
}

async function sampleCheck(
  db: Db,
  source: SourceFile,
  memoryRowids: number[],
  o: SampleOptions,
  report: VerifyReport,
  mismatch: (m: VerifyMismatch) => void,
): Promise<void> {
  const picked = seededSample(memoryRowids, o.sampleSize, o.seed).sort((a, b) => a - b);
  const rows: SourceRow[] = [];
  for (const rowid of picked) {
    for (const r of source.rows({ afterRowid: rowid - 1, limit: 1 })) rows.push(r);
  }
  report.sampleIds = rows.map((r) => r.id);
  const targetRows = new Map<string, TargetRow>();
  for (let i = 0; i < rows.length; i += 500) {
    const ids = rows.slice(i, i + 500).map((r) => r.id);
    const got = await db.query<TargetRow>(
      `SELECT id, user_id, content, content_hash,
              CASE WHEN embedding IS NULL THEN NULL ELSE vector_dims(embedding) END AS dims,
              embedding_model, embedding::text AS vec
         FROM memories WHERE id IN (SELECT jsonb_array_elements_text($1::text::jsonb))`,
      [JSON.stringify(ids)],
    );
    for (const g of got) targetRows.set(g.id, g);
  }

  const reuse = o.sourceModel !== null && o.sourceModel === o.model;
  const searchable: { id: string; vec: string }[] = [];
  for (const src of rows) {
    const t = targetRows.get(src.id);
    const user = src.userId;
    if (!t) {
      mismatch({ id: src.id, user, check: 'missing', detail: 'sampled row disappeared from Postgres during verify' });
      continue;
    }
    report.checked++;
    const m = (check: string, detail: string) => mismatch({ id: src.id, user, check, detail });
    if (!Buffer.from(t.content, 'utf8').equals(Buffer.from(src.content, 'utf8'))) {
      m('content', `content ${describeTextDiff(src.content, t.content)}`);
    } else if (String(t.content_hash).trim() !== contentHash(src.content)) {
      m('content', 'content_hash does not match the content');
    }
    if (t.vec === null) {
      m('embedding', 'no embedding stored');
      continue;
    }
    let vectorOk = true;
    if (Number(t.dims) !== o.dims) {
      m('embedding', `embedding has ${t.dims} dimensions, expected ${o.dims}`);
      vectorOk = false;
    }
    if (o.model !== null && t.embedding_model !== o.model) {
      m('embedding', `embedding_model is ${t.embedding_model ?? 'NULL'}, expected ${o.model}`);
    }
    if (reuse && src.embedding.vector && src.embedding.vector.length === o.dims) {
      const stored = parseVectorText(t.vec);
      const a = Buffer.from(stored.buffer, stored.byteOffset, stored.byteLength);
      const b = Buffer.from(src.embedding.vector.buffer, src.embedding.vector.byteOffset, src.embedding.vector.byteLength);
      if (!a.equals(b)) {
        let at = 0;
        while (at < stored.length && Object.is(stored[at], src.embedding.vector[at])) at++;
        m('vector', `reused vector differs from the source vector (${o.sourceModel}) at index ${at}: ${src.embedding.vector[at]} → ${stored[at]}`);
      }
    }
    if (vectorOk) searchable.push({ id: src.id, vec: t.vec });
  }

  await measureRecall(db, o.dims, searchable, report);
}

// ---------------------------------------------------------------- index recall

async function measureRecall(db: Db, dims: number, rows: { id: string; vec: string }[], report: VerifyReport): Promise<void> {
  const lists = await ivfflatIndexLists(db, 'memories_embedding_idx');
  if (lists === null) {
    if (rows.length > 0) report.notes.push('no vector index memories_embedding_idx: recall not measured (migrate builds it after loading)');
    return;
  }
  if (rows.length === 0) return;
  const probes = ivfflatProbes(lists);
  const recallAt = async (p: number): Promise<number> => {
    let hits = 0;
    await db.transaction(async (tx) => {
      // Force the index: on a small table the planner would scan, which always "finds" the row.
      await tx.exec(`SET LOCAL ivfflat.probes = ${p}; SET LOCAL enable_seqscan = off;`);
      for (const r of rows) {
        const [top] = await tx.query<{ id: string; distance: number }>(
          `SELECT id, ${cosineDistanceSql(dims, '$1')} AS distance FROM memories WHERE embedding IS NOT NULL ORDER BY distance LIMIT 1`,
          [r.vec],
        );
        // A row whose vector is identical (the same text under another user) may come first.
        if (top && (top.id === r.id || Number(top.distance) <= 1e-6)) hits++;
      }
    });
    return hits / rows.length;
  };
  const recall = await recallAt(probes);
  report.recall = recall;
  report.index = { name: 'memories_embedding_idx', lists, probes, suggestedProbes: null, fix: null };
  if (recall < RECALL_TARGET) {
    const fix = await findProbes(recallAt, probes, lists);
    report.index.suggestedProbes = fix.probes;
    report.index.fix =
      `recall@1 is ${recall.toFixed(3)} at ivfflat.probes = ${probes} (lists = ${lists}); probes = ${fix.probes} gives ${fix.recall.toFixed(3)}: ` +
      `SET ivfflat.probes = ${fix.probes}; (per session) or ALTER DATABASE <db> SET ivfflat.probes = ${fix.probes};`;
  }
}

/**
 * The smallest probes whose recall reaches the target: doubling from the current setting
 * until it is reached, then bisecting (recall only grows with probes; probes = lists is an
 * exact search, so the search always ends).
 */
export async function findProbes(
  recallAt: (probes: number) => Promise<number>,
  probes: number,
  lists: number,
  targetRecall = RECALL_TARGET,
): Promise<{ probes: number; recall: number }> {
  let lo = probes; // known to fall short
  let hi = lo;
  let hiRecall = 0;
  for (let p = Math.min(lists, Math.max(probes + 1, probes * 2)); ; p = Math.min(lists, p * 2)) {
    hiRecall = await recallAt(p);
    hi = p;
    if (hiRecall >= targetRecall || p >= lists) break;
    lo = p;
  }
  if (hiRecall < targetRecall) return { probes: hi, recall: hiRecall };
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    const r = await recallAt(mid);
    if (r >= targetRecall) {
      hi = mid;
      hiRecall = r;
    } else {
      lo = mid;
    }
  }
  return { probes: hi, recall: hiRecall };
}

// ---------------------------------------------------------------- fragments

async function checkFragments(
  db: Db,
  source: SourceFile,
  found: Set<string>,
  missing: number,
  report: VerifyReport,
  mismatch: (m: VerifyMismatch) => void,
): Promise<void> {
  const target = await db.query<{ id: string; content: string }>(`SELECT id, content FROM prompt_fragments WHERE id NOT LIKE 'default:%'`);
  const byId = new Map(target.map((t) => [t.id, t.content]));
  report.fragments.target = target.length;
  report.fragments.source = found.size + missing;
  if (report.fragments.source !== report.fragments.target) {
    mismatch({
      id: null,
      user: SYSTEM_PROMPTS_USER,
      check: 'fragment',
      detail: `${report.fragments.source} fragments in SQLite (system_prompts rows, not skipped, in scope), ${report.fragments.target} migrated fragments in Postgres`,
    });
  }
  if (found.size === 0) return;
  for (const row of source.rows({ users: [SYSTEM_PROMPTS_USER] })) {
    if (!found.has(row.id)) continue;
    const content = byId.get(row.id);
    report.fragments.checked++;
    if (content === undefined || !Buffer.from(content, 'utf8').equals(Buffer.from(row.content, 'utf8'))) {
      mismatch({
        id: row.id,
        user: SYSTEM_PROMPTS_USER,
        check: 'fragment',
        detail: content === undefined ? 'fragment not in prompt_fragments' : `fragment content ${describeTextDiff(row.content, content)}`,
      });
    }
  }
}

// ---------------------------------------------------------------- output

export function printVerifyReport(r: VerifyReport, out: Output): void {
  if (out.json) {
    out.result(r);
    return;
  }
  out.info(`Verifying ${r.source} against ${r.target}`);
  if (r.run) {
    const scope = [
      r.run.users.length ? `users ${r.run.users.join(', ')}` : 'all users',
      r.run.shard ? `shard ${r.run.shard}` : null,
      r.run.limit !== null ? `first ${r.run.limit} rows` : null,
    ].filter(Boolean);
    out.info(`Scope: run #${r.run.id} migrated ${scope.join(', ')}`);
  }
  for (const n of r.notes) out.info(`Note: ${n}`);
  const c = r.counts;
  out.info(
    `Rows: ${c.sqliteRows} in SQLite = ${c.memories} memories + ${c.duplicates} recorded duplicates + ${c.skipped} recorded skips + ` +
      `${c.fragments} fragments + ${c.pending} pending (${c.missing} missing, ${c.extra} extra)`,
  );
  if (r.pending > 0) {
    const pendingUsers = Object.entries(c.users).filter(([, u]) => u.pending > 0);
    out.info(`Pending (not covered by the last run, not in Postgres): ${r.pending} rows of ${pendingUsers.length} users — run migrate without --limit/--user/--shard to finish`);
  }
  out.info(
    `Sample: ${r.checked} rows (seed ${r.seed}) checked for content, metadata, timestamps, embedding ${r.expected.model ?? '?'} × ${r.expected.dimensions}` +
      (r.expected.sourceModel && r.expected.sourceModel === r.expected.model ? ', reused vectors bit for bit' : ''),
  );
  if (r.index && r.recall !== null) {
    out.info(`Index recall@1: ${r.recall.toFixed(3)} (${r.index.name}, lists ${r.index.lists}, probes ${r.index.probes})`);
    if (r.index.fix) out.info(`⚠️  ${r.index.fix}`);
  }
  out.info(`Fragments: ${r.fragments.checked} of ${r.fragments.source} compared (${r.fragments.target} migrated fragments in Postgres)`);
  if (r.ok) {
    out.info(`✅ Parity verified: no mismatches${r.pending ? ` (${r.pending} rows pending)` : ''}.`);
    return;
  }
  const shown = r.mismatches.slice(0, 20);
  out.error(`❌ ${r.mismatchCount} mismatch${r.mismatchCount === 1 ? '' : 'es'}${r.mismatchCount > shown.length ? ` (first ${shown.length})` : ''}:`);
  for (const m of shown) {
    out.error(`  ${m.id ?? `user ${m.user}`}${m.id && m.user !== null ? ` (${m.user})` : ''} — ${m.check}: ${m.detail}`);
  }
}

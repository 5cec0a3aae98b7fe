// Vector indexes, built after the load (ivfflat on an empty table has no useful centroids
// and pgvector warns of low recall), sized to the rows actually there, then ANALYZE.
import type { Db } from './connection.js';
import { RunError, errorMessage, oneLine } from '../errors.js';
import { quoteIdent } from '../sql-identifier.js';
import { adoptedTable } from './adopted-table.js';

/** pgvector indexes at most 2,000 dims of vector and 4,000 of halfvec. */
export const MAX_VECTOR_INDEX_DIMS = 2000;
export const MAX_HALFVEC_INDEX_DIMS = 4000;

/** ivfflat lists for a row count: max(10, rows/1000) below 1M rows, sqrt(rows) above. */
export function ivfflatLists(rows: number): number {
  if (rows >= 1_000_000) return Math.floor(Math.sqrt(rows));
  return Math.max(10, Math.floor(rows / 1000));
}

/**
 * The lists of an ivfflat index in the current schema or `schema` (pgvector's default 100 when it was
 * built without the option), or null when there is no such index.
 */
export async function ivfflatIndexLists(db: Db, index: string, schema: string | null = null): Promise<number | null> {
  const [ix] = await db.query<{ lists: number | null }>(
    `SELECT substring(array_to_string(c.reloptions, ',') from 'lists=([0-9]+)')::int AS lists
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = COALESCE($2, current_schema()) AND c.relname = $1 AND c.relkind = 'i'`,
    [index, schema],
  );
  return ix ? Number(ix.lists ?? 100) : null;
}

/** Probes that give good recall for a list count: sqrt(lists), at least 1. */
export function ivfflatProbes(lists: number): number {
  return Math.max(1, Math.ceil(Math.sqrt(lists)));
}

/**
 * The expression the index is built on, so queries can use the same one: above 2,000
 * dimensions the column is indexed as halfvec.
 */
export function indexedExpression(dims: number, column = 'embedding'): string {
  return dims > MAX_VECTOR_INDEX_DIMS ? `(${column}::halfvec(${dims}))` : column;
}

/** ORDER BY expression for cosine distance to parameter $n, matching the index. */
export function cosineDistanceSql(dims: number, param: string, column = 'embedding'): string {
  if (dims > MAX_VECTOR_INDEX_DIMS) return `${column}::halfvec(${dims}) <=> ${param}::halfvec(${dims})`;
  return `${column} <=> ${param}::vector(${dims})`;
}

export interface IndexBuild {
  table: string;
  index: string;
  rows: number;
  lists: number;
  opclass: string;
  action: 'built' | 'rebuilt' | 'kept' | 'skipped-empty' | 'skipped-too-wide';
  ms: number;
}

/**
 * maintenance_work_mem the ivfflat build needs, in bytes, from pgvector's own check (its
 * k-means refuses to start with "memory required is N MB"). pgvector 0.8.0 sizes the sample
 * array for max(10,000, 50 × lists) vectors whatever the row count, plus a few arrays per list
 * (centers, new centers, sums) and a lists × lists distance matrix; a full table adds a little
 * more. What the servers asked for (PostgreSQL 15 + pgvector 0.8.0; PGlite 0.5 + pgvector 0.8.7),
 * against this estimate:
 *   1536-d vector, 3,000 rows, lists 10 / 100 / 1000: PG15 59 / 62 / 327 MB → estimate 68 / 71 / 358 MB;
 *   3072-d halfvec, 3,000 rows, lists 10 / 100 / 1000: PG15 60 / 63 / 333 MB → estimate 68 / 72 / 370 MB;
 *   94,992 rows, lists 94: 3072-d halfvec on PG15 65 MB, 1536-d vector on PGlite 65 MB → estimate 72 / 71 MB.
 * A server that still asks for more gets one retry with its own figure (see buildOne).
 */
export function ivfflatMemoryBytes(rows: number, lists: number, dims: number, half: boolean): number {
  void rows;
  const align8 = (n: number) => Math.ceil(n / 8) * 8;
  const item = align8(8 + dims * (half ? 2 : 4)); // one stored vector / halfvec
  const floats = align8(8 + dims * 4); // one float4 accumulator
  const samples = Math.max(10_000, lists * 50);
  const base = samples * item + lists * (3 * item + 2 * floats + 16) + 4 * lists * lists + 8 * samples;
  return Math.ceil(base * 1.08) + 4 * 1024 * 1024;
}

/** What a running index build is doing (PostgreSQL: pg_stat_progress_create_index). */
export interface IndexProgress {
  index: string;
  table: string;
  /** 'start', then the server's phase (e.g. 'building index: performing k-means'), then 'done'. */
  phase: string;
  /** Blocks or tuples done out of total in the current phase, when the server counts them. */
  done?: number;
  total?: number;
  /** "assigning tuples 40%" style text for a progress bar, or ''. */
  detail: string;
  elapsedMs: number;
}

export interface BuildIndexOptions {
  /** Called at the start and end of each index build and, on PostgreSQL, every `pollMs`. */
  onProgress?: (p: IndexProgress) => void;
  /** How often to read pg_stat_progress_create_index (PostgreSQL only; default 1000 ms). */
  pollMs?: number;
}

/** Where the index build is, for a progress bar: each step starts, then finishes. */
export interface IndexStep {
  state: 'start' | 'done';
  /** 1-based step number out of INDEX_BUILD_STEPS. */
  step: number;
  /** Index name, or 'ANALYZE'. */
  name: string;
  table?: string;
  action?: IndexBuild['action'];
}

/** Steps buildVectorIndexes reports: one per vector index, then ANALYZE. */
export const INDEX_BUILD_STEPS = 3;

export async function buildVectorIndexes(
  db: Db,
  dims: number,
  log: (line: string) => void = () => {},
  onStep: (s: IndexStep) => void = () => {},
  options: BuildIndexOptions = {},
): Promise<IndexBuild[]> {
  const out: IndexBuild[] = [];
  let step = 0;
  // An adopted app's table is indexed itself (memories is a view over it), unless the app
  // already has a vector index on it: that one is kept as it is.
  const adopted = await adoptedTable(db);
  for (const table of ['memories', 'prompt_fragments']) {
    const index = `${table}_embedding_idx`;
    onStep({ state: 'start', step: ++step, name: index, table });
    const where = table === 'memories' && adopted ? adopted : { relation: table, schema: null };
    const appIndex = table === 'memories' && adopted ? await appVectorIndex(db, adopted.relation, index) : null;
    const built = appIndex ?? (await buildOne(db, table, index, dims, log, options, where));
    out.push(built);
    onStep({ state: 'done', step, name: built.index, table, action: built.action });
  }
  onStep({ state: 'start', step: ++step, name: 'ANALYZE' });
  await db.exec(`ANALYZE ${adopted ? adopted.relation : 'memories'}; ANALYZE prompt_fragments; ANALYZE memory_duplicates;`);
  onStep({ state: 'done', step, name: 'ANALYZE' });
  return out;
}

/** The ivfflat and HNSW indexes on a table, by name. */
export async function vectorIndexesOn(db: Db, relation: string): Promise<{ name: string; method: string; def: string }[]> {
  return db.query<{ name: string; method: string; def: string }>(
    `SELECT c.relname AS name, am.amname AS method, pg_get_indexdef(c.oid) AS def
       FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
      WHERE i.indrelid = $1::regclass AND am.amname IN ('ivfflat', 'hnsw')
      ORDER BY c.relname`,
    [relation],
  );
}

/** An ivfflat or HNSW index the app made itself on its table's embedding column (not ours). */
async function appVectorIndex(db: Db, relation: string, ours: string): Promise<IndexBuild | null> {
  const r = (await vectorIndexesOn(db, relation)).find((ix) => ix.name !== ours);
  if (!r) return null;
  const [{ n }] = (await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${relation} WHERE embedding IS NOT NULL`)) as [{ n: number }];
  const opclass = /\b(\w+_ops)\b/.exec(r.def)?.[1] ?? '';
  const lists = Number(/lists\s*=\s*'?(\d+)/.exec(r.def)?.[1] ?? 0);
  return { table: 'memories', index: r.name, rows: Number(n), lists, opclass, action: 'kept', ms: 0 };
}

async function buildOne(
  db: Db,
  table: string,
  index: string,
  dims: number,
  log: (l: string) => void,
  options: BuildIndexOptions = {},
  where: { relation: string; schema: string | null } = { relation: table, schema: null },
): Promise<IndexBuild> {
  const started = Date.now();
  const [{ n }] = (await db.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM ${where.relation} WHERE embedding IS NOT NULL`,
  )) as [{ n: number }];
  const half = dims > MAX_VECTOR_INDEX_DIMS;
  const opclass = half ? 'halfvec_cosine_ops' : 'vector_cosine_ops';
  const lists = ivfflatLists(n);
  const base = { table, index, rows: n, lists, opclass };
  if (n === 0) return { ...base, action: 'skipped-empty', ms: 0 };
  if (dims > MAX_HALFVEC_INDEX_DIMS) {
    log(`no vector index on ${table}: ${dims} dimensions exceed pgvector's ${MAX_HALFVEC_INDEX_DIMS}-dim index limit`);
    return { ...base, action: 'skipped-too-wide', ms: 0 };
  }
  const existing = await db.query<{ def: string; opts: string[] | null }>(
    `SELECT pg_get_indexdef(c.oid) AS def, c.reloptions AS opts FROM pg_class c
       JOIN pg_namespace s ON s.oid = c.relnamespace
      WHERE s.nspname = COALESCE($2, current_schema()) AND c.relname = $1`,
    [index, where.schema],
  );
  let action: IndexBuild['action'] = 'built';
  if (existing.length > 0) {
    const opts = existing[0]!.opts ?? [];
    const currentLists = Number(/lists=(\d+)/.exec(opts.join(','))?.[1] ?? NaN);
    const sameShape = existing[0]!.def.includes(opclass);
    // Rebuild when the table has outgrown the index: centroids from a tenth of the rows
    // give poor recall. A small drift is not worth a rebuild.
    if (sameShape && currentLists >= lists * 0.5 && currentLists <= lists * 2) {
      return { ...base, lists: currentLists, action: 'kept', ms: Date.now() - started };
    }
    action = 'rebuilt';
  }
  const estimateMb = Math.ceil(ivfflatMemoryBytes(n, lists, dims, half) / (1024 * 1024));
  const createSql = `CREATE INDEX ${index} ON ${where.relation} USING ivfflat (${indexedExpression(dims)} ${opclass}) WITH (lists = ${lists})`;
  log(`building ivfflat index ${index} on ${where.relation}: ${n} rows, lists=${lists}, ${opclass}`);
  const report = (phase: string, extra: Partial<IndexProgress> = {}) =>
    options.onProgress?.({ index, table, phase, detail: '', elapsedMs: Date.now() - started, ...extra });
  report('start');

  // maintenance_work_mem for this transaction only: the server's setting when it is enough,
  // else the estimate. A server that still asks for more (another pgvector version) says how
  // much; one retry with that figure.
  let serverMb = 0;
  let askedMb = estimateMb;
  for (let attempt = 1; ; attempt++) {
    try {
      await db.transaction(async (tx) => {
        const [{ mb }] = (await tx.query<{ mb: number }>(
          `SELECT (setting::bigint * CASE unit WHEN 'kB' THEN 1 WHEN 'MB' THEN 1024 WHEN '8kB' THEN 8 ELSE 1 END / 1024)::int AS mb
             FROM pg_settings WHERE name = 'maintenance_work_mem'`,
        )) as [{ mb: number }];
        serverMb = Number(mb);
        if (serverMb < askedMb) await tx.exec(`SET LOCAL maintenance_work_mem = '${askedMb}MB'`);
        if (action === 'rebuilt') await tx.exec(`DROP INDEX IF EXISTS ${where.schema ? `${quoteIdent(where.schema)}.` : ''}${index}`);
        const stop = db.kind === 'postgres' ? await watchProgress(db, tx, options.pollMs ?? 1000, log, report) : null;
        try {
          await tx.exec(createSql);
        } finally {
          await stop?.();
        }
      });
      break;
    } catch (err) {
      const msg = oneLine(errorMessage(err));
      const required = Number(/memory required is (\d+) MB/i.exec(msg)?.[1] ?? NaN);
      const loaded = `every row is loaded and committed (a re-run finds them unchanged and only builds the index)`;
      if (Number.isFinite(required) && attempt === 1 && required > askedMb) {
        askedMb = Math.ceil(required * 1.1);
        log(`${index}: the server asks for ${required} MB of maintenance_work_mem (estimated ${estimateMb} MB); retrying with ${askedMb} MB`);
        continue;
      }
      if (Number.isFinite(required) || /maintenance_work_mem/i.test(msg)) {
        const mb = Math.max(askedMb, Number.isFinite(required) ? required : 0);
        throw new RunError(
          `building the vector index ${index} failed: it needs about ${mb} MB of maintenance_work_mem ` +
            `(server setting ${serverMb} MB; this run asked for ${askedMb} MB) and the server refused (${msg}). ` +
            `${cap(loaded)}. Raise it for this role (ALTER ROLE <role> SET maintenance_work_mem = '${Math.ceil(mb * 1.25)}MB') and run the same command again, ` +
            `or build the index yourself: SET maintenance_work_mem = '${Math.ceil(mb * 1.25)}MB'; ${createSql};`,
        );
      }
      if (sqlState(err) === '53200' || /out of memory/i.test(msg)) {
        throw new RunError(
          `building the vector index ${index} ran the server out of memory (${msg}); the build needs about ${askedMb} MB ` +
            `(maintenance_work_mem was ${Math.max(serverMb, askedMb)} MB). ${cap(loaded)}. Give the database server more memory ` +
            `and run the same command again, or build the index yourself: ${createSql};`,
        );
      }
      throw err;
    }
  }
  const ms = Date.now() - started;
  report('done', { detail: `${(ms / 1000).toFixed(1)} s` });
  return { ...base, action, ms };
}

const cap = (s: string) => s.charAt(0).toUpperCase() + s.slice(1);

function sqlState(err: unknown): string | undefined {
  const c = (err as { code?: unknown } | null)?.code;
  return typeof c === 'string' && /^[0-9A-Z]{5}$/.test(c) ? c : undefined;
}

/**
 * Polls pg_stat_progress_create_index for the backend of `tx` from another pooled connection
 * while the CREATE INDEX runs. Reports every poll through `report` and logs each new phase
 * (a build that finishes within one interval logs nothing). Returns the stop function.
 */
async function watchProgress(
  db: Db,
  tx: Db,
  pollMs: number,
  log: (l: string) => void,
  report: (phase: string, extra?: Partial<IndexProgress>) => void,
): Promise<() => Promise<void>> {
  const [{ pid }] = (await tx.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')) as [{ pid: number }];
  let lastPhase = '';
  let inFlight: Promise<void> | null = null;
  let stopped = false;
  const poll = async () => {
    const rows = await db.query<{ phase: string; blocks_total: string; blocks_done: string; tuples_total: string; tuples_done: string }>(
      `SELECT phase, blocks_total::text, blocks_done::text, tuples_total::text, tuples_done::text
         FROM pg_stat_progress_create_index WHERE pid = $1`,
      [pid],
    );
    const r = rows[0];
    if (!r || stopped) return;
    const tuples = Number(r.tuples_total) > 0;
    const total = Number(tuples ? r.tuples_total : r.blocks_total);
    const done = Number(tuples ? r.tuples_done : r.blocks_done);
    const step = r.phase.replace(/^building index: /, '');
    const detail = total > 0 ? `${step} ${Math.min(100, Math.floor((100 * done) / total))}%` : step;
    report(r.phase, { detail, ...(total > 0 ? { done, total } : {}) });
    if (r.phase !== lastPhase) {
      lastPhase = r.phase;
      log(`  ${r.phase}`);
    }
  };
  const timer = setInterval(() => {
    if (inFlight) return;
    inFlight = poll()
      .catch(() => {
        // Progress is a nicety: a failed poll (permissions, a busy pool) stops polling only.
        clearInterval(timer);
      })
      .finally(() => {
        inFlight = null;
      });
  }, Math.max(50, pollMs));
  return async () => {
    stopped = true;
    clearInterval(timer);
    // A poll still waiting for a pooled connection must not hold up the transaction it watches
    // (that transaction's connection may be the one it waits for): give it a moment, no more.
    if (inFlight) await Promise.race([inFlight, new Promise((resolve) => setTimeout(resolve, 250).unref())]);
  };
}

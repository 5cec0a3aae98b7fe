// Vector indexes, built after the load (ivfflat on an empty table has no useful centroids
// and pgvector warns of low recall), sized to the rows actually there, then ANALYZE.
import type { Db } from './connection.js';
import { RunError, errorMessage } from '../errors.js';

/** pgvector indexes at most 2,000 dims of vector and 4,000 of halfvec. */
export const MAX_VECTOR_INDEX_DIMS = 2000;
export const MAX_HALFVEC_INDEX_DIMS = 4000;

/** ivfflat lists for a row count: max(10, rows/1000) below 1M rows, sqrt(rows) above. */
export function ivfflatLists(rows: number): number {
  if (rows >= 1_000_000) return Math.floor(Math.sqrt(rows));
  return Math.max(10, Math.floor(rows / 1000));
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
 * Memory the ivfflat build needs: k-means samples up to 50 rows per list, plus the centers.
 * Estimated generously so the build does not fail half-way.
 */
export function ivfflatMemoryBytes(rows: number, lists: number, dims: number, half: boolean): number {
  const bytesPerDim = half ? 2 : 4;
  const samples = Math.min(rows, lists * 50);
  return (samples + lists * 2) * dims * bytesPerDim + 16 * 1024 * 1024;
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
): Promise<IndexBuild[]> {
  const out: IndexBuild[] = [];
  let step = 0;
  for (const table of ['memories', 'prompt_fragments']) {
    const index = `${table}_embedding_idx`;
    onStep({ state: 'start', step: ++step, name: index, table });
    const built = await buildOne(db, table, index, dims, log);
    out.push(built);
    onStep({ state: 'done', step, name: index, table, action: built.action });
  }
  onStep({ state: 'start', step: ++step, name: 'ANALYZE' });
  await db.exec('ANALYZE memories; ANALYZE prompt_fragments; ANALYZE memory_duplicates;');
  onStep({ state: 'done', step, name: 'ANALYZE' });
  return out;
}

async function buildOne(db: Db, table: string, index: string, dims: number, log: (l: string) => void): Promise<IndexBuild> {
  const started = Date.now();
  const [{ n }] = (await db.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM ${table} WHERE embedding IS NOT NULL`,
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
      WHERE s.nspname = current_schema() AND c.relname = $1`,
    [index],
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
  const needBytes = ivfflatMemoryBytes(n, lists, dims, half);
  const needMb = Math.ceil(needBytes / (1024 * 1024));
  log(`building ivfflat index ${index} on ${table}: ${n} rows, lists=${lists}, ${opclass}`);
  try {
    await db.transaction(async (tx) => {
      const [{ mb }] = (await tx.query<{ mb: number }>(
        `SELECT (setting::bigint * CASE unit WHEN 'kB' THEN 1 WHEN 'MB' THEN 1024 WHEN '8kB' THEN 8 ELSE 1 END / 1024)::int AS mb
           FROM pg_settings WHERE name = 'maintenance_work_mem'`,
      )) as [{ mb: number }];
      if (mb < needMb) await tx.exec(`SET LOCAL maintenance_work_mem = '${needMb}MB'`);
      if (action === 'rebuilt') await tx.exec(`DROP INDEX IF EXISTS ${index}`);
      await tx.exec(
        `CREATE INDEX ${index} ON ${table} USING ivfflat (${indexedExpression(dims)} ${opclass}) WITH (lists = ${lists})`,
      );
    });
  } catch (err) {
    const msg = errorMessage(err);
    if (/memory required|maintenance_work_mem|out of memory/i.test(msg)) {
      throw new RunError(
        `building ${index} needs about ${needMb} MB of maintenance_work_mem and the server refused (${msg}): ` +
          `raise maintenance_work_mem on the server (ALTER SYSTEM SET maintenance_work_mem = '${needMb * 2}MB'), then re-run; the data is loaded and will not be loaded again`,
      );
    }
    throw err;
  }
  return { ...base, action, ms: Date.now() - started };
}

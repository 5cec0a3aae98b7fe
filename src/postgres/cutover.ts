// What the operator needs to point the app at the migrated database: which schema it is in,
// the model and width of the vectors, the index, and the query form that uses that index (a
// query with a different expression silently scans every row). Printed after the load and
// put in --json as `cutover`.
import { cosineDistanceSql, ivfflatIndexLists, ivfflatProbes, vectorIndexesOn } from './indexes.js';
import type { Db } from './connection.js';
import { adoptedTable } from './adopted-table.js';
import { quoteIdent } from '../sql-identifier.js';
import { errorMessage, oneLine } from '../errors.js';

export interface CutoverInfo {
  /** 'installed': memory-migrate's own schema (sql/); 'adopted': the app's own table. */
  mode: 'installed' | 'adopted';
  /** The table the app queries (schema-qualified when adopted). */
  table: string;
  model: string;
  dimensions: number;
  /** The vector index, or null when there is none yet (an empty table). */
  index: string | null;
  /** ivfflat probes that give good recall for the index's lists. */
  probes: number | null;
  /**
   * Whether those probes are now the database's default (ALTER DATABASE … SET ivfflat.probes),
   * so clients that never set it (LangChain's PGVectorStore) search with good recall; else why not.
   */
  probesDefault: { set: true } | { set: false; reason: string } | null;
  /** A nearest-neighbour query that the index serves: $1 the query vector, $2 k (add WHERE user_id = … as usual). */
  query: string;
  /** The column UUID-keyed clients use as their id (LangChain PGVectorStore's idColumnName), if any. */
  uuidColumn: string | null;
}

export async function describeCutover(db: Db, model: string, dimensions: number): Promise<CutoverInfo> {
  const form = await searchForm(db, dimensions);
  return { ...form, model, dimensions, probesDefault: form.probes === null ? null : await setDatabaseProbes(db, form.probes) };
}

export type SearchForm = Omit<CutoverInfo, 'model' | 'dimensions' | 'probesDefault'>;

/**
 * Where the app searches and how, read from the database (no changes made): our memories
 * table with memories_embedding_idx, or an adopted app's table with its vector index (its
 * own, else the one migrate built) and that index's operator.
 */
export async function searchForm(db: Db, dimensions: number): Promise<SearchForm> {
  const app = await adoptedTable(db);
  if (!app) {
    const index = 'memories_embedding_idx';
    const lists = await ivfflatIndexLists(db, index);
    return {
      mode: 'installed',
      table: 'memories',
      index: lists === null ? null : index,
      probes: lists === null ? null : ivfflatProbes(lists),
      query: `SELECT id, content FROM memories ORDER BY ${cosineDistanceSql(dimensions, '$1')} LIMIT $2`,
      uuidColumn: 'uuid',
    };
  }
  // The app's own index when it has one (it is kept), else the one migrate built.
  const indexes = await vectorIndexesOn(db, app.relation);
  const ix = indexes.find((i) => i.name !== 'memories_embedding_idx') ?? indexes[0];
  const lists = ix?.method === 'ivfflat' ? await ivfflatIndexLists(db, ix.name, app.schema) : null;
  // The operator of the index's operator class (ours, on halfvec above 2,000 dims, is cosine).
  const operator = !ix || /cosine_ops/.test(ix.def) ? '<=>' : /l2_ops/.test(ix.def) ? '<->' : /ip_ops/.test(ix.def) ? '<#>' : '<=>';
  const order = operator === '<=>' ? cosineDistanceSql(dimensions, '$1') : `embedding ${operator} $1::vector(${dimensions})`;
  return {
    mode: 'adopted',
    table: `${app.schema}.memories`,
    index: ix?.name ?? null,
    probes: lists === null ? null : ivfflatProbes(lists),
    query: `SELECT ${quoteIdent(app.idColumn.name)}, content FROM ${app.relation} ORDER BY ${order} LIMIT $2`,
    uuidColumn: app.idColumn.type === 'uuid' ? app.idColumn.name : null,
  };
}

/** pgvector's default of 1 probe finds the nearest row in about one list of `lists`. */
async function setDatabaseProbes(db: Db, probes: number): Promise<CutoverInfo['probesDefault']> {
  // PGlite accepts the statement but starts its backend without per-database settings.
  if (db.kind === 'pglite') return { set: false, reason: 'embedded PGlite applies no per-database settings' };
  try {
    await db.exec(`DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET ivfflat.probes = ${probes}', current_database()); END $$;`);
    return { set: true };
  } catch (err) {
    // Only the database's owner may; the operator can run it, or set it per session.
    return { set: false, reason: oneLine(errorMessage(err)) };
  }
}

/** The human lines for the end of a migrate run. */
export function cutoverLines(c: CutoverInfo): string[] {
  const lines = [
    `cutover: ${c.mode === 'adopted' ? `the app's own table ${c.table} (adopted)` : `schema installed (table ${c.table})`}, vectors ${c.model} × ${c.dimensions}`,
    c.index
      ? `  index ${c.index}: use ORDER BY exactly as in: ${c.query}`
      : `  no vector index yet (no rows): run migrate again after loading rows`,
  ];
  if (c.mode === 'adopted') lines.push(`  the app's own table: memory-migrate keeps its links, hashes and ledger in schema memory_migrate`);
  if (c.uuidColumn) lines.push(`  UUID-keyed clients use column ${c.uuidColumn} as the id (LangChain PGVectorStore: idColumnName '${c.uuidColumn}')`);
  if (c.probesDefault?.set) lines.push(`  ivfflat.probes = ${c.probes} is now this database's default (new sessions)`);
  else if (c.probesDefault) lines.push(`  could not make ivfflat.probes = ${c.probes} the database default (${c.probesDefault.reason}): SET it in each session`);
  return lines;
}

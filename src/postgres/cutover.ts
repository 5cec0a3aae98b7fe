// What the operator needs to point the app at the migrated database: which schema it is in,
// the model and width of the vectors, the index, and the query form that uses that index (a
// query with a different expression silently scans every row). Printed after the load and
// put in --json as `cutover`.
import { cosineDistanceSql, ivfflatIndexLists, ivfflatProbes } from './indexes.js';
import type { Db } from './connection.js';

export interface CutoverInfo {
  /** 'installed': memory-migrate's own schema (sql/). */
  mode: 'installed';
  table: 'memories';
  model: string;
  dimensions: number;
  /** The vector index, or null when there is none yet (an empty table). */
  index: string | null;
  /** ivfflat probes that give good recall for the index's lists. */
  probes: number | null;
  /** A nearest-neighbour query that the index serves: $1 the query vector, $2 k (add WHERE user_id = … as usual). */
  query: string;
  /** The column UUID-keyed clients use as their id (LangChain PGVectorStore's idColumnName). */
  uuidColumn: 'uuid';
}

export async function describeCutover(db: Db, model: string, dimensions: number): Promise<CutoverInfo> {
  const index = 'memories_embedding_idx';
  const lists = await ivfflatIndexLists(db, index);
  return {
    mode: 'installed',
    table: 'memories',
    model,
    dimensions,
    index: lists === null ? null : index,
    probes: lists === null ? null : ivfflatProbes(lists),
    query: `SELECT id, content FROM memories ORDER BY ${cosineDistanceSql(dimensions, '$1')} LIMIT $2`,
    uuidColumn: 'uuid',
  };
}

/** The human lines for the end of a migrate run. */
export function cutoverLines(c: CutoverInfo): string[] {
  const lines = [
    `cutover: schema ${c.mode} (table ${c.table}), vectors ${c.model} × ${c.dimensions}`,
    c.index
      ? `  index ${c.index}: use ORDER BY exactly as in: ${c.query}` + (c.probes ? ` (SET ivfflat.probes = ${c.probes})` : '')
      : `  no vector index yet (no rows): run migrate again after loading rows`,
    `  UUID-keyed clients use column ${c.uuidColumn} as the id (LangChain PGVectorStore: idColumnName '${c.uuidColumn}')`,
  ];
  return lines;
}

// What serve makes sure of before it listens: the schema of sql/ (installed as migrate and
// `schema` install it, so sql/011's plugin tables exist; idempotent), and the full-text index
// on the table that really holds the content. That index is an expression index, not a
// stored column: in adopted mode the app's table must not gain a column (an index it already
// gets: migrate builds its vector index there too), and an expression index can never go
// stale when the app updates content with plain SQL, which a tsvector kept in a side table
// could. ts_rank recomputes the vector for the matching rows only.
import type { Db } from '../postgres/connection.js';
import { installSchema, tableDimensions } from '../postgres/schema.js';
import { adoptedTable, findAppTable } from '../postgres/adopted-table.js';
import { FTS_DOCUMENT } from './store.js';

/** The width of a store that has no memories table yet and no embedder to say otherwise (the reference plugin's). */
export const DEFAULT_PLUGIN_DIMENSIONS = 1536;

export const FTS_INDEX = 'memories_content_fts_idx';

export interface PreparedStore {
  mode: 'installed' | 'adopted';
  /** Width of memories.embedding. */
  dimensions: number;
  /** Where the rows live, for the operator. */
  table: string;
}

/** The width the store's vectors have, or will have: the table's, else the app's, else the embedder's. */
export async function storeDimensions(db: Db, embedderDimensions: number | null): Promise<number> {
  const own = await tableDimensions(db, 'memories');
  if (own !== null) return own;
  const app = await findAppTable(db);
  return app?.embeddingWidth ?? embedderDimensions ?? DEFAULT_PLUGIN_DIMENSIONS;
}

export async function prepareStore(db: Db, dimensions: number): Promise<PreparedStore> {
  await installSchema(db, { dimensions });
  const app = await adoptedTable(db);
  const relation = app ? app.relation : 'memories';
  await db.exec(`CREATE INDEX IF NOT EXISTS ${FTS_INDEX} ON ${relation} USING gin (${FTS_DOCUMENT('content')})`);
  return { mode: app ? 'adopted' : 'installed', dimensions, table: app ? `${app.schema}.memories` : 'memories' };
}

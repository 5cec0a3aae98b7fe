// A sqlite-vec vec0 table on its own (not one of the tools above): vectors, partition keys and
// +auxiliary columns from the shadow tables (vec0.ts), text from a +content/+text auxiliary
// column or from the companion table that holds it, joined on the vec0 row's TEXT primary key
// (companion.id) or rowid. Rows are the live vec0 rows; the partition key is the user.
import { UsageError } from '../../errors.js';
import { quoteIdent } from '../../sql-identifier.js';
import type { LayoutDefinition, Schema, TableShape } from './types.js';
import { virtualTables } from './schema.js';
import { parseVec0, vec0Select } from './vec0.js';

const TEXT_COLUMNS = ['content', 'text', 'document', 'body', 'chunk'];

function vec0Tables(schema: Schema): TableShape[] {
  return virtualTables(schema, 'vec0');
}

/** The ordinary table holding the text: not a shadow table of a virtual table, with a text column. */
function companion(schema: Schema, vecName: string): TableShape | undefined {
  const virtuals = [...schema.values()].filter((t) => /\bVIRTUAL\s+TABLE\b/i.test(t.sql)).map((t) => t.name.toLowerCase());
  const candidates = [...schema.values()].filter(
    (t) =>
      t.type === 'table' &&
      !virtuals.some((v) => t.name.toLowerCase().startsWith(`${v}_`)) &&
      TEXT_COLUMNS.some((c) => t.types.has(c)),
  );
  // Prefer the table named like the vec0 table (vec_items → items, memories_vec → memories).
  const stem = vecName.toLowerCase().replace(/^vec_|_vec$|_embeddings?$|_vectors?$/g, '');
  return candidates.find((t) => t.name.toLowerCase() === stem) ?? (candidates.length === 1 ? candidates[0] : undefined);
}

export const sqliteVecLayout: LayoutDefinition = {
  name: 'sqlite-vec',
  title: 'sqlite-vec vec0 table (shadow tables) + companion text table',
  detect: (schema) => vec0Tables(schema).length > 0,
  plan(_db, schema, path) {
    const tables = vec0Tables(schema);
    const vt = tables[0]!;
    const parsed = parseVec0(vt);
    const v = vec0Select(schema, parsed);
    const auxText = TEXT_COLUMNS.map((c) => v.auxiliary.get(c)).find((x) => x !== undefined);
    const comp = companion(schema, vt.name);
    if (!auxText && !comp) {
      throw new UsageError(
        `vec0 table ${vt.name} in ${path} has no +content/+text column and no companion table with a content/text column; describe where the text is with --map`,
      );
    }
    const c = (name: string): string | undefined => (comp && comp.types.has(name) ? `c.${quoteIdent(comp.columns.find((x) => x.toLowerCase() === name)!)}` : undefined);
    const compText = comp ? TEXT_COLUMNS.map(c).find((x) => x !== undefined) : undefined;
    const join = comp ? ` LEFT JOIN ${quoteIdent(comp.name)} c ON ${parsed.textPrimaryKey && comp.types.has('id') ? `c.id = ${v.textId}` : `c.rowid = ${v.rowid}`}` : '';
    const idExpr = parsed.textPrimaryKey ? v.textId : `CAST(${v.rowid} AS TEXT)`;
    const hasPartition = v.partition !== 'NULL';
    const notes = v.vectorProblem ? [v.vectorProblem] : [];
    if (tables.length > 1) notes.push(`${tables.length} vec0 tables in the file: reading ${vt.name} (use --map for another)`);
    return {
      layout: 'sqlite-vec',
      relation:
        `SELECT ${v.rowid} AS r, ${idExpr} AS id, ${c('user_id') ?? 'NULL'} AS user_id, '${vt.name.replace(/'/g, "''")}' AS collection, ` +
        `CAST(${v.partition} AS TEXT) AS partition, ${auxText ?? compText} AS content, ${v.vector} AS embedding, ${c('metadata') ?? 'NULL'} AS metadata, ` +
        `${c('created_at') ?? 'NULL'} AS created_at, ${c('updated_at') ?? 'NULL'} AS updated_at FROM ${v.from}${join}`,
      defaultUserFrom: hasPartition ? { kind: 'partition' } : c('user_id') ? { kind: 'column' } : { kind: 'collection' },
      userFromKinds: ['collection', ...(hasPartition ? (['partition'] as const) : []), ...(c('user_id') ? (['column'] as const) : [])],
      notes,
      noWriteBack: 'rollback writes only the EspressoBot memories layout; writing vec0 chunks needs the sqlite-vec extension',
    };
  },
};

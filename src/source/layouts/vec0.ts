// sqlite-vec `vec0` tables read from their shadow tables, without loading the extension:
// `<t>_rowids` says which chunk and slot hold each live row (deleted rows are not in it),
// `<t>_vector_chunksNN` packs the vectors slot after slot, `<t>_chunks` carries the partition
// key values per chunk and `<t>_auxiliary` the +columns per row. Layout facts:
// sqlite-vector-layouts.md §2 (sqlite-vec v0.1.6 – v0.1.9).
import { UsageError } from '../../errors.js';
import { quoteIdent } from '../../sql-identifier.js';
import { table } from './schema.js';
import type { Schema, TableShape } from './types.js';

export interface Vec0Column {
  name: string;
  kind: 'vector' | 'partition' | 'auxiliary' | 'metadata' | 'primary';
  /** vector: float | int8 | bit; others: the declared type, lower case. */
  type: string;
  /** vector width. */
  dims?: number;
  /** Index among the columns of its kind (NN of the shadow table or column). */
  index: number;
}

export interface Vec0Table {
  name: string;
  columns: Vec0Column[];
  /** The primary key is TEXT: `<t>_rowids.id` holds it. */
  textPrimaryKey: boolean;
}

/** Splits the module arguments at top-level commas. */
function splitArgs(body: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of body) {
    if (ch === '(' || ch === '[') depth++;
    if (ch === ')' || ch === ']') depth--;
    if (ch === ',' && depth === 0) {
      out.push(cur.trim());
      cur = '';
    } else cur += ch;
  }
  if (cur.trim()) out.push(cur.trim());
  return out;
}

export function parseVec0(t: TableShape): Vec0Table {
  const m = /USING\s+vec0\s*\(([\s\S]*)\)\s*;?\s*$/i.exec(t.sql);
  if (!m) throw new UsageError(`cannot read the vec0 declaration of ${t.name}: ${t.sql}`);
  const columns: Vec0Column[] = [];
  const counts = { vector: 0, partition: 0, auxiliary: 0, metadata: 0, primary: 0 };
  let textPrimaryKey = false;
  for (const arg of splitArgs(m[1]!)) {
    if (/^\w+\s*=/.test(arg)) continue; // table option, e.g. chunk_size=8
    const aux = /^\+\s*("?)([^"\s]+)\1\s*(.*)$/.exec(arg);
    if (aux) {
      columns.push({ name: aux[2]!, kind: 'auxiliary', type: aux[3]!.toLowerCase(), index: counts.auxiliary++ });
      continue;
    }
    const parts = /^("?)([^"\s]+)\1\s+(.*)$/.exec(arg);
    if (!parts) continue;
    const name = parts[2]!;
    const rest = parts[3]!.trim();
    const vec = /^(float|f32|int8|i8|bit)\s*\[\s*(\d+)\s*\]/i.exec(rest);
    if (vec) {
      const raw = vec[1]!.toLowerCase();
      const type = raw === 'f32' ? 'float' : raw === 'i8' ? 'int8' : raw;
      columns.push({ name, kind: 'vector', type, dims: Number(vec[2]), index: counts.vector++ });
    } else if (/primary\s+key/i.test(rest)) {
      textPrimaryKey = /^text\b/i.test(rest);
      columns.push({ name, kind: 'primary', type: rest.split(/\s+/)[0]!.toLowerCase(), index: counts.primary++ });
    } else if (/partition\s+key/i.test(rest)) {
      columns.push({ name, kind: 'partition', type: rest.split(/\s+/)[0]!.toLowerCase(), index: counts.partition++ });
    } else {
      columns.push({ name, kind: 'metadata', type: rest.split(/\s+/)[0]!.toLowerCase(), index: counts.metadata++ });
    }
  }
  return { name: t.name, columns, textPrimaryKey };
}

const nn = (i: number): string => String(i).padStart(2, '0');

export interface Vec0Select {
  /** FROM ... JOIN ... clause; the row's columns are reachable as below. */
  from: string;
  /** The vec0 row's rowid (integer). */
  rowid: string;
  /** The vec0 row's TEXT primary key, or NULL. */
  textId: string;
  /** The first float vector column, as f32 LE bytes (NULL when the table has none). */
  vector: string;
  /** The first partition key's value, or NULL. */
  partition: string;
  /** SQL of an auxiliary column by name (lower case). */
  auxiliary: Map<string, string>;
  /** The vector column's width, when it is float. */
  dims: number | null;
  /** Why the vectors cannot be reused (int8 / bit quantized), when so. */
  vectorProblem?: string;
}

/** The shadow-table join of vec0 table `t`; `alias` prefixes the aliases it uses. */
export function vec0Select(schema: Schema, v: Vec0Table, alias = 'v'): Vec0Select {
  const shadow = (suffix: string): string => {
    const name = `${v.name}_${suffix}`;
    const found = table(schema, name);
    if (!found) {
      throw new UsageError(
        `vec0 table ${v.name} has no shadow table ${name}; the file was written by a sqlite-vec version memory-migrate does not read (0.1.0 – 0.1.9 are read)`,
      );
    }
    return quoteIdent(found.name);
  };
  const rw = `${alias}_rw`;
  const ch = `${alias}_ch`;
  const vc = `${alias}_vc`;
  const ax = `${alias}_ax`;
  const vectorCol = v.columns.find((c) => c.kind === 'vector');
  let from = `${shadow('rowids')} ${rw} JOIN ${shadow('chunks')} ${ch} ON ${ch}.chunk_id = ${rw}.chunk_id`;
  let vector = 'NULL';
  let vectorProblem: string | undefined;
  let dims: number | null = null;
  if (vectorCol) {
    if (vectorCol.type === 'float') {
      const bytes = vectorCol.dims! * 4;
      dims = vectorCol.dims!;
      // The chunk table's `rowid` column is declared without INTEGER: the real rowid is _rowid_.
      from += ` JOIN ${shadow(`vector_chunks${nn(vectorCol.index)}`)} ${vc} ON ${vc}._rowid_ = ${rw}.chunk_id`;
      vector = `substr(${vc}.vectors, ${rw}.chunk_offset * ${bytes} + 1, ${bytes})`;
    } else {
      vectorProblem = `${v.name}.${vectorCol.name} is ${vectorCol.type}[${vectorCol.dims}] (quantized): the vectors cannot be reused and are recomputed`;
    }
  }
  const auxiliary = new Map<string, string>();
  const auxCols = v.columns.filter((c) => c.kind === 'auxiliary');
  if (auxCols.length > 0) {
    from += ` LEFT JOIN ${shadow('auxiliary')} ${ax} ON ${ax}.rowid = ${rw}.rowid`;
    for (const c of auxCols) auxiliary.set(c.name.toLowerCase(), `${ax}.value${nn(c.index)}`);
  }
  const part = v.columns.find((c) => c.kind === 'partition');
  const result: Vec0Select = {
    from,
    rowid: `${rw}.rowid`,
    textId: v.textPrimaryKey ? `${rw}.id` : 'NULL',
    vector,
    partition: part ? `${ch}.partition${nn(part.index)}` : 'NULL',
    auxiliary,
    dims,
  };
  if (vectorProblem) result.vectorProblem = vectorProblem;
  return result;
}

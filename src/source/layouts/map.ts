// --map FILE: any other table (or a read-only SELECT) described by a JSON mapping of its
// columns, e.g. {"table": "notes", "id": "note_id", "user": "owner", "content": "body",
// "embedding": "vec", "encoding": "f32le", "metadata": "extra", "created_at": "ts"}. Flags
// --map-table/--map-content/--map-embedding/--map-user/--map-encoding override single keys.
import { readFileSync } from 'node:fs';
import { UsageError } from '../../errors.js';
import { quoteIdent } from '../../sql-identifier.js';
import { decodeEmbedding } from '../decode-embedding.js';
import type { SqliteDb } from '../sqlite-file.js';
import type { DecodedEmbedding } from '../types.js';
import { table } from './schema.js';
import type { LayoutPlan, Schema } from './types.js';

export const MAP_ENCODINGS = ['auto', 'f32le', 'json', 'csv'] as const;
export type MapEncoding = (typeof MAP_ENCODINGS)[number];

export interface ColumnMap {
  table?: string;
  query?: string;
  id?: string;
  user?: string;
  content?: string;
  embedding?: string;
  metadata?: string;
  created_at?: string;
  updated_at?: string;
  encoding?: MapEncoding;
}

const KEYS = ['table', 'query', 'id', 'user', 'content', 'embedding', 'metadata', 'created_at', 'updated_at', 'encoding'] as const;

/** The mapping in `file`, with `overrides` (from flags) on top. */
export function loadColumnMap(file: string | undefined, overrides: ColumnMap): ColumnMap {
  let map: ColumnMap = {};
  if (file !== undefined) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw new UsageError(`cannot read --map ${file} (${(err as Error).message}); pass the path of a JSON mapping file`);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (err) {
      throw new UsageError(`--map ${file} is not valid JSON (${(err as Error).message}); see MIGRATION.md for an example`);
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
      throw new UsageError(`--map ${file} must be a JSON object such as {"table": "notes", "content": "body"}`);
    }
    for (const [k, v] of Object.entries(parsed)) {
      if (!(KEYS as readonly string[]).includes(k)) throw new UsageError(`--map ${file} has an unknown key "${k}"; the keys are ${KEYS.join(', ')}`);
      if (typeof v !== 'string') throw new UsageError(`--map ${file}: "${k}" must be a string (a column name, table name or SELECT)`);
    }
    map = parsed as ColumnMap;
  }
  for (const [k, v] of Object.entries(overrides)) if (v !== undefined) (map as Record<string, string>)[k] = v;
  if (map.encoding !== undefined && !(MAP_ENCODINGS as readonly string[]).includes(map.encoding)) {
    throw new UsageError(`--map encoding "${map.encoding}" is not one of ${MAP_ENCODINGS.join(', ')}`);
  }
  if ((map.table === undefined) === (map.query === undefined)) {
    throw new UsageError('--map needs exactly one of "table" (a table or view) and "query" (a read-only SELECT)');
  }
  if (map.content === undefined) throw new UsageError('--map needs "content": the column that holds the memory text');
  return map;
}

function decoderFor(encoding: MapEncoding | undefined): ((v: unknown) => DecodedEmbedding) | undefined {
  if (encoding === undefined || encoding === 'auto') return undefined;
  if (encoding === 'f32le') {
    return (v) => {
      if (v instanceof Uint8Array) {
        if (v.byteLength === 0) return decodeEmbedding(v);
        if (v.byteLength % 4 !== 0) return { encoding: 'bad', vector: null, problem: `f32le blob of ${v.byteLength} bytes (not a multiple of 4)` };
        const copy = new Uint8Array(v.byteLength);
        copy.set(v);
        return { ...decodeEmbedding(copy), encoding: 'f32' };
      }
      if (v === null || v === undefined) return decodeEmbedding(v);
      return { encoding: 'bad', vector: null, problem: `expected an f32le blob, found ${typeof v}` };
    };
  }
  return (v) => {
    if (v instanceof Uint8Array) return decodeEmbedding(Buffer.from(v).toString('utf8'));
    return decodeEmbedding(v);
  };
}

/** The plan of a mapped table or query; a missing column names itself and the ones that exist. */
export function planColumnMap(db: SqliteDb, schema: Schema, path: string, map: ColumnMap): LayoutPlan {
  let source: string;
  let columns: string[];
  let order: string;
  if (map.table !== undefined) {
    const t = table(schema, map.table);
    if (!t) throw new UsageError(`--map table "${map.table}" is not in ${path}; tables found: ${[...schema.values()].map((x) => x.name).join(', ') || 'none'}`);
    source = quoteIdent(t.name);
    columns = t.columns;
    order = 'rowid';
    try {
      db.prepare(`SELECT rowid FROM ${source} LIMIT 0`);
    } catch {
      throw new UsageError(`--map table ${t.name} has no rowid (a view or WITHOUT ROWID table); map it with "query" instead`);
    }
  } else {
    let stmt;
    try {
      stmt = db.prepare(map.query!);
    } catch (err) {
      throw new UsageError(`--map query does not prepare (${(err as Error).message}); fix the SELECT`);
    }
    if (!stmt.reader || !stmt.readonly) throw new UsageError('--map query must be one read-only SELECT');
    columns = stmt.columns().map((c) => c.name);
    source = `(${map.query})`;
    order = ''; // row_number() over the query's own order
  }
  const pick = (key: keyof ColumnMap): string | null => {
    const name = map[key];
    if (name === undefined) return null;
    const found = columns.find((c) => c === name) ?? columns.find((c) => c.toLowerCase() === name.toLowerCase());
    if (found === undefined) {
      throw new UsageError(`--map ${key}: column "${name}" is not in ${map.table ?? 'the query'}; columns there: ${columns.join(', ')}`);
    }
    return `m.${quoteIdent(found)}`;
  };
  const id = pick('id');
  const user = pick('user');
  const content = pick('content')!;
  const embedding = pick('embedding');
  const metadata = pick('metadata');
  const createdAt = pick('created_at');
  const updatedAt = pick('updated_at');
  const r = order ? `m.${order}` : 'row_number() OVER ()';
  const collection = map.table ?? 'query';
  const plan: LayoutPlan = {
    layout: 'map',
    relation:
      `SELECT ${r} AS r, ${id ? `CAST(${id} AS TEXT)` : `CAST(${r} AS TEXT)`} AS id, ${user ? `CAST(${user} AS TEXT)` : 'NULL'} AS user_id, ` +
      `'${collection.replace(/'/g, "''")}' AS collection, NULL AS partition, ${content} AS content, ${embedding ?? 'NULL'} AS embedding, ` +
      `${metadata ?? 'NULL'} AS metadata, ${createdAt ?? 'NULL'} AS created_at, ${updatedAt ?? 'NULL'} AS updated_at FROM ${source} m`,
    defaultUserFrom: user ? { kind: 'column' } : { kind: 'collection' },
    userFromKinds: user ? ['column', 'collection'] : ['collection'],
    notes: [],
    noWriteBack: 'rollback writes only the EspressoBot memories layout; a --map source is not written back',
  };
  const decode = decoderFor(map.encoding);
  if (decode) plan.decode = decode;
  return plan;
}

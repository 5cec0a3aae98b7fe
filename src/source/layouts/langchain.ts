// LangChain (Python) SQLiteVec and SQLiteVSS: a plain table {table}(rowid, text, metadata,
// text_embedding) next to a `{table}_vec` vec0 or a `vss_{table}` vss0 table. The plain table
// holds a copy of every vector (f32 blob for Vec, JSON array text for VSS), so it is read
// alone. No users: the table name is the collection.
import { quoteIdent } from '../../sql-identifier.js';
import { literal, table } from './schema.js';
import type { LayoutDefinition, Schema, TableShape } from './types.js';

function plainTables(schema: Schema, companion: (t: TableShape) => boolean): TableShape[] {
  return [...schema.values()].filter(
    (t) => t.type === 'table' && ['text', 'metadata', 'text_embedding'].every((c) => t.types.has(c)) && companion(t),
  );
}

const hasVec = (schema: Schema) => (t: TableShape) => table(schema, `${t.name}_vec`) !== undefined;
// vss0 tables also leave their shadow tables (vss_{table}_index, _data) in sqlite_master.
const hasVss = (schema: Schema) => (t: TableShape) => table(schema, `vss_${t.name}`) !== undefined || table(schema, `vss_${t.name}_index`) !== undefined;

function relation(tables: TableShape[]): string {
  return tables
    .map(
      (t, i) =>
        // Several tables in one file: their rowids interleave, so the order key keeps them apart.
        `SELECT ${i} * 4294967296 + t.rowid AS r, ${literal(t.name + ':')} || t.rowid AS id, NULL AS user_id, ${literal(t.name)} AS collection, ` +
        `NULL AS partition, t.text AS content, t.text_embedding AS embedding, t.metadata AS metadata, NULL AS created_at, NULL AS updated_at ` +
        `FROM ${quoteIdent(t.name)} t`,
    )
    .join(' UNION ALL ');
}

function define(name: string, title: string, companion: (schema: Schema) => (t: TableShape) => boolean): LayoutDefinition {
  return {
    name,
    title,
    detect: (schema) => plainTables(schema, companion(schema)).length > 0,
    plan(_db, schema) {
      const tables = plainTables(schema, companion(schema));
      const found = tables.length > 0 ? tables : plainTables(schema, () => true);
      return {
        layout: name,
        relation: relation(found),
        defaultUserFrom: { kind: 'collection' },
        userFromKinds: ['collection'],
        notes: [],
        noWriteBack: `rollback writes only the EspressoBot memories layout; a LangChain ${name} table is not written back`,
      };
    },
  };
}

export const langchainSqliteVecLayout = define('langchain-sqlitevec', 'LangChain SQLiteVec: {table}(text, metadata, text_embedding) + {table}_vec', hasVec);
export const langchainSqliteVssLayout = define('langchain-sqlitevss', 'LangChain SQLiteVSS: {table}(text, metadata, text_embedding) + vss_{table}', hasVss);

/**
 * LangChain.js LibSQLVectorStore: vectors(content, metadata, embedding F32_BLOB(N)). libSQL
 * may append a type byte 0x01 to an f32 blob: a blob of 4n+1 bytes ending in 1 loses it.
 */
export const langchainLibsqlLayout: LayoutDefinition = {
  name: 'langchain-libsql',
  title: 'LangChain.js LibSQL: vectors(content, metadata, embedding F32_BLOB(N))',
  detect: (schema) => libsqlTables(schema).length > 0,
  plan(_db, schema) {
    const tables = libsqlTables(schema);
    return {
      layout: 'langchain-libsql',
      relation: tables
        .map(
          (t, i) =>
            `SELECT ${i} * 4294967296 + t.rowid AS r, ${literal(t.name + ':')} || t.rowid AS id, NULL AS user_id, ${literal(t.name)} AS collection, NULL AS partition, ` +
            `t.content AS content, CASE WHEN typeof(t.embedding) = 'blob' AND length(t.embedding) % 4 = 1 AND hex(substr(t.embedding, -1)) = '01' ` +
            `THEN substr(t.embedding, 1, length(t.embedding) - 1) ELSE t.embedding END AS embedding, t.metadata AS metadata, NULL AS created_at, NULL AS updated_at ` +
            `FROM ${quoteIdent(t.name)} t`,
        )
        .join(' UNION ALL '),
      defaultUserFrom: { kind: 'collection' },
      userFromKinds: ['collection'],
      notes: [],
      noWriteBack: 'rollback writes only the EspressoBot memories layout; a LibSQL vectors table is not written back',
    };
  },
};

function libsqlTables(schema: Schema): TableShape[] {
  return [...schema.values()].filter(
    (t) => t.type === 'table' && ['content', 'metadata', 'embedding'].every((c) => t.types.has(c)) && /^F32_BLOB/.test(t.types.get('embedding')!),
  );
}

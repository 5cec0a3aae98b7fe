// LangGraph SqliteStore: store(prefix, key, value JSON, created_at, updated_at) and
// store_vectors(prefix, key, field_name, embedding f32 LE). One memory per embedded field:
// its text is that field of the value ("$" = the whole value), its metadata the value itself.
// The namespace (prefix, dot-joined) is the collection; items never embedded are not read.
import type { LayoutDefinition } from './types.js';
import { hasColumns } from './schema.js';

export const langgraphLayout: LayoutDefinition = {
  name: 'langgraph',
  title: 'LangGraph SqliteStore: store + store_vectors',
  detect: (schema) =>
    hasColumns(schema, 'store', ['prefix', 'key', 'value']) && hasColumns(schema, 'store_vectors', ['prefix', 'key', 'field_name', 'embedding']),
  plan() {
    return {
      layout: 'langgraph',
      relation:
        `SELECT v.rowid AS r, s.prefix || '/' || s.key || '#' || v.field_name AS id, NULL AS user_id, s.prefix AS collection, NULL AS partition, ` +
        `CASE WHEN v.field_name = '$' THEN s.value ELSE json_extract(s.value, '$.' || v.field_name) END AS content, ` +
        `v.embedding AS embedding, s.value AS metadata, s.created_at AS created_at, s.updated_at AS updated_at ` +
        `FROM store_vectors v JOIN store s ON s.prefix = v.prefix AND s.key = v.key`,
      defaultUserFrom: { kind: 'collection' },
      userFromKinds: ['collection'],
      notes: [],
      noWriteBack: 'rollback writes only the EspressoBot memories layout; a LangGraph store is not written back',
    };
  },
};

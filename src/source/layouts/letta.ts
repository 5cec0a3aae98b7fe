// Letta / MemGPT SQLite passages (archival_passages from 0.11, agent_passages in 0.10). The
// vectors are zero-padded to 4096 floats; embedding_config.embedding_dim is their real width,
// so each blob is cut to it. The agent (agent_id) or archive (archive_id) is the collection.
import { quoteIdent } from '../../sql-identifier.js';
import type { LayoutDefinition, Schema, TableShape } from './types.js';
import { table } from './schema.js';

function passages(schema: Schema): TableShape | undefined {
  for (const name of ['archival_passages', 'agent_passages']) {
    const t = table(schema, name);
    if (t && ['id', 'text', 'embedding', 'embedding_config'].every((c) => t.types.has(c))) return t;
  }
  return undefined;
}

export const lettaLayout: LayoutDefinition = {
  name: 'letta',
  title: 'Letta archival_passages / agent_passages (vectors padded to 4096)',
  detect: (schema) => passages(schema) !== undefined,
  plan(_db, schema) {
    const t = passages(schema)!;
    const owner = t.types.has('agent_id') ? 'p.agent_id' : t.types.has('archive_id') ? 'p.archive_id' : 'NULL';
    const metadata = t.types.has('metadata_') ? 'p.metadata_' : 'NULL';
    const live = t.types.has('is_deleted') ? ' WHERE COALESCE(p.is_deleted, 0) = 0' : '';
    const dim = `CAST(json_extract(p.embedding_config, '$.embedding_dim') AS INTEGER)`;
    return {
      layout: 'letta',
      relation:
        `SELECT p.rowid AS r, CAST(p.id AS TEXT) AS id, NULL AS user_id, ${owner} AS collection, NULL AS partition, p.text AS content, ` +
        `CASE WHEN typeof(p.embedding) = 'blob' AND ${dim} > 0 THEN substr(p.embedding, 1, 4 * ${dim}) ELSE p.embedding END AS embedding, ` +
        `${metadata} AS metadata, ${t.types.has('created_at') ? 'p.created_at' : 'NULL'} AS created_at, ${t.types.has('updated_at') ? 'p.updated_at' : 'NULL'} AS updated_at ` +
        `FROM ${quoteIdent(t.name)} p${live}`,
      defaultUserFrom: { kind: 'collection' },
      userFromKinds: ['collection'],
      notes: [],
      noWriteBack: 'rollback writes only the EspressoBot memories layout; Letta passages are not written back',
    };
  },
};

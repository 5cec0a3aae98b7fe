// The plugin's reads and writes on the one store `migrate` fills. A memory is a row of
// memories (our table, or the view over an adopted app's table) plus, when it was written
// over HTTP, a row of plugin_memories with the plugin's fields (sql/011_plugin_tables.sql).
// A migrated row without one is seen through the namespace template: namespace
// template(user_id), wire id its uuid column, a 'fact' from the 'agent', never pinned or
// expiring. So every query reads two branches: the plugin rows of the namespaces asked for,
// and the memories of the users those namespaces name that have no plugin row.
import { randomUUID } from 'node:crypto';
import type { Db, Row } from '../postgres/connection.js';
import { cosineDistanceSql, ivfflatIndexLists, ivfflatProbes } from '../postgres/indexes.js';
import { vectorToText } from '../postgres/vector-text.js';
import { sqlState } from '../errors.js';
import { namespaceKindOf, userForNamespace } from '../plugin-namespace.js';
import { badRequest, notFound } from './errors.js';
import { isoTime, namespaceJson, parseJsonb, type MemoryJson, type NamespaceJson } from './wire.js';
import type { MemoryWrite, NamespacePatch, NamespaceUpsert, SearchRequest } from './validation.js';

/** The index search by `query` uses: on the table that holds the content (plugin-server/schema.ts). */
export const FTS_CONFIG = `'english'::regconfig`;
export const FTS_DOCUMENT = (column: string) => `to_tsvector(${FTS_CONFIG}, ${column})`;

/** user_id is VARCHAR(255): a row written into a namespace no user maps to is filed under the name itself. */
const USER_ID_MAX = 255;

export interface PluginStoreOptions {
  db: Db;
  /** The namespace template (plugin-namespace.ts): how a user_id becomes a namespace. */
  template: string;
  /** Width of memories.embedding. */
  dimensions: number;
  /** Embeds a text with the configured embedder (the cached EmbeddingService), or null when there is none. */
  embed: ((text: string) => Promise<number[]>) | null;
  /** The model name stored with vectors the embedder made. */
  model: string | null;
}

type SearchPath = 'semantic' | 'hybrid' | 'fts' | 'substring' | 'list';

export class PluginStore {
  constructor(private readonly o: PluginStoreOptions) {}

  get dimensions(): number {
    return this.o.dimensions;
  }

  /** The user a namespace names through the template, if any (a migrated user's namespace). */
  private userOf(name: string): string | undefined {
    const user = userForNamespace(this.o.template, name);
    return user !== undefined && user.length <= USER_ID_MAX ? user : undefined;
  }

  /** The user_id a row written into `name` gets: the template's user, else the name itself. */
  private userIdFor(name: string): string {
    return this.userOf(name) ?? name.slice(0, USER_ID_MAX);
  }

  async ping(): Promise<void> {
    await this.o.db.query('SELECT 1');
  }

  // ------------------------------------------------------------ namespaces

  private async explicitNamespace(db: Db, name: string): Promise<Row | undefined> {
    const [row] = await db.query(`SELECT name, kind, expires_at, metadata, created_at FROM plugin_namespaces WHERE name = $1`, [name]);
    return row;
  }

  /** True when the namespace is a migrated user's: memories of that user with no plugin row. */
  private async implicitNamespace(db: Db, name: string): Promise<boolean> {
    const user = this.userOf(name);
    if (user === undefined) return false;
    const rows = await db.query(
      `SELECT 1 FROM memories m WHERE m.user_id = $1 AND NOT EXISTS (SELECT 1 FROM plugin_memories p WHERE p.memory_id = m.id) LIMIT 1`,
      [user],
    );
    return rows.length > 0;
  }

  private async namespaceExists(db: Db, name: string): Promise<boolean> {
    return (await this.explicitNamespace(db, name)) !== undefined || (await this.implicitNamespace(db, name));
  }

  async upsertNamespace(name: string, body: NamespaceUpsert): Promise<NamespaceJson> {
    const [row] = await this.o.db.query(
      `INSERT INTO plugin_namespaces (name, kind, expires_at, metadata) VALUES ($1, $2, $3::timestamptz, $4::text::jsonb)
       ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, expires_at = EXCLUDED.expires_at, metadata = EXCLUDED.metadata
       RETURNING name, kind, expires_at, metadata, created_at`,
      [name, body.kind, body.expiresAt, body.metadata === null ? null : JSON.stringify(body.metadata)],
    );
    return namespaceJson(row as never);
  }

  async patchNamespace(name: string, patch: NamespacePatch): Promise<NamespaceJson> {
    return this.o.db.transaction(async (tx) => {
      await lockKey(tx, `ns:${name}`);
      if (!(await this.explicitNamespace(tx, name))) {
        if (!(await this.implicitNamespace(tx, name))) throw notFound('namespace not found');
        // A migrated user's namespace gets its row now, with the kind its prefix names.
        await tx.query(`INSERT INTO plugin_namespaces (name, kind) VALUES ($1, $2)`, [name, namespaceKindOf(name)]);
      }
      const [row] = await tx.query(
        `UPDATE plugin_namespaces
            SET expires_at = CASE WHEN $2 THEN $3::timestamptz ELSE expires_at END,
                metadata = CASE WHEN $4 THEN $5::text::jsonb ELSE metadata END
          WHERE name = $1 RETURNING name, kind, expires_at, metadata, created_at`,
        [name, patch.expiresAt !== undefined, patch.expiresAt ?? null, patch.metadata !== undefined, patch.metadata === undefined ? null : JSON.stringify(patch.metadata)],
      );
      return namespaceJson(row as never);
    });
  }

  /** Deletes the namespace and every memory in it (migrated ones too); false when there was none. */
  async deleteNamespace(name: string): Promise<boolean> {
    return this.o.db.transaction(async (tx) => {
      await lockKey(tx, `ns:${name}`);
      const explicit = await tx.query(`DELETE FROM plugin_namespaces WHERE name = $1 RETURNING name`, [name]);
      const written = await tx.query<{ memory_id: string }>(`DELETE FROM plugin_memories WHERE namespace = $1 RETURNING memory_id`, [name]);
      if (written.length > 0) await tx.query(`DELETE FROM memories WHERE id = ANY($1::text[])`, [written.map((r) => r.memory_id)]);
      const user = this.userOf(name);
      let migrated = 0;
      if (user !== undefined) {
        const rows = await tx.query(
          `DELETE FROM memories m WHERE m.user_id = $1 AND NOT EXISTS (SELECT 1 FROM plugin_memories p WHERE p.memory_id = m.id) RETURNING m.id`,
          [user],
        );
        migrated = rows.length;
      }
      return explicit.length > 0 || migrated > 0;
    });
  }

  // ------------------------------------------------------------ memories

  /** memories.id of the memory with this wire id, or undefined. */
  private async memoryIdOf(db: Db, wireId: string): Promise<string | undefined> {
    const rows = await db.query<{ id: string }>(
      `SELECT m.id FROM plugin_memories p JOIN memories m ON m.id = p.memory_id WHERE p.wire_id = $1::uuid
       UNION ALL
       SELECT m.id FROM memories m WHERE m.uuid = $1::uuid AND NOT EXISTS (SELECT 1 FROM plugin_memories p WHERE p.memory_id = m.id)
       LIMIT 1`,
      [wireId],
    );
    return rows[0]?.id;
  }

  async commit(namespace: string, w: MemoryWrite): Promise<{ id: string; namespace: string }> {
    // Our own vector when an embedder is configured (the contract lets a plugin that reports
    // `embedding` ignore the caller's), so one column never mixes two models; else the caller's.
    const vector = this.o.embed ? await this.o.embed(w.content) : w.embedding;
    const model = this.o.embed ? this.o.model : null;
    const wireId = w.id ?? randomUUID();
    const vectorText = vector ? vectorToText(vector) : null;
    try {
      await this.o.db.transaction(async (tx) => {
        // Two commits of one id at once would both find no row and both insert.
        if (w.id !== undefined) await lockKey(tx, `mem:${wireId}`);
        if (!(await this.namespaceExists(tx, namespace))) throw notFound('namespace not found');
        const existing = w.id !== undefined ? await this.memoryIdOf(tx, wireId) : undefined;
        const userId = this.userIdFor(namespace);
        let memoryId: string;
        if (existing !== undefined) {
          memoryId = existing;
          await tx.query(
            `UPDATE memories SET user_id = $2, content = $3,
                    embedding = CASE WHEN $4::text IS NOT NULL THEN $4::text::vector WHEN content IS DISTINCT FROM $3 THEN NULL ELSE embedding END,
                    embedding_model = CASE WHEN $4::text IS NOT NULL THEN $5 WHEN content IS DISTINCT FROM $3 THEN NULL ELSE embedding_model END
              WHERE id = $1`,
            [memoryId, userId, w.content, vectorText, model],
          );
        } else {
          memoryId = wireId;
          // A plugin row left by a memory the app deleted gives its wire id back.
          await tx.query(`DELETE FROM plugin_memories WHERE wire_id = $1::uuid OR memory_id = $2`, [wireId, memoryId]);
          // The triggers of sql/008 (or the adopted view's) fill in the hashes, as for any app's INSERT.
          await tx.query(
            `INSERT INTO memories (id, uuid, user_id, content, embedding, embedding_model) VALUES ($1, $2::uuid, $3, $4, $5::text::vector, $6)`,
            [memoryId, wireId, userId, w.content, vectorText, model],
          );
        }
        await tx.query(
          `INSERT INTO plugin_memories (memory_id, wire_id, namespace, kind, source, pinned, expires_at, propagation)
           VALUES ($1, $2::uuid, $3, $4, $5, $6, $7::timestamptz, $8::text::jsonb)
           ON CONFLICT (memory_id) DO UPDATE SET wire_id = EXCLUDED.wire_id, namespace = EXCLUDED.namespace, kind = EXCLUDED.kind,
                  source = EXCLUDED.source, pinned = EXCLUDED.pinned, expires_at = EXCLUDED.expires_at, propagation = EXCLUDED.propagation`,
          [memoryId, wireId, namespace, w.kind, w.source, w.pin, w.expiresAt, w.propagation === null ? null : JSON.stringify(w.propagation)],
        );
      });
    } catch (err) {
      // The id is taken by a row the wire id does not name (a migrated row whose source id is this UUID's text).
      if (sqlState(err) === '23505') throw badRequest(`id ${wireId} collides with the id of another memory in the store: commit without an id, or with another one`);
      throw err;
    }
    return { id: wireId, namespace };
  }

  /** Deletes the memory if it is in `namespace`; false when there is no such memory there. */
  async forget(wireId: string, namespace: string): Promise<boolean> {
    return this.o.db.transaction(async (tx) => {
      await lockKey(tx, `mem:${wireId}`);
      const [written] = await tx.query<{ memory_id: string }>(
        `SELECT p.memory_id FROM plugin_memories p JOIN memories m ON m.id = p.memory_id WHERE p.wire_id = $1::uuid AND p.namespace = $2`,
        [wireId, namespace],
      );
      if (written) {
        await tx.query(`DELETE FROM memories WHERE id = $1`, [written.memory_id]);
        await tx.query(`DELETE FROM plugin_memories WHERE memory_id = $1`, [written.memory_id]);
        return true;
      }
      const user = this.userOf(namespace);
      if (user === undefined) return false;
      const gone = await tx.query(
        `DELETE FROM memories m WHERE m.uuid = $1::uuid AND m.user_id = $2
            AND NOT EXISTS (SELECT 1 FROM plugin_memories p WHERE p.memory_id = m.id) RETURNING m.id`,
        [wireId, user],
      );
      return gone.length > 0;
    });
  }

  // ------------------------------------------------------------ search

  async search(req: SearchRequest): Promise<MemoryJson[]> {
    const hasQuery = req.query.length > 0;
    let vector = req.embedding;
    let path: SearchPath;
    if (vector) path = 'semantic';
    else if (Buffer.byteLength(req.query, 'utf8') >= 2) {
      // A query and an embedder: the query's vector too (through the cached service), both scores combined.
      if (this.o.embed) {
        vector = await this.o.embed(req.query);
        path = 'hybrid';
      } else path = 'fts';
    } else path = hasQuery ? 'substring' : 'list';

    const params: unknown[] = [];
    const p = (v: unknown) => {
      params.push(v);
      return `$${params.length}`;
    };
    const dims = this.o.dimensions;
    const vec = vector ? p(vectorToText(vector)) : '';
    const q = path === 'fts' || path === 'hybrid' || path === 'substring' ? p(req.query) : '';
    const tsq = `plainto_tsquery(${FTS_CONFIG}, ${q})`;
    const ftsMatch = `${FTS_DOCUMENT('m.content')} @@ ${tsq}`;
    const ftsRank = `ts_rank(${FTS_DOCUMENT('m.content')}, ${tsq})::float8`;
    const similarity = `(1 - (${cosineDistanceSql(dims, vec, 'm.embedding')}))::float8`;
    // Per path: which rows match, their score (null: none on the wire), and the order within a
    // branch (ascending keys k1, k2). Pinned rows come first on every path.
    let match: string;
    let score: string;
    let k1: string;
    let k2 = '0::float8';
    switch (path) {
      case 'semantic':
        match = 'm.embedding IS NOT NULL';
        score = similarity;
        k1 = `(${cosineDistanceSql(dims, vec, 'm.embedding')})::float8`;
        break;
      case 'hybrid':
        match = `(m.embedding IS NOT NULL OR ${ftsMatch})`;
        score = `(COALESCE(${similarity}, 0) + CASE WHEN ${ftsMatch} THEN ${ftsRank} ELSE 0 END)::float8`;
        k1 = `-${score}`;
        break;
      case 'fts':
        match = ftsMatch;
        score = ftsRank;
        k1 = `-${ftsRank}`;
        break;
      case 'substring': {
        // One character: full-text search has no terms that short. Earliest match first, then shorter content.
        const at = `strpos(lower(m.content), lower(${q}))`;
        match = `${at} > 0`;
        score = 'NULL::float8';
        k1 = `${at}::float8`;
        k2 = 'length(m.content)::float8';
        break;
      }
      case 'list':
        match = 'true';
        score = 'NULL::float8';
        k1 = `-extract(epoch FROM m.created_at)::float8`;
        break;
    }
    const limit = p(req.limit);
    const names = p(req.namespaces);
    const kinds = req.kinds.length > 0 ? p(req.kinds) : null;
    const users: { user: string; name: string }[] = [];
    for (const name of req.namespaces) {
      const user = this.userOf(name);
      if (user !== undefined) users.push({ user, name });
    }
    const written = `
      SELECT p.wire_id::text AS id, p.namespace, m.content, p.kind, p.source, p.expires_at, p.propagation, p.pinned,
             COALESCE(m.created_at AT TIME ZONE 'UTC', p.created_at) AS created_at, ${score} AS score, ${k1} AS k1, ${k2} AS k2
        FROM plugin_memories p JOIN memories m ON m.id = p.memory_id
       WHERE p.namespace = ANY(${names}::text[]) AND (p.expires_at IS NULL OR p.expires_at > now())
             ${kinds ? `AND p.kind = ANY(${kinds}::text[])` : ''} AND ${match}
       ORDER BY p.pinned DESC, k1, k2, id
       LIMIT ${limit}`;
    // Migrated rows are facts: with a kinds filter that leaves facts out, none of them.
    const migratedBranch = users.length > 0 && (req.kinds.length === 0 || req.kinds.includes('fact'));
    const migrated = migratedBranch
      ? `
      SELECT m.uuid::text AS id, u.ns AS namespace, m.content, 'fact'::text AS kind, 'agent'::text AS source, NULL::timestamptz AS expires_at,
             NULL::jsonb AS propagation, false AS pinned, m.created_at AT TIME ZONE 'UTC' AS created_at, ${score} AS score, ${k1} AS k1, ${k2} AS k2
        FROM memories m JOIN unnest(${p(users.map((u) => u.user))}::text[], ${p(users.map((u) => u.name))}::text[]) AS u(user_id, ns) ON m.user_id = u.user_id
       WHERE NOT EXISTS (SELECT 1 FROM plugin_memories p WHERE p.memory_id = m.id) AND ${match}
       ORDER BY ${path === 'semantic' ? 'k1' : 'k1, k2, id'}
       LIMIT ${limit}`
      : null;
    const sql = `SELECT * FROM ((${written})${migrated ? ` UNION ALL (${migrated})` : ''}) r ORDER BY r.pinned DESC, r.k1, r.k2, r.id LIMIT ${limit}`;
    const rows = vector
      ? await this.o.db.transaction(async (tx) => {
          // Probes for recall, and iterative scans so a namespace filter does not starve the index (as the store's search).
          const lists = (await ivfflatIndexLists(tx, 'memories_embedding_idx')) ?? 1;
          await tx.exec(`SET LOCAL ivfflat.probes = ${ivfflatProbes(lists)}; SET LOCAL ivfflat.iterative_scan = relaxed_order;`);
          return tx.query(sql, params);
        })
      : await this.o.db.query(sql, params);
    return rows.map(memoryJson);
  }
}

function memoryJson(r: Row): MemoryJson {
  const score = r['score'] === null || r['score'] === undefined ? undefined : Number(r['score']);
  return {
    id: r['id'],
    namespace: r['namespace'],
    content: r['content'],
    kind: r['kind'],
    source: r['source'],
    ...(r['expires_at'] ? { expires_at: isoTime(r['expires_at']) } : {}),
    ...(r['propagation'] !== null && r['propagation'] !== undefined ? { propagation: parseJsonb(r['propagation']) as Record<string, unknown> } : {}),
    ...(r['pinned'] ? { pin: true } : {}),
    created_at: isoTime(r['created_at']),
    ...(score !== undefined && Number.isFinite(score) ? { score } : {}),
  };
}

/** A transaction-scoped lock on one key: writers of the same memory or namespace take turns. */
async function lockKey(tx: Db, key: string): Promise<void> {
  await tx.query(`SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, [`memory-plugin:${key}`]);
}


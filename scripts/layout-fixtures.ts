// Fixture files of every source layout memory-migrate reads (sqlite-vector-layouts.md), each
// written from its project's DDL with the same small corpus: three users, unicode, CRLF, an
// exact duplicate within a user, the same text under two users, empty and NULL metadata, a
// row without a vector, and deleted rows that must not be read. The sqlite-vec tables are
// written by the real sqlite-vec extension. Each writer returns what a migration must produce.
import Database from 'better-sqlite3';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { LAYOUT_A_SQL } from '../src/source/layout.js';

export const FIXTURE_LAYOUTS = [
  'espressobot',
  'llm',
  'sqlite-vec',
  'langchain-sqlitevec',
  'langchain-sqlitevss',
  'langchain-libsql',
  'langgraph',
  'mem0',
  'letta',
  'mcp-memory-service',
  'chroma',
] as const;
export type FixtureLayout = (typeof FIXTURE_LAYOUTS)[number];

export const LAYOUT_DIMS = 8;

/** One row a migration of the fixture must deliver. */
export interface ExpectedRow {
  id: string;
  user: string;
  content: string;
  /** The stored vector (null: none stored, the migration computes one). */
  vector: Float32Array | null;
  /** The metadata JSON text as stored (null: none). */
  metadata: string | null;
}

export interface LayoutFixture {
  layout: FixtureLayout;
  out: string;
  rows: ExpectedRow[];
  /** Ids of rows deleted in the source (must not arrive). */
  deletedIds: string[];
  /** The source model the file records, when it does. */
  sourceModel?: string;
}

const USERS = ['alice', 'bob', 'carol'];
const TEXTS = [
  'Prefers oat milk in the cortado',
  'Allergic to hazelnuts — never suggest praline syrups',
  'Café au lait at 7:30 every weekday morning',
  'Ordered the 1 kg Ethiopia Guji beans twice this month',
  '東京の店舗で受け取りを希望しています',
  'Line one of the note\r\nline two, written on Windows',
  'Loves dark roasts ☕️🔥 and hates anything fruity',
  'Asked how to descale the Breville Barista Express',
  'Birthday is on 29 February; sends a reminder two days early',
  'Uses a Comandante grinder at 22 clicks for V60',
  'Wants invoices in EUR, VAT number DE123456789',
  'Said "no more decaf" in the last three chats',
];

interface Seed {
  n: number;
  user: string;
  content: string;
  vector: Float32Array | null;
  metadata: string | null;
  createdMs: number;
}

/** The corpus every layout writes: 14 rows, with the hazards named above. */
function corpus(): Seed[] {
  const seeds: Seed[] = [];
  for (let i = 0; i < TEXTS.length; i++) {
    seeds.push({
      n: i + 1,
      user: USERS[i % USERS.length]!,
      content: TEXTS[i]!,
      vector: i === 7 ? null : vectorOf(i + 1),
      metadata: i % 3 === 0 ? JSON.stringify({ source: 'chat', topic: `t${i}`, score: 0.5 + i / 8, tags: ['coffee', 'ünïcödé'] }) : i % 3 === 1 ? '{}' : null,
      createdMs: Date.UTC(2025, 0, 1 + i, 8, 30, 15),
    });
  }
  // An exact duplicate of row 1 for the same user, and row 1's text under another user.
  seeds.push({ ...seeds[0]!, n: 13, vector: vectorOf(13), createdMs: Date.UTC(2025, 1, 1) });
  seeds.push({ ...seeds[0]!, n: 14, user: 'bob', vector: vectorOf(14), metadata: '{"source":"import"}', createdMs: Date.UTC(2025, 1, 2) });
  return seeds;
}

function vectorOf(n: number): Float32Array {
  const v = new Float32Array(LAYOUT_DIMS);
  for (let j = 0; j < LAYOUT_DIMS; j++) v[j] = Math.fround(Math.sin(n * 7.13 + j * 1.7) * (0.25 + j / 16));
  return v;
}

const f32 = (v: Float32Array): Buffer => Buffer.from(v.buffer, v.byteOffset, v.byteLength);
const iso = (ms: number): string => new Date(ms).toISOString();

function fresh(out: string): Database.Database {
  if (existsSync(out)) rmSync(out);
  mkdirSync(dirname(out), { recursive: true });
  return new Database(out);
}

async function withVec(db: Database.Database): Promise<void> {
  const sqliteVec = await import('sqlite-vec');
  sqliteVec.load(db);
}

export async function makeLayoutFixture(layout: FixtureLayout, out: string): Promise<LayoutFixture> {
  const seeds = corpus();
  const db = fresh(out);
  const rows: ExpectedRow[] = [];
  const deletedIds: string[] = [];
  const fx: LayoutFixture = { layout, out, rows, deletedIds };
  const expect = (s: Seed, id: string, user: string) => rows.push({ id, user, content: s.content, vector: s.vector, metadata: s.metadata });
  try {
    switch (layout) {
      case 'espressobot': {
        db.exec(LAYOUT_A_SQL);
        const ins = db.prepare('INSERT INTO memories (id, user_id, content, embedding, metadata, created_at) VALUES (?, ?, ?, ?, ?, ?)');
        for (const s of seeds) {
          ins.run(`mem_${s.n}`, s.user, s.content, s.vector ? f32(s.vector) : null, s.metadata, iso(s.createdMs));
          expect(s, `mem_${s.n}`, s.user);
        }
        break;
      }
      case 'llm': {
        // llm/embeddings_migrations.py m001–m005.
        db.exec(`CREATE TABLE collections (id INTEGER PRIMARY KEY, name TEXT, model TEXT);
          CREATE UNIQUE INDEX idx_collections_name ON collections (name);
          CREATE TABLE embeddings (collection_id INTEGER REFERENCES collections(id), id TEXT, embedding BLOB, content TEXT, content_blob BLOB,
            content_hash BLOB, metadata TEXT, updated INTEGER, PRIMARY KEY (collection_id, id));
          CREATE INDEX idx_embeddings_content_hash ON embeddings (content_hash);
          CREATE TABLE _sqlite_migrations (migration_set TEXT, name TEXT, applied_at TEXT);`);
        USERS.forEach((u, i) => db.prepare('INSERT INTO collections (id, name, model) VALUES (?, ?, ?)').run(i + 1, u, 'local-hash-v1'));
        fx.sourceModel = 'local-hash-v1';
        const ins = db.prepare('INSERT INTO embeddings (collection_id, id, embedding, content, content_hash, metadata, updated) VALUES (?, ?, ?, ?, ?, ?, ?)');
        for (const s of seeds) {
          // llm always stores a vector; the vectorless row is one stored without --store (no text)... kept with text here.
          const v = s.vector ?? vectorOf(99);
          ins.run(USERS.indexOf(s.user) + 1, `note-${s.n}`, f32(v), s.content, Buffer.alloc(16, s.n), s.metadata, Math.floor(s.createdMs / 1000));
          rows.push({ id: `${s.user}/note-${s.n}`, user: s.user, content: s.content, vector: v, metadata: s.metadata });
        }
        break;
      }
      case 'sqlite-vec': {
        await withVec(db);
        db.exec(`CREATE TABLE documents (id INTEGER PRIMARY KEY, content TEXT NOT NULL, metadata TEXT, created_at TEXT);
          CREATE VIRTUAL TABLE vec_documents USING vec0(user_id text partition key, embedding float[${LAYOUT_DIMS}], +source text, chunk_size=8);`);
        const doc = db.prepare('INSERT INTO documents (id, content, metadata, created_at) VALUES (?, ?, ?, ?)');
        const vec = db.prepare('INSERT INTO vec_documents (rowid, user_id, embedding, source) VALUES (?, ?, ?, ?)');
        for (const s of seeds) {
          doc.run(s.n, s.content, s.metadata, iso(s.createdMs));
          if (!s.vector) continue; // a vec0 row always has a vector: a text without one is not in the index
          vec.run(BigInt(s.n), s.user, f32(s.vector), 'chat');
          expect(s, String(s.n), s.user);
        }
        // Deleted rows: gone from _rowids, their slots cleared in their chunk.
        for (const n of [101, 102]) {
          doc.run(n, `to be deleted ${n}`, null, iso(Date.UTC(2025, 2, 1)));
          vec.run(BigInt(n), 'alice', f32(vectorOf(n)), 'chat');
        }
        db.prepare('DELETE FROM vec_documents WHERE rowid IN (101, 102)').run();
        db.prepare('DELETE FROM documents WHERE id IN (101, 102)').run();
        deletedIds.push('101', '102');
        break;
      }
      case 'langchain-sqlitevec': {
        await withVec(db);
        // langchain_community/vectorstores/sqlitevec.py
        db.exec(`CREATE TABLE IF NOT EXISTS langchain(rowid INTEGER PRIMARY KEY AUTOINCREMENT, text TEXT, metadata BLOB, text_embedding BLOB);
          CREATE VIRTUAL TABLE IF NOT EXISTS langchain_vec USING vec0(rowid INTEGER PRIMARY KEY, text_embedding float[${LAYOUT_DIMS}]);
          CREATE TRIGGER IF NOT EXISTS langchain_embed_text AFTER INSERT ON langchain BEGIN
            INSERT INTO langchain_vec(rowid, text_embedding) VALUES (new.rowid, new.text_embedding); END;`);
        const ins = db.prepare('INSERT INTO langchain (text, metadata, text_embedding) VALUES (?, ?, ?)');
        for (const s of seeds) {
          const v = s.vector ?? vectorOf(99);
          const r = ins.run(s.content, s.metadata ?? '{}', f32(v));
          rows.push({ id: `langchain:${r.lastInsertRowid}`, user: 'langchain', content: s.content, vector: v, metadata: s.metadata ?? '{}' });
        }
        break;
      }
      case 'langchain-sqlitevss': {
        // langchain_community/vectorstores/sqlitevss.py; the vss0 table's own shadow tables (sqlite-vss v0.1.2).
        db.exec(`CREATE TABLE IF NOT EXISTS langchain(rowid INTEGER PRIMARY KEY AUTOINCREMENT, text TEXT, metadata BLOB, text_embedding BLOB);
          CREATE TABLE vss_langchain_index(rowid integer primary key autoincrement, idx);
          CREATE TABLE vss_langchain_data(rowid integer primary key autoincrement, _);`);
        const ins = db.prepare('INSERT INTO langchain (text, metadata, text_embedding) VALUES (?, ?, ?)');
        for (const s of seeds) {
          const v = s.vector ?? vectorOf(99);
          // json.dumps(list) of Python floats: the float32 values written as their shortest double text.
          const r = ins.run(s.content, s.metadata ?? '{}', JSON.stringify(Array.from(v)));
          rows.push({ id: `langchain:${r.lastInsertRowid}`, user: 'langchain', content: s.content, vector: v, metadata: s.metadata ?? '{}' });
        }
        break;
      }
      case 'langchain-libsql': {
        db.exec(`CREATE TABLE vectors (content TEXT, metadata TEXT, embedding F32_BLOB(${LAYOUT_DIMS}));`);
        const ins = db.prepare('INSERT INTO vectors (content, metadata, embedding) VALUES (?, ?, ?)');
        for (const s of seeds) {
          const v = s.vector ?? vectorOf(99);
          // libSQL may append the type byte 0x01 to an f32 blob.
          const blob = s.n % 2 === 0 ? Buffer.concat([f32(v), Buffer.from([1])]) : f32(v);
          const r = ins.run(s.content, s.metadata ?? '{}', blob);
          rows.push({ id: `vectors:${r.lastInsertRowid}`, user: 'vectors', content: s.content, vector: v, metadata: s.metadata ?? '{}' });
        }
        break;
      }
      case 'langgraph': {
        // langgraph/store/sqlite/base.py migrations.
        db.exec(`CREATE TABLE store (prefix text NOT NULL, key text NOT NULL, value text NOT NULL, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, expires_at TIMESTAMP, ttl_minutes REAL, PRIMARY KEY (prefix, key));
          CREATE TABLE store_vectors (prefix text NOT NULL, key text NOT NULL, field_name text NOT NULL, embedding BLOB,
            created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            PRIMARY KEY (prefix, key, field_name), FOREIGN KEY (prefix, key) REFERENCES store(prefix, key) ON DELETE CASCADE);
          CREATE TABLE store_migrations (v INTEGER PRIMARY KEY); CREATE TABLE vector_migrations (v INTEGER PRIMARY KEY);`);
        const st = db.prepare('INSERT INTO store (prefix, key, value, created_at, updated_at) VALUES (?, ?, ?, ?, ?)');
        const sv = db.prepare('INSERT INTO store_vectors (prefix, key, field_name, embedding) VALUES (?, ?, ?, ?)');
        for (const s of seeds) {
          const prefix = `memories.${s.user}`;
          const key = `m${s.n}`;
          const value = JSON.stringify({ content: s.content, kind: 'fact' });
          const t = iso(s.createdMs).replace('T', ' ').replace(/\.\d+Z$/, '');
          st.run(prefix, key, value, t, t);
          const v = s.vector ?? vectorOf(99);
          sv.run(prefix, key, 'content', f32(v));
          rows.push({ id: `${prefix}/${key}#content`, user: prefix, content: s.content, vector: v, metadata: value });
        }
        break;
      }
      case 'mem0': {
        // mem0-ts/src/oss/src/vector_stores/memory.ts
        db.exec(`CREATE TABLE IF NOT EXISTS vectors (id TEXT PRIMARY KEY, vector BLOB NOT NULL, payload TEXT NOT NULL);
          CREATE TABLE IF NOT EXISTS memory_migrations (id INTEGER PRIMARY KEY AUTOINCREMENT, user_id TEXT NOT NULL UNIQUE);`);
        const ins = db.prepare('INSERT INTO vectors (id, vector, payload) VALUES (?, ?, ?)');
        for (const s of seeds) {
          const v = s.vector ?? vectorOf(99);
          const id = `00000000-0000-4000-8000-${String(s.n).padStart(12, '0')}`;
          // Older mem0-ts wrote userId, newer user_id: both occur.
          const payload = JSON.stringify({ data: s.content, hash: `h${s.n}`, [s.n % 2 ? 'userId' : 'user_id']: s.user, createdAt: iso(s.createdMs) });
          ins.run(id, f32(v), payload);
          rows.push({ id, user: s.user, content: s.content, vector: v, metadata: payload });
        }
        break;
      }
      case 'letta': {
        // letta/orm/passage.py (0.11.x) on SQLite; vectors zero-padded to 4096.
        db.exec(`CREATE TABLE archival_passages (id TEXT PRIMARY KEY, text TEXT, embedding_config JSON, metadata_ JSON, tags JSON, embedding BLOB,
            organization_id TEXT, archive_id TEXT, created_at DATETIME, updated_at DATETIME, is_deleted BOOLEAN DEFAULT 0,
            _created_by_id TEXT, _last_updated_by_id TEXT);`);
        const ins = db.prepare(
          'INSERT INTO archival_passages (id, text, embedding_config, metadata_, tags, embedding, organization_id, archive_id, created_at, updated_at, is_deleted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
        );
        const config = JSON.stringify({ embedding_endpoint_type: 'openai', embedding_model: 'text-embedding-3-small', embedding_dim: LAYOUT_DIMS, embedding_chunk_size: 300 });
        const padded = (v: Float32Array): Buffer => {
          const p = new Float32Array(4096);
          p.set(v);
          return f32(p);
        };
        for (const s of seeds) {
          const v = s.vector ?? vectorOf(99);
          const id = `passage-${s.n}`;
          ins.run(id, s.content, config, s.metadata ?? '{}', '[]', padded(v), 'org-1', `archive-${s.user}`, iso(s.createdMs), iso(s.createdMs), 0);
          rows.push({ id, user: `archive-${s.user}`, content: s.content, vector: v, metadata: s.metadata ?? '{}' });
        }
        ins.run('passage-deleted', 'soft-deleted passage', config, '{}', '[]', padded(vectorOf(50)), 'org-1', 'archive-alice', iso(0), iso(0), 1);
        deletedIds.push('passage-deleted');
        break;
      }
      case 'mcp-memory-service': {
        await withVec(db);
        // mcp_memory_service/storage/sqlite_vec.py
        db.exec(`CREATE TABLE IF NOT EXISTS memories (id INTEGER PRIMARY KEY AUTOINCREMENT, content_hash TEXT UNIQUE NOT NULL, content TEXT NOT NULL,
            tags TEXT, memory_type TEXT, metadata TEXT, created_at REAL, updated_at REAL, created_at_iso TEXT, updated_at_iso TEXT, deleted_at REAL DEFAULT NULL);
          CREATE TABLE IF NOT EXISTS metadata (key TEXT PRIMARY KEY, value TEXT NOT NULL);
          CREATE VIRTUAL TABLE IF NOT EXISTS memory_embeddings USING vec0(content_embedding FLOAT[${LAYOUT_DIMS}] distance_metric=cosine);`);
        db.prepare(`INSERT INTO metadata VALUES ('distance_metric', 'cosine')`).run();
        const ins = db.prepare(
          'INSERT INTO memories (content_hash, content, tags, memory_type, metadata, created_at, updated_at, created_at_iso, updated_at_iso, deleted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
        );
        const vec = db.prepare('INSERT INTO memory_embeddings (rowid, content_embedding) VALUES (?, ?)');
        for (const s of seeds) {
          // content_hash is UNIQUE: the same text twice is not possible here (the service dedups on write).
          if (s.n === 13 || s.n === 14) continue;
          const r = ins.run(`sha-${s.n}`, s.content, 'coffee,prefs', 'note', s.metadata ?? '{}', s.createdMs / 1000, s.createdMs / 1000, iso(s.createdMs), iso(s.createdMs), null);
          if (s.vector) vec.run(BigInt(r.lastInsertRowid), f32(s.vector));
          rows.push({ id: String(r.lastInsertRowid), user: 'memories', content: s.content, vector: s.vector, metadata: s.metadata ?? '{}' });
        }
        const d = ins.run('sha-deleted', 'soft-deleted memory', '', 'note', '{}', 1, 1, iso(1000), iso(1000), 2);
        vec.run(BigInt(d.lastInsertRowid), f32(vectorOf(60)));
        deletedIds.push(String(d.lastInsertRowid));
        break;
      }
      case 'chroma': {
        writeChroma(db, seeds, rows);
        break;
      }
    }
  } finally {
    db.close();
  }
  return fx;
}

/**
 * Chroma 1.x tables (rust/sqlite/migrations, final shapes): one collection per user as Open
 * WebUI names them, the text under chroma:document, typed metadata rows, and the queue still
 * holding the vectors of all rows but two (those were purged into the HNSW index).
 */
function writeChroma(db: Database.Database, seeds: Seed[], rows: ExpectedRow[]): void {
  // Chroma's sysdb names a table `collection` (sic) in a foreign key; SQLite does not enforce it by default.
  db.pragma('foreign_keys = OFF');
  db.exec(`CREATE TABLE migrations (dir TEXT NOT NULL, version INTEGER NOT NULL, filename TEXT NOT NULL, sql TEXT NOT NULL, hash TEXT NOT NULL, PRIMARY KEY (dir, version));
    CREATE TABLE acquire_write (id INTEGER PRIMARY KEY, lock_status INTEGER NOT NULL);
    CREATE TABLE tenants (id TEXT PRIMARY KEY, UNIQUE (id));
    CREATE TABLE databases (id TEXT PRIMARY KEY, name TEXT NOT NULL, tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE, UNIQUE (tenant_id, name));
    CREATE TABLE collections (id TEXT PRIMARY KEY, name TEXT NOT NULL, dimension INTEGER, database_id TEXT NOT NULL REFERENCES databases(id) ON DELETE CASCADE,
      config_json_str TEXT, schema_str TEXT, UNIQUE (name, database_id));
    CREATE TABLE collection_metadata (collection_id TEXT REFERENCES collections(id) ON DELETE CASCADE, key TEXT NOT NULL, str_value TEXT, int_value INTEGER,
      float_value REAL, bool_value INTEGER, PRIMARY KEY (collection_id, key));
    CREATE TABLE segments (id TEXT PRIMARY KEY, type TEXT NOT NULL, scope TEXT NOT NULL, collection TEXT NOT NULL REFERENCES collection(id));
    CREATE TABLE segment_metadata (segment_id TEXT REFERENCES segments(id) ON DELETE CASCADE, key TEXT NOT NULL, str_value TEXT, int_value INTEGER,
      float_value REAL, bool_value INTEGER, PRIMARY KEY (segment_id, key));
    CREATE TABLE embeddings (id INTEGER PRIMARY KEY, segment_id TEXT NOT NULL, embedding_id TEXT NOT NULL, seq_id BLOB NOT NULL,
      created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, UNIQUE (segment_id, embedding_id));
    CREATE TABLE embedding_metadata (id INTEGER REFERENCES embeddings(id), key TEXT NOT NULL, string_value TEXT, int_value INTEGER, float_value REAL,
      bool_value INTEGER, PRIMARY KEY (id, key));
    CREATE TABLE max_seq_id (segment_id TEXT PRIMARY KEY, seq_id INTEGER);
    CREATE TABLE embeddings_queue (seq_id INTEGER PRIMARY KEY, created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, operation INTEGER NOT NULL,
      topic TEXT NOT NULL, id TEXT NOT NULL, vector BLOB, encoding TEXT, metadata TEXT);
    CREATE TABLE embeddings_queue_config (id INTEGER PRIMARY KEY, config_json_str TEXT);
    CREATE VIRTUAL TABLE embedding_fulltext_search USING fts5(string_value, tokenize='trigram');`);
  db.exec(`INSERT INTO tenants VALUES ('default_tenant');
    INSERT INTO databases VALUES ('00000000-0000-0000-0000-000000000000', 'default_database', 'default_tenant');
    INSERT INTO embeddings_queue_config VALUES (1, '{"automatically_purge":true,"_type":"EmbeddingsQueueConfigurationInternal"}');`);
  const coll = new Map<string, { id: string; meta: string }>();
  USERS.forEach((u, i) => {
    const id = `c0000000-0000-4000-8000-00000000000${i}`;
    const meta = `m0000000-0000-4000-8000-00000000000${i}`;
    db.prepare(`INSERT INTO collections VALUES (?, ?, ?, '00000000-0000-0000-0000-000000000000', '{}', NULL)`).run(id, `user-memory-${u}`, LAYOUT_DIMS);
    db.prepare(`INSERT INTO collection_metadata (collection_id, key, str_value) VALUES (?, 'hnsw:space', 'cosine')`).run(id);
    db.prepare(`INSERT INTO segments VALUES (?, 'urn:chroma:segment/metadata/sqlite', 'METADATA', ?)`).run(meta, id);
    db.prepare(`INSERT INTO segments VALUES (?, 'urn:chroma:segment/vector/hnsw-local-persisted', 'VECTOR', ?)`).run(`v${meta.slice(1)}`, id);
    coll.set(u, { id, meta });
  });
  const emb = db.prepare('INSERT INTO embeddings (segment_id, embedding_id, seq_id, created_at) VALUES (?, ?, ?, ?)');
  const md = db.prepare('INSERT INTO embedding_metadata (id, key, string_value, int_value, float_value, bool_value) VALUES (?, ?, ?, ?, ?, ?)');
  const fts = db.prepare('INSERT INTO embedding_fulltext_search (rowid, string_value) VALUES (?, ?)');
  const q = db.prepare(`INSERT INTO embeddings_queue (seq_id, operation, topic, id, vector, encoding, metadata) VALUES (?, ?, ?, ?, ?, ?, ?)`);
  let seq = 0;
  for (const s of seeds) {
    const c = coll.get(s.user)!;
    const eid = `mem-${s.n}`;
    seq++;
    const r = emb.run(c.meta, eid, seq, iso(s.createdMs).replace('T', ' ').replace(/\.\d+Z$/, ''));
    const rowid = Number(r.lastInsertRowid);
    md.run(rowid, 'chroma:document', s.content, null, null, null);
    md.run(rowid, 'source', 'chat', null, null, null);
    md.run(rowid, 'turn', null, s.n, null, null);
    md.run(rowid, 'pinned', null, null, null, s.n % 2);
    fts.run(rowid, s.content);
    // Rows 2 and 5 were purged from the queue (only the HNSW files have them).
    const purged = s.n === 2 || s.n === 5;
    const v = s.vector ?? vectorOf(99);
    if (!purged) {
      q.run(seq, 0, `persistent://default/default/${c.id}`, eid, f32(v), 'FLOAT32', JSON.stringify({ 'chroma:document': s.content, source: 'chat' }));
    }
    rows.push({
      id: `user-memory-${s.user}/${eid}`,
      user: `user-memory-${s.user}`,
      content: s.content,
      vector: purged ? null : v,
      metadata: JSON.stringify({ source: 'chat', turn: s.n, pinned: s.n % 2 === 1 }),
    });
  }
  // A deleted row: Chroma removes it from the metadata segment and queues a DELETE.
  const c = coll.get('alice')!;
  q.run(++seq, 0, `persistent://default/default/${c.id}`, 'mem-gone', f32(vectorOf(70)), 'FLOAT32', '{}');
  q.run(++seq, 3, `persistent://default/default/${c.id}`, 'mem-gone', null, null, null);
}

// Writing into an app's own memories table (one its DDL made, with SERIAL or UUID ids and
// columns of its own) without changing it. memory-migrate keeps everything of its own in the
// schema memory_migrate, which its sessions put first on the search path:
// - memory_links, from each source id to the id the app's table gave the row, with the hashes
//   and the values the app's table has no column for (sql/004_adopted_links.sql);
// - the view memory_migrate.memories, the app's rows in the shape of our own memories table,
//   with INSTEAD OF triggers that write through to the app's table and the links.
// Every reader and writer of "memories" (the load, verify, rollback, the store) then works
// unchanged in both modes. What runs once per batch goes through functions instead
// (memory_keys, memory_dedup_owners, memory_page, upsert_staged_memories), because the
// planner cannot search a view over a join by id; sql/009 has the same over our own table.
// All of it is made again on every install, from the app's columns as they are then.
import type { Db } from './connection.js';
import { UsageError } from '../errors.js';
import { quoteIdent } from '../sql-identifier.js';

/** The schema that holds memory-migrate's own objects when it adopts an app's table. */
export const OWN_SCHEMA = 'memory_migrate';

/**
 * How our sessions resolve names: our own schema first (PostgreSQL skips it where it does
 * not exist), then the database's own search path.
 */
export function ownSchemaFirst(searchPath: string): string {
  const first = searchPath.split(',')[0]?.trim().replace(/^"|"$/g, '');
  if (first === OWN_SCHEMA) return searchPath;
  return `${OWN_SCHEMA}, ${searchPath.trim() === '' ? '"$user", public' : searchPath}`;
}

export interface AppColumn {
  name: string;
  /** format_type: 'integer', 'timestamp with time zone', 'vector(1536)', … */
  type: string;
  notNull: boolean;
  /** The column default as SQL, or null. */
  default: string | null;
  identity: boolean;
}

export interface AppTable {
  schema: string;
  /** Schema-qualified and quoted, for SQL. */
  relation: string;
  idColumn: AppColumn;
  /** How a new row gets its id: the app's default (SERIAL, identity, gen_random_uuid()), or ours. */
  idFrom: 'app-default' | 'row-uuid' | 'source-id';
  columns: Map<string, AppColumn>;
  /** Width of the app's embedding column, or null when it has none. */
  embeddingWidth: number | null;
}

/** Our memories columns, in the view's order, with their type in our schema and a neutral value. */
const OUR_COLUMNS: { name: string; type: string; absent: string; keptInLinks: boolean }[] = [
  { name: 'user_id', type: 'varchar(255)', absent: `'default'`, keptInLinks: true },
  { name: 'embedding_model', type: 'text', absent: 'NULL', keptInLinks: true },
  { name: 'metadata', type: 'jsonb', absent: `'{}'::jsonb`, keptInLinks: true },
  { name: 'category', type: 'varchar(100)', absent: 'NULL', keptInLinks: true },
  { name: 'importance_score', type: 'double precision', absent: '1.0', keptInLinks: true },
  { name: 'access_count', type: 'integer', absent: '0', keptInLinks: false },
  { name: 'last_accessed_at', type: 'timestamp', absent: 'NULL', keptInLinks: true },
  { name: 'created_at', type: 'timestamp', absent: 'NULL', keptInLinks: true },
  { name: 'updated_at', type: 'timestamp', absent: 'NULL', keptInLinks: true },
];

/**
 * The app's own memories table, or null when there is none or it is ours (our ledger,
 * migration_runs, lives beside our memories table; an adopted table's ledger lives in
 * memory_migrate).
 */
export async function findAppTable(db: Db): Promise<AppTable | null> {
  const found = await db.query<{ oid: number; schema: string; ours: boolean }>(
    `SELECT c.oid::int8 AS oid, n.nspname AS schema,
            EXISTS (SELECT 1 FROM pg_class r WHERE r.relnamespace = n.oid AND r.relname = 'migration_runs') AS ours
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relname = 'memories' AND c.relkind IN ('r', 'p') AND n.nspname <> $1
        AND n.nspname = ANY (current_schemas(false))
      ORDER BY array_position(current_schemas(false), n.nspname::name)
      LIMIT 1`,
    [OWN_SCHEMA],
  );
  const t = found[0];
  if (!t || t.ours) return null;
  const cols = await db.query<{ name: string; type: string; not_null: boolean; def: string | null; identity: boolean; pk: boolean }>(
    `SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null,
            pg_get_expr(d.adbin, d.adrelid) AS def, a.attidentity <> '' AS identity,
            EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid AND i.indisprimary AND i.indnatts = 1
                       AND i.indkey[0] = a.attnum) AS pk
       FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
      WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`,
    [t.oid],
  );
  const columns = new Map<string, AppColumn>();
  let idColumn: AppColumn | null = null;
  for (const c of cols) {
    const col = { name: c.name, type: c.type, notNull: c.not_null, default: c.def, identity: c.identity };
    columns.set(c.name, col);
    if (c.pk) idColumn = col;
  }
  const relation = `${quoteIdent(t.schema)}.memories`;
  if (!idColumn) {
    throw new UsageError(
      `the app's table ${t.schema}.memories has no single-column primary key, which memory-migrate needs to link each source row to its row there: ` +
        'give it one (for example id BIGSERIAL PRIMARY KEY), or move the table aside so memory-migrate installs its own',
    );
  }
  const embedding = columns.get('embedding');
  const width = embedding ? /^vector\((\d+)\)$/.exec(embedding.type) : null;
  return {
    schema: t.schema,
    relation,
    idColumn,
    idFrom: idColumn.default !== null || idColumn.identity ? 'app-default' : idColumn.type === 'uuid' ? 'row-uuid' : 'source-id',
    columns,
    embeddingWidth: width ? Number(width[1]) : null,
  };
}

/** Refuses, before anything is written, a table memory-migrate cannot fill. */
export function checkAdoptable(app: AppTable, dimensions: number): void {
  const name = `${app.schema}.memories`;
  const content = app.columns.get('content');
  if (!content || !/^(text|character varying.*|character.*)$/.test(content.type)) {
    throw new UsageError(`the app's table ${name} has no text column "content" to hold the memories: add one, or point --database-url at the app's database`);
  }
  const embedding = app.columns.get('embedding');
  if (!embedding || !/^vector(\(\d+\))?$/.test(embedding.type)) {
    throw new UsageError(
      `the app's table ${name} has no vector column "embedding" (${embedding ? `it is ${embedding.type}` : 'there is none'}): ` +
        `add one (ALTER TABLE ${name} ADD COLUMN embedding vector(${dimensions})) and run again`,
    );
  }
  if (app.embeddingWidth !== null && app.embeddingWidth !== dimensions) {
    throw new UsageError(
      `${name}.embedding in the app's table is vector(${app.embeddingWidth}) but this run embeds with ${dimensions} dimensions: ` +
        `pass --dimensions ${app.embeddingWidth} (or the model that made the app's vectors) so the two agree`,
    );
  }
  const id = app.idColumn;
  if (app.idFrom === 'source-id' && !/^(text|character varying.*)$/.test(id.type)) {
    throw new UsageError(
      `${name}.${id.name} is ${id.type} with no default, so memory-migrate cannot give new rows an id: ` +
        `give it one (for example ALTER TABLE ${name} ALTER COLUMN ${id.name} ADD GENERATED BY DEFAULT AS IDENTITY) and run again`,
    );
  }
  const unfilled = [...app.columns.values()].filter(
    (c) => c !== id && c.notNull && c.default === null && !c.identity && c.name !== 'content' && !OUR_COLUMNS.some((o) => o.name === c.name),
  );
  if (unfilled.length > 0) {
    throw new UsageError(
      `the app's table ${name} has NOT NULL column${unfilled.length > 1 ? 's' : ''} ${unfilled.map((c) => c.name).join(', ')} ` +
        `with no default, which the source has no value for: give ${unfilled.length > 1 ? 'them defaults' : 'it a default'} and run again`,
    );
  }
}

/** The app's value of one of our columns, in our type (TIMESTAMPTZ as UTC wall time). */
function fromApp(col: AppColumn, ourType: string): string {
  const a = `a.${quoteIdent(col.name)}`;
  if (col.type === 'timestamp with time zone') return `(${a} AT TIME ZONE 'UTC')`;
  if (ourType === 'jsonb' && col.type !== 'jsonb') return `${a}::text::jsonb`;
  return `${a}::${ourType}`;
}

/** Our value (an expression over NEW) in the app's column type. */
function toApp(col: AppColumn, expr: string): string {
  if (col.type === 'timestamp with time zone') return `((${expr}) AT TIME ZONE 'UTC')`;
  if (col.type === 'jsonb') return `(${expr})`;
  return `(${expr})::text::${col.type}`;
}

/** The columns of the view, in order: ours, then the app's id (for the triggers). */
const VIEW_COLUMNS = ['id', 'uuid', 'content', 'content_hash', 'dedup_hash', 'embedding', ...OUR_COLUMNS.map((o) => o.name), 'target_id'];
/** The columns memory_page() returns (sql/009_memory_keys.sql). */
const PAGE_COLUMNS = ['id', 'uuid', 'user_id', 'created_at'];
/** The columns memory_keys() returns (sql/009_memory_keys.sql). */
const KEY_COLUMNS = ['id', 'user_id', 'content_hash', 'dedup_hash', 'metadata', 'created_at', 'updated_at'];

/**
 * Makes (again) everything that puts the app's table in our shape: the view
 * memory_migrate.memories, its write-through triggers, memory_keys() and
 * memory_dedup_owners() (what sql/009 makes for our own table), and the per-batch upsert.
 */
export async function createAdoptedView(db: Db, app: AppTable): Promise<void> {
  const id = quoteIdent(app.idColumn.name);
  const idType = app.idColumn.type;
  const own = OWN_SCHEMA;
  // Each of our columns for a migrated row (a) with its link (l), and for a row the app wrote.
  const linked: Record<string, string> = {
    id: 'l.source_id',
    uuid: 'memory_migrate_uuid(l.source_id)',
    content: 'a.content::text',
    // The hashes as loaded while the content is as loaded; computed again once the app changed it.
    content_hash: `(CASE WHEN md5(a.content) = l.content_md5 THEN l.content_hash ELSE memory_migrate_content_hash(a.content) END)::char(64)`,
    dedup_hash: `(CASE WHEN md5(a.content) = l.content_md5 THEN l.dedup_hash ELSE memory_migrate_dedup_hash(a.content) END)::char(64)`,
    embedding: `a.embedding::vector${app.embeddingWidth ? `(${app.embeddingWidth})` : ''}`,
    target_id: `a.${id}`,
  };
  const appRow: Record<string, string> = {
    // The app's own id, as text: a UUID as it is, any other under "app:" so it cannot be taken
    // for a source id, and either can be turned back into the app's id (appIds below).
    id: idType === 'uuid' ? `a.${id}::text` : `'app:' || a.${id}::text`,
    uuid: idType === 'uuid' ? `a.${id}` : `memory_migrate_uuid('app-row:' || a.${id}::text)`,
    content: linked.content!,
    content_hash: 'memory_migrate_content_hash(a.content)::char(64)',
    dedup_hash: 'memory_migrate_dedup_hash(a.content)::char(64)',
    embedding: linked.embedding!,
    target_id: `a.${id}`,
  };
  for (const o of OUR_COLUMNS) {
    const col = app.columns.get(o.name);
    linked[o.name] = col ? fromApp(col, o.type) : o.keptInLinks ? `l.${o.name}` : o.absent;
    appRow[o.name] = col ? fromApp(col, o.type) : o.absent;
  }
  const select = (exprs: Record<string, string>, names: string[]) => names.map((n) => `${exprs[n]} AS ${n}`).join(',\n       ');
  const linkJoin = `${own}.memory_links l JOIN ${app.relation} a ON a.${id} = l.target_id::${idType}`;
  const unlinked = `NOT EXISTS (SELECT 1 FROM ${own}.memory_links l WHERE l.target_id = a.${id}::text)`;
  // The app's ids among `ids` (text), in the app's type: the inverse of appRow.id.
  const appIds = (ids: string) =>
    idType === 'uuid'
      ? `ARRAY(SELECT i::uuid FROM unnest(${ids}) AS i WHERE i ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$')`
      : /^(smallint|integer|bigint)$/.test(idType)
        ? `ARRAY(SELECT substr(i, 5)::${idType} FROM unnest(${ids}) AS i WHERE i ~ '^app:-?[0-9]{1,18}$')`
        : `ARRAY(SELECT substr(i, 5)::${idType} FROM unnest(${ids}) AS i WHERE i LIKE 'app:%')`;

  // Columns written to the app's table, from a row in our shape.
  const written: { col: AppColumn; name: string }[] = [
    { col: app.columns.get('content')!, name: 'content' },
    { col: app.columns.get('embedding')!, name: 'embedding' },
  ];
  for (const name of [...OUR_COLUMNS.map((o) => o.name), 'content_hash', 'dedup_hash', 'uuid']) {
    const col = app.columns.get(name);
    if (col && col !== app.idColumn) written.push({ col, name });
  }
  // A value we do not have (NULL) leaves the app's default to apply, as an INSERT that omits it would.
  const valueFor = (w: { col: AppColumn; name: string }) =>
    w.col.default !== null ? `COALESCE(${toApp(w.col, `NEW.${w.name}`)}, ${w.col.default})` : toApp(w.col, `NEW.${w.name}`);
  const kept = OUR_COLUMNS.filter((o) => o.keptInLinks && !app.columns.has(o.name)).map((o) => o.name);
  const insertCols = [...(app.idFrom === 'app-default' ? [] : [app.idColumn]), ...written.map((w) => w.col)].map((c) => quoteIdent(c.name));
  const insertVals = [
    ...(app.idFrom === 'row-uuid' ? ['memory_migrate_uuid(NEW.id)'] : app.idFrom === 'source-id' ? [`NEW.id::text::${idType}`] : []),
    ...written.map(valueFor),
  ];
  const hashes = `COALESCE(NEW.content_hash, memory_migrate_content_hash(NEW.content)), COALESCE(NEW.dedup_hash, memory_migrate_dedup_hash(NEW.content)), md5(NEW.content)`;
  const linkCols = ['source_id', 'target_id', 'content_hash', 'dedup_hash', 'content_md5', ...kept];
  const linkVals = ['NEW.id', 'target', hashes, ...kept.map((k) => `NEW.${k}`)];
  // An UPDATE that changes the content but not the hashes (an app's, or rollback's
  // timestamp fix) has them computed.
  const newHash = (h: 'content_hash' | 'dedup_hash') =>
    `CASE WHEN NEW.content IS DISTINCT FROM OLD.content AND NEW.${h} IS NOT DISTINCT FROM OLD.${h} THEN memory_migrate_${h}(NEW.content) ELSE NEW.${h} END`;
  const nowUtc = `(now() AT TIME ZONE 'UTC')`;
  const staged = ['id', 'uuid', 'user_id', 'content', 'content_hash', 'dedup_hash', 'embedding', 'embedding_model', 'metadata', 'category', 'importance_score'];

  await db.exec(`
DROP VIEW IF EXISTS ${own}.memories;
CREATE VIEW ${own}.memories AS
SELECT ${select(linked, VIEW_COLUMNS)}
  FROM ${linkJoin}
UNION ALL
SELECT ${select(appRow, VIEW_COLUMNS)}
  FROM ${app.relation} a
 WHERE ${unlinked};

CREATE OR REPLACE FUNCTION ${own}.memories_insert() RETURNS trigger AS $body$
DECLARE
    target text;
BEGIN
    INSERT INTO ${app.relation} (${insertCols.join(', ')})
    VALUES (${insertVals.join(', ')})
    RETURNING ${id}::text INTO target;
    IF NEW.id IS NOT NULL THEN
        INSERT INTO ${own}.memory_links (${linkCols.join(', ')}) VALUES (${linkVals.join(', ')});
    END IF;
    NEW.target_id := target;
    RETURN NEW;
END
$body$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION ${own}.memories_update() RETURNS trigger AS $body$
BEGIN
    UPDATE ${app.relation} SET ${written.map((w) => `${quoteIdent(w.col.name)} = ${valueFor(w)}`).join(', ')} WHERE ${id} = OLD.target_id;
    UPDATE ${own}.memory_links
       SET content_hash = ${newHash('content_hash')}, dedup_hash = ${newHash('dedup_hash')}, content_md5 = md5(NEW.content)${kept.map((k) => `, ${k} = NEW.${k}`).join('')}
     WHERE target_id = OLD.target_id::text;
    RETURN NEW;
END
$body$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION ${own}.memories_delete() RETURNS trigger AS $body$
BEGIN
    DELETE FROM ${app.relation} WHERE ${id} = OLD.target_id;
    DELETE FROM ${own}.memory_links WHERE target_id = OLD.target_id::text;
    RETURN OLD;
END
$body$ LANGUAGE plpgsql;

CREATE TRIGGER memories_insert INSTEAD OF INSERT ON ${own}.memories FOR EACH ROW EXECUTE FUNCTION ${own}.memories_insert();
CREATE TRIGGER memories_update INSTEAD OF UPDATE ON ${own}.memories FOR EACH ROW EXECUTE FUNCTION ${own}.memories_update();
CREATE TRIGGER memories_delete INSTEAD OF DELETE ON ${own}.memories FOR EACH ROW EXECUTE FUNCTION ${own}.memories_delete();

-- The planner cannot search the view by id (a join under UNION ALL): the per-batch lookups
-- go through these, by the links' primary key and the app's.
CREATE OR REPLACE FUNCTION ${own}.memory_keys(ids text[])
RETURNS TABLE (id text, user_id varchar, content_hash char(64), dedup_hash char(64), metadata jsonb,
               created_at timestamp, updated_at timestamp)
LANGUAGE sql STABLE AS $body$
    SELECT ${select(linked, KEY_COLUMNS)}
      FROM ${linkJoin} WHERE l.source_id = ANY (ids)
    UNION ALL
    SELECT ${select(appRow, KEY_COLUMNS)}
      FROM ${app.relation} a WHERE a.${id} = ANY (${appIds('ids')}) AND ${unlinked}
$body$;

CREATE OR REPLACE FUNCTION ${own}.memory_page(after text, n integer)
RETURNS TABLE (id text, uuid uuid, user_id varchar, created_at timestamp)
LANGUAGE sql STABLE AS $body$
    SELECT * FROM (
        (SELECT ${select(linked, PAGE_COLUMNS)} FROM ${linkJoin} WHERE l.source_id > after ORDER BY l.source_id LIMIT n)
        UNION ALL
        (SELECT * FROM (SELECT ${select(appRow, PAGE_COLUMNS)} FROM ${app.relation} a WHERE ${unlinked}) o
          WHERE o.id > after ORDER BY o.id LIMIT n)
    ) p ORDER BY p.id LIMIT n
$body$;

-- By the dedup hash as loaded (memory_links_dedup_idx): the app's own rows are not dedup owners.
CREATE OR REPLACE FUNCTION ${own}.memory_dedup_owners(users text[], hashes text[])
RETURNS TABLE (id text, user_id varchar, dedup_hash char(64))
LANGUAGE sql STABLE AS $body$
    SELECT DISTINCT ON (k.user_id, k.dedup_hash) k.id, k.user_id, k.dedup_hash
      FROM (SELECT l.source_id AS id, ${linked.user_id} AS user_id, l.dedup_hash, ${linked.created_at} AS created_at
              FROM ${linkJoin} WHERE l.dedup_hash = ANY (hashes::bpchar[])) k
      JOIN (SELECT DISTINCT u, h FROM unnest(users, hashes) AS x(u, h)) x ON k.user_id = x.u AND k.dedup_hash = x.h::bpchar
     ORDER BY k.user_id, k.dedup_hash, k.created_at, k.id
$body$;

-- The staged batch (postgres/writer.ts) into the app's table: a row memory-migrate wrote
-- before (or one the app wrote, under its app id) is updated when its content or metadata
-- changed, any other is inserted, each through the view's triggers.
CREATE OR REPLACE FUNCTION ${own}.upsert_staged_memories() RETURNS TABLE (id text, inserted boolean) AS $body$
#variable_conflict use_column
DECLARE
    r record;
    cur record;
    target text;
BEGIN
    FOR r IN SELECT s.*, l.target_id AS linked FROM mm_stage_memories s LEFT JOIN ${own}.memory_links l ON l.source_id = s.id LOOP
        target := COALESCE(r.linked, (SELECT a.${id}::text FROM ${app.relation} a WHERE a.${id} = ANY (${appIds('ARRAY[r.id]')}) AND ${unlinked}));
        SELECT m.content_hash, m.metadata, m.embedding, m.embedding_model INTO cur FROM ${own}.memories m WHERE m.target_id = target::${idType};
        IF target IS NOT NULL AND FOUND THEN
            IF cur.content_hash IS DISTINCT FROM r.content_hash OR cur.metadata IS DISTINCT FROM r.metadata THEN
                UPDATE ${own}.memories m SET
                    user_id = r.user_id, content = r.content, content_hash = r.content_hash, dedup_hash = r.dedup_hash,
                    embedding = CASE WHEN r.embedding IS NULL AND cur.content_hash = r.content_hash THEN cur.embedding ELSE r.embedding END,
                    embedding_model = CASE WHEN r.embedding IS NULL AND cur.content_hash = r.content_hash THEN cur.embedding_model ELSE r.embedding_model END,
                    metadata = r.metadata, category = r.category, importance_score = r.importance_score,
                    created_at = COALESCE(r.created_at, m.created_at), updated_at = COALESCE(r.updated_at, r.created_at, ${nowUtc})
                 WHERE m.target_id = target::${idType};
                id := r.id;
                inserted := false;
                RETURN NEXT;
            END IF;
        ELSE
            -- The app deleted the row memory-migrate wrote: its link goes, the row is written again.
            DELETE FROM ${own}.memory_links l WHERE l.source_id = r.id;
            INSERT INTO ${own}.memories (${staged.join(', ')}, created_at, updated_at, last_accessed_at)
            VALUES (${staged.map((c) => `r.${c}`).join(', ')}, COALESCE(r.created_at, ${nowUtc}),
                    COALESCE(r.updated_at, r.created_at, ${nowUtc}), COALESCE(r.last_accessed_at, r.updated_at, r.created_at, ${nowUtc}));
            id := r.id;
            inserted := true;
            RETURN NEXT;
        END IF;
    END LOOP;
END
$body$ LANGUAGE plpgsql;
`);
}

/** True when memories is the view over an app's table (an adopted database). */
export async function memoriesIsView(db: Db): Promise<boolean> {
  const rows = await db.query<{ kind: string }>(`SELECT relkind::text AS kind FROM pg_class WHERE oid = to_regclass('memories')`);
  return rows[0]?.kind === 'v';
}

/** The app's table when memories is the view over it, else null. */
export async function adoptedTable(db: Db): Promise<AppTable | null> {
  return (await memoriesIsView(db)) ? findAppTable(db) : null;
}

// Installs the schema from sql/*.sql, in file order, each file sent whole (never split on
// ';' — that is how the original tool cut its $$ bodies apart). Re-runnable. With
// --force-recreate the existing tables are moved to a backup schema first.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Db } from './connection.js';
import { RunError, UsageError, errorMessage } from '../errors.js';
import { OWN_SCHEMA, checkAdoptable, createAdoptedView, findAppTable, memoriesIsView, type AppTable } from './adopted-table.js';

/** Tables that hold one load's data: moved to the backup schema by --force-recreate. */
const SCHEMA_LOCK_KEY = 0x6d6d5343; // 'mmSC'

// The plugin's side tables (sql/011) describe the rows of memories by id: they go with them.
export const DATA_TABLES = ['memory_duplicates', 'memory_analytics', 'prompt_fragments', 'memories', 'migration_skips', 'plugin_memories', 'plugin_namespaces'];

/** The sql/ folder, found from both src/ (ts) and dist/src/ (compiled) locations. */
export function sqlDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const candidate = join(dir, 'sql');
    try {
      if (readdirSync(candidate).some((f) => f.endsWith('.sql'))) return candidate;
    } catch {
      /* keep walking up */
    }
    dir = dirname(dir);
  }
  throw new RunError('cannot find the sql/ folder next to the installed package; reinstall memory-migrate');
}

export function schemaFiles(): { name: string; text: string }[] {
  const dir = sqlDir();
  return readdirSync(dir)
    .filter((f) => f.endsWith('.sql'))
    .sort()
    .map((name) => ({ name, text: readFileSync(join(dir, name), 'utf8') }));
}

export interface InstallOptions {
  dimensions: number;
  forceRecreate?: boolean;
  /** false = --no-backup: really drop the tables on --force-recreate. */
  backup?: boolean;
  log?: (line: string) => void;
}

export interface InstallResult {
  /** Name of the schema the old tables were moved to, if any. */
  backupSchema: string | null;
  droppedTables: string[];
  /** The app's own memories table, when memory-migrate writes into it (see adopted-table.ts). */
  adopted: AppTable | null;
}

export async function installSchema(db: Db, opts: InstallOptions): Promise<InstallResult> {
  const log = opts.log ?? (() => {});
  const result: InstallResult = { backupSchema: null, droppedTables: [], adopted: null };
  const files = schemaFiles();

  await inSchemaLock(db, async (tx) => {
    await runSchemaFile(tx, files[0]!);
    const app = await findAppTable(tx);
    result.adopted = app;
    if (app) {
      if (opts.forceRecreate) {
        throw new UsageError(
          `--force-recreate would move the app's own table ${app.schema}.memories aside: memory-migrate writes into it and never drops, ` +
            `retypes or renames it; delete the rows you want loaded again yourself, or run without --force-recreate`,
        );
      }
      checkAdoptable(app, opts.dimensions);
      // Everything of ours goes into our own schema, first on our sessions' search path.
      await tx.exec(`CREATE SCHEMA IF NOT EXISTS ${OWN_SCHEMA};`);
    } else if (opts.forceRecreate) {
      const existing = await existingTables(tx, DATA_TABLES);
      if (existing.length > 0) {
        if (opts.backup === false) {
          await tx.exec(existing.map((t) => `DROP TABLE IF EXISTS ${t} CASCADE;`).join('\n'));
          result.droppedTables = existing;
          log(`dropped tables ${existing.join(', ')} (--no-backup)`);
        } else {
          result.backupSchema = await moveToBackup(tx, existing);
          log(`moved existing tables to backup schema ${result.backupSchema}`);
        }
      }
    } else {
      await checkVectorWidth(tx, opts.dimensions);
    }
    for (const file of files.slice(1)) {
      const scope = schemaFileScope(file.text);
      if (scope === (app ? 'installed' : 'adopted')) continue;
      // The view stands where our memories table would: the tables file then skips it.
      if (app && file.name.endsWith('_tables.sql')) await createAdoptedView(tx, app);
      await runSchemaFile(tx, file, opts.dimensions);
    }
  });
  return result;
}

/** A schema file's "-- scope: installed|adopted" first line; no such line runs it in both modes. */
function schemaFileScope(text: string): 'installed' | 'adopted' | 'both' {
  const m = /^-- scope: (installed|adopted)\b/.exec(text);
  return m ? (m[1] as 'installed' | 'adopted') : 'both';
}

/**
 * The secondary btree indexes of memories (sql/007_btree_indexes.sql) that a first load drops
 * and builds once after the COPY: maintaining them row by row cost the server a quarter to a
 * third of the load (random inserts into five growing btrees). Should the load stop before
 * they are built again, the next run's installSchema creates them. memories_dedup_idx stays:
 * a first load asks it about the keys StoredKeyFilter says it may have stored.
 */
export const MEMORIES_BTREE_INDEXES = [
  'memories_uuid_key',
  'memories_user_idx',
  'memories_category_idx',
  'memories_importance_idx',
  'memories_access_idx',
];

export async function dropMemoriesBtreeIndexes(db: Db): Promise<void> {
  // Never an adopted app's indexes, whatever their names.
  if (await memoriesIsView(db)) return;
  await inSchemaLock(db, (tx) => tx.exec(`DROP INDEX IF EXISTS ${MEMORIES_BTREE_INDEXES.join(', ')}`));
}


/** Builds the btree indexes of sql/007 that are missing (those a first load dropped). */
export async function createBtreeIndexes(db: Db): Promise<void> {
  const file = schemaFiles().find((f) => f.name.endsWith('_btree_indexes.sql'));
  if (!file) throw new RunError('sql/007_btree_indexes.sql is missing from the installed package; reinstall memory-migrate');
  if (await memoriesIsView(db)) return;
  await inSchemaLock(db, (tx) => runSchemaFile(tx, file));
}

/**
 * One transaction holding the schema lock. Shards of one migration may install at the same
 * moment; CREATE … IF NOT EXISTS is not safe against a concurrent creator, so schema changes
 * take turns.
 */
async function inSchemaLock(db: Db, fn: (tx: Db) => Promise<void>): Promise<void> {
  await db.transaction(async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock($1)', [SCHEMA_LOCK_KEY]);
    await fn(tx);
  });
}

/** Runs one sql/ file whole; {{dimensions}} is filled in when given. */
async function runSchemaFile(db: Db, file: { name: string; text: string }, dimensions?: number) {
  try {
    await db.exec(dimensions === undefined ? file.text : file.text.replaceAll('{{dimensions}}', String(dimensions)));
  } catch (err) {
    throw mapSchemaError(err, file.name);
  }
}

export function mapSchemaError(err: unknown, file: string): Error {
  const msg = errorMessage(err);
  const code = (err as { code?: string }).code;
  if (/extension "vector" is not available|could not open extension control file/i.test(msg)) {
    return new UsageError(
      'pgvector is not installed on the target PostgreSQL server: install the pgvector extension there ' +
        '(on Debian 12 build it with scripts/setup-postgres.sh), or omit --database-url to use embedded PGlite',
    );
  }
  if (code === '42501' || /permission denied/i.test(msg)) {
    return new UsageError(
      `permission denied while installing the schema (${file}: ${msg}): connect as a role that may CREATE in this ` +
        'database, or have a superuser run CREATE EXTENSION vector and GRANT CREATE ON DATABASE to this role',
    );
  }
  return new RunError(`schema file ${file} failed: ${msg}`);
}

export async function existingTables(db: Db, names: string[]): Promise<string[]> {
  const rows = await db.query<{ name: string }>(
    `SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v') AND c.relname = ANY($1::text[])`,
    [names],
  );
  const found = new Set(rows.map((r) => r.name));
  return names.filter((n) => found.has(n));
}

async function moveToBackup(db: Db, tables: string[]): Promise<string> {
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z').toLowerCase();
  let name = `memory_backup_${stamp}`;
  for (let n = 2; ; n++) {
    const taken = await db.query(`SELECT 1 FROM pg_namespace WHERE nspname = $1`, [name]);
    if (taken.length === 0) break;
    name = `memory_backup_${stamp}_${n}`;
  }
  await db.exec(`CREATE SCHEMA ${name};`);
  // Moving (not copying) keeps the rows, indexes, sequences and triggers together and costs nothing.
  await db.exec(tables.map((t) => `ALTER TABLE ${t} SET SCHEMA ${name};`).join('\n'));
  return name;
}

/** Width of memories.embedding in the target, or null if the table does not exist yet. */
export async function tableDimensions(db: Db, table = 'memories'): Promise<number | null> {
  const rows = await db.query<{ typmod: number }>(
    `SELECT a.atttypmod AS typmod FROM pg_attribute a
       JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = current_schema() AND c.relname = $1 AND a.attname = 'embedding' AND NOT a.attisdropped`,
    [table],
  );
  if (rows.length === 0) return null;
  const typmod = Number(rows[0]!.typmod);
  return typmod > 0 ? typmod : null;
}

async function checkVectorWidth(db: Db, dimensions: number) {
  for (const table of ['memories', 'prompt_fragments']) {
    const width = await tableDimensions(db, table);
    if (width !== null && width !== dimensions) {
      throw new UsageError(
        `${table}.embedding in the target is vector(${width}) but this run embeds with ${dimensions} dimensions: ` +
          `pass --dimensions ${width} (or the model that made them), or --force-recreate to back up the tables and rebuild them`,
      );
    }
  }
}

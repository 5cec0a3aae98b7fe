// The library entry point: the memory-store contract an app can adopt, and the pieces the
// CLI is made of, for programmatic migrations.
export * from './store/types.js';
export { PostgresMemoryStore } from './store/postgres-store.js';
export { openMemoryStore, resolveMemoryType, type MemoryBackend, type OpenMemoryStoreOptions } from './store/index.js';
export { SqliteMemoryStore, type SqliteStoreOptions } from './store/sqlite-store.js';
export { openDb, type Db, type TargetOptions } from './postgres/connection.js';
export { installSchema } from './postgres/schema.js';
export { migrate, type MigrateFlags } from './commands/migrate.js';
export { createOutput, type Output } from './output.js';
export type { MigrationReport } from './report.js';
export { canonicalize, contentHash, dedupHash } from './source/canonical.js';

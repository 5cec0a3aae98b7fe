// The databases every suite runs against: embedded PGlite always, and a real PostgreSQL
// when TEST_DATABASE_URL is set (CI always sets it). Each call gets a fresh, empty database
// so suites never see each other's rows.
import postgres from 'postgres';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDb, type Db, type TargetOptions } from '../../src/postgres/connection.js';

export interface TestTarget {
  name: 'pglite' | 'postgres';
  /** Options for a brand-new empty database (CLI flags or openDb). */
  fresh(): Promise<TargetOptions>;
}

const created: string[] = [];

export function testTargets(): TestTarget[] {
  const targets: TestTarget[] = [
    {
      name: 'pglite',
      async fresh() {
        return { pgliteDir: mkdtempSync(join(tmpdir(), 'mm-pglite-')) };
      },
    },
  ];
  const url = process.env.TEST_DATABASE_URL;
  if (url) {
    targets.push({
      name: 'postgres',
      async fresh() {
        const name = `mm_test_${randomBytes(6).toString('hex')}`;
        const admin = postgres(url, { max: 1, onnotice: () => {} });
        try {
          await admin.unsafe(`CREATE DATABASE ${name}`);
        } finally {
          await admin.end();
        }
        created.push(name);
        const u = new URL(url);
        u.pathname = `/${name}`;
        return { databaseUrl: u.toString() };
      },
    });
  }
  return targets;
}

/** Opens a fresh database on the given target. */
export async function freshDb(target: TestTarget): Promise<{ db: Db; opts: TargetOptions }> {
  const opts = await target.fresh();
  return { db: await openDb(opts), opts };
}

/** Fast in-memory PGlite, for unit tests that do not need a data directory. */
export async function memoryDb(): Promise<Db> {
  return openDb({ pgliteDir: 'memory://' });
}

// The databases every suite runs against: embedded PGlite always, and a real PostgreSQL
// when TEST_DATABASE_URL is set (CI always sets it). Each call gets a fresh, empty database
// so suites never see each other's rows. Without TEST_DATABASE_URL the PostgreSQL half of a
// suite is registered as a skipped test that says why (so the summary counts it), and under
// CI as a failing one: CI must not pass on PGlite alone.
import postgres from 'postgres';
import { test } from 'node:test';
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openDb, type Db, type TargetOptions } from '../../src/postgres/connection.js';

export interface TestTarget {
  name: 'pglite' | 'postgres';
  /** Options for a brand-new empty database (CLI flags or openDb). */
  fresh(): Promise<TargetOptions>;
}

const created: string[] = [];

export const POSTGRES_SKIP_REASON =
  'TEST_DATABASE_URL is not set; set it to a PostgreSQL server with pgvector (scripts/setup-postgres.sh prints one) to run this on PostgreSQL too';

/** CI is set to something other than empty, 0 or false (as GitHub Actions and most CIs set CI=true). */
export function isCi(env: NodeJS.ProcessEnv = process.env): boolean {
  const ci = env['CI'];
  return ci !== undefined && ci !== '' && ci !== '0' && ci.toLowerCase() !== 'false';
}

/** The test file that called testTargets(), relative to the compiled test folder (e.g. e2e/migrate.test.js). */
function callerSuite(): string {
  const here = fileURLToPath(import.meta.url);
  for (const line of (new Error().stack ?? '').split('\n').slice(1)) {
    const m = /(file:\/\/\/[^\s)]+?):\d+:\d+/.exec(line);
    if (!m) continue;
    const file = fileURLToPath(m[1]!);
    if (file !== here) return relative(dirname(dirname(here)), file);
  }
  return 'suite';
}

/**
 * The targets to run a suite on. Call it where the suite's tests are registered (top level or
 * inside a describe, not inside a test): without TEST_DATABASE_URL it registers, right there,
 * `PostgreSQL: <suite>` as a skipped test with the reason, or as a failing test when CI is set.
 */
export function testTargets(suite: string = callerSuite()): TestTarget[] {
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
  } else if (isCi()) {
    test(`PostgreSQL: ${suite}`, () => {
      throw new Error(`CI is set but TEST_DATABASE_URL is not: CI must run the PostgreSQL suites too (${POSTGRES_SKIP_REASON})`);
    });
  } else {
    test(`PostgreSQL: ${suite}`, { skip: POSTGRES_SKIP_REASON }, () => {});
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

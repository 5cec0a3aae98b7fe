// How the error suites (test/e2e/errors-*.test.ts) check a refused run, the "clear error" of
// issue 7: exit code 2, ONE line on stderr that names the problem and the fix (no stack unless
// DEBUG=memory-migrate), and nothing written to the target.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { openDb, type TargetOptions } from '../../src/postgres/connection.js';
import type { CliResult } from './cli.js';

/** The offline embedder, so a run needs no API. */
export const local = ['--embedder', 'local'];

/** Exit 2, one line on stderr, the expected text, no stack trace. */
export function assertOneLineUsage(res: CliResult, re: RegExp): void {
  assert.equal(res.code, 2, `exit ${res.code}\nstdout: ${res.stdout}\nstderr: ${res.stderr}`);
  const lines = res.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line on stderr, got:\n${res.stderr}`);
  assert.match(lines[0]!, /^memory-migrate: /);
  assert.match(lines[0]!, re);
  assert.doesNotMatch(res.stderr, /^\s+at /m, 'no stack trace');
}

async function tablesIn(t: TargetOptions): Promise<string[]> {
  const db = await openDb(t);
  try {
    const rows = await db.query<{ name: string }>(
      `SELECT tablename AS name FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1`,
    );
    return rows.map((r) => r.name);
  } finally {
    await db.close();
  }
}

/** Nothing was written: no PGlite cluster at all, or no tables in the PostgreSQL database. */
export async function assertNothingWritten(t: TargetOptions): Promise<void> {
  if (t.pgliteDir) {
    assert.equal(existsSync(join(t.pgliteDir, 'PG_VERSION')), false, `a PGlite cluster was created in ${t.pgliteDir}`);
  } else {
    assert.deepEqual(await tablesIn(t), [], 'tables were created in the target');
  }
}

/** A loopback port nothing listens on (it was free a moment ago). */
export async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

// Runs every compiled test file with node:test. Node 20's runner has no glob support,
// so the file list is built here; TEST_FILTER narrows it for local work.
import { readdirSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

const dir = 'dist/test';
const filter = process.env.TEST_FILTER ?? '';
const files = readdirSync(dir, { recursive: true })
  .filter((f) => f.endsWith('.test.js') && f.includes(filter))
  .sort()
  .map((f) => join(dir, f));
if (files.length === 0) {
  console.error(`no test files in ${dir} match "${filter}"`);
  process.exit(1);
}
// CI must test PostgreSQL as well: a CI run without a server fails here, at once, instead of
// passing on PGlite alone (test/helpers/targets.ts fails such a run too, file by file).
const ci = process.env.CI ?? '';
if (!process.env.TEST_DATABASE_URL && ci !== '' && ci !== '0' && ci.toLowerCase() !== 'false') {
  console.error(`CI=${ci} but TEST_DATABASE_URL is not set: CI runs every suite on PostgreSQL too (start one with scripts/setup-postgres.sh)`);
  process.exit(1);
}
const target = process.env.TEST_DATABASE_URL
  ? 'PGlite and PostgreSQL'
  : 'PGlite only; the PostgreSQL suites are reported as skipped (set TEST_DATABASE_URL to run them)';
console.error(`running ${files.length} test files against ${target}`);
const result = spawnSync(process.execPath, ['--test', '--test-concurrency=2', ...files], { stdio: 'inherit' });
process.exit(result.status ?? 1);

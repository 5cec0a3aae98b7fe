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
const target = process.env.TEST_DATABASE_URL ? 'PGlite and PostgreSQL' : 'PGlite only (set TEST_DATABASE_URL to add PostgreSQL)';
console.error(`running ${files.length} test files against ${target}`);
const result = spawnSync(process.execPath, ['--test', '--test-concurrency=2', ...files], { stdio: 'inherit' });
process.exit(result.status ?? 1);

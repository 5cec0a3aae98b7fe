// The memory property of issue 19: a load's memory does not grow with the rows it reads. The
// real CLI loads the first 20,000 rows of a generated file into one fresh database and all
// 200,000 into another, with a preload (test/helpers/memory-sampler.ts) that runs a full GC
// every 250 ms and keeps the peaks of the JavaScript heap in use, of external memory (Buffers)
// and of the RSS. A property, not a timing.
//
// The bounds. State kept per row for the whole run (a Map of dedup keys, of ids, a list of
// texts) costs about 100 bytes a row or more in V8: 18 MB over the 180,000 extra rows. The
// Maps this test was written against grew the heap in use by 29 MB here (165 bytes a row) and
// the RSS on PostgreSQL by 42 MB; without them the heap grew by 0.0-1.2 MB on both targets and
// the RSS on PostgreSQL by 9-11 MB. So:
//   - the heap in use may grow by less than HEAP_GROWTH_BOUND_MB (8 MB: 44 bytes a row);
//   - on PostgreSQL, heap + external and the RSS by less than RSS_GROWTH_BOUND_MB (24 MB).
//     Not on PGlite: there the database runs in this process, and its WebAssembly memory
//     (external, and in the RSS) grows with the database, not with what the load keeps.
// Peaks of two runs, not two points of one: the CLI says nothing about its rows between its
// progress lines, and RSS a few seconds into any run is still V8 sizing its heap.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { testTargets } from '../helpers/targets.js';
import { CLI, targetArgs } from '../helpers/cli.js';
import { withDb, count, freshTarget } from '../helpers/rerun.js';
import { makeFixture } from '../../scripts/make-fixture.js';
import type { TargetOptions } from '../../src/postgres/connection.js';

const ROWS = 200_000;
const FIRST = 20_000;
const DIMS = 64;
const MODEL = 'local-hash-v1';
const HEAP_GROWTH_BOUND_MB = 8;
const RSS_GROWTH_BOUND_MB = 24;
const SAMPLER = fileURLToPath(new URL('../helpers/memory-sampler.js', import.meta.url));

interface Peaks {
  heapMb: number;
  externalMb: number;
  rssMb: number;
}

const dir = mkdtempSync(join(tmpdir(), 'mm-memory-growth-'));
const fixturePath = join(dir, 'memory-200k.db');

before(() => {
  makeFixture({ out: fixturePath, rows: ROWS, dims: DIMS, encoding: 'f32', users: 8, seed: 19 });
});

after(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Runs `migrate` with the memory sampler; returns its peaks. */
function migratePeaks(target: TargetOptions, extra: string[], name: string): Promise<Peaks> {
  const sampleFile = join(dir, `${name}.memory.json`);
  const args = [
    '--expose-gc', '--import', SAMPLER, CLI, 'migrate', '--sqlite', fixturePath, ...targetArgs(target),
    '--embedder', 'local', '--model', MODEL, '--source-model', MODEL, '--dimensions', String(DIMS),
    '--skip-test', '--quiet', ...extra,
  ];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, {
      env: { ...process.env, CI: 'true', DATABASE_URL: undefined, MEMORY_SAMPLE_FILE: sampleFile },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`migrate ${extra.join(' ')} exited ${code}: ${stderr.trim().split('\n').pop()}`));
      resolve(JSON.parse(readFileSync(sampleFile, 'utf8')) as Peaks);
    });
  });
}

for (const target of testTargets()) {
  describe(`peak memory of a load on ${target.name}`, () => {
    test(`${ROWS.toLocaleString('en-US')} rows hold no more memory than ${FIRST.toLocaleString('en-US')}`, async () => {
      const small = await freshTarget(target);
      const large = await freshTarget(target);
      const smallPeaks = await migratePeaks(small, ['--limit', String(FIRST)], `${target.name}-small`);
      const largePeaks = await migratePeaks(large, [], `${target.name}-large`);
      // Both loads did their work: nearly every row stored (the rest are the file's duplicates
      // and skipped rows).
      const stored = (t: TargetOptions) => withDb(t, (db) => count(db, 'SELECT count(*) AS n FROM memories'));
      const [smallRows, largeRows] = [await stored(small), await stored(large)];
      assert.ok(smallRows > FIRST * 0.9 && smallRows <= FIRST, `first load stored ${smallRows} memories`);
      assert.ok(largeRows > ROWS * 0.9 && largeRows <= ROWS, `full load stored ${largeRows} memories`);
      const heap = largePeaks.heapMb - smallPeaks.heapMb;
      const held = heap + largePeaks.externalMb - smallPeaks.externalMb;
      const rss = largePeaks.rssMb - smallPeaks.rssMb;
      const shown = (p: Peaks) => `heap ${p.heapMb.toFixed(1)} MB, external ${p.externalMb.toFixed(1)} MB, RSS ${p.rssMb.toFixed(0)} MB`;
      console.log(
        `memory on ${target.name}: ${FIRST} rows ${shown(smallPeaks)}; ${ROWS} rows ${shown(largePeaks)}; ` +
          `growth: heap ${heap.toFixed(1)} MB, heap + external ${held.toFixed(1)} MB, RSS ${rss.toFixed(1)} MB`,
      );
      const grew = (what: string, mb: number, bound: number) =>
        assert.ok(mb < bound, `${what} grew by ${mb.toFixed(1)} MB from ${FIRST} to ${ROWS} rows; the bound is ${bound} MB`);
      grew('the heap in use', heap, HEAP_GROWTH_BOUND_MB);
      if (target.name === 'postgres') {
        grew('heap + external', held, RSS_GROWTH_BOUND_MB);
        grew('the peak RSS', rss, RSS_GROWTH_BOUND_MB);
      }
    });
  });
}

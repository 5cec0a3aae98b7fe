// A first load into empty tables takes a faster path (COPY straight in, dedup in memory, the
// btree indexes built once after the COPY). Its tables, indexes included, must equal those of
// the general path: the same file loaded in two runs, the second into a non-empty target.
import { describe, test, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { testTargets } from '../helpers/targets.js';
import { runCli, targetArgs, parseJson } from '../helpers/cli.js';
import { dumpTables, dumpDiff, withDb, freshTarget } from '../helpers/rerun.js';
import { MEMORIES_BTREE_INDEXES } from '../../src/postgres/schema.js';
import type { TargetOptions } from '../../src/postgres/connection.js';

const dir = mkdtempSync(join(tmpdir(), 'mm-first-load-'));
const sourcePath = join(dir, 'memory.db');
const BATCH = 10;

// 60 rows of 3 users, every 13th an exact duplicate of its user's row before. The id m-05
// comes back in a later batch with new content (a table without a primary key), so the load
// must ask the target about it.
before(() => {
  const db = new Database(sourcePath);
  try {
    db.exec(`CREATE TABLE memories (id TEXT, user_id TEXT, content TEXT NOT NULL, embedding BLOB, metadata TEXT,
             created_at DATETIME, updated_at DATETIME)`);
    const ins = db.prepare('INSERT INTO memories VALUES (?, ?, ?, NULL, ?, ?, ?)');
    for (let i = 0; i < 60; i++) {
      const at = new Date(Date.UTC(2024, 0, 1) + i * 60_000).toISOString().slice(0, 19).replace('T', ' ');
      const content = i % 13 === 12 ? `Note number ${i - 3} about espresso` : `Note number ${i} about espresso`;
      ins.run(`m-${String(i).padStart(2, '0')}`, `user-${i % 3}`, content, JSON.stringify({ category: `c${i % 4}`, importance: 'high' }), at, at);
    }
    ins.run('m-05', 'user-2', 'Note number 5, edited later', '{"category":"c1"}', '2024-02-01 00:00:00', '2024-02-01 00:00:00');
  } finally {
    db.close();
  }
});

const migrate = (t: TargetOptions, extra: string[] = []) =>
  runCli(['migrate', '--sqlite', sourcePath, ...targetArgs(t), '--embedder', 'local', '--batch-size', String(BATCH), '--skip-test', '--json', ...extra]);

for (const target of testTargets()) {
  describe(`first load [${target.name}]`, () => {
    test('equals a load in two runs, btree indexes included, with a repeated id in a later batch', async () => {
      const oneRun = await freshTarget(target);
      const r = await migrate(oneRun);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(parseJson(r).memories.errors, 0);

      const twoRuns = await freshTarget(target);
      const first = await migrate(twoRuns, ['--limit', '20']);
      assert.equal(first.code, 0, first.stderr);
      const second = await migrate(twoRuns);
      assert.equal(second.code, 0, second.stderr);

      const a = await dumpTables(oneRun);
      const b = await dumpTables(twoRuns);
      assert.equal(dumpDiff(a, b), null);
      assert.ok(a.memories.length > 40 && a.duplicates.length > 0, `${a.memories.length} memories, ${a.duplicates.length} duplicates`);
      const names = a.indexes.filter((i) => i['tablename'] === 'memories').map((i) => i['indexname']);
      for (const name of MEMORIES_BTREE_INDEXES) assert.ok(names.includes(name), `${name} missing: ${names.join(', ')}`);
      // Without the repeated id (--limit 60), the indexes are built only at the end of the load.
      const noRepeat = await freshTarget(target);
      const limited = await migrate(noRepeat, ['--limit', '60']);
      assert.equal(limited.code, 0, limited.stderr);
      assert.deepEqual((await dumpTables(noRepeat)).indexes, a.indexes);
      const edited = a.memories.find((m) => m['id'] === 'm-05');
      assert.equal(edited?.['content'], 'Note number 5, edited later');
      // The index serves the per-user dedup lookup of later runs.
      await withDb(oneRun, (db) =>
        db.transaction(async (tx) => {
          // 60 rows: without this the planner rightly prefers a scan.
          await tx.exec('SET LOCAL enable_seqscan = off');
          const plan = await tx.query(`EXPLAIN SELECT id FROM memories WHERE user_id = 'user-1' AND dedup_hash = repeat('a', 64)::bpchar`);
          assert.match(JSON.stringify(plan), /memories_dedup_idx/);
        }),
      );
    });
  });
}

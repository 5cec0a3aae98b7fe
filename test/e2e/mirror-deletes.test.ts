// Catch-up runs with --mirror-deletes: rows deleted from the SQLite file since the last run
// lose their record in Postgres (memory, duplicate record, skip), in one transaction recorded
// in the ledger; a row an app wrote in Postgres is never deleted; a run without the flag
// deletes nothing; a dry run counts and deletes nothing; the duplicates of a deleted memory
// are stored again; --limit is refused; --user and --shard keep it to their users.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testTargets } from '../helpers/targets.js';
import { runCli, targetArgs, parseJson } from '../helpers/cli.js';
import { withDb, type TargetOptions } from '../../src/postgres/connection.js';
import { LAYOUT_A_SQL } from '../../src/source/layout.js';
import { shardOf } from '../../src/source/shard.js';

const dir = mkdtempSync(join(tmpdir(), 'mm-mirror-'));
let files = 0;

const APP_CONTENT = 'Written by the app straight into Postgres after cutover';

/**
 * m_00..m_19 alternate user_b / user_a; dup_a repeats m_01 (user_a); empty_a and empty_b are
 * skipped; orig_x (user_b) is the original of dup_x1 and dup_x2; frag_1 is a prompt fragment.
 */
function sourceFile(): string {
  const path = join(dir, `memory-${++files}.db`);
  const db = new Database(path);
  db.exec(LAYOUT_A_SQL);
  const ins = db.prepare('INSERT INTO memories (id, user_id, content, metadata, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)');
  const rows: [string, string, string, string?][] = [];
  for (let i = 0; i < 20; i++) rows.push([`m_${String(i).padStart(2, '0')}`, i % 2 ? 'user_a' : 'user_b', `Memory ${i}: the customer orders blend number ${i * 7}.`]);
  rows.push(['dup_a', 'user_a', 'Memory 1: the customer orders blend number 7.']);
  rows.push(['empty_a', 'user_a', '   ']);
  rows.push(['empty_b', 'user_b', '']);
  rows.push(['orig_x', 'user_b', 'Grinds the beans fine for the moka pot.']);
  rows.push(['dup_x1', 'user_b', 'Grinds the beans fine for the moka pot.']);
  rows.push(['dup_x2', 'user_b', 'Grinds the beans fine for the moka pot.']);
  rows.push(['frag_1', 'system_prompts', 'Offer the grinder bundle once per conversation.', '{"type": "system_prompt", "category": "sales_guidelines"}']);
  rows.forEach(([id, user, content, md], i) =>
    ins.run(id, user, content, md ?? '{"category": "orders"}', `2024-01-0${1 + (i % 9)} 10:00:00`, `2024-02-0${1 + (i % 9)} 11:00:00`),
  );
  db.close();
  return path;
}

function deleteFromSource(file: string, ids: string[]): void {
  const db = new Database(file);
  try {
    const del = db.prepare('DELETE FROM memories WHERE id = ?');
    for (const id of ids) assert.equal(del.run(id).changes, 1, `no row ${id} in the file`);
  } finally {
    db.close();
  }
}

const migrateArgs = (file: string, t: TargetOptions, ...more: string[]) => [
  'migrate',
  '--sqlite',
  file,
  ...targetArgs(t),
  '--embedder',
  'local',
  '--skip-test',
  '--batch-size',
  '8',
  ...more,
];

async function migrate(file: string, t: TargetOptions, ...more: string[]) {
  const res = await runCli([...migrateArgs(file, t, ...more), '--json']);
  assert.equal(res.code, 0, res.stderr);
  return parseJson(res);
}

async function verify(file: string, t: TargetOptions) {
  const v = await runCli(['verify', '--sqlite', file, ...targetArgs(t), '--json', '--sample', '1000']);
  return { code: v.code, report: parseJson(v), text: v.stdout + v.stderr };
}

/** Which of these ids have a record in each table. */
async function recorded(t: TargetOptions, ids: string[]) {
  return withDb(t, async (db) => {
    const q = async (sql: string) => (await db.query<{ id: string }>(sql, [ids])).map((r) => r.id).sort();
    return {
      memories: await q(`SELECT id FROM memories WHERE id = ANY($1::text[])`),
      duplicates: await q(`SELECT DISTINCT duplicate_id AS id FROM memory_duplicates WHERE duplicate_id = ANY($1::text[])`),
      skips: await q(`SELECT source_id AS id FROM migration_skips WHERE source_id = ANY($1::text[])`),
      fragments: await q(`SELECT id FROM prompt_fragments WHERE id = ANY($1::text[])`),
    };
  });
}

/** Row counts of every table a mirrored run may delete from, and of the ledger. */
async function tableCounts(t: TargetOptions) {
  return withDb(t, async (db) => {
    const [c] = await db.query<Record<string, number>>(
      `SELECT (SELECT count(*) FROM memories)::int AS memories, (SELECT count(*) FROM memory_duplicates)::int AS duplicates,
              (SELECT count(*) FROM migration_skips)::int AS skips, (SELECT count(*) FROM prompt_fragments)::int AS fragments,
              (SELECT count(*) FROM migration_runs)::int AS runs`,
    );
    return { ...c };
  });
}

for (const target of testTargets()) {
  describe(`migrate --mirror-deletes (${target.name})`, () => {
    test('deletes exactly the records of rows gone from the file, never an app row; off by default; a dry run counts', async () => {
      const t = await target.fresh();
      const file = sourceFile();
      const first = await migrate(file, t);
      assert.equal(first.memories.duplicates.total, 3);
      assert.equal(first.memories.skipped, 2);
      assert.equal(first.deleted, undefined);
      const gone = ['m_04', 'dup_a', 'empty_a'];
      assert.deepEqual(await recorded(t, gone), { memories: ['m_04'], duplicates: ['dup_a'], skips: ['empty_a'], fragments: [] });

      deleteFromSource(file, gone);
      const appId = await withDb(t, async (db) => {
        const [r] = await db.query<{ id: string }>(`INSERT INTO memories (user_id, content) VALUES ('user_a', $1) RETURNING id`, [APP_CONTENT]);
        return r!.id;
      });

      // Without the flag a re-run deletes nothing.
      const plain = await migrate(file, t);
      assert.equal(plain.deleted, undefined);
      assert.deepEqual(await recorded(t, gone), { memories: ['m_04'], duplicates: ['dup_a'], skips: ['empty_a'], fragments: [] });
      const before = await tableCounts(t);

      // A dry run says what it would delete and deletes nothing.
      const dry = await migrate(file, t, '--dry-run', '--mirror-deletes');
      assert.deepEqual(dry.deleted, { memories: 1, duplicates: 1, skips: 1, fragments: 0, reloadedDuplicates: 0 });
      assert.deepEqual(await tableCounts(t), before);
      const dryHuman = await runCli(migrateArgs(file, t, '--dry-run', '--mirror-deletes'));
      assert.equal(dryHuman.code, 0, dryHuman.stderr);
      assert.match(dryHuman.stdout, /^would delete 3 records of rows gone from the SQLite file: memories 1, duplicates 1, skips 1, fragments 0$/m);
      assert.deepEqual(await tableCounts(t), before);

      const mirrored = await migrate(file, t, '--mirror-deletes');
      assert.equal(mirrored.ok, true);
      assert.deepEqual(mirrored.deleted, { memories: 1, duplicates: 1, skips: 1, fragments: 0, reloadedDuplicates: 0 });
      assert.equal(mirrored.memories.migrated, 0);
      assert.deepEqual(await recorded(t, gone), { memories: [], duplicates: [], skips: [], fragments: [] });
      assert.deepEqual(await tableCounts(t), {
        ...before,
        memories: before.memories - 1,
        duplicates: before.duplicates - 1,
        skips: before.skips - 1,
        runs: before.runs + 1,
      });
      await withDb(t, async (db) => {
        const app = await db.query<{ content: string }>(`SELECT content FROM memories WHERE id = $1`, [appId]);
        assert.deepEqual(app.map((r) => r.content), [APP_CONTENT], "the app's row is still there");
        const [run] = await db.query<{ options: string; counts: string; status: string }>(
          `SELECT options::text AS options, counts::text AS counts, status FROM migration_runs ORDER BY id DESC LIMIT 1`,
        );
        assert.equal(run!.status, 'committed');
        assert.equal(JSON.parse(run!.options).mirrorDeletes, true);
        assert.deepEqual(JSON.parse(run!.counts).deleted, mirrored.deleted);
      });

      // Nothing left to delete: a second mirrored run deletes nothing.
      const again = await migrate(file, t, '--mirror-deletes');
      assert.deepEqual(again.deleted, { memories: 0, duplicates: 0, skips: 0, fragments: 0, reloadedDuplicates: 0 });
      // No damage; the app's row is listed as added since the migration (exit 3 until rollback).
      const v = await verify(file, t);
      assert.equal(v.code, 3, v.text);
      assert.deepEqual(v.report.mismatches, []);
      assert.equal(v.report.sinceMigration.added, 1);
    });

    test('the duplicates of a deleted memory are stored again, in the same run; verify exits 0', async () => {
      const t = await target.fresh();
      const file = sourceFile();
      await migrate(file, t);
      const x = ['orig_x', 'dup_x1', 'dup_x2'];
      assert.deepEqual(await recorded(t, x), { memories: ['orig_x'], duplicates: ['dup_x1', 'dup_x2'], skips: [], fragments: [] });

      deleteFromSource(file, ['orig_x']);
      const r = await migrate(file, t, '--mirror-deletes');
      assert.deepEqual(r.deleted, { memories: 1, duplicates: 0, skips: 0, fragments: 0, reloadedDuplicates: 2 });
      // The first of them (in file order) is stored, the other is its duplicate.
      assert.equal(r.memories.migrated, 1);
      assert.deepEqual(await recorded(t, x), { memories: ['dup_x1'], duplicates: ['dup_x2'], skips: [], fragments: [] });
      await withDb(t, async (db) => {
        const [d] = await db.query<{ original_id: string }>(`SELECT original_id FROM memory_duplicates WHERE duplicate_id = 'dup_x2'`);
        assert.equal(d!.original_id, 'dup_x1');
      });
      const v = await verify(file, t);
      assert.equal(v.code, 0, v.text);
      assert.equal(v.report.counts.missing, 0);
    });

    test('with --limit it is refused: exit 2, one line, nothing written', async () => {
      const t = await target.fresh();
      const file = sourceFile();
      await migrate(file, t);
      deleteFromSource(file, ['m_04']);
      const before = await tableCounts(t);
      const res = await runCli(migrateArgs(file, t, '--mirror-deletes', '--limit', '5'));
      assert.equal(res.code, 2, res.stdout + res.stderr);
      const lines = res.stderr.split('\n').filter((l) => l.trim());
      assert.equal(lines.length, 1, res.stderr);
      assert.match(lines[0]!, /--mirror-deletes cannot be combined with --limit: a limited run does not read the whole file/);
      assert.equal(res.stdout.trim(), '');
      assert.deepEqual(await tableCounts(t), before);
    });

    test('--user and --shard delete only their users\' vanished rows', async () => {
      const t = await target.fresh();
      const file = sourceFile();
      await migrate(file, t);
      const gone = ['m_03', 'empty_a', 'm_06', 'empty_b', 'frag_1'];
      deleteFromSource(file, gone);

      const a = await migrate(file, t, '--user', 'user_a', '--mirror-deletes');
      assert.deepEqual(a.deleted, { memories: 1, duplicates: 0, skips: 1, fragments: 0, reloadedDuplicates: 0 });
      assert.deepEqual(await recorded(t, gone), { memories: ['m_06'], duplicates: [], skips: ['empty_b'], fragments: ['frag_1'] });

      // A shard covers the users whose hash falls in it: user_b's and the fragments' (system_prompts) shards.
      const shardB = shardOf('user_b', 2);
      const b = await migrate(file, t, '--shard', `${shardB}/2`, '--mirror-deletes');
      const fragmentsToo = shardOf('system_prompts', 2) === shardB;
      assert.deepEqual(b.deleted, { memories: 1, duplicates: 0, skips: 1, fragments: fragmentsToo ? 1 : 0, reloadedDuplicates: 0 });
      assert.deepEqual(await recorded(t, gone), { memories: [], duplicates: [], skips: [], fragments: fragmentsToo ? [] : ['frag_1'] });

      const all = await migrate(file, t, '--mirror-deletes');
      assert.deepEqual(all.deleted, { memories: 0, duplicates: 0, skips: 0, fragments: fragmentsToo ? 0 : 1, reloadedDuplicates: 0 });
      assert.deepEqual(await recorded(t, gone), { memories: [], duplicates: [], skips: [], fragments: [] });
      await withDb(t, async (db) => {
        const defaults = await db.query(`SELECT id FROM prompt_fragments WHERE id LIKE 'default:%'`);
        assert.ok(defaults.length > 0, 'the default fragments are never deleted');
      });
      const v = await verify(file, t);
      assert.equal(v.code, 0, v.text);
    });
  });
}

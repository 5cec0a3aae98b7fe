// Rows PostgreSQL cannot store (a NUL character in content, id or user_id) do not stop the
// migration: each is recorded as a rejected skip, written once to the reject file with its id
// and reason, counted as an error, and the rest is migrated (exit 0). verify names every one
// (exit 3). A re-run adds no reject-file line for a row it rejected before: lines are written
// only when a row is first rejected (or its reason changes). A dry run counts them, writes nothing.
// A COPY error the server raises names the source id, not a line of the batch.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testTargets } from '../helpers/targets.js';
import { runCli, targetArgs, parseJson } from '../helpers/cli.js';
import { withDb, type TargetOptions } from '../../src/postgres/connection.js';
import { LAYOUT_A_SQL } from '../../src/source/layout.js';

const dir = mkdtempSync(join(tmpdir(), 'mm-rejects-'));
let files = 0;

const GOOD = 20;
/** The rows with a NUL: id, user, content, and the field the reason must name. */
const BAD: { id: string; user: string; content: string; field: string }[] = [
  { id: 'm_nul_content_1', user: 'user_a', content: 'likes\u0000espresso', field: 'content' },
  { id: 'm_nul_content_2', user: 'user_b', content: '\u0000 at the start', field: 'content' },
  { id: 'm_nul_user', user: 'user_\u0000c', content: 'a fine memory of a bad user id', field: 'user_id' },
  { id: 'm_nul\u0000id', user: 'user_a', content: 'a fine memory of a bad id', field: 'id' },
];
/** How PostgreSQL records and verify names an id or user with a NUL: escaped as in JSON. */
const escaped = (s: string) => s.replaceAll('\u0000', '\\u0000');

function sourceFile(extra: [string, string, string][] = []): string {
  const path = join(dir, `memory-${++files}.db`);
  const db = new Database(path);
  db.exec(LAYOUT_A_SQL);
  const ins = db.prepare('INSERT INTO memories (id, user_id, content, metadata, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)');
  const rows: [string, string, string][] = [];
  for (let i = 0; i < GOOD; i++) rows.push([`m_${String(i).padStart(2, '0')}`, i % 2 ? 'user_a' : 'user_b', `Memory ${i}: the customer orders blend number ${i * 7}.`]);
  // The rejected rows sit between good ones, in the same batches.
  rows.splice(3, 0, [BAD[0]!.id, BAD[0]!.user, BAD[0]!.content]);
  rows.splice(9, 0, [BAD[1]!.id, BAD[1]!.user, BAD[1]!.content]);
  rows.splice(15, 0, [BAD[2]!.id, BAD[2]!.user, BAD[2]!.content]);
  rows.push([BAD[3]!.id, BAD[3]!.user, BAD[3]!.content]);
  rows.push(...extra);
  rows.forEach(([id, user, content], i) => ins.run(id, user, content, '{"category": "orders"}', `2024-01-0${1 + (i % 9)} 10:00:00`, `2024-02-0${1 + (i % 9)} 11:00:00`));
  db.close();
  // The NUL survives the round trip through SQLite (else this suite tests nothing).
  const check = new Database(path, { readonly: true });
  assert.equal(check.prepare('SELECT content FROM memories WHERE id = ?').pluck().get(BAD[0]!.id), BAD[0]!.content);
  check.close();
  return path;
}

function rejectLines(path: string): { id: string; user: string | null; reason: string }[] {
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l));
}

const migrateArgs = (file: string, t: TargetOptions, rejectFile: string, ...more: string[]) => [
  'migrate',
  '--sqlite',
  file,
  ...targetArgs(t),
  '--embedder',
  'local',
  '--skip-test',
  '--batch-size',
  '8',
  '--reject-file',
  rejectFile,
  ...more,
];

for (const target of testTargets()) {
  describe(`rows PostgreSQL cannot store, on ${target.name}`, () => {
    test('are rejected with their id and reason, the rest migrates (exit 0), verify names them (exit 3), a re-run adds no line', async () => {
      const t = await target.fresh();
      const file = sourceFile();
      const rejectFile = join(mkdtempSync(join(dir, 'out-')), 'rejects.jsonl');

      const first = await runCli([...migrateArgs(file, t, rejectFile), '--json']);
      assert.equal(first.code, 0, first.stderr);
      const r = parseJson(first);
      assert.equal(r.ok, true);
      assert.equal(r.memories.read, GOOD + BAD.length);
      assert.equal(r.memories.migrated, GOOD);
      assert.equal(r.memories.rejected, BAD.length);
      assert.equal(r.memories.errors, BAD.length);
      assert.equal(r.memories.skipped, 0);
      assert.equal(r.users.user_a.rejected, 2);
      assert.deepEqual(r.rejectedRows.map((x: { id: string }) => x.id).sort(), BAD.map((b) => b.id).sort());

      // The good rows are in Postgres, the NUL rows are not, and each is recorded as rejected.
      await withDb(t, async (db) => {
        const [n] = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM memories`);
        assert.equal(n!.n, GOOD);
        const stored = await db.query(`SELECT id FROM memories WHERE id = ANY($1::text[])`, [BAD.map((b) => escaped(b.id))]);
        assert.equal(stored.length, 0);
        const skips = await db.query<{ source_id: string; user_id: string; reason: string; rejected: boolean }>(
          `SELECT source_id, user_id, reason, rejected FROM migration_skips`,
        );
        const byId = (a: unknown[], b: unknown[]) => (String(a[0]) < String(b[0]) ? -1 : 1);
        assert.deepEqual(
          skips.map((s) => [s.source_id, s.user_id, s.rejected]).sort(byId),
          BAD.map((b) => [escaped(b.id), escaped(b.user), true]).sort(byId),
        );
      });

      // The reject file holds exactly those rows, ids and users as in SQLite, with the reason.
      const lines = rejectLines(rejectFile);
      assert.equal(lines.length, BAD.length);
      for (const b of BAD) {
        const line = lines.find((l) => l.id === b.id);
        assert.ok(line, `no reject line for ${JSON.stringify(b.id)}`);
        assert.equal(line.user, b.user);
        assert.equal(line.reason, `${b.field} contains a NUL character (U+0000), which PostgreSQL text cannot store`);
      }

      // verify names each one, with the reason, and fails.
      const v = await runCli(['verify', '--sqlite', file, ...targetArgs(t), '--json']);
      assert.equal(v.code, 3, v.stderr);
      const vr = parseJson(v);
      assert.equal(vr.counts.rejected, BAD.length);
      assert.equal(vr.counts.missing, 0);
      assert.equal(vr.counts.extra, 0);
      const named = vr.mismatches.filter((m: { check: string }) => m.check === 'rejected');
      assert.deepEqual(named.map((m: { id: string }) => m.id).sort(), BAD.map((b) => escaped(b.id)).sort());
      for (const m of named) assert.match(m.detail, /NUL character \(U\+0000\)/);
      const human = await runCli(['verify', '--sqlite', file, ...targetArgs(t)]);
      assert.equal(human.code, 3);
      for (const b of BAD) assert.ok(human.stderr.includes(`${escaped(b.id)} (${escaped(b.user)}) — rejected: not migrated: ${b.field} contains a NUL`), human.stderr);

      // A re-run: exit 0, nothing new written, no second line for the same rows.
      const before = readFileSync(rejectFile);
      const again = await runCli(migrateArgs(file, t, rejectFile));
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stdout + again.stderr, /rows PostgreSQL cannot store \(not migrated, counted as errors\): 4, see --reject-file/);
      assert.deepEqual(readFileSync(rejectFile), before);
      const rerun = await runCli([...migrateArgs(file, t, rejectFile), '--json']);
      assert.equal(rerun.code, 0, rerun.stderr);
      const rr = parseJson(rerun);
      assert.equal(rr.memories.migrated, 0);
      assert.equal(rr.memories.unchanged, GOOD);
      assert.equal(rr.memories.rejected, BAD.length);
      assert.deepEqual(rr.rejectedRows, []);
      assert.deepEqual(readFileSync(rejectFile), before);
      await withDb(t, async (db) => {
        const [n] = await db.query<{ m: number; s: number }>(
          `SELECT (SELECT count(*)::int FROM memories) AS m, (SELECT count(*)::int FROM migration_skips) AS s`,
        );
        assert.deepEqual(n, { m: GOOD, s: BAD.length });
      });
    });

    test('a dry run counts them and writes no reject file', async () => {
      const t = await target.fresh();
      const rejectFile = join(mkdtempSync(join(dir, 'out-')), 'rejects.jsonl');
      const res = await runCli([...migrateArgs(sourceFile(), t, rejectFile), '--dry-run', '--json']);
      assert.equal(res.code, 0, res.stderr);
      const r = parseJson(res);
      assert.equal(r.memories.rejected, BAD.length);
      assert.equal(r.memories.errors, BAD.length);
      assert.equal(r.memories.migrated, GOOD);
      assert.equal(existsSync(rejectFile), false);
    });

    test('a user_id longer than the column is rejected like a NUL, and the rest is migrated', async () => {
      const t = await target.fresh();
      const file = sourceFile([['m_long_user', 'u'.repeat(300), 'a memory of a user with a very long id']]);
      const rejectFile = join(mkdtempSync(join(dir, 'out-')), 'rejects.jsonl');
      const res = await runCli([...migrateArgs(file, t, rejectFile), '--json']);
      assert.equal(res.code, 0, res.stderr);
      assert.equal(parseJson(res).memories.migrated, GOOD);
      const line = rejectLines(rejectFile).find((l) => l.id === 'm_long_user');
      assert.equal(line?.reason, 'user_id is longer than 255 characters, the width of the user_id column');
    });

    test('a row the server refuses in COPY is named by its source id, not by its line in the batch', async () => {
      const t = await target.fresh();
      const rejectFile = join(mkdtempSync(join(dir, 'out-')), 'rejects.jsonl');
      assert.equal((await runCli(migrateArgs(sourceFile(), t, rejectFile))).code, 0);
      // A rule of the app's own that the migration cannot know about.
      await withDb(t, (db) => db.exec(`ALTER TABLE memories ADD CONSTRAINT app_no_secrets CHECK (content NOT LIKE '%password%')`));
      const file = sourceFile([['m_secret', 'user_a', 'the wifi password is espresso']]);
      const res = await runCli(migrateArgs(file, t, rejectFile));
      assert.equal(res.code, 1, res.stderr);
      assert.match(res.stderr, /source row m_secret: .*app_no_secrets/);
    });
  });
}

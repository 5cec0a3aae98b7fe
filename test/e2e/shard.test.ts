// Scale-out and filters: --shard K/N as N workers (concurrent processes on PostgreSQL,
// one after another on PGlite, which is one process per directory) gives exactly the
// single-process tables, with the advisory lock per shard; --limit and --user process only
// what they select, and a full run afterwards converges to the clean-run tables.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testTargets } from '../helpers/targets.js';
import { runCli, targetArgs, parseJson, type CliResult } from '../helpers/cli.js';
import { startFakeOpenAI, type FakeOpenAI } from '../helpers/fake-openai.js';
import { dumpTables, dumpDb, dumpDiff, withDb, count, freshTarget, type TableDump } from '../helpers/rerun.js';
import { makeFixture, type FixtureSummary } from '../../scripts/make-fixture.js';
import { shardOf } from '../../src/source/shard.js';
import { lockKey } from '../../src/postgres/lock.js';
import postgres from 'postgres';
import Database from 'better-sqlite3';
import { createHash } from 'node:crypto';
import type { Db, TargetOptions } from '../../src/postgres/connection.js';

const dir = mkdtempSync(join(tmpdir(), 'mm-shard-'));
const fixturePath = join(dir, 'memory.db');
let fixture: FixtureSummary;

before(() => {
  fixture = makeFixture({ out: fixturePath, rows: 150, dims: 8, users: 5, seed: 23 });
});

function assertSameTables(got: TableDump, want: TableDump, what: string) {
  const diff = dumpDiff(got, want);
  assert.equal(diff, null, `${what}: ${diff}`);
  assert.ok(want.memories.length > 100 && want.duplicates.length > 0 && want.fragments.length > 7 && want.skips.length > 0);
}

describe('shards and filters', { concurrency: true }, () => {
  for (const target of testTargets()) {
    describe(`on ${target.name}`, { concurrency: 1 }, () => {
      let api: FakeOpenAI;
      let reference: TableDump;
      const env = () => ({ OPENAI_API_KEY: 'sk-test-shard-0001', OPENAI_BASE_URL: api.url });
      const migrateArgs = (t: TargetOptions, extra: string[] = []) => [
        'migrate', '--sqlite', fixturePath, ...targetArgs(t), '--model', 'text-embedding-3-small', '--dimensions', '16',
        '--batch-size', '25', '--skip-test', '--json', ...extra,
      ];
      before(async () => {
        api = await startFakeOpenAI();
        const t = await freshTarget(target);
        const res = await runCli(migrateArgs(t), env());
        assert.equal(res.code, 0, res.stderr);
        reference = await dumpTables(t);
      });
      after(async () => {
        await api?.close();
      });

      test('--shard K/N with N=3 gives exactly the single-process tables; the lock is per shard', async () => {
        const users = Object.keys(fixture.perUser);
        const shards = [0, 1, 2].map((k) => users.filter((u) => shardOf(u, 3) === k && !u.startsWith('system_')));
        assert.ok(shards.every((s) => s.length > 0), `every shard has users: ${JSON.stringify(shards)}`);

        const t = await freshTarget(target);
        let results: CliResult[];
        if (target.name === 'postgres') {
          // While another session holds shard 0/3's lock (what a running worker does), a
          // worker for 0/3 is refused and one for 1/3 is not held up.
          const hold = postgres(t.databaseUrl!, { max: 1, onnotice: () => {} });
          try {
            const [row] = await hold.unsafe('SELECT pg_try_advisory_lock($1) AS ok', [lockKey('0/3')]);
            assert.equal(row!['ok'], true);
            const [refused, other] = await Promise.all([
              runCli(migrateArgs(t, ['--shard', '0/3']), env()),
              runCli(migrateArgs(t, ['--shard', '1/3', '--limit', '10']), env()),
            ]);
            assert.equal(refused.code, 1, refused.stderr);
            assert.match(refused.stderr, /another memory-migrate run for shard 0\/3 is writing to this target: wait for it to finish/);
            assert.equal(other.code, 0, other.stderr);
          } finally {
            await hold.end();
          }
          // The three workers at once, each slowed down a little so that they overlap.
          api.setFaults((_n, body) => (body?.input === undefined ? undefined : { delayMs: 100 }));
          results = await Promise.all([0, 1, 2].map((k) => runCli(migrateArgs(t, ['--shard', `${k}/3`]), env())));
          api.setFaults(undefined);
        } else {
          results = [];
          for (const k of [0, 1, 2]) results.push(await runCli(migrateArgs(t, ['--shard', `${k}/3`]), env()));
        }
        results.forEach((r, k) => {
          assert.equal(r.code, 0, `shard ${k}: ${r.stderr}`);
          const rep = parseJson(r);
          const seen = Object.keys(rep.users).filter((u) => u !== '(null)');
          assert.deepEqual(seen.filter((u) => !u.startsWith('system_')).sort(), [...shards[k]!].sort(), `users of shard ${k}`);
          for (const u of seen) assert.equal(shardOf(u, 3), k);
        });
        await withDb(t, async (db) => {
          assertSameTables(await dumpDb(db), reference, 'three shards vs one process');
          const runs = await db.query<{ shard: string; status: string }>(`SELECT shard, status FROM migration_runs ORDER BY shard, id`);
          const expected = [['0/3', 'committed'], ['1/3', 'committed'], ['2/3', 'committed']];
          if (target.name === 'postgres') expected.splice(1, 0, ['1/3', 'committed']); // the --limit 10 worker
          assert.deepEqual(runs.map((r) => [r.shard, r.status]), expected);
        });
      });

      test('--limit N processes at most N rows; a full run afterwards converges', async () => {
        const t = await freshTarget(target);
        const res = await runCli(migrateArgs(t, ['--limit', '40']), env());
        assert.equal(res.code, 0, res.stderr);
        const r = parseJson(res);
        assert.equal(r.memories.read + r.fragments.read, 40);
        await withDb(t, async (db) => {
          const stored =
            (await count(db, 'SELECT count(*) AS n FROM memories')) +
            (await count(db, 'SELECT count(*) AS n FROM memory_duplicates')) +
            (await count(db, 'SELECT count(*) AS n FROM migration_skips')) +
            (await count(db, `SELECT count(*) AS n FROM prompt_fragments WHERE id NOT LIKE 'default:%'`));
          assert.equal(stored, 40);
          const [run] = await db.query<{ checkpoint_rowid: number; options: any }>(`SELECT checkpoint_rowid, options FROM migration_runs`);
          assert.equal(Number(run!.checkpoint_rowid), 40);
          const o = typeof run!.options === 'string' ? JSON.parse(run!.options) : run!.options;
          assert.equal(o.limit, 40);
        });
        const full = await runCli(migrateArgs(t), env());
        assert.equal(full.code, 0, full.stderr);
        assert.equal(parseJson(full).memories.unchanged, r.memories.migrated);
        assertSameTables(await dumpTables(t), reference, '--limit run, then a full run');
      });

      test('--user (repeated) processes only those users; a full run afterwards converges', async () => {
        const t = await freshTarget(target);
        const res = await runCli(migrateArgs(t, ['--user', 'user_2', '--user', 'user_4']), env());
        assert.equal(res.code, 0, res.stderr);
        const r = parseJson(res);
        assert.deepEqual(Object.keys(r.users).sort(), ['user_2', 'user_4']);
        assert.equal(r.memories.read, fixture.perUser['user_2']! + fixture.perUser['user_4']!);
        assert.equal(r.fragments.read, 0, 'system_prompts was not selected');
        await withDb(t, async (db) => {
          const rows = await db.query<{ user_id: string }>(`SELECT DISTINCT user_id FROM memories ORDER BY user_id`);
          assert.deepEqual(rows.map((x) => x.user_id), ['user_2', 'user_4']);
          assert.equal(await count(db, 'SELECT count(*) AS n FROM memories'), r.memories.migrated);
        });
        const full = await runCli(migrateArgs(t), env());
        assert.equal(full.code, 0, full.stderr);
        assertSameTables(await dumpTables(t), reference, '--user run, then a full run');
      });

      test('--shard K/N with --user processes only the users both select; every row of theirs is accounted for', async () => {
        // The shard rule, computed here: sha256(user id), first 4 bytes big-endian, mod N.
        // With N = 3: user_1, user_2 -> 2; user_3, user_4 -> 0; user_5 -> 1.
        const byHand = (u: string) => createHash('sha256').update(u, 'utf8').digest().readUInt32BE(0) % 3;
        const users = ['user_1', 'user_2', 'user_3', 'user_4', 'user_5'];
        assert.deepEqual(users.map(byHand), [2, 2, 0, 0, 1]);
        assert.deepEqual(users.map((u) => shardOf(u, 3)), [2, 2, 0, 0, 1]);

        const t = await freshTarget(target);
        // Rows as plain JSON (postgres.js hands back its own Result arrays).
        const plain = (rows: Record<string, unknown>[]) => JSON.parse(JSON.stringify(rows));
        const refRows = (table: 'memories' | 'duplicates' | 'skips', keep: string[]) =>
          plain(reference[table].filter((row) => keep.includes(String(row['user_id']))));

        // Shard 2/3 with user_2 (in it) and user_4 (in 0/3): user_2 only, all 30 of its rows.
        const a = await runCli(migrateArgs(t, ['--shard', '2/3', '--user', 'user_2', '--user', 'user_4']), env());
        assert.equal(a.code, 0, a.stderr);
        const ra = parseJson(a);
        assert.deepEqual(Object.keys(ra.users), ['user_2']);
        assert.equal(ra.memories.read, 30);
        assert.equal(ra.fragments.read, 0);
        assert.equal(ra.memories.read, ra.memories.migrated + ra.memories.skipped + ra.memories.duplicates.total);
        await withDb(t, async (db) => {
          assert.deepEqual(await accountedIds(db), sourceIds(['user_2']));
          const got = await dumpDb(db);
          assert.deepEqual(plain(got.memories), refRows('memories', ['user_2']));
          assert.deepEqual(plain(got.duplicates), refRows('duplicates', ['user_2']));
          assert.deepEqual(plain(got.skips), refRows('skips', ['user_2']));
          assert.equal(got.memories.length, ra.memories.migrated);
        });

        // Shard 1/3 holds only user_5: with --user user_2 nothing is selected, nothing written.
        const none = await runCli(migrateArgs(t, ['--shard', '1/3', '--user', 'user_2']), env());
        assert.equal(none.code, 0, none.stderr);
        const rn = parseJson(none);
        assert.deepEqual(rn.users, {});
        assert.equal(rn.memories.read, 0);
        assert.equal(rn.fragments.read, 0);

        // Shard 0/3 with user_2, user_3, user_4: user_3 and user_4 (24 rows each) join user_2.
        const b = await runCli(migrateArgs(t, ['--shard', '0/3', '--user', 'user_2', '--user', 'user_3', '--user', 'user_4']), env());
        assert.equal(b.code, 0, b.stderr);
        const rb = parseJson(b);
        assert.deepEqual(Object.keys(rb.users).sort(), ['user_3', 'user_4']);
        assert.equal(rb.memories.read, 48);
        await withDb(t, async (db) => {
          const three = ['user_2', 'user_3', 'user_4'];
          assert.deepEqual(await accountedIds(db), sourceIds(three));
          const got = await dumpDb(db);
          assert.deepEqual(plain(got.memories), refRows('memories', three));
          assert.deepEqual(plain(got.duplicates), refRows('duplicates', three));
          assert.deepEqual(plain(got.skips), refRows('skips', three));
          const perUser = await db.query<{ user_id: string; n: number }>(
            `SELECT user_id, count(*) AS n FROM memories GROUP BY user_id ORDER BY user_id`,
          );
          assert.deepEqual(perUser.map((x) => x.user_id), three);
        });

        const full = await runCli(migrateArgs(t), env());
        assert.equal(full.code, 0, full.stderr);
        assertSameTables(await dumpTables(t), reference, '--shard with --user runs, then a full run');
      });
    });
  }
});

/** Source ids of these users, read from the SQLite file itself, sorted. */
function sourceIds(users: string[]): string[] {
  const src = new Database(fixturePath, { readonly: true });
  try {
    const rows = src.prepare(`SELECT id FROM memories WHERE user_id IN (${users.map(() => '?').join(', ')})`).all(...users) as { id: string }[];
    return rows.map((r) => r.id).sort();
  } finally {
    src.close();
  }
}

/** Every source id the target accounts for: stored, recorded as a duplicate, or skipped; sorted, repeats kept. */
async function accountedIds(db: Db): Promise<string[]> {
  const rows = await db.query<{ id: string }>(
    `SELECT id FROM memories UNION ALL SELECT duplicate_id FROM memory_duplicates UNION ALL SELECT source_id FROM migration_skips`,
  );
  return rows.map((r) => r.id).sort();
}

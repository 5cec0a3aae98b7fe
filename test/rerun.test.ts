// Re-runs converge: an unchanged second run does nothing and pays nothing, a changed row is
// updated in place, and a run killed with SIGKILL at several points (or stopped with
// SIGINT/SIGTERM) is completed by the same command into exactly the tables of one clean run.
// Two runs against one target: the second exits 1 with a clear message.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { testTargets, type TestTarget } from './helpers/targets.js';
import { runCli, targetArgs, parseJson, type CliResult } from './helpers/cli.js';
import { startFakeOpenAI, type FakeOpenAI, type Fault } from './helpers/fake-openai.js';
import { startCli, dumpTables, dumpDiff, withDb, count, sentTexts, type TableDump, type RunningCli } from './helpers/rerun.js';
import { makeFixture } from '../scripts/make-fixture.js';
import type { TargetOptions } from '../src/target/connection.js';
import { canonicalize } from '../src/source/canonical.js';

const dir = mkdtempSync(join(tmpdir(), 'mm-rerun-'));
const fixturePath = join(dir, 'memory.db');
let api: FakeOpenAI;

before(async () => {
  makeFixture({ out: fixturePath, rows: 200, dims: 8, users: 5, seed: 11 });
  api = await startFakeOpenAI();
});
after(async () => {
  await api.close();
});

const env = () => ({ OPENAI_API_KEY: 'sk-test-rerun-0001', OPENAI_BASE_URL: api.url });
const migrateArgs = (t: TargetOptions, sqlite = fixturePath) => [
  'migrate', '--sqlite', sqlite, ...targetArgs(t),
  '--model', 'text-embedding-3-small', '--dimensions', '32', '--batch-size', '25', '--skip-test', '--json',
];
const DEFAULT_TEXT = 'Be accurate, concise and helpful';
const isEmbedding = (body: any) => body && body.input !== undefined;
/** 1-based number of the embedding request being answered (GET /models is not counted). */
const embedN = () => api.embeddingRequests.length;

/** Inputs the server answered (excluding requests it never answered, e.g. the one a kill interrupted). */
function answeredInputs(): number {
  return api.embeddingRequests.filter((r) => r.status === 200).reduce((a, r) => a + r.inputs, 0);
}

async function cleanRun(t: TargetOptions, sqlite = fixturePath): Promise<{ report: any; dump: TableDump; inputs: number }> {
  api.setFaults(undefined);
  api.reset();
  const res = await runCli(migrateArgs(t, sqlite), env());
  assert.equal(res.code, 0, res.stderr);
  return { report: parseJson(res), dump: await dumpTables(t), inputs: answeredInputs() };
}

function assertSameTables(got: TableDump, want: TableDump, what: string) {
  const diff = dumpDiff(got, want);
  assert.equal(diff, null, `${what}: ${diff}`);
  assert.ok(want.memories.length > 100 && want.duplicates.length > 0 && want.fragments.length > 7 && want.skips.length > 0);
}

type KillPoint = {
  name: string;
  /** Arms the kill: returns a fault hook for the fake server and/or waits on the child. */
  arm(run: () => RunningCli): { fault?: (n: number, body: any) => Fault | undefined; watch?: (c: RunningCli) => void };
  /** Whether the ledger row exists and has a checkpoint when the kill lands. */
  committedBatches: boolean;
  /** The kill may land between an answer and its cache write: that answer is paid again. */
  mayRepay?: boolean;
};

const killPoints: KillPoint[] = [
  {
    // Schema installed, ledger row written, first batch's embeddings in flight: nothing committed.
    name: 'at the first embedding request',
    committedBatches: false,
    arm: (run) => ({
      fault: (_n, body) => {
        if (!isEmbedding(body) || embedN() !== 1) return undefined;
        run().child.kill('SIGKILL');
        return { delayMs: 1500 };
      },
    }),
  },
  {
    // Four batches committed, the fifth embedding in flight.
    name: 'mid-run, at the 5th embedding request',
    committedBatches: true,
    arm: (run) => ({
      fault: (_n, body) => {
        if (!isEmbedding(body) || embedN() !== 5) return undefined;
        run().child.kill('SIGKILL');
        return { delayMs: 1500 };
      },
    }),
  },
  {
    // The 3rd answer is delivered; the kill lands while that batch is written and committed.
    name: 'while a batch is being written (20 ms after the 3rd answer)',
    committedBatches: true,
    mayRepay: true,
    arm: (run) => ({
      fault: (_n, body) => {
        if (isEmbedding(body) && embedN() === 3) setTimeout(() => run().child.kill('SIGKILL'), 20);
        return undefined;
      },
    }),
  },
  {
    // Every batch committed; the default prompt fragments are being embedded.
    name: 'after the last batch, while the default fragments are embedded',
    committedBatches: true,
    arm: (run) => ({
      fault: (_n, body) => {
        if (!isEmbedding(body) || !JSON.stringify(body.input).includes(DEFAULT_TEXT)) return undefined;
        run().child.kill('SIGKILL');
        return { delayMs: 1500 };
      },
    }),
  },
  {
    name: 'during the vector index build',
    committedBatches: true,
    arm: () => ({
      watch: (c) => {
        void c.waitFor(/building ivfflat index memories_embedding_idx/).then(() => c.child.kill('SIGKILL'));
      },
    }),
  },
];

for (const target of testTargets()) {
  describe(`re-runs on ${target.name}`, () => {
    let clean: { report: any; dump: TableDump; inputs: number };
    before(async () => {
      clean = await cleanRun(await target.fresh());
    });

    test('an unchanged second run does nothing and sends 0 requests; edited rows are updated in place', async () => {
      const t = await target.fresh();
      const file = join(dir, `edit-${target.name}.db`);
      copyFileSync(fixturePath, file);
      const first = await cleanRun(t, file);
      assert.equal(first.report.memories.migrated, clean.report.memories.migrated);

      api.reset();
      const second = parseJson(await runCli(migrateArgs(t, file), env()));
      assert.equal(second.ok, true);
      assert.equal(second.memories.migrated, 0);
      assert.equal(second.memories.updated, 0);
      assert.equal(second.memories.unchanged, first.report.memories.migrated);
      assert.equal(second.memories.duplicates.exact, first.report.memories.duplicates.exact);
      assert.equal(second.embeddings.requests, 0);
      assert.equal(api.embeddingRequests.length, 0, 'an unchanged re-run must not call the API');
      assertSameTables(await dumpTables(t), first.dump, 'after an unchanged re-run');

      // Edit one row's content (the app bumped updated_at) and another row's metadata only.
      const [a, b] = first.dump.memories.filter((m) => m['user_id'] === 'user_2').map((m) => String(m['id']));
      const edited = `${first.dump.memories.find((m) => m['id'] === a)!['content']} (edited: now weekly)`;
      const src = new Database(file);
      src.prepare(`UPDATE memories SET content = ?, updated_at = '2025-06-01 12:00:00' WHERE id = ?`).run(edited, a);
      src.prepare(`UPDATE memories SET metadata = json_set(metadata, '$.category', 'vip') WHERE id = ?`).run(b);
      src.close();

      api.reset();
      const third = parseJson(await runCli(migrateArgs(t, file), env()));
      assert.equal(third.memories.migrated, 0);
      assert.equal(third.memories.updated, 2);
      assert.equal(third.memories.unchanged, first.report.memories.migrated - 2);
      const sent = sentTexts(api.embeddingRequests);
      assert.deepEqual(sent, [canonicalize(edited).replace(/\n$/, '')], 'only the changed content is embedded');
      assert.equal(api.embeddingRequests.length, 1);

      const after = await dumpTables(t);
      const rowA = after.memories.find((m) => m['id'] === a)!;
      const rowB = after.memories.find((m) => m['id'] === b)!;
      const beforeA = first.dump.memories.find((m) => m['id'] === a)!;
      const beforeB = first.dump.memories.find((m) => m['id'] === b)!;
      assert.equal(rowA['content'], edited);
      assert.notEqual(rowA['embedding'], beforeA['embedding'], 'new content, new vector');
      assert.equal(Number(rowA['updated_at']), Date.UTC(2025, 5, 1, 12) / 1000, 'updated_at is the source value');
      assert.equal(rowB['embedding'], beforeB['embedding'], 'a metadata-only change keeps the vector');
      assert.match(String(rowB['metadata']), /"category": ?"vip"/);
      assert.equal(rowB['category'], 'vip');
      assert.equal(rowB['updated_at'], beforeB['updated_at'], 'updated_at stays the source value');

      // The same tables as one clean run of the edited file.
      const fresh = await cleanRun(await target.fresh(), file);
      assertSameTables(after, fresh.dump, 'edited re-run vs clean run of the edited file');
    });

    for (const point of killPoints) {
      test(`kill -9 ${point.name}, then the same command completes to the clean-run tables`, async () => {
        const t = await target.fresh();
        let running: RunningCli | undefined;
        const armed = point.arm(() => running!);
        api.reset();
        api.setFaults(armed.fault);
        running = startCli(migrateArgs(t), env());
        armed.watch?.(running);
        const killed = await running.done;
        api.setFaults(undefined);
        assert.equal(killed.signal, 'SIGKILL', `the run finished before the kill point (exit ${killed.code}):\n${killed.stderr}`);
        const paidBefore = answeredInputs();

        if (t.pgliteDir) {
          // The data directory survives, with the dead process's lock file left behind.
          assert.ok(existsSync(join(t.pgliteDir, 'PG_VERSION')), 'PGlite data directory lost');
          const lock = join(t.pgliteDir, '.memory-migrate.lock');
          assert.ok(existsSync(lock), 'kill -9 leaves the lock file');
          assert.equal(readFileSync(lock, 'utf8').trim(), String(running.child.pid));
        }
        await withDb(t, async (db) => {
          const runs = await db.query<{ status: string; checkpoint_rowid: number | null }>(`SELECT status, checkpoint_rowid FROM migration_runs`);
          assert.equal(runs.length, 1);
          assert.equal(runs[0]!.status, 'pending');
          if (point.committedBatches) assert.notEqual(runs[0]!.checkpoint_rowid, null);
          else assert.equal(await count(db, 'SELECT count(*) AS n FROM memories'), 0);
        });

        api.reset();
        const res = await runCli(migrateArgs(t), env());
        assert.equal(res.code, 0, res.stderr);
        assert.match(res.stderr, /Resuming: run #1 ended pending/);
        const r = parseJson(res);
        assert.equal(r.ok, true);
        assertSameTables(await dumpTables(t), clean.dump, `after kill -9 ${point.name}`);
        // No second bill: what the killed run was answered is not asked for again.
        const paid = answeredInputs() + paidBefore;
        if (point.mayRepay) assert.ok(paid >= clean.inputs && paid <= clean.inputs + 25, `paid ${paid} for ${clean.inputs}`);
        else assert.equal(paid, clean.inputs, 'texts embedded twice');
        await withDb(t, async (db) => {
          const runs = await db.query<{ status: string }>(`SELECT status FROM migration_runs ORDER BY id`);
          assert.deepEqual(runs.map((x) => x.status), ['pending', 'committed']);
        });
      });
    }

    for (const sig of ['SIGINT', 'SIGTERM'] as const) {
      test(`${sig} mid-run: batch finished, exit 130, resume hint, ledger 'interrupted', re-run completes`, async () => {
        const t = await target.fresh();
        let running: RunningCli | undefined;
        api.reset();
        api.setFaults((_n, body) => {
          if (!isEmbedding(body) || embedN() !== 3) return undefined;
          running!.child.kill(sig);
          return { delayMs: 300 };
        });
        running = startCli(migrateArgs(t), env());
        const res: CliResult = await running.done;
        api.setFaults(undefined);
        assert.equal(res.code, 130, res.stderr);
        assert.match(res.stderr, /interrupt received/);
        assert.match(res.stderr, /Run the same command again to resume/);
        const report = JSON.parse(res.stdout);
        assert.equal(report.ok, false);
        // The batch in flight when the signal came was finished: 3 batches of 25 rows.
        await withDb(t, async (db) => {
          const [run] = await db.query<{ status: string; checkpoint_rowid: number; counts: any; finished_at: unknown }>(
            `SELECT status, checkpoint_rowid, counts, finished_at FROM migration_runs`,
          );
          assert.equal(run!.status, 'interrupted');
          assert.equal(Number(run!.checkpoint_rowid), 75);
          assert.notEqual(run!.finished_at, null);
          const counts = typeof run!.counts === 'string' ? JSON.parse(run!.counts) : run!.counts;
          const stored = await count(db, 'SELECT count(*) AS n FROM memories');
          assert.equal(counts.memories.migrated, stored);
          assert.ok(stored > 0);
        });
        const again = await runCli(migrateArgs(t), env());
        assert.equal(again.code, 0, again.stderr);
        assert.match(again.stderr, /Resuming: run #1 ended interrupted at source rowid 75/);
        assertSameTables(await dumpTables(t), clean.dump, `after ${sig}`);
      });
    }

    test('a second run against the same target exits 1 with a clear message while the first runs', async () => {
      const t = await target.fresh();
      let second: Promise<CliResult> | undefined;
      api.reset();
      api.setFaults((_n, body) => {
        if (!isEmbedding(body)) return undefined;
        if (embedN() === 1) second = runCli(migrateArgs(t), env());
        return { delayMs: 400 };
      });
      const first = startCli(migrateArgs(t), env());
      const firstRes = await first.done;
      api.setFaults(undefined);
      assert.equal(firstRes.code, 0, firstRes.stderr);
      assert.ok(second, 'the first run never reached the API');
      const secondRes = await second!;
      assert.equal(secondRes.code, 1, secondRes.stderr);
      assert.equal(secondRes.stdout, '');
      if (target.name === 'pglite') {
        assert.match(secondRes.stderr, /another memory-migrate process \(pid \d+\) is using the embedded database in .*: wait for it to finish/);
      } else {
        assert.match(secondRes.stderr, /another memory-migrate run is writing to this target: wait for it to finish, then run again/);
      }
      assert.equal(secondRes.stderr.trim().split('\n').filter((l) => l.startsWith('memory-migrate:')).length, 1);
      assertSameTables(await dumpTables(t), clean.dump, 'first run, with a second one refused');
      await withDb(t, async (db) => {
        assert.equal(await count(db, 'SELECT count(*) AS n FROM migration_runs'), 1, 'the refused run left a ledger row');
      });
    });
  });
}

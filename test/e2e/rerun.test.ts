// Re-runs converge: an unchanged second run does nothing and pays nothing, an edited row is
// updated in place, and a run killed with SIGKILL at several points (or stopped with
// SIGINT/SIGTERM) is completed by the same command into exactly the tables of one clean run.
// Two runs against one target: the second exits 1 with a clear message.
//
// The targets run side by side (each with its own fake API server); the tests of one target
// run in order.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { testTargets } from '../helpers/targets.js';
import { runCli, targetArgs, parseJson, type CliResult } from '../helpers/cli.js';
import { startFakeOpenAI, type FakeOpenAI, type Fault } from '../helpers/fake-openai.js';
import { startCli, dumpTables, dumpDb, dumpDiff, withDb, count, sentTexts, freshTarget, type TableDump, type RunningCli } from '../helpers/rerun.js';
import { makeFixture } from '../../scripts/make-fixture.js';
import type { TargetOptions } from '../../src/postgres/connection.js';
import { canonicalize } from '../../src/source/canonical.js';
import { MEMORIES_BTREE_INDEXES } from '../../src/postgres/schema.js';

const dir = mkdtempSync(join(tmpdir(), 'mm-rerun-'));
const fixturePath = join(dir, 'memory.db');
const ROWS = 150;
const BATCH = 25;
// Embedding requests of at most 10 texts, at most 8 in flight: a run sends many requests,
// queued ahead of the writer across batches, so kills land between requests.
const REQUEST_INPUTS = 10;
const CONCURRENCY = 8;

before(() => {
  makeFixture({ out: fixturePath, rows: ROWS, dims: 8, users: 5, seed: 11 });
});

const migrateArgs = (t: TargetOptions, sqlite = fixturePath) => [
  'migrate', '--sqlite', sqlite, ...targetArgs(t),
  '--model', 'text-embedding-3-small', '--dimensions', '32', '--batch-size', String(BATCH), '--skip-test', '--json',
  '--max-batch-inputs', String(REQUEST_INPUTS), '--concurrency', String(CONCURRENCY),
];
const DEFAULT_TEXT = 'Be accurate, concise and helpful';
const isEmbedding = (body: any) => body && body.input !== undefined;

function assertSameTables(got: TableDump, want: TableDump, what: string) {
  const diff = dumpDiff(got, want);
  assert.equal(diff, null, `${what}: ${diff}`);
  assert.ok(want.memories.length > 100 && want.duplicates.length > 0 && want.fragments.length > 7 && want.skips.length > 0);
}

type Hook = (body: any, n: number) => Fault | undefined;
interface KillPoint {
  name: string;
  /** Arms the kill: a fault hook for the fake server (n = embedding request number) or a watch on the child. */
  arm(run: () => RunningCli, lost: Set<number>): { fault?: Hook; watch?: (c: RunningCli) => void };
  /** Batches are committed when the kill lands (else the tables are still empty). */
  committedBatches: boolean;
  /**
   * The kill may land between answers and their cache writes: those answers (at most the
   * requests in flight) are paid again.
   */
  mayRepay?: boolean;
}

const killPoints: KillPoint[] = [
  {
    // Schema installed, ledger row written, first batch's embeddings in flight: nothing committed.
    name: 'at the first embedding request',
    committedBatches: false,
    arm: (run, lost) => ({
      fault: (body, n) => {
        if (n !== 1) return undefined;
        run().child.kill('SIGKILL');
        lost.add(n);
        return { delayMs: 1500 };
      },
    }),
  },
  {
    // Three requests answered (the first batch's texts among them) and committed; the 4th and
    // every later request, queued ahead for the next batches, still in flight when the kill
    // lands three seconds later (one was not always enough for the first commit on a loaded
    // machine).
    name: 'mid-run, at the 4th embedding request',
    committedBatches: true,
    arm: (run, lost) => {
      let killed: Promise<void> | undefined;
      return {
        fault: (body, n) => {
          if (n < 4) return undefined;
          lost.add(n);
          killed ??= new Promise<void>((resolve) =>
            setTimeout(() => {
              run().child.kill('SIGKILL');
              resolve();
            }, 3000),
          );
          return { hold: killed };
        },
      };
    },
  },
  {
    // Killed the moment the CLI logs a committed batch, while the next batch is prepared or
    // written. Without a terminal (CI=true) the CLI logs progress at most every 5 s, after a
    // batch commits: the first answer comes after 5.2 s, so the first commit is logged. The
    // default fragments' request is held, so the run cannot finish before the kill lands.
    name: 'as soon as the CLI logs a committed batch',
    committedBatches: true,
    mayRepay: true,
    arm: () => ({
      fault: (body, n) => {
        if (n === 1) return { delayMs: 5200 };
        if (JSON.stringify(body.input).includes(DEFAULT_TEXT)) return { delayMs: 5000 };
        return undefined;
      },
      watch: (c) => {
        void c.waitFor(/^memories: \d+\/\d+ rows \(\d+%\)/m).then(() => c.child.kill('SIGKILL'));
      },
    }),
  },
  {
    // Every batch committed; the default prompt fragments are being embedded.
    name: 'after the last batch, while the default fragments are embedded',
    committedBatches: true,
    arm: (run, lost) => ({
      fault: (body, n) => {
        if (!JSON.stringify(body.input).includes(DEFAULT_TEXT)) return undefined;
        run().child.kill('SIGKILL');
        lost.add(n);
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

/** One fake API server with the helpers a test needs; every test has its own, so tests can run side by side. */
async function harness() {
  const api: FakeOpenAI = await startFakeOpenAI();
  /** Numbers of the embedding requests a kill cut off: never answered to the client, whatever the server logged. */
  const lost = new Set<number>();
  const env = () => ({ OPENAI_API_KEY: 'sk-test-rerun-0001', OPENAI_BASE_URL: api.url });
  /** Installs a hook called for each embedding request with its 1-based number (GET /models is not one). */
  const onEmbedding = (hook: Hook | undefined) =>
    api.setFaults(hook ? (_n, body) => (isEmbedding(body) ? hook(body, api.embeddingRequests.length) : undefined) : undefined);
  /** Inputs the server answered (not the request a kill interrupted). */
  const answeredInputs = () =>
    api.embeddingRequests.filter((r, i) => r.status === 200 && !lost.has(i + 1)).reduce((a, r) => a + r.inputs, 0);
  const run = async (t: TargetOptions, sqlite = fixturePath): Promise<CliResult> => {
    onEmbedding(undefined);
    api.reset();
    lost.clear();
    return runCli(migrateArgs(t, sqlite), env());
  };
  return { api, lost, env, onEmbedding, answeredInputs, run };
}
type Harness = Awaited<ReturnType<typeof harness>>;

async function withHarness(fn: (h: Harness) => Promise<void>): Promise<void> {
  const h = await harness();
  try {
    await fn(h);
  } finally {
    await h.api.close();
  }
}

describe('re-runs', { concurrency: true }, () => {
  for (const target of testTargets()) {
    // Two tests of a target at a time: each has its own database and API server.
    describe(`on ${target.name}`, { concurrency: 2 }, () => {
      // The reference: one clean run into a fresh database. Its target is reused by the
      // idempotency test (on a copy of the file that the test edits).
      const editFile = join(dir, `edit-${target.name}.db`);
      let clean: { report: any; dump: TableDump; inputs: number; target: TargetOptions };
      before(() =>
        withHarness(async (h) => {
          copyFileSync(fixturePath, editFile);
          const t = await freshTarget(target);
          const res = await h.run(t, editFile);
          assert.equal(res.code, 0, res.stderr);
          clean = { report: parseJson(res), dump: await dumpTables(t), inputs: h.answeredInputs(), target: t };
        }),
      );

      test('an unchanged second run does nothing and sends 0 requests; edited rows are updated in place', () => withHarness(async (h) => {
        const t = clean.target;
        const first = clean;
        const second = parseJson(await h.run(t, editFile));
        assert.equal(second.ok, true);
        assert.equal(second.memories.migrated, 0);
        assert.equal(second.memories.updated, 0);
        assert.equal(second.memories.unchanged, first.report.memories.migrated);
        assert.equal(second.memories.duplicates.exact, first.report.memories.duplicates.exact);
        assert.equal(second.embeddings.requests, 0);
        assert.equal(h.api.embeddingRequests.length, 0, 'an unchanged re-run must not call the API');
        assertSameTables(await dumpTables(t), first.dump, 'after an unchanged re-run');

        // Edit one row's content (the app bumped updated_at) and another row's metadata only
        // (updated_at left alone). Neither is the original of a recorded duplicate.
        const originals = new Set(first.dump.duplicates.map((d) => String(d['original_id'])));
        const [a, b] = first.dump.memories
          .filter((m) => m['user_id'] === 'user_2' && !originals.has(String(m['id'])))
          .map((m) => String(m['id']));
        const byId = (d: TableDump, id: string) => d.memories.find((m) => m['id'] === id)!;
        const edited = `${byId(first.dump, a!)['content']} (edited: now weekly)`;
        const src = new Database(editFile);
        src.prepare(`UPDATE memories SET content = ?, updated_at = '2025-06-01 12:00:00' WHERE id = ?`).run(edited, a);
        src.prepare(`UPDATE memories SET metadata = json_set(metadata, '$.category', 'vip') WHERE id = ?`).run(b);
        src.close();

        const third = parseJson(await h.run(t, editFile));
        assert.equal(third.memories.migrated, 0);
        assert.equal(third.memories.updated, 2);
        assert.equal(third.memories.unchanged, first.report.memories.migrated - 2);
        assert.deepEqual(sentTexts(h.api.embeddingRequests), [canonicalize(edited).replace(/\n$/, '')], 'only the changed content is embedded');
        assert.equal(h.api.embeddingRequests.length, 1);

        const afterEdit = await dumpTables(t);
        assert.equal(byId(afterEdit, a!)['content'], edited);
        assert.notEqual(byId(afterEdit, a!)['embedding'], byId(first.dump, a!)['embedding'], 'new content, new vector');
        assert.equal(Number(byId(afterEdit, a!)['updated_at']), Date.UTC(2025, 5, 1, 12) / 1000, 'updated_at is the source value');
        assert.equal(byId(afterEdit, b!)['embedding'], byId(first.dump, b!)['embedding'], 'a metadata-only change keeps the vector');
        assert.match(String(byId(afterEdit, b!)['metadata']), /"category": ?"vip"/);
        assert.equal(byId(afterEdit, b!)['category'], 'vip');
        assert.equal(byId(afterEdit, b!)['updated_at'], byId(first.dump, b!)['updated_at'], 'updated_at stays the source value (no trigger bump)');

        // Edit the original of a recorded exact duplicate: the duplicate is no longer one, and
        // is stored now, as a clean run of the edited file would store it.
        const dup = first.dump.duplicates.find((d) => d['dedup_type'] === 'exact')!;
        const src2 = new Database(editFile);
        src2.prepare(`UPDATE memories SET content = content || ' Update: cancelled.' WHERE id = ?`).run(dup['original_id']);
        src2.close();
        const fourth = parseJson(await h.run(t, editFile));
        assert.equal(fourth.memories.updated, 1);
        assert.equal(fourth.memories.migrated, 1, 'the former duplicate is stored');
        assert.equal(fourth.memories.duplicates.exact, first.report.memories.duplicates.exact - 1);
        // The former duplicate's text is embedded now, or served by the cache when it differed
        // from its original's old text only in what the canonical form removes.
        const sent = sentTexts(h.api.embeddingRequests);
        assert.ok(sent.length <= 2 && sent.some((x) => x.endsWith('Update: cancelled.')), JSON.stringify(sent));
        assert.equal(fourth.embeddings.computed + fourth.embeddings.cached, 2);

        // The same tables as one clean run of the edited file.
        const fresh = await freshTarget(target);
        assert.equal((await h.run(fresh, editFile)).code, 0);
        assertSameTables(await dumpTables(t), await dumpTables(fresh), 'edited re-runs vs a clean run of the edited file');
      }));

      for (const point of killPoints) {
        test(`kill -9 ${point.name}, then the same command completes to the clean-run tables`, () => withHarness(async (h) => {
          // A kill point reached only through the CLI's output (the index build) can come too
          // late on a loaded machine: the run has finished. That run proves nothing, so the
          // scenario starts again on a fresh target, up to three times.
          let t: TargetOptions;
          let running: RunningCli | undefined;
          let killed: CliResult;
          for (let attempt = 1; ; attempt++) {
            t = await freshTarget(target);
            const armed = point.arm(() => running!, h.lost);
            h.api.reset();
            h.lost.clear();
            h.onEmbedding(armed.fault);
            running = startCli(migrateArgs(t), h.env());
            armed.watch?.(running);
            killed = await running.done;
            h.onEmbedding(undefined);
            if (killed.signal === 'SIGKILL' || killed.code !== 0 || attempt === 3) break;
          }
          assert.equal(killed.signal, 'SIGKILL', `the run finished before the kill point (exit ${killed.code}):\n${killed.stderr}`);
          const paidBefore = h.answeredInputs();

          if (t.pgliteDir) {
            // The data directory survives, with the dead process's lock file left behind.
            assert.ok(existsSync(join(t.pgliteDir, 'PG_VERSION')), 'PGlite data directory lost');
            const lock = join(t.pgliteDir, '.memory-migrate.lock');
            assert.ok(existsSync(lock), 'kill -9 leaves the lock file');
            assert.equal(readFileSync(lock, 'utf8').trim(), String(running.child.pid));
          }
          const rerunNeeded = await withDb(t, async (db) => {
            const runs = await db.query<{ status: string; checkpoint_rowid: number | null }>(`SELECT status, checkpoint_rowid FROM migration_runs`);
            assert.equal(runs.length, 1);
            assert.equal(runs[0]!.status, 'pending');
            if (point.committedBatches) assert.notEqual(runs[0]!.checkpoint_rowid, null);
            else assert.equal(await count(db, 'SELECT count(*) AS n FROM memories'), 0);
            return runs[0]!;
          });

          const res = await h.run(t);
          assert.equal(res.code, 0, res.stderr);
          assert.match(res.stderr, new RegExp(`Resuming: run #1 ended pending at source rowid ${rerunNeeded.checkpoint_rowid ?? 0}`));
          assert.equal(parseJson(res).ok, true);
          await withDb(t, async (db) => {
            assertSameTables(await dumpDb(db), clean.dump, `after kill -9 ${point.name}`);
            const runs = await db.query<{ status: string }>(`SELECT status FROM migration_runs ORDER BY id`);
            assert.deepEqual(runs.map((x) => x.status), ['pending', 'committed']);
          });
          // No second bill: what the killed run was answered is not asked for again.
          const paid = h.answeredInputs() + paidBefore;
          if (point.mayRepay) {
            assert.ok(paid >= clean.inputs && paid <= clean.inputs + CONCURRENCY * REQUEST_INPUTS, `paid ${paid} for ${clean.inputs}`);
          }
          else assert.equal(paid, clean.inputs, 'texts embedded twice');
        }));
      }

      // Both signals take the same path; SIGTERM is checked on the cheaper target only.
      for (const sig of target.name === 'postgres' ? (['SIGINT', 'SIGTERM'] as const) : (['SIGINT'] as const)) {
        test(`${sig} mid-run: batch finished, exit 130, resume hint, ledger 'interrupted', re-run completes`, () => withHarness(async (h) => {
          const t = await freshTarget(target);
          let running: RunningCli | undefined;
          h.api.reset();
          // Every request from the 3rd on is held 300 ms, so no answer frees a slot for another
          // request while the signal is on its way: whatever is sent past the requests already
          // in flight (at most --concurrency) was sent after the signal.
          h.onEmbedding((_body, n) => {
            if (n < 3) return undefined;
            if (n === 3) running!.child.kill(sig);
            return { delayMs: 300 };
          });
          running = startCli(migrateArgs(t), h.env());
          const res: CliResult = await running.done;
          h.onEmbedding(undefined);
          assert.equal(res.code, 130, res.stderr);
          assert.match(res.stderr, /interrupt received/);
          assert.equal(parseJson(res).ok, false);
          // The batches being finished when the signal came were committed (the first one at
          // least: its texts were answered); the texts queued for later batches were not sent.
          const checkpoint = await withDb(t, async (db) => {
            const [r] = await db.query<{ status: string; checkpoint_rowid: number; counts: any; finished_at: unknown }>(
              `SELECT status, checkpoint_rowid, counts, finished_at FROM migration_runs`,
            );
            assert.equal(r!.status, 'interrupted');
            const at = Number(r!.checkpoint_rowid);
            assert.ok(at >= BATCH && at < ROWS && at % BATCH === 0, `checkpoint ${at}`);
            assert.notEqual(r!.finished_at, null);
            const counts = typeof r!.counts === 'string' ? JSON.parse(r!.counts) : r!.counts;
            const stored = await count(db, 'SELECT count(*) AS n FROM memories');
            assert.ok(stored > 0);
            assert.equal(counts.memories.migrated, stored, 'the ledger keeps the committed counts');
            // This first load built its btree indexes after the COPY: stopped, it builds them before it exits.
            const present = await db.query<{ indexname: string }>(`SELECT indexname FROM pg_indexes WHERE tablename = 'memories'`);
            for (const name of MEMORIES_BTREE_INDEXES) assert.ok(present.some((p) => p.indexname === name), `${name} missing after ${sig}`);
            return at;
          });
          assert.match(res.stderr, new RegExp(`Interrupted after source rowid ${checkpoint}; every batch up to there is committed\\. Run the same command again to resume`));
          const sentBefore = h.api.embeddingRequests.length;
          assert.ok(sentBefore < 15, `${sentBefore} requests: the queued texts were sent after the signal`);
          const again = await h.run(t);
          assert.equal(again.code, 0, again.stderr);
          assert.match(again.stderr, new RegExp(`Resuming: run #1 ended interrupted at source rowid ${checkpoint}`));
          assertSameTables(await dumpTables(t), clean.dump, `after ${sig}`);
        }));
      }

      test('a second run against the same target exits 1 with a clear message while the first runs', () => withHarness(async (h) => {
        const t = await freshTarget(target);
        let second: Promise<CliResult> | undefined;
        let secondDone = false;
        h.api.reset();
        // The first run's requests are held until the second one has started and given up,
        // however long a loaded machine takes to start it.
        h.onEmbedding((_body, n) => {
          if (n === 1) second = runCli(migrateArgs(t), h.env()).finally(() => (secondDone = true));
          return secondDone ? undefined : { hold: second! };
        });
        const firstRes = await startCli(migrateArgs(t), h.env()).done;
        h.onEmbedding(undefined);
        assert.equal(firstRes.code, 0, firstRes.stderr);
        assert.ok(second, 'the first run never reached the API');
        const secondRes = await second!;
        assert.equal(secondRes.code, 1, secondRes.stderr);
        assert.equal(parseJson(secondRes).ok, false);
        if (target.name === 'pglite') {
          assert.match(secondRes.stderr, /another memory-migrate process \(pid \d+\) is using the embedded database in .*: wait for it to finish/);
        } else {
          assert.match(secondRes.stderr, /another memory-migrate run is writing to this target: wait for it to finish, then run again/);
        }
        await withDb(t, async (db) => {
          assertSameTables(await dumpDb(db), clean.dump, 'first run, with a second one refused');
          assert.equal(await count(db, 'SELECT count(*) AS n FROM migration_runs'), 1, 'the refused run left a ledger row');
        });
      }));
    });
  }
});

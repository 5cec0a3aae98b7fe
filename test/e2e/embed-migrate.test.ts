// The embedding pipeline seen from a whole migration: the real CLI, the real openai client,
// and a local OpenAI-compatible server that counts requests and injects faults.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testTargets } from '../helpers/targets.js';
import { runCli, targetArgs, parseJson } from '../helpers/cli.js';
import { startFakeOpenAI, type FakeOpenAI } from '../helpers/fake-openai.js';
import { makeFixture } from '../../scripts/make-fixture.js';
import { openDb, type Db, type TargetOptions } from '../../src/postgres/connection.js';
import { openSource } from '../../src/source/reader.js';
import { sentTexts } from '../helpers/rerun.js';
import postgres from 'postgres';

const dir = mkdtempSync(join(tmpdir(), 'mm-embed-migrate-'));
const fixturePath = join(dir, 'memory.db');
let api: FakeOpenAI;
const KEY = 'sk-embed-test-0123456789';

before(async () => {
  makeFixture({ out: fixturePath, rows: 120, dims: 1536, encoding: 'mixed', users: 3, seed: 11 });
  api = await startFakeOpenAI({ apiKey: KEY });
});
after(async () => {
  await api.close();
});

function env(extra: Record<string, string> = {}) {
  return { OPENAI_API_KEY: KEY, OPENAI_BASE_URL: api.url, ...extra };
}

async function dump(t: TargetOptions): Promise<string[]> {
  const db: Db = await openDb(t);
  try {
    const rows = await db.query<{ line: string }>(
      `SELECT id || '|' || user_id || '|' || content_hash || '|' || embedding::text || '|' || embedding_model AS line FROM memories ORDER BY id`,
    );
    return rows.map((r) => r.line);
  } finally {
    await db.close();
  }
}

const base = (t: TargetOptions) => ['migrate', '--sqlite', fixturePath, ...targetArgs(t), '--model', 'text-embedding-3-small', '--skip-test', '--json', '--max-batch-inputs', '16', '--concurrency', '2'];

for (const target of testTargets()) {
  describe(`embedding during migrate on ${target.name}`, () => {
    test('30% 429s with Retry-After and some 500s: same rows as a clean run', async () => {
      const clean = await target.fresh();
      api.reset();
      api.setFaults(undefined);
      const r1 = await runCli(base(clean), env());
      assert.equal(r1.code, 0, r1.stderr);
      const cleanReport = parseJson(r1);
      assert.equal(cleanReport.embeddings.retries, 0);

      const faulty = await target.fresh();
      api.reset();
      api.setFaults((n) => (n % 10 < 3 ? { status: 429, retryAfterMs: 5 } : n % 10 === 5 ? { status: 500 } : undefined));
      const r2 = await runCli(base(faulty), env());
      api.setFaults(undefined);
      assert.equal(r2.code, 0, r2.stderr);
      const faultyReport = parseJson(r2);
      assert.ok(faultyReport.embeddings.retries > 0, 'faults were retried');
      assert.equal(faultyReport.embeddings.requests, api.embeddingRequests.length);
      assert.equal(faultyReport.memories.migrated, cleanReport.memories.migrated);
      assert.deepEqual(await dump(faulty), await dump(clean));
    });

    test('a 401 stops the run after exactly one request, naming OPENAI_API_KEY', async () => {
      const t = await target.fresh();
      api.reset();
      const r = await runCli(base(t), env({ OPENAI_API_KEY: 'sk-wrong-key-999999999' }));
      // Checked before anything is written (GET /models, which costs nothing): exit 1.
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.equal(api.requests.length, 1);
      assert.equal(api.embeddingRequests.length, 0);
      assert.match(r.stderr, /OPENAI_API_KEY/);
      assert.doesNotMatch(r.stderr + r.stdout, /sk-wrong-key-999999999/);
    });

    test('a poisoned input lands in the reject file; every other row is migrated', async () => {
      const t = await target.fresh();
      api.reset();
      // The fixture's rows are unique texts; poison one by a word only it contains.
      const poison = 'Ωpoison';
      const Database = (await import('better-sqlite3')).default;
      const poisoned = join(dir, `poisoned-${target.name}.db`);
      const src = new Database(fixturePath, { readonly: true });
      await src.backup(poisoned);
      src.close();
      const w = new Database(poisoned);
      const victim = w.prepare(`SELECT id, user_id FROM memories WHERE user_id = 'user_2' ORDER BY rowid LIMIT 1 OFFSET 3`).get() as { id: string; user_id: string };
      w.prepare(`UPDATE memories SET content = content || ' ${poison}' WHERE id = ?`).run(victim.id);
      w.close();
      api.setOptions({ poison });
      const rejectFile = join(dir, `rejects-${target.name}.jsonl`);
      const r = await runCli(
        ['migrate', '--sqlite', poisoned, ...targetArgs(t), '--model', 'text-embedding-3-small', '--skip-test', '--json', '--reject-file', rejectFile],
        env(),
      );
      api.setOptions({ poison: undefined });
      assert.equal(r.code, 0, r.stderr);
      const rep = parseJson(r);
      assert.equal(rep.embeddings.rejected, 1);
      assert.ok(existsSync(rejectFile));
      const lines = readFileSync(rejectFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      assert.equal(lines.length, 1);
      assert.equal(lines[0].id, victim.id);
      assert.equal(lines[0].user, victim.user_id);
      const db = await openDb(t);
      try {
        const [row] = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM memories WHERE embedding IS NULL`);
        assert.equal(Number(row!.n), 1, 'only the rejected row lacks a vector');
        const [kept] = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM memories WHERE id = $1`, [victim.id]);
        assert.equal(Number(kept!.n), 1, 'the rejected memory itself is kept');
      } finally {
        await db.close();
      }
    });

    test(
      'the next batch is embedded while a batch is being written',
      // A second session must hold a lock while the run goes on: PGlite has one session.
      { skip: target.name === 'pglite' ? 'needs a second database session (PostgreSQL only)' : false },
      async () => {
        const t = await target.fresh();
        // Source rows 21..40 form the second batch at --batch-size 20.
        const src = openSource(fixturePath);
        const second = new Set<string>();
        const first = new Set<string>();
        try {
          for (const row of src.rows({ limit: 40 })) (row.rowid <= 20 ? first : second).add(row.content);
        } finally {
          src.close();
        }
        for (const text of first) second.delete(text);

        // While the first batch is embedded, a second session locks the ledger row, so the first
        // batch's transaction blocks at its checkpoint and stays open.
        const locker = postgres(t.databaseUrl!, { max: 1, onnotice: () => {} });
        const conn = await locker.reserve();
        let locking: Promise<unknown> | null = null;
        api.reset();
        api.setFaults(() => {
          if (locking) return undefined;
          locking = conn.unsafe('BEGIN').then(() => conn.unsafe('SELECT id FROM migration_runs FOR UPDATE'));
          return { delayMs: 300 };
        });
        const run = runCli([...base(t), '--batch-size', '20'], env());
        try {
          let overlapped = false;
          for (let waited = 0; waited < 30_000 && !overlapped; waited += 50) {
            await new Promise((r) => setTimeout(r, 50));
            if (!locking) continue;
            await locking;
            // The run's session waits for our row lock: batch 1's transaction is open. Inside our
            // transaction the list of sessions is a snapshot taken at its first read (only the wait
            // events are live): clear it, or a session the run opened later is never seen.
            await conn.unsafe('SELECT pg_stat_clear_snapshot()');
            const [blocked] = await conn.unsafe(
              `SELECT count(*)::int AS n FROM pg_stat_activity
                WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()`,
            );
            const secondBatchSent = sentTexts(api.embeddingRequests).some((text) => second.has(text));
            overlapped = blocked!["n"] === 1 && secondBatchSent;
          }
          assert.ok(overlapped, 'texts of batch 2 were sent to the API while batch 1 was still being written');
        } finally {
          await conn.unsafe('COMMIT').catch(() => {});
          conn.release();
          await locker.end();
          api.setFaults(undefined);
        }
        const r = await run;
        assert.equal(r.code, 0, r.stderr);
        const report = parseJson(r);
        const clean = await target.fresh();
        const r2 = await runCli([...base(clean), '--batch-size', '20'], env());
        assert.equal(r2.code, 0, r2.stderr);
        assert.equal(report.memories.migrated, parseJson(r2).memories.migrated);
        assert.deepEqual(await dump(t), await dump(clean));
      },
    );

    test('dry run prints the cost preflight and sends nothing', async () => {
      const t = await target.fresh();
      api.reset();
      const r = await runCli(['migrate', '--sqlite', fixturePath, ...targetArgs(t), '--model', 'text-embedding-3-small', '--dry-run'], env());
      assert.equal(r.code, 0, r.stderr);
      assert.equal(api.embeddingRequests.length, 0);
      assert.match(r.stdout, /Embedding preflight: \d+ texts, \d+ tokens, \d+ requests/);
      assert.match(r.stdout, /estimated cost \$\d+\.\d{4}/);
      const j = parseJson(await runCli(['migrate', '--sqlite', fixturePath, ...targetArgs(t), '--model', 'text-embedding-3-small', '--dry-run', '--json', '--max-batch-inputs', '16'], env()));
      assert.ok(j.preflight.tokens > 0);
      // A real run then sends exactly the predicted number of requests.
      api.reset();
      const real = parseJson(await runCli([...base(t)], env()));
      assert.equal(real.embeddings.requests, j.preflight.requests);
      assert.equal(real.embeddings.tokens, j.preflight.tokens);
    });
  });
}

// Migrations against an embedding API with OpenAI's rate limits (a continuous token bucket,
// 429s with its wording, server time growing with the tokens), its minute compressed so the
// runs take seconds: a quota far below a batch completes with every row embedded, and a run
// killed while later batches are embedded ahead of the writer commits in order and is
// resumed without paying again for what was answered.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testTargets } from '../helpers/targets.js';
import { runCli, targetArgs, parseJson } from '../helpers/cli.js';
import { startFakeOpenAI, type FakeOpenAI } from '../helpers/fake-openai.js';
import { count, dumpTables, dumpDiff, freshTarget, sentTexts, startCli, withDb } from '../helpers/rerun.js';
import { makeFixture } from '../../scripts/make-fixture.js';
import { openSource } from '../../src/source/reader.js';
import { canonicalize } from '../../src/source/canonical.js';
import { countTokens } from '../../src/embed/tokens.js';
import type { TargetOptions } from '../../src/postgres/connection.js';

const dir = mkdtempSync(join(tmpdir(), 'mm-embed-rate-'));
const fixturePath = join(dir, 'memory.db');
const ROWS = 300;
const BATCH = 50;
const KEY = 'sk-embed-rate-0123456789';

before(() => {
  makeFixture({ out: fixturePath, rows: ROWS, dims: 8, users: 4, seed: 23 });
});

const args = (t: TargetOptions, extra: string[] = []) => [
  'migrate', '--sqlite', fixturePath, ...targetArgs(t), '--model', 'text-embedding-3-small', '--dimensions', '32',
  '--batch-size', String(BATCH), '--skip-test', '--json', ...extra,
];

/** The text the API is sent for a stored content. */
const sent = (content: string) => canonicalize(content).replace(/\n$/, '');

describe('embedding under a rate limit', { concurrency: true }, () => {
  for (const target of testTargets()) {
    describe(`on ${target.name}`, { concurrency: false }, () => {
      let api: FakeOpenAI;
      let clean: Awaited<ReturnType<typeof dumpTables>>;
      const env = () => ({ OPENAI_API_KEY: KEY, OPENAI_BASE_URL: api.url });
      before(async () => {
        api = await startFakeOpenAI({ apiKey: KEY });
        const t = await freshTarget(target);
        const r = await runCli(args(t), env());
        assert.equal(r.code, 0, r.stderr);
        clean = await dumpTables(t);
      });
      after(() => api.close());

      test('a quota far below one batch: every row embedded, requests sized to the limit, the limit in the report', async () => {
        const t = await freshTarget(target);
        api.reset();
        // 1,500 tokens a bucket (a batch here is ~2,000), refilled in 300 ms.
        api.setOptions({ rateLimit: { tokens: 1500, requests: 10_000, windowMs: 300 } });
        const r = await runCli(args(t), env());
        api.setOptions({ rateLimit: undefined });
        assert.equal(r.code, 0, r.stderr);
        const rep = parseJson(r);
        assert.equal(dumpDiff(await dumpTables(t), clean), null, 'the same tables as a run without a limit');
        await withDb(t, async (db) => {
          assert.equal(await count(db, 'SELECT count(*) AS n FROM memories WHERE embedding IS NULL'), 0, 'every row has its vector');
        });
        assert.equal(rep.embeddings.requests, api.embeddingRequests.length);
        const refused = api.embeddingRequests.filter((q) => q.status === 429).length;
        assert.equal(rep.embeddings.rateLimited, refused, JSON.stringify({ stats: api.rateStats, refused, report: rep.embeddings }));
        assert.ok(rep.embeddings.rateLimit.tokensPerMin > 0 && rep.embeddings.rateLimit.requestsPerMin > 0, JSON.stringify(rep.embeddings.rateLimit));
        assert.ok(rep.embeddings.throttledMs > 0);
        assert.ok(api.rateStats.rateLimited <= Math.ceil(0.05 * rep.embeddings.requests) + 1, `${api.rateStats.rateLimited} of ${rep.embeddings.requests} requests were 429`);
        // Requests are sized to the quota (an eighth of it once known), not one per batch.
        const answered = api.embeddingRequests.filter((q) => q.status === 200);
        assert.ok(answered.length > 2 * (ROWS / BATCH), `${answered.length} requests for ${ROWS / BATCH} batches`);
        const tokens = answered.slice(1).map((q) => (q.body.input as string[]).reduce((n, x) => n + countTokens(x), 0));
        assert.ok(tokens.every((n) => n <= 1500 / 4), `request sizes ${tokens.join(',')}`);
        assert.match(r.stderr, /embedding rate limit|tokens\/min/);
      });

      test('kill -9 while later batches are embedded ahead: commits stay in order, the re-run pays only for what was not answered', async () => {
        const t = await freshTarget(target);
        // The second batch's texts: every request carrying one is held until the kill.
        const second = new Set<string>();
        const src = openSource(fixturePath);
        try {
          for (const row of src.rows({ limit: 2 * BATCH })) if (row.rowid > BATCH) second.add(sent(row.content));
        } finally {
          src.close();
        }
        api.reset();
        let killAt: Promise<void> | undefined;
        let quiet = false;
        const held = new Set<number>();
        let running: ReturnType<typeof startCli> | undefined;
        api.setFaults((n, body) => {
          const input: string[] = body?.input ?? [];
          if (!quiet && !input.some((x) => second.has(x))) return undefined;
          held.add(n);
          // The batches after batch 2 are embedded while it waits. Then nothing more is answered,
          // so that every answer is stored before the kill lands.
          killAt ??= new Promise<void>((resolve) => {
            setTimeout(() => (quiet = true), 1500);
            setTimeout(() => {
              running!.child.kill('SIGKILL');
              resolve();
            }, 3000);
          });
          return { hold: killAt };
        });
        // Batch 2 takes 5 requests of 10 texts: 3 slots left for the batches after it.
        running = startCli(args(t, ['--max-batch-inputs', '10', '--concurrency', '8']), env());
        const killed = await running.done;
        api.setFaults(undefined);
        assert.equal(killed.signal, 'SIGKILL', killed.stderr);
        // Held requests may be logged 200 after the kill (to a dead socket): never answered.
        const answered = sentTexts(api.embeddingRequests.filter((q) => q.status === 200 && !held.has(q.n)));
        const answeredSet = new Set(answered);
        // Texts of batches 3.. were answered while batch 2 waited: the API ran ahead of the writer.
        const later = answered.filter((x) => !second.has(x));
        assert.ok(later.length > BATCH, `${later.length} texts answered outside batch 2: the API should have run ahead`);
        await withDb(t, async (db) => {
          const [run] = await db.query<{ checkpoint_rowid: number | null }>('SELECT checkpoint_rowid FROM migration_runs');
          // Only batch 1 can be committed: batch 2 never got its vectors, and nothing commits past it.
          assert.ok(run!.checkpoint_rowid === null || Number(run!.checkpoint_rowid) === BATCH, `checkpoint ${run!.checkpoint_rowid}`);
          const stored = await db.query<{ id: string }>('SELECT id FROM memories');
          const beyond = new Set<string>();
          const s2 = openSource(fixturePath);
          try {
            for (const row of s2.rows()) if (row.rowid > BATCH) beyond.add(row.id);
          } finally {
            s2.close();
          }
          assert.equal(stored.filter((m) => beyond.has(m.id)).length, 0, 'no row of a later batch is committed before batch 2');
        });

        api.reset();
        const again = await runCli(args(t), env());
        assert.equal(again.code, 0, again.stderr);
        const resent = sentTexts(api.embeddingRequests);
        assert.deepEqual(resent.filter((x) => answeredSet.has(x)), [], 'texts answered before the kill were paid again');
        assert.equal(dumpDiff(await dumpTables(t), clean), null, 'the re-run converges on the clean tables');
      });
    });
  }
});

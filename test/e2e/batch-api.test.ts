// migrate --batch-api against the local fake of OpenAI's Files and Batches endpoints: the
// vectors come from batches (no online embedding request), a re-run creates nothing, a failed
// line's rows are rejected and the rest loaded, expired and cancelled batches keep their
// answers and only the rest is resubmitted, a run killed (SIGKILL) right after creating a
// batch adopts that batch on resume instead of paying again, and --dry-run prices both ways.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testTargets } from '../helpers/targets.js';
import { runCli, targetArgs, parseJson } from '../helpers/cli.js';
import { fakeVector, startFakeOpenAI, type FakeOpenAI } from '../helpers/fake-openai.js';
import { count, freshTarget, startCli, withDb, writeMemoryFile, type RunningCli } from '../helpers/rerun.js';
import type { TargetOptions } from '../../src/postgres/connection.js';
import { parseVectorText } from '../../src/postgres/vector-text.js';

const dir = mkdtempSync(join(tmpdir(), 'mm-batch-api-'));
const sourcePath = join(dir, 'memory.db');
const ROWS = 40;
const MODEL = 'text-embedding-3-small';
const DIMS = 16;
const API_KEY = 'sk-batch-secret-3Jd8Pq';

before(() => {
  writeMemoryFile(
    sourcePath,
    Array.from({ length: ROWS }, (_, i) => ({
      id: `m_${String(i).padStart(2, '0')}`,
      user: i % 2 ? 'user_a' : 'user_b',
      content: `Memory ${i}: the customer orders blend number ${i * 7} on ${['Monday', 'Tuesday', 'Friday'][i % 3]}.`,
    })),
  );
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe('migrate --batch-api', { concurrency: true }, () => {
  for (const target of testTargets()) {
    describe(`on ${target.name}`, { concurrency: 1 }, () => {
      let api: FakeOpenAI;
      let runs = 0;
      before(async () => {
        api = await startFakeOpenAI({ apiKey: API_KEY, batches: {} });
      });
      after(async () => {
        await api?.close();
      });
      const work = mkdtempSync(join(dir, `${target.name}-`));
      // The CLI's temp files (batch JSONL before upload) go into this suite's folder.
      const env = () => ({ OPENAI_API_KEY: API_KEY, OPENAI_BASE_URL: api.url, TMPDIR: work });
      const rejectFile = () => join(work, `rejects-${++runs}.jsonl`);
      const args = (t: TargetOptions, rejects: string, extra: string[] = []) => [
        'migrate', '--sqlite', sourcePath, ...targetArgs(t), '--model', MODEL, '--dimensions', String(DIMS),
        '--batch-size', '10', '--max-batch-inputs', '4', '--skip-test', '--json', '--reject-file', rejects,
        '--batch-api', '--batch-poll-seconds', '0.02', ...extra,
      ];
      const fresh = () => {
        api.reset();
        api.batches.reset();
        api.batches.setOptions({ pollsInProgress: 2, outcome: undefined, failLine: undefined, onBatchCreated: undefined });
      };

      /** Every memory's vector is the fake's for its content; ids without one returned. */
      const checkVectors = async (t: TargetOptions): Promise<string[]> => {
        const missing: string[] = [];
        await withDb(t, async (db) => {
          const rows = await db.query<{ id: string; content: string; e: string | null }>(`SELECT id, content, embedding::text AS e FROM memories ORDER BY id`);
          assert.equal(rows.length, ROWS);
          for (const r of rows) {
            if (r.e === null) {
              missing.push(r.id);
              continue;
            }
            const got = parseVectorText(r.e);
            const want = fakeVector(MODEL, r.content, DIMS);
            for (let i = 0; i < DIMS; i++) assert.ok(Math.abs(got[i]! - want[i]!) < 1e-6, `${r.id}: dimension ${i}`);
          }
        });
        return missing;
      };
      const linesOf = (upload: { content: string }) => upload.content.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));

      test('vectors come from a batch, no online request; a re-run creates no batch and sends nothing', async () => {
        const t = await freshTarget(target);
        fresh();
        const r = await runCli(args(t, rejectFile()), env());
        assert.equal(r.code, 0, r.stderr);
        const report = parseJson(r);
        assert.equal(api.embeddingRequests.length, 0);
        assert.equal(api.batches.filesCreated, 1);
        assert.equal(api.batches.batchesCreated, 1);
        const lines = linesOf(api.batches.uploads[0]!);
        // 40 memories and the default fragments, 4 inputs a line.
        assert.ok(lines.length >= ROWS / 4, `${lines.length} lines`);
        for (const l of lines) {
          assert.equal(l.url, '/v1/embeddings');
          assert.equal(l.method, 'POST');
          assert.ok(l.body.input.length <= 4);
          assert.equal(l.body.dimensions, DIMS);
        }
        const b = api.batches.batches[0]!;
        assert.match(b.metadata['memory_migrate_run'] ?? '', /^mm-[0-9a-f]{40}$/);
        assert.match(b.metadata['inputs_sha256'] ?? '', /^[0-9a-f]{64}$/);
        assert.deepEqual(
          { ...report.embeddings.batchApi, tokens: undefined },
          { batches: 1, requests: lines.length, completed: lines.length, failedLines: 0, expired: 0, cancelled: 0, resubmitted: 0, resumed: 0, adopted: 0, tokens: undefined, truncated: 0 },
        );
        assert.ok(report.embeddings.batchApi.tokens > 0);
        assert.equal(report.embeddings.requests, 0);
        assert.equal(report.memories.migrated, ROWS);
        assert.deepEqual(await checkVectors(t), []);
        await withDb(t, async (db) => {
          assert.equal(await count(db, `SELECT count(*) AS n FROM embedding_batches WHERE state = 'done' AND batch_id = $1`, [b.id]), 1);
        });

        const again = await runCli(args(t, rejectFile()), env());
        assert.equal(again.code, 0, again.stderr);
        assert.equal(api.batches.batchesCreated, 1);
        assert.equal(api.batches.filesCreated, 1);
        assert.equal(api.embeddingRequests.length, 0);
        assert.equal(parseJson(again).embeddings.batchApi.batches, 0);
        assert.match(again.stderr, /no batches were needed/);
      });

      test('a failed line: its rows are rejected (reject file, counts), the rest is loaded', async () => {
        const t = await freshTarget(target);
        fresh();
        api.batches.setOptions({ failLine: (id) => id === 'l2' });
        const rejects = rejectFile();
        const r = await runCli(args(t, rejects), env());
        assert.equal(r.code, 0, r.stderr);
        const report = parseJson(r);
        const failedTexts: string[] = linesOf(api.batches.uploads[0]!).find((l) => l.custom_id === 'l2').body.input;
        assert.equal(failedTexts.length, 4);
        assert.equal(report.embeddings.batchApi.failedLines, 1);
        assert.equal(report.embeddings.rejected, 4);
        assert.equal(api.embeddingRequests.length, 0);
        const missing = await checkVectors(t);
        assert.equal(missing.length, 4);
        await withDb(t, async (db) => {
          const rows = await db.query<{ content: string }>(`SELECT content FROM memories WHERE embedding IS NULL ORDER BY content`);
          assert.deepEqual(rows.map((x) => x.content), [...failedTexts].sort());
        });
        const lines = readFileSync(rejects, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
        assert.deepEqual(lines.map((l) => l.id).sort(), [...missing].sort());
        for (const l of lines) assert.match(l.reason, /Batch API: HTTP 400/);
      });

      for (const status of ['expired', 'cancelled'] as const) {
        test(`${status === 'expired' ? 'an' : 'a'} ${status} batch: its finished lines are loaded, only the rest is resubmitted`, async () => {
          const t = await freshTarget(target);
          fresh();
          const finished = status === 'expired' ? 3 : 5;
          api.batches.setOptions({ outcome: (n) => (n === 1 ? { status, finished } : undefined) });
          const r = await runCli(args(t, rejectFile()), env());
          assert.equal(r.code, 0, r.stderr);
          const report = parseJson(r);
          assert.equal(api.batches.batchesCreated, 2);
          const first = linesOf(api.batches.uploads[0]!);
          const second = linesOf(api.batches.uploads[1]!);
          assert.equal(second.length, first.length - finished);
          assert.deepEqual(second.map((l) => l.custom_id), first.slice(finished).map((l) => l.custom_id));
          assert.equal(api.batches.batches[1]!.metadata['memory_migrate_run'], api.batches.batches[0]!.metadata['memory_migrate_run']);
          assert.equal(report.embeddings.batchApi[status], 1);
          assert.equal(report.embeddings.batchApi.resubmitted, first.length - finished);
          assert.equal(report.embeddings.batchApi.completed, first.length);
          assert.equal(api.embeddingRequests.length, 0);
          assert.deepEqual(await checkVectors(t), []);
        });
      }

      test('kill -9 right after a batch is created: the re-run adopts it by its tag and pays nothing twice', async () => {
        const t = await freshTarget(target);
        fresh();
        let running: RunningCli | undefined;
        api.batches.setOptions({
          onBatchCreated: async () => {
            // The answer never reaches the run: it dies before recording the batch id.
            running!.child.kill('SIGKILL');
            await running!.done;
          },
        });
        running = startCli(args(t, rejectFile()), env());
        const killed = await running.done;
        assert.equal(killed.signal, 'SIGKILL');
        assert.equal(api.batches.batchesCreated, 1);
        await withDb(t, async (db) => {
          assert.equal(await count(db, `SELECT count(*) AS n FROM embedding_batches WHERE batch_id IS NULL AND state = 'uploaded'`), 1);
        });

        api.batches.setOptions({ onBatchCreated: undefined });
        const r = await runCli(args(t, rejectFile()), env());
        assert.equal(r.code, 0, r.stderr);
        const report = parseJson(r);
        assert.equal(api.batches.batchesCreated, 1, 'no second batch');
        assert.equal(api.batches.filesCreated, 1, 'no second upload');
        assert.equal(report.embeddings.batchApi.adopted, 1);
        assert.equal(report.embeddings.batchApi.batches, 0);
        assert.equal(api.embeddingRequests.length, 0);
        assert.deepEqual(await checkVectors(t), []);
        await withDb(t, async (db) => {
          assert.equal(await count(db, `SELECT count(*) AS n FROM embedding_batches WHERE batch_id = $1 AND state = 'done'`, [api.batches.batches[0]!.id]), 1);
        });
      });

      test('interrupted while polling: the re-run polls the same batch, creates none', async () => {
        const t = await freshTarget(target);
        fresh();
        api.batches.setOptions({ pollsInProgress: 1_000_000 });
        const running = startCli(args(t, rejectFile()), env());
        await running.waitFor(/polling for results/);
        await running.waitFor(/in_progress/);
        running.child.kill('SIGINT');
        const stopped = await running.done;
        assert.equal(stopped.code, 130, stopped.stderr);
        assert.match(stopped.stderr, /the same command resumes polling them/);
        assert.equal(api.batches.batchesCreated, 1);
        await withDb(t, async (db) => {
          assert.equal(await count(db, `SELECT count(*) AS n FROM embedding_batches WHERE state = 'submitted'`), 1);
          assert.equal(await count(db, `SELECT count(*) AS n FROM memories`), 0);
        });

        api.batches.setOptions({ pollsInProgress: 0 });
        const r = await runCli(args(t, rejectFile()), env());
        assert.equal(r.code, 0, r.stderr);
        const report = parseJson(r);
        assert.equal(report.embeddings.batchApi.resumed, 1);
        assert.equal(report.embeddings.batchApi.batches, 0);
        assert.equal(api.batches.batchesCreated, 1);
        assert.equal(api.batches.filesCreated, 1);
        assert.equal(api.embeddingRequests.length, 0);
        assert.deepEqual(await checkVectors(t), []);
      });

      test('--dry-run prints the cost online and through the Batch API; --embedder local is refused', async () => {
        const t = await freshTarget(target);
        fresh();
        const json = await runCli([...args(t, rejectFile()), '--dry-run'], env());
        assert.equal(json.code, 0, json.stderr);
        const pf = parseJson(json).preflight;
        assert.ok(pf.estimatedCostUsd > 0);
        assert.ok(Math.abs(pf.batchCostUsd - pf.estimatedCostUsd / 2) < 1e-12);
        const text = await runCli(args(t, rejectFile()).filter((a) => a !== '--json').concat('--dry-run'), env());
        assert.equal(text.code, 0, text.stderr);
        assert.match(text.stdout + text.stderr, /estimated cost \$(\d+\.\d{4}), ETA [\d.]+ s; with --batch-api \$(\d+\.\d{4}) \(Batch API: half price/);
        assert.equal(api.batches.filesCreated + api.batches.batchesCreated + api.embeddingRequests.length, 0);

        const rejects = rejectFile();
        const local = await runCli(['migrate', '--sqlite', sourcePath, ...targetArgs(t), '--embedder', 'local', '--batch-api', '--reject-file', rejects], env());
        assert.equal(local.code, 2);
        assert.match(local.stderr, /--batch-api needs --embedder openai/);
        assert.equal(local.stderr.trim().split('\n').length, 1, local.stderr);
        assert.equal(existsSync(rejects), false);
      });
    });
  }
});

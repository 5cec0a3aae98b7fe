// The migration ledger (one migration_runs row per run: source, sha256, options without
// secrets, times, status, counts, checkpoint, HMAC), the status command and
// --verify-ledger; and --dry-run, which writes nothing anywhere and predicts the real run.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { testTargets } from '../helpers/targets.js';
import { runCli, targetArgs, parseJson, sha256File, type CliResult } from '../helpers/cli.js';
import { startFakeOpenAI, type FakeOpenAI } from '../helpers/fake-openai.js';
import { startCli, withDb, count, freshTarget, type RunningCli } from '../helpers/rerun.js';
import { makeFixture } from '../../scripts/make-fixture.js';
import type { Db, TargetOptions } from '../../src/postgres/connection.js';

const dir = mkdtempSync(join(tmpdir(), 'mm-ledger-'));
const fixturePath = join(dir, 'memory.db');
const ROWS = 80;
const API_KEY = 'sk-ledger-secret-7Qx9Zr2Lm4';
const HMAC_SECRET = 'hmac-ledger-secret-5Vb8';

before(() => {
  makeFixture({ out: fixturePath, rows: ROWS, dims: 8, users: 4, seed: 5 });
});

/** Everything the ledger holds, as one text to grep. */
async function ledgerText(db: Db): Promise<string> {
  const rows = await db.query<{ t: string }>(`SELECT row_to_json(r)::text AS t FROM migration_runs r ORDER BY id`);
  return rows.map((r) => r.t).join('\n');
}

/** Counts of everything a run may write, to show a dry run wrote nothing. */
async function snapshot(db: Db): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const table of ['memories', 'memory_duplicates', 'prompt_fragments', 'migration_skips', 'embedding_cache', 'memory_analytics']) {
    out[table] = await count(db, `SELECT count(*) AS n FROM ${table}`);
  }
  out['ledger'] = await ledgerText(db);
  out['memoriesMax'] = (await db.query(`SELECT max(updated_at)::text AS t, md5(string_agg(id || content_hash || metadata::text, ',' ORDER BY id)) AS h FROM memories`))[0];
  return out;
}

describe('ledger and dry run', { concurrency: true }, () => {
  for (const target of testTargets()) {
    describe(`on ${target.name}`, { concurrency: 1 }, () => {
      let api: FakeOpenAI;
      before(async () => {
        api = await startFakeOpenAI({ apiKey: API_KEY });
      });
      after(async () => {
        await api?.close();
      });
      const env = (extra: Record<string, string> = {}) => ({
        OPENAI_API_KEY: API_KEY,
        OPENAI_BASE_URL: api.url,
        MEMORY_EVENTS_HMAC_SECRET: HMAC_SECRET,
        ...extra,
      });
      const migrateArgs = (t: TargetOptions, sqlite = fixturePath, extra: string[] = []) => [
        'migrate', '--sqlite', sqlite, ...targetArgs(t), '--model', 'text-embedding-3-small', '--dimensions', '16',
        '--batch-size', '20', '--skip-test', '--json', ...extra,
      ];
      const embeddings = () => api.embeddingRequests.length;

      test('one ledger row per run: source, sha256, options without secrets, status, counts, checkpoint; status and --verify-ledger', async () => {
        const t = await freshTarget(target);
        const outputs: CliResult[] = [];
        let checkpoint = 0;
        let checkpoint2 = 0;

        // Run 1: SIGINT at the second embedding request → interrupted once the batches being
        // finished are committed (the next batches' texts are queued ahead, so which batch that
        // is depends on how the texts fell into requests): a whole number of batches.
        let running: RunningCli | undefined;
        api.reset();
        api.setFaults((_n, body) => {
          if (body?.input === undefined || embeddings() !== 2) return undefined;
          running!.child.kill('SIGINT');
          return { delayMs: 200 };
        });
        running = startCli(migrateArgs(t), env());
        outputs.push(await running.done);
        assert.equal(outputs[0]!.code, 130, outputs[0]!.stderr);

        // Run 2: the API refuses the key on the first embedding it needs (after two unchanged
        // batches) and echoes the key, as some servers do → failed. Batches whose texts run 1
        // embedded ahead are in the cache: they commit without a request, so the checkpoint
        // may move on.
        api.setFaults((_n, body) =>
          body?.input === undefined
            ? undefined
            : { status: 401, body: { error: { message: `Incorrect API key provided: ${API_KEY}`, type: 'invalid_request_error', code: 'invalid_api_key' } } },
        );
        outputs.push(await runCli(migrateArgs(t), env()));
        api.setFaults(undefined);
        assert.equal(outputs[1]!.code, 1, outputs[1]!.stderr);

        // Run 3: completes.
        outputs.push(await runCli(migrateArgs(t), env()));
        assert.equal(outputs[2]!.code, 0, outputs[2]!.stderr);
        const report = parseJson(outputs[2]!);
        assert.equal(report.runId, 3);

        const secrets = [API_KEY, HMAC_SECRET, ...(t.databaseUrl ? [decodeURIComponent(new URL(t.databaseUrl).password)] : [])];
        for (const o of outputs) for (const s of secrets) assert.ok(!(o.stdout + o.stderr).includes(s), `output leaks ${s}`);

        await withDb(t, async (db) => {
          const text = await ledgerText(db);
          for (const s of secrets) assert.ok(!text.includes(s), `the ledger holds a secret: ${s}`);
          const runs = await db.query<any>(`SELECT * FROM migration_runs ORDER BY id`);
          assert.deepEqual(runs.map((r) => Number(r.id)), [1, 2, 3]);
          assert.deepEqual(runs.map((r) => r.status), ['interrupted', 'failed', 'committed']);
          const json = (v: unknown) => (typeof v === 'string' ? JSON.parse(v) : v) as any;
          for (const r of runs) {
            assert.equal(r.source_path, resolve(fixturePath));
            assert.equal(r.source_sha256.trim(), sha256File(fixturePath));
            assert.equal(r.shard, null);
            const o = json(r.options);
            assert.equal(o.model, 'text-embedding-3-small');
            assert.equal(o.dimensions, 16);
            assert.equal(o.batchSize, 20);
            assert.equal(o.dedup, 'exact');
            for (const k of Object.keys(o)) assert.doesNotMatch(k, /url|key|secret|password/i);
            assert.ok(new Date(r.started_at).getTime() <= new Date(r.finished_at).getTime());
            assert.match(String(r.hmac), /^[0-9a-f]{64}$/);
          }
          checkpoint = Number(runs[0].checkpoint_rowid);
          assert.ok(checkpoint >= 20 && checkpoint % 20 === 0, `checkpoint ${checkpoint}`);
          assert.equal(runs[0].error, 'interrupted');
          checkpoint2 = Number(runs[1].checkpoint_rowid);
          assert.ok(checkpoint2 >= checkpoint && checkpoint2 <= ROWS && checkpoint2 % 20 === 0, `checkpoint ${checkpoint2}`);
          assert.match(runs[1].error, /API key|401/);
          assert.equal(Number(runs[2].checkpoint_rowid), ROWS);
          assert.equal(runs[2].error, null);
          // Counts: the interrupted and failed runs keep what they committed; the last run's
          // are its report's.
          const c0 = json(runs[0].counts);
          const c1 = json(runs[1].counts);
          const c2 = json(runs[2].counts);
          const stored = await count(db, 'SELECT count(*) AS n FROM memories');
          assert.ok(c0.memories.migrated > 0);
          assert.equal(c1.memories.migrated > 0, checkpoint2 > checkpoint);
          assert.equal(c1.memories.unchanged, c0.memories.migrated);
          assert.deepEqual(c2.memories, report.memories);
          assert.equal(c0.memories.migrated + c1.memories.migrated + c2.memories.migrated, stored);
          assert.equal(c2.memories.unchanged, c0.memories.migrated + c1.memories.migrated);
          assert.equal(c2.embeddings.requests, report.embeddings.requests);
        });

        const st = await runCli(['status', ...targetArgs(t)], env());
        assert.equal(st.code, 0, st.stderr);
        const lines = st.stdout.split('\n').filter((l) => l.startsWith('#'));
        assert.equal(lines.length, 3, st.stdout);
        assert.match(lines[0]!, /^#3 committed .* checkpoint 80 migrated \d+/);
        assert.match(lines[1]!, new RegExp(`^#2 failed .* checkpoint ${checkpoint2} .*error: `));
        assert.match(lines[2]!, new RegExp(`^#1 interrupted .* checkpoint ${checkpoint} migrated [1-9]`));

        const ok = await runCli(['status', ...targetArgs(t), '--verify-ledger'], env());
        assert.equal(ok.code, 0, ok.stdout + ok.stderr);
        assert.match(ok.stdout, /ledger verified: 3 runs, every HMAC matches/);
        const noSecret = await runCli(['status', ...targetArgs(t), '--verify-ledger'], env({ MEMORY_EVENTS_HMAC_SECRET: '' }));
        assert.equal(noSecret.code, 2);
        assert.match(noSecret.stderr, /needs MEMORY_EVENTS_HMAC_SECRET/);

        // Tamper with one row's counts: --verify-ledger flags that row only, exit 3.
        await withDb(t, (db) => db.query(`UPDATE migration_runs SET counts = jsonb_set(counts, '{memories,migrated}', '9999') WHERE id = 3`));
        const bad = await runCli(['status', ...targetArgs(t), '--verify-ledger', '--json'], env());
        assert.equal(bad.code, 3, bad.stderr);
        const checks = parseJson(bad).ledger as { id: number; ok: boolean; reason?: string }[];
        assert.deepEqual(checks.map((c) => [c.id, c.ok]), [[1, true], [2, true], [3, false]]);
        assert.match(checks[2]!.reason!, /HMAC mismatch/);
        const badText = await runCli(['status', ...targetArgs(t), '--verify-ledger'], env());
        assert.equal(badText.code, 3);
        assert.match(badText.stderr, /run #3: HMAC mismatch/);
        assert.doesNotMatch(badText.stderr, /run #[12]/);
      });

      test('--dry-run on a fresh target creates nothing and prints counts and the embedding preflight', async () => {
        const t = await freshTarget(target);
        let t2: TargetOptions = t;
        if (t.pgliteDir) t2 = { pgliteDir: join(t.pgliteDir, 'not-yet') };
        api.reset();
        const res = await runCli(migrateArgs(t2, fixturePath, ['--dry-run']).filter((a) => a !== '--json'), env());
        assert.equal(res.code, 0, res.stderr);
        assert.equal(api.requests.length, 0, 'a dry run sends nothing to the API');
        assert.match(res.stdout, /Dry run: nothing was written\./);
        assert.match(res.stdout, /user_1: read \d+, would insert \d+, update 0, unchanged 0, duplicates \d+, skipped \d+/);
        assert.match(res.stdout, /Embedding preflight: \d+ texts, \d+ tokens, [1-9]\d* requests, \d+ cached, estimated cost \$\d+\.\d{4}, ETA \d/);
        if (t.pgliteDir) {
          assert.equal(existsSync(t2.pgliteDir!), false, 'the PGlite directory was created');
          // An existing empty directory is not initialised either.
          const empty = join(t.pgliteDir, 'empty');
          mkdirSync(empty);
          const res2 = await runCli(migrateArgs({ pgliteDir: empty }, fixturePath, ['--dry-run']), env());
          assert.equal(res2.code, 0, res2.stderr);
          assert.deepEqual(readdirSync(empty), []);
        } else {
          await withDb(t, async (db) => {
            assert.equal(await count(db, `SELECT count(*) AS n FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')`), 0);
            assert.equal(await count(db, `SELECT count(*) AS n FROM pg_extension WHERE extname = 'vector'`), 0);
          });
        }
      });

      test('--dry-run on a migrated target changes nothing and predicts the real run exactly', async () => {
        const t = await freshTarget(target);
        const file = join(dir, `dry-${target.name}.db`);
        copyFileSync(fixturePath, file);
        const partial = await runCli(migrateArgs(t, file, ['--limit', '50']), env());
        assert.equal(partial.code, 0, partial.stderr);
        // Edit a migrated row's content and another's metadata: the dry run must see both.
        const src = new Database(file);
        const [a, b] = (src.prepare(`SELECT id FROM memories WHERE user_id = 'user_1' AND rowid <= 50 ORDER BY rowid`).all() as { id: string }[]).map((r) => r.id);
        src.prepare(`UPDATE memories SET content = content || ' (edited)' WHERE id = ?`).run(a);
        src.prepare(`UPDATE memories SET metadata = json_set(metadata, '$.category', 'vip') WHERE id = ?`).run(b);
        src.close();

        const sqliteBefore = sha256File(file);
        const before = await withDb(t, snapshot);
        api.reset();
        const dry = await runCli(migrateArgs(t, file, ['--dry-run']), env());
        assert.equal(dry.code, 0, dry.stderr);
        assert.equal(api.requests.length, 0, 'a dry run sends nothing to the API');
        assert.equal(sha256File(file), sqliteBefore, 'the dry run changed the SQLite file');
        assert.deepEqual(await withDb(t, snapshot), before, 'the dry run wrote to the target');
        const p = parseJson(dry);
        assert.equal(p.dryRun, true);
        assert.equal(p.runId, null);
        assert.equal(p.memories.updated, 2);
        assert.ok(p.memories.unchanged > 0 && p.memories.migrated > 0 && p.memories.duplicates.exact > 0 && p.memories.skipped > 0);
        assert.ok(Object.keys(p.memories.skippedByReason).length > 0);
        assert.ok(p.preflight.textsToEmbed > 0 && p.preflight.tokens > 0 && p.preflight.requests > 0);
        assert.ok(p.preflight.estimatedCostUsd > 0 && p.preflight.etaSeconds > 0);

        api.reset();
        const real = parseJson(await runCli(migrateArgs(t, file), env()));
        assert.equal(real.ok, true);
        for (const k of ['read', 'migrated', 'updated', 'unchanged', 'skipped', 'duplicates', 'skippedByReason']) {
          assert.deepEqual(real.memories[k], p.memories[k], `memories.${k}: real run vs dry run`);
        }
        assert.deepEqual(real.users, p.users);
        assert.deepEqual(
          { read: real.fragments.read, defaults: real.fragments.defaults },
          { read: p.fragments.read, defaults: p.fragments.defaults },
        );
        assert.equal(real.embeddings.computed, p.preflight.textsToEmbed);
        assert.equal(real.embeddings.tokens, p.preflight.tokens);
        assert.equal(real.embeddings.requests, p.preflight.requests);
        assert.equal(api.embeddingRequests.length, p.preflight.requests);
      });
    });
  }
});

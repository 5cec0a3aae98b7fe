// `migrate --to-plugin` and `verify --to-plugin` (issue 15, part 2): the bundled fixture
// backfilled through the memory-plugin v1 contract into the in-memory plugin of
// test/helpers/in-memory-plugin.ts (written from the contract alone) and into `memory-migrate
// serve` on both targets. What is asserted is what the plugin holds and what it was sent: its
// maps, its request log, and what a search returns.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { FIXTURE, parseJson, runCli, targetArgs, sha256File } from '../helpers/cli.js';
import { startCli } from '../helpers/rerun.js';
import { testTargets } from '../helpers/targets.js';
import { startInMemoryPlugin, type InMemoryPlugin } from '../helpers/in-memory-plugin.js';
import { rowUuid } from '../../src/postgres/row-uuid.js';

const dir = mkdtempSync(join(tmpdir(), 'mm-plugin-backfill-'));
after(() => rmSync(dir, { recursive: true, force: true }));

// The fixture's 240 rows: 5 prompt fragments and 2 system_metrics rows are not memories of a
// user; of the 233 rows of user_1..user_6, 12 are exact duplicates within their user and 1 has
// empty content (fixtures/README.md). 220 memories belong in the plugin.
const EXPECTED_MEMORIES = 220;
const EMBED = ['--embedder', 'local'];

let n = 0;
/** A copy of the fixture of its own, so each test has its own ledger file next to it. */
function fixtureCopy(): string {
  const p = join(dir, `memory-${++n}.db`);
  copyFileSync(FIXTURE, p);
  return p;
}

function sourceCountsPerUser(path: string): Map<string, number> {
  const db = new Database(path, { readonly: true });
  try {
    const rows = db.prepare(`SELECT user_id AS u, count(*) AS c FROM memories WHERE user_id <> 'system_prompts' GROUP BY user_id`).all() as { u: string; c: number }[];
    return new Map(rows.map((r) => [r.u, r.c]));
  } finally {
    db.close();
  }
}

function perNamespace(plugin: InMemoryPlugin): Map<string, number> {
  const m = new Map<string, number>();
  for (const mem of plugin.memories.values()) m.set(mem.namespace, (m.get(mem.namespace) ?? 0) + 1);
  return m;
}

const commits = (plugin: InMemoryPlugin) => plugin.requests.filter((r) => r.method === 'POST' && r.path.endsWith('/memories'));

/** The source id of the first row of a user, by rowid. */
function firstIdOf(path: string, user: string, offset = 0): string {
  const db = new Database(path, { readonly: true });
  try {
    return (db.prepare(`SELECT id FROM memories WHERE user_id = ? AND trim(content) <> '' ORDER BY rowid LIMIT 1 OFFSET ?`).get(user, offset) as { id: string }).id;
  } finally {
    db.close();
  }
}

describe('migrate --to-plugin into the in-memory plugin', { concurrency: true }, () => {
  let plugin: InMemoryPlugin;
  let sqlite: string;
  before(async () => {
    plugin = await startInMemoryPlugin();
    sqlite = fixtureCopy();
  });
  after(() => plugin?.close());

  test('twice: the count does not double, per-namespace counts are right, verify passes, a tampered record fails it', async () => {
    const before = sha256File(sqlite);
    const first = await runCli(['migrate', '--sqlite', sqlite, '--to-plugin', plugin.url, ...EMBED, '--reject-file', join(dir, 'rej-1.jsonl'), '--json']);
    assert.equal(first.code, 0, first.stderr);
    const r1 = parseJson(first);
    assert.equal(plugin.memories.size, EXPECTED_MEMORIES);
    assert.equal(r1.totals.written, EXPECTED_MEMORIES);
    assert.equal(r1.totals.failed, 0);
    // Per namespace: read = the user's rows in the file; written = what the plugin holds there.
    const held = perNamespace(plugin);
    const perUser = sourceCountsPerUser(sqlite);
    for (const [user, rows] of perUser) {
      const ns = `workspace:${user}`;
      const c = r1.namespaces[ns];
      assert.ok(c, `no counts for ${ns}`);
      assert.equal(c.read, rows, `${ns} read`);
      assert.equal(c.written, held.get(ns) ?? 0, `${ns} written`);
      assert.equal(c.read, c.written + c.skipped + c.failed, `${ns} adds up`);
    }
    assert.deepEqual(Object.keys(r1.namespaces).sort(), [...perUser.keys()].map((u) => `workspace:${u}`).sort());
    // Each namespace upserted once, not once per row.
    assert.equal(plugin.requests.filter((r) => r.method === 'PUT').length, held.size);
    // Ids are the deterministic UUIDs of the source ids.
    const id = firstIdOf(sqlite, 'user_2');
    assert.equal(plugin.memories.get(rowUuid(id))?.namespace, 'workspace:user_2');
    assert.equal(sha256File(sqlite), before, 'the source is read-only');

    // Again, with a ledger of its own: every memory is sent again and upserted in place.
    const commitsBefore = commits(plugin).length;
    const second = await runCli(['migrate', '--sqlite', sqlite, '--to-plugin', plugin.url, ...EMBED, '--ledger-file', join(dir, 'other-ledger.json'), '--json']);
    assert.equal(second.code, 0, second.stderr);
    assert.equal(commits(plugin).length - commitsBefore, EXPECTED_MEMORIES, 'the second run sent every memory again');
    assert.equal(plugin.memories.size, EXPECTED_MEMORIES, 'the row count did not double');
    assert.deepEqual(parseJson(second).namespaces, r1.namespaces);

    const ok = await runCli(['verify', '--sqlite', sqlite, '--to-plugin', plugin.url, '--json']);
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    const v = parseJson(ok);
    assert.equal(v.mismatchCount, 0);
    assert.equal(v.checked, EXPECTED_MEMORIES);
    assert.equal(v.matched, EXPECTED_MEMORIES);

    // Tamper with one record and drop another: verify names both and exits 3.
    const tampered = firstIdOf(sqlite, 'user_3');
    const dropped = firstIdOf(sqlite, 'user_4');
    const rec = plugin.memories.get(rowUuid(tampered))!;
    const original = rec.content;
    rec.content = 'tampered with';
    const droppedRec = plugin.memories.get(rowUuid(dropped))!;
    plugin.memories.delete(rowUuid(dropped));
    try {
      const bad = await runCli(['verify', '--sqlite', sqlite, '--to-plugin', plugin.url]);
      assert.equal(bad.code, 3, bad.stdout + bad.stderr);
      assert.match(bad.stderr, new RegExp(`${tampered} \\(user_3, workspace:user_3\\) — content: content differs`));
      assert.match(bad.stderr, new RegExp(`${dropped} \\(user_4, workspace:user_4\\) — missing`));
      assert.match(bad.stderr, /2 mismatches/);
    } finally {
      rec.content = original;
      plugin.memories.set(droppedRec.id, droppedRec);
    }
  });

  test('--dry-run writes nothing and predicts the counts', async () => {
    const p = await startInMemoryPlugin();
    try {
      const res = await runCli(['migrate', '--sqlite', fixtureCopy(), '--to-plugin', p.url, ...EMBED, '--dry-run', '--json']);
      assert.equal(res.code, 0, res.stderr);
      const r = parseJson(res);
      assert.equal(r.dryRun, true);
      assert.equal(r.totals.written, EXPECTED_MEMORIES);
      assert.deepEqual(p.writes(), [], 'no request that writes');
      assert.equal(p.memories.size, 0);
      assert.equal(p.namespaces.size, 0);
      const human = await runCli(['migrate', '--sqlite', fixtureCopy(), '--to-plugin', p.url, ...EMBED, '--dry-run']);
      assert.match(human.stdout, /namespace\s+read\s+would write\s+skipped\s+failed/);
      assert.match(human.stdout, /workspace:user_1\s+78\s+73\s+5\s+0/);
      assert.deepEqual(p.writes(), []);
    } finally {
      await p.close();
    }
  });

  test('a 4xx on one memory rejects that row (reject file, counted) and the rest are written', async () => {
    const p = await startInMemoryPlugin();
    const file = fixtureCopy();
    const refused = firstIdOf(file, 'user_5', 3);
    const rejectFile = join(dir, 'rej-4xx.jsonl');
    p.setFault(({ method, body }) =>
      method === 'POST' && (body as { id?: string } | undefined)?.id === rowUuid(refused)
        ? { status: 422, body: { code: 'bad_request', message: 'content rejected by policy' } }
        : undefined,
    );
    try {
      const res = await runCli(['migrate', '--sqlite', file, '--to-plugin', p.url, ...EMBED, '--reject-file', rejectFile, '--json']);
      assert.equal(res.code, 0, res.stderr);
      const r = parseJson(res);
      assert.equal(r.totals.failed, 1);
      assert.equal(r.namespaces['workspace:user_5'].failed, 1);
      assert.equal(r.totals.written, EXPECTED_MEMORIES - 1);
      assert.equal(p.memories.size, EXPECTED_MEMORIES - 1);
      assert.equal(p.memories.has(rowUuid(refused)), false);
      const lines = readFileSync(rejectFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      assert.deepEqual(lines, [{ id: refused, user: 'user_5', reason: 'the plugin refused it: 422 bad_request: content rejected by policy' }]);
      // Refused once, never retried.
      assert.equal(p.requests.filter((q) => (q.body as { id?: string } | undefined)?.id === rowUuid(refused)).length, 1);
      const v = await runCli(['verify', '--sqlite', file, '--to-plugin', p.url]);
      assert.equal(v.code, 3);
      assert.match(v.stderr, new RegExp(`${refused} \\(user_5, workspace:user_5\\) — missing`));
    } finally {
      await p.close();
    }
  });

  test('503s and dropped connections are retried with backoff: every memory arrives, none is refused', async () => {
    const p = await startInMemoryPlugin();
    let n = 0;
    p.setFault(({ method, path }) => {
      if (method !== 'POST' || !path.endsWith('/memories')) return undefined;
      n++;
      if (n === 10 || n === 11 || n === 40) return { status: 503, body: { code: 'unavailable', message: 'store restarting' } };
      if (n === 60 || n === 61) return { drop: true };
      return undefined;
    });
    try {
      const res = await runCli(['migrate', '--sqlite', fixtureCopy(), '--to-plugin', p.url, ...EMBED, '--json']);
      assert.equal(res.code, 0, res.stderr);
      const r = parseJson(res);
      assert.equal(r.totals.written, EXPECTED_MEMORIES);
      assert.equal(r.totals.failed, 0);
      // At least the five faults; a loaded machine may add a reset of an idle keep-alive socket.
      assert.ok(r.requests.retried >= 5, `${r.requests.retried} retries`);
      assert.equal(p.memories.size, EXPECTED_MEMORIES);
      assert.ok(commits(p).length >= EXPECTED_MEMORIES + 5);
    } finally {
      await p.close();
    }
  });

  test('a plugin that goes down mid-run: the circuit breaker stops the run with one line, after a bounded number of requests', async () => {
    const p = await startInMemoryPlugin();
    let sent = 0;
    let failedFrom = -1;
    p.setFault(({ method, path }) => {
      if (method !== 'POST' || !path.endsWith('/memories')) return undefined;
      if (++sent <= 50) return undefined;
      if (failedFrom < 0) failedFrom = p.requests.length - 1;
      return { status: 503, body: { code: 'unavailable', message: 'store unavailable' } };
    });
    try {
      const res = await runCli(['migrate', '--sqlite', fixtureCopy(), '--to-plugin', p.url, ...EMBED, '--batch-size', '40']);
      assert.equal(res.code, 1, res.stdout + res.stderr);
      const lines = res.stderr.trim().split('\n').filter((l) => /circuit breaker/.test(l));
      assert.equal(lines.length, 1, res.stderr);
      assert.match(lines[0]!, /failed POST \/v1\/namespaces\/workspace:user_\d\/memories on all 4 attempts \(last: 503 unavailable: store unavailable\): stopped \(circuit breaker\)/);
      assert.match(lines[0]!, /run the same command again to resume/);
      // At most 8 commits in flight, each tried 4 times; then nothing more.
      const after = commits({ requests: p.requests.slice(failedFrom) } as InMemoryPlugin).length;
      assert.ok(after <= 8 * 4, `${after} requests after the plugin went down`);
      assert.ok(p.memories.size <= 50);
    } finally {
      await p.close();
    }
  });

  test('kill -9 mid-run, then the same command again: it resumes from the ledger and converges', async () => {
    const p = await startInMemoryPlugin();
    const file = fixtureCopy();
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let reached!: () => void;
    const reachedHold = new Promise<void>((r) => (reached = r));
    let seen = 0;
    p.setFault(({ method, path }) => {
      if (method !== 'POST' || !path.endsWith('/memories')) return undefined;
      if (++seen < 120) return undefined;
      reached();
      return { hold: held };
    });
    try {
      const run = startCli(['migrate', '--sqlite', file, '--to-plugin', p.url, ...EMBED, '--batch-size', '50']);
      await reachedHold;
      run.child.kill('SIGKILL');
      const killed = await run.done;
      assert.equal(killed.signal, 'SIGKILL');
      const ledger = JSON.parse(readFileSync(`${file}.to-plugin.ledger.json`, 'utf8'));
      const entry = Object.values(ledger.entries)[0] as { checkpointRowid: number; finished: boolean };
      assert.equal(entry.finished, false);
      assert.ok(entry.checkpointRowid >= 100, `checkpoint ${entry.checkpointRowid}`);
      p.setFault(undefined);
      release();
      const before = commits(p).length;
      const again = await runCli(['migrate', '--sqlite', file, '--to-plugin', p.url, ...EMBED, '--batch-size', '50', '--json']);
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stderr, new RegExp(`Resuming: an earlier run stopped after source rowid ${entry.checkpointRowid}`));
      const resent = commits(p).length - before;
      assert.ok(resent > 0 && resent < EXPECTED_MEMORIES, `${resent} commits on the re-run`);
      assert.equal(parseJson(again).ledger.resumedFrom, entry.checkpointRowid);
      assert.equal(p.memories.size, EXPECTED_MEMORIES);
      const v = await runCli(['verify', '--sqlite', file, '--to-plugin', p.url]);
      assert.equal(v.code, 0, v.stdout + v.stderr);
    } finally {
      release();
      await p.close();
    }
  });

  test('bad input: one line, exit 2, nothing written, the token never printed', async () => {
    const secret = 'plugin-token-Zq81-secret';
    const p = await startInMemoryPlugin({ token: secret });
    const file = fixtureCopy();
    try {
      // Wrong token → 401.
      const wrong = await runCli(['migrate', '--sqlite', file, '--to-plugin', p.url, ...EMBED, '--plugin-token', 'wrong-token-Xy77-value']);
      assert.equal(wrong.code, 2, wrong.stderr);
      assert.match(wrong.stderr, /refused the token \(401 forbidden: .*\); set --plugin-token or MEMORY_PLUGIN_TOKEN/);
      assert.doesNotMatch(wrong.stdout + wrong.stderr, /wrong-token-Xy77-value/);
      // No token at all.
      const none = await runCli(['migrate', '--sqlite', file, '--to-plugin', p.url, ...EMBED]);
      assert.equal(none.code, 2);
      assert.match(none.stderr, /refused a request without a token/);
      // Invalid template.
      const tmpl = await runCli(['migrate', '--sqlite', file, '--to-plugin', p.url, ...EMBED, '--namespace-template', 'Workspace/{user}'], { MEMORY_PLUGIN_TOKEN: secret });
      assert.equal(tmpl.code, 2);
      assert.match(tmpl.stderr, /namespace template "Workspace\/\{user\}" does not give a valid namespace name/);
      // Store down → health 503.
      p.storeDown();
      const down = await runCli(['migrate', '--sqlite', file, '--to-plugin', p.url, ...EMBED], { MEMORY_PLUGIN_TOKEN: secret });
      assert.equal(down.code, 2);
      assert.match(down.stderr, /cannot use the memory plugin at http:\/\/127\.0\.0\.1:\d+: \/v1\/health did not answer 200 .*503 unavailable: store unavailable/);
      p.storeUp();
      for (const r of [wrong, none, tmpl, down]) {
        assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
        assert.doesNotMatch(r.stdout + r.stderr, new RegExp(secret));
      }
      assert.deepEqual(p.writes(), []);
      // The right token (from the environment) works, and is not printed either.
      const good = await runCli(['migrate', '--sqlite', file, '--to-plugin', p.url, ...EMBED], { MEMORY_PLUGIN_TOKEN: secret });
      assert.equal(good.code, 0, good.stderr);
      assert.doesNotMatch(good.stdout + good.stderr, new RegExp(secret));
      assert.equal(p.memories.size, EXPECTED_MEMORIES);
    } finally {
      await p.close();
    }
    // Nothing listening.
    const closed = await startInMemoryPlugin();
    const url = closed.url;
    await closed.close();
    const unreachable = await runCli(['migrate', '--sqlite', file, '--to-plugin', url, ...EMBED]);
    assert.equal(unreachable.code, 2);
    assert.match(unreachable.stderr, /cannot use the memory plugin at .*ECONNREFUSED.*check --to-plugin/);
    assert.equal(unreachable.stderr.trim().split('\n').length, 1);
    // Flags that only mean something for SQL.
    const sqlOnly = await runCli(['migrate', '--sqlite', file, '--to-plugin', url, ...EMBED, '--dedup', 'fuzzy']);
    assert.equal(sqlOnly.code, 2);
    assert.match(sqlOnly.stderr, /--dedup fuzzy cannot be combined with --to-plugin/);
  });
});

describe('migrate --to-plugin into memory-migrate serve', { concurrency: true }, () => {
  for (const target of testTargets()) {
    test(`twice into serve on ${target.name}: no doubling, verify passes, a tampered record fails it`, async () => {
      const t = await target.fresh();
      const serve = startCli(['serve', ...targetArgs(t), ...EMBED, '--listen', '127.0.0.1:0'], {}, 900_000);
      try {
        await serve.waitFor(/listening on http:\/\/\S+/);
        const url = /listening on (http:\/\/\S+)/.exec(serve.stdout + serve.stderr)?.[1];
        assert.ok(url, serve.stdout + serve.stderr);
        const sqlite = fixtureCopy();
        const total = async (): Promise<number> => {
          let sum = 0;
          for (const u of sourceCountsPerUser(sqlite).keys()) {
            const res: Response = await fetch(`${url}/v1/search`, {
              method: 'POST',
              headers: { 'content-type': 'application/json' },
              body: JSON.stringify({ namespaces: [`workspace:${u}`], limit: 100 }),
            });
            assert.equal(res.status, 200);
            sum += ((await res.json()) as { memories: unknown[] | null }).memories?.length ?? 0;
          }
          return sum;
        };
        const first = await runCli(['migrate', '--sqlite', sqlite, '--to-plugin', url!, ...EMBED, '--json']);
        assert.equal(first.code, 0, first.stderr);
        assert.equal(parseJson(first).totals.written, EXPECTED_MEMORIES);
        assert.equal(await total(), EXPECTED_MEMORIES);
        const second = await runCli(['migrate', '--sqlite', sqlite, '--to-plugin', url!, ...EMBED, '--json']);
        assert.equal(second.code, 0, second.stderr);
        assert.equal(parseJson(second).totals.written, EXPECTED_MEMORIES, 'every memory sent again');
        assert.equal(await total(), EXPECTED_MEMORIES, 'the row count did not double');
        const ok = await runCli(['verify', '--sqlite', sqlite, '--to-plugin', url!]);
        assert.equal(ok.code, 0, ok.stdout + ok.stderr);

        // Tamper through the API: the same id committed with other content.
        const victim = firstIdOf(sqlite, 'user_6');
        const tamper: Response = await fetch(`${url}/v1/namespaces/workspace:user_6/memories`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ id: rowUuid(victim), content: 'tampered with', kind: 'fact', source: 'agent' }),
        });
        assert.equal(tamper.status, 201);
        const bad = await runCli(['verify', '--sqlite', sqlite, '--to-plugin', url!]);
        assert.equal(bad.code, 3, bad.stdout + bad.stderr);
        assert.match(bad.stderr, new RegExp(`${victim} \\(user_6, workspace:user_6\\) — content: content differs`));
      } finally {
        serve.child.kill('SIGTERM');
        await serve.done;
        if (t.pgliteDir) rmSync(t.pgliteDir, { recursive: true, force: true });
      }
    });
  }
});

// `memory-migrate serve` against the memory-plugin v1 contract suite (test/helpers/plugin-contract.ts),
// on both targets, started as a child process through the CLI; the same suite against the
// in-memory plugin of test/helpers/in-memory-plugin.ts; then what only serve has: the
// migrated fixture served at once in the template's namespaces with the deterministic ids,
// an adopted app's table, the embedder's hybrid search, the refusals, and a clean stop.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testTargets } from '../helpers/targets.js';
import { FIXTURE, runCli, targetArgs, parseJson } from '../helpers/cli.js';
import { freshTarget, startCli, withDb, type RunningCli } from '../helpers/rerun.js';
import { client, runContractSuite, type StartedPlugin } from '../helpers/plugin-contract.js';
import { startInMemoryPlugin } from '../helpers/in-memory-plugin.js';
import { startTcpProxy } from '../helpers/tcp-proxy.js';
import type { TargetOptions } from '../../src/postgres/connection.js';
import { rowUuid } from '../../src/postgres/row-uuid.js';
import { contentHash, dedupHash } from '../../src/source/canonical.js';
import { namespaceFor } from '../../src/plugin-namespace.js';

const ONE_MIB = 1024 * 1024;

interface RunningServe {
  url: string;
  cli: RunningCli;
  /** SIGTERM, and the exit: code 0 and exactly one line on stdout. */
  stop(): Promise<void>;
}

async function startServe(t: TargetOptions, opts: { token?: string; args?: string[] } = {}): Promise<RunningServe> {
  const cli = startCli(['serve', ...targetArgs(t), '--listen', '127.0.0.1:0', ...(opts.args ?? [])], { MEMORY_PLUGIN_TOKEN: opts.token }, 900_000);
  await cli.waitFor(/listening on http:\/\/\S+\n/);
  const m = /^listening on (http:\/\/127\.0\.0\.1:(\d+))\n$/.exec(cli.stdout);
  if (!m) throw new Error(`serve did not start (stdout ${JSON.stringify(cli.stdout)}):\n${cli.stderr}`);
  assert.notEqual(m[2], '0', 'the real port is printed, not 0');
  return {
    url: m[1]!,
    cli,
    async stop() {
      cli.child.kill('SIGTERM');
      const r = await cli.done;
      assert.equal(r.code, 0, `serve exits 0 on SIGTERM:\n${r.stderr}`);
      assert.equal(r.stdout, `listening on ${m[1]}\n`, 'stdout holds the one listening line');
      if (opts.token) assert.ok(!r.stderr.includes(opts.token) && !r.stdout.includes(opts.token), 'the token is never printed');
    },
  };
}

const token = () => randomBytes(16).toString('hex');

for (const target of testTargets()) {
  runContractSuite(`serve on ${target.name}`, async (): Promise<StartedPlugin> => {
    const t = await freshTarget(target);
    const secret = token();
    if (t.databaseUrl) {
      // serve talks to PostgreSQL through a proxy the test can cut.
      const u = new URL(t.databaseUrl);
      const proxy = await startTcpProxy(u.hostname, Number(u.port || 5432));
      u.hostname = '127.0.0.1';
      u.port = String(proxy.port);
      const serve = await startServe({ databaseUrl: u.toString() }, { token: secret });
      return {
        url: serve.url,
        token: secret,
        embeddingDims: 1536,
        maxBodyBytes: ONE_MIB,
        storeDown: () => proxy.down(),
        storeUp: () => proxy.up(),
        async stop() {
          await serve.stop();
          await proxy.close();
        },
      };
    }
    const serve = await startServe(t, { token: secret });
    return { url: serve.url, token: secret, embeddingDims: 1536, maxBodyBytes: ONE_MIB, stop: () => serve.stop().then(() => removeDir(t)) };
  });
}

runContractSuite('in-memory plugin (test/helpers/in-memory-plugin.ts)', async () => {
  const secret = token();
  const plugin = await startInMemoryPlugin({ token: secret, embeddingDims: 1536 });
  return { url: plugin.url, token: secret, embeddingDims: 1536, stop: () => plugin.close(), storeDown: () => plugin.storeDown(), storeUp: () => plugin.storeUp() };
});

/** The migrated fixture's rows: id, uuid and user of every memory. */
async function migratedRows(t: TargetOptions): Promise<{ id: string; uuid: string; user_id: string }[]> {
  return withDb(t, (db) => db.query<{ id: string; uuid: string; user_id: string }>(`SELECT id, uuid::text AS uuid, user_id FROM memories ORDER BY id`));
}

const SERIAL_APP = `
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE memories (
  id          SERIAL PRIMARY KEY,
  user_id     VARCHAR(255) NOT NULL,
  content     TEXT NOT NULL,
  embedding   vector(384),
  metadata    JSONB DEFAULT '{}',
  status      TEXT NOT NULL DEFAULT 'active',
  created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);`;

async function appColumns(t: TargetOptions): Promise<string[]> {
  return withDb(t, async (db) =>
    (
      await db.query<{ c: string }>(
        `SELECT column_name || ' ' || data_type AS c FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'memories' ORDER BY ordinal_position`,
      )
    ).map((r) => r.c),
  );
}

for (const target of testTargets()) {
  describe(`serve on the migrated fixture (${target.name})`, () => {
    test('migrated memories are served at once: each user in its namespace, with the deterministic ids; HTTP writes land in memories', async () => {
      const t = await freshTarget(target);
      const m = await runCli(['migrate', '--sqlite', FIXTURE, ...targetArgs(t), '--embedder', 'local', '--skip-test', '--json']);
      assert.equal(m.code, 0, m.stderr);
      assert.ok(parseJson(m).memories.migrated > 200);
      const rows = await migratedRows(t);
      const byUser = new Map<string, string[]>();
      for (const r of rows) {
        assert.equal(r.uuid, rowUuid(r.id), 'the stored uuid is the row UUID of the source id');
        byUser.set(r.user_id, [...(byUser.get(r.user_id) ?? []), r.uuid]);
      }
      assert.ok(byUser.size >= 6);

      const serve = await startServe(t, { args: ['--embedder', 'local'] });
      const c = client({ url: serve.url });
      try {
        const health = await c.health();
        assert.deepEqual(health.json.capabilities, ['fts', 'embedding', 'ttl', 'pin', 'propagation']);
        for (const [user, uuids] of byUser) {
          const name = namespaceFor('workspace:{user}', user);
          const r = await c.search({ namespaces: [name], limit: 100 });
          assert.equal(r.status, 200, r.text);
          assert.ok(uuids.length <= 100);
          assert.deepEqual(new Set(r.json.memories.map((x: any) => x.id)), new Set(uuids), `${name}: every migrated memory of ${user}, by its row UUID`);
          for (const x of r.json.memories) {
            assert.ok(uuids.includes(x.id), `${x.id} is one of ${user}'s row UUIDs`);
            assert.equal(x.namespace, name);
            assert.equal(x.kind, 'fact');
            assert.equal(x.source, 'agent');
          }
        }
        // The exact ids of one user, checked one by one.
        const [user1] = [...byUser.entries()].filter(([u]) => u === 'user_1');
        assert.ok(user1);
        const listed = await c.search({ namespaces: ['workspace:user_1'], limit: 100 });
        assert.deepEqual(listed.json.memories.map((x: any) => x.id).sort(), [...user1[1]].sort());

        // Full-text search over migrated content, and the hybrid score (query embedded by the local embedder).
        const fts = await c.search({ namespaces: ['workspace:user_1'], query: 'descale' });
        assert.equal(fts.status, 200, fts.text);
        assert.ok(fts.json.memories.length > 0, 'a word of the fixture is found');
        assert.match(fts.json.memories[0].content, /descal/i, 'the full-text match ranks first');

        // A commit into a migrated user's namespace (no PUT needed: the user's memories make it exist).
        const w = await c.commit('workspace:user_1', { content: 'Served over HTTP: user prefers tabs', kind: 'summary', source: 'user', pin: true });
        assert.equal(w.status, 201, w.text);
        const top = await c.search({ namespaces: ['workspace:user_1'], query: 'tabs' });
        assert.equal(top.json.memories[0].id, w.json.id);
        assert.equal(top.json.memories[0].pin, true);
        // Forget a migrated memory by its row UUID.
        const gone = user1[1][0]!;
        assertStatus(await c.forget(gone, { requested_by_namespace: 'workspace:user_2' }), 404);
        assertStatus(await c.forget(gone, { requested_by_namespace: 'workspace:user_1' }), 204);
      } finally {
        await serve.stop();
      }
      await withDb(t, async (db) => {
        const [row] = await db.query(`SELECT id, uuid::text AS uuid, user_id, content, content_hash, dedup_hash, embedding IS NOT NULL AS has_vector, embedding_model FROM memories WHERE content LIKE 'Served over HTTP%'`);
        assert.ok(row, 'the HTTP commit is a row of memories');
        assert.equal(row['user_id'], 'user_1');
        assert.equal(row['content_hash'], contentHash(row['content']));
        assert.equal(row['dedup_hash'], dedupHash(row['content']));
        assert.equal(row['has_vector'], true, 'embedded by the configured embedder');
        assert.equal(row['embedding_model'], 'local-hash-v1');
        assert.equal(Number((await db.query(`SELECT count(*) AS n FROM memories`))[0]!['n']), rows.length, 'one added, one forgotten');
      });
      removeDir(t);
    });

    test("adopted mode: serve on an app's own table (commit, search, forget), and the app's table gains no column", async () => {
      const t = await freshTarget(target);
      await withDb(t, (db) => db.exec(SERIAL_APP));
      const before = await appColumns(t);
      const m = await runCli(['migrate', '--sqlite', FIXTURE, ...targetArgs(t), '--embedder', 'local', '--skip-test', '--json']);
      assert.equal(m.code, 0, m.stderr);
      assert.equal(parseJson(m).cutover.mode, 'adopted');
      const [first] = await withDb(t, (db) =>
        db.query<{ id: string; user_id: string }>(`SELECT id, user_id FROM memory_migrate.memories WHERE id IN (SELECT min(source_id) FROM memory_migrate.memory_links)`),
      );
      const sourceId = first!.id;
      const serve = await startServe(t, { args: ['--embedder', 'local'] });
      const c = client({ url: serve.url });
      let written: string;
      try {
        assert.equal((await c.put('team:baristas', { kind: 'team' })).status, 200);
        const id = '5d0c8a8e-2f8e-4c11-9d7e-2b1f0c3a4e55';
        const w = await c.commit('team:baristas', { id, content: 'the grinder on bar 2 is set to 14', kind: 'fact', source: 'agent' });
        assert.equal(w.status, 201, w.text);
        assert.equal(w.json.id, id);
        written = id;
        const again = await c.commit('team:baristas', { id, content: 'the grinder on bar 2 is set to 15', kind: 'fact', source: 'agent' });
        assert.equal(again.status, 201, again.text);
        const found = await c.search({ namespaces: ['team:baristas'], query: 'grinder' });
        assert.deepEqual(found.json.memories.map((x: any) => [x.id, x.content]), [[id, 'the grinder on bar 2 is set to 15']]);
        // A migrated row of the app's table, by its row UUID.
        const ns = namespaceFor('workspace:{user}', first!.user_id);
        const listed = await c.search({ namespaces: [ns], limit: 100 });
        assert.ok(listed.json.memories.some((x: any) => x.id === rowUuid(sourceId)));
        assertStatus(await c.forget(rowUuid(sourceId), { requested_by_namespace: ns }), 204);
        assert.ok(!(await c.search({ namespaces: [ns], limit: 100 })).json.memories.some((x: any) => x.id === rowUuid(sourceId)));
        // The committed one too, once checked in the app's table below.
      } finally {
        await serve.stop();
      }
      assert.deepEqual(await appColumns(t), before, 'no app column is added, dropped or changed');
      await withDb(t, async (db) => {
        const rows = await db.query(`SELECT a.content, a.user_id, a.status FROM public.memories a WHERE a.content LIKE 'the grinder on bar 2%'`);
        assert.deepEqual(JSON.parse(JSON.stringify(rows)), [{ content: 'the grinder on bar 2 is set to 15', user_id: 'team:baristas', status: 'active' }], "the HTTP write is one row of the app's table");
        const [link] = await db.query(`SELECT content_hash FROM memory_migrate.memory_links WHERE source_id = $1`, [written]);
        assert.equal(link!['content_hash'], contentHash('the grinder on bar 2 is set to 15'));
        assert.equal((await db.query(`SELECT 1 FROM memory_migrate.memories WHERE id = $1`, [sourceId])).length, 0, 'the forgotten migrated row is gone from the app table');
      });
      const again = await startServe(t);
      try {
        const c2 = client({ url: again.url });
        assertStatus(await c2.forget(written, { requested_by_namespace: 'team:baristas' }), 204);
      } finally {
        await again.stop();
      }
      await withDb(t, async (db) => {
        assert.equal((await db.query(`SELECT 1 FROM public.memories WHERE content LIKE 'the grinder on bar 2%'`)).length, 0);
      });
      removeDir(t);
    });
  });
}

/** A PGlite directory of a passed test (a failed one is kept to look at). */
function removeDir(t: TargetOptions): void {
  if (t.pgliteDir) rmSync(t.pgliteDir, { recursive: true, force: true });
}

function assertStatus(r: { status: number; text: string }, status: number): void {
  assert.equal(r.status, status, r.text);
}

describe('serve: refusals and stopping', () => {
  test('bad input is one line and exit 2, before anything is opened; the token is never printed', async () => {
    const t = { pgliteDir: '/nonexistent/never-created' };
    const secret = 'tok-' + token();
    const cases: [string[], Record<string, string>, RegExp][] = [
      [['--listen', '0.0.0.0:0'], {}, /refusing to listen on 0\.0\.0\.0 without a token: pass --token/],
      [['--listen', 'nonsense'], {}, /--listen must be HOST:PORT/],
      [['--listen', '127.0.0.1:70000'], {}, /--listen must be HOST:PORT/],
      [['--namespace-template', 'workspace'], {}, /must contain \{user\} exactly once/],
      [['--namespace-template', 'Workspace:{user}'], {}, /does not give a valid namespace name/],
      [['--token', ' '], {}, /the token is empty/],
      [['--listen', '0.0.0.0:0', '--embedder', 'local', '--dimensions', 'x'], { MEMORY_PLUGIN_TOKEN: secret }, /--dimensions must be a whole number/],
    ];
    for (const [args, env, re] of cases) {
      const r = await runCli(['serve', ...targetArgs(t), ...args], env);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re);
      assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
      assert.ok(!r.stderr.includes(secret) && !r.stdout.includes(secret));
    }
  });

  test('SIGTERM while a request is in flight: the request is answered, then serve exits 0', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'mm-pglite-'));
    const serve = await startServe({ pgliteDir: dir });
    const c = client({ url: serve.url });
    const name = 'workspace:in-flight';
    assert.equal((await c.put(name, { kind: 'workspace' })).status, 200);
    const body = JSON.stringify({ content: 'written while stopping', kind: 'fact', source: 'agent' });
    const url = new URL(`${serve.url}/v1/namespaces/${name}/memories`);
    // The headers first: serve's 100 Continue says the request is being handled. Then SIGTERM,
    // and the body only once serve has said it is stopping.
    const answer = new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = request(url, { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), expect: '100-continue' } }, (res) => {
        let text = '';
        res.on('data', (d) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      });
      req.on('error', reject);
      req.on('continue', () => {
        serve.cli.waitFor(/SIGTERM: finishing the requests in flight/).then(() => req.end(body));
        serve.cli.child.kill('SIGTERM');
      });
      req.flushHeaders();
    });
    const r = await answer;
    assert.equal(r.status, 201, r.text);
    const done = await serve.cli.done;
    assert.equal(done.code, 0, done.stderr);
    rmSync(dir, { recursive: true, force: true });
  });
});

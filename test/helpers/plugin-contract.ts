// The memory-plugin v1 contract as a test suite, over real HTTP (global fetch), written from
// the contract notes (/work/shared/reference/memory-plugin-v1.md) and not from any one
// implementation: it runs against `memory-migrate serve` on both targets and against the
// minimal in-memory plugin of test/helpers/in-memory-plugin.ts, so a check that only our
// server passes is a check of our server, not of the contract.
//
// What it covers: the harness checks of §6 (round trip, idempotency key, TTL eviction, 100
// parallel writes, 503 while the store is down and recovery), every validation rule and
// every error status of §1-§4, the golden bodies of test/fixtures/plugin-v1/, and the
// optional bearer token when the plugin under test was started with one.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';

export interface StartedPlugin {
  url: string;
  /** The bearer token the plugin requires, if it was started with one. */
  token?: string;
  stop(): Promise<void>;
  /** Makes the plugin's store unreachable (omitted where the test cannot do that). */
  storeDown?(): void | Promise<void>;
  storeUp?(): void | Promise<void>;
  /** Width of the vectors the plugin stores, when it stores vectors of one width. */
  embeddingDims?: number;
  /** The largest request body the plugin accepts, in bytes. */
  maxBodyBytes?: number;
}

const GOLDEN = new URL('../../../test/fixtures/plugin-v1/', import.meta.url);

export function golden(name: string): any {
  return JSON.parse(readFileSync(new URL(name, GOLDEN), 'utf8'));
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;
const CAPABILITIES = ['embedding', 'fts', 'ttl', 'pin', 'propagation'];
const ERROR_CODES = ['bad_request', 'not_found', 'forbidden', 'internal', 'unavailable'];

/** Deep comparison with the golden placeholders; the message names the path that differs. */
export function matchGolden(actual: unknown, expected: unknown, path = '$'): void {
  if (expected === '<uuid>') return assert.match(String(actual), UUID, `${path} is not a UUID: ${JSON.stringify(actual)}`);
  if (expected === '<date-time>') {
    assert.equal(typeof actual, 'string', `${path} is not a date-time string`);
    assert.match(actual as string, DATE_TIME, `${path} is not RFC 3339: ${actual}`);
    return;
  }
  if (expected === '<number>') return assert.equal(typeof actual, 'number', `${path} is not a number: ${JSON.stringify(actual)}`);
  if (expected === '<capabilities>') {
    assert.ok(Array.isArray(actual), `${path} is not an array`);
    for (const c of actual as unknown[]) assert.ok(CAPABILITIES.includes(c as string), `${path}: unknown capability ${JSON.stringify(c)}`);
    return;
  }
  if (Array.isArray(expected)) {
    assert.ok(Array.isArray(actual), `${path} is not an array: ${JSON.stringify(actual)}`);
    assert.equal((actual as unknown[]).length, expected.length, `${path} has ${(actual as unknown[]).length} items, expected ${expected.length}`);
    expected.forEach((e, i) => matchGolden((actual as unknown[])[i], e, `${path}[${i}]`));
    return;
  }
  if (expected !== null && typeof expected === 'object') {
    assert.ok(actual !== null && typeof actual === 'object' && !Array.isArray(actual), `${path} is not an object: ${JSON.stringify(actual)}`);
    assert.deepEqual(Object.keys(actual as object).sort(), Object.keys(expected).sort(), `${path} has other keys`);
    for (const [k, v] of Object.entries(expected)) matchGolden((actual as Record<string, unknown>)[k], v, `${path}.${k}`);
    return;
  }
  assert.deepEqual(actual, expected, `${path} differs`);
}

export interface Reply {
  status: number;
  json: any;
  text: string;
  contentType: string | null;
}

export function client(plugin: { url: string; token?: string }) {
  async function call(method: string, path: string, body?: unknown, opts: { raw?: string; auth?: string | null } = {}): Promise<Reply> {
    const headers: Record<string, string> = { accept: 'application/json' };
    const auth = opts.auth === undefined ? (plugin.token ? `Bearer ${plugin.token}` : null) : opts.auth;
    if (auth) headers['authorization'] = auth;
    let payload: string | undefined;
    if (opts.raw !== undefined) payload = opts.raw;
    else if (body !== undefined) payload = JSON.stringify(body);
    if (payload !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(plugin.url + path, { method, headers, ...(payload !== undefined ? { body: payload } : {}) });
    const text = await res.text();
    let json: any = undefined;
    if (text.length > 0) {
      try {
        json = JSON.parse(text);
      } catch {
        json = undefined;
      }
    }
    return { status: res.status, json, text, contentType: res.headers.get('content-type') };
  }
  return {
    call,
    health: () => call('GET', '/v1/health'),
    put: (name: string, body: unknown) => call('PUT', `/v1/namespaces/${name}`, body),
    patch: (name: string, body: unknown) => call('PATCH', `/v1/namespaces/${name}`, body),
    del: (name: string) => call('DELETE', `/v1/namespaces/${name}`),
    commit: (name: string, body: unknown) => call('POST', `/v1/namespaces/${name}/memories`, body),
    search: (body: unknown) => call('POST', '/v1/search', body),
    forget: (id: string, body: unknown) => call('DELETE', `/v1/memories/${id}`, body),
  };
}

/** An error answer: this status, the envelope, a code of the enum (and this one when given). */
export function assertError(r: Reply, status: number, code?: string): void {
  assert.equal(r.status, status, `expected ${status}, got ${r.status}: ${r.text}`);
  assert.ok(r.json && typeof r.json === 'object', `the body is not the error envelope: ${r.text}`);
  assert.ok(ERROR_CODES.includes(r.json.code), `code ${JSON.stringify(r.json.code)} is not one of the contract's`);
  assert.equal(typeof r.json.message, 'string');
  assert.ok(r.json.message.length > 0, 'the message is empty');
  if (code !== undefined) assert.equal(r.json.code, code);
  if (r.json.details !== undefined && r.json.details !== null) assert.equal(typeof r.json.details, 'object');
}

const fact = (content: string, extra: Record<string, unknown> = {}) => ({ content, kind: 'fact', source: 'agent', ...extra });

/** A namespace name of its own for each test, so tests never see each other's memories. */
function ns(prefix = 'workspace'): string {
  return `${prefix}:t-${randomUUID()}`;
}

/** A unit vector along axis i. */
function axis(dims: number, i: number, weight = 1): number[] {
  const v = new Array<number>(dims).fill(0);
  v[i] = weight;
  return v;
}

export function runContractSuite(name: string, start: () => Promise<StartedPlugin>): void {
  describe(`memory-plugin v1 contract: ${name}`, () => {
    let plugin: StartedPlugin;
    let c: ReturnType<typeof client>;

    before(async () => {
      plugin = await start();
      c = client(plugin);
    });
    after(async () => {
      await plugin?.stop();
    });

    async function freshNamespace(prefix = 'workspace', kind = 'workspace'): Promise<string> {
      const name = ns(prefix);
      const r = await c.put(name, { kind });
      assert.equal(r.status, 200, r.text);
      return name;
    }

    async function commitOk(name: string, body: unknown): Promise<string> {
      const r = await c.commit(name, body);
      assert.equal(r.status, 201, r.text);
      assert.match(r.json.id, UUID);
      assert.equal(r.json.namespace, name);
      return r.json.id;
    }

    async function searchOk(body: unknown): Promise<any[]> {
      const r = await c.search(body);
      assert.equal(r.status, 200, r.text);
      assert.ok(Array.isArray(r.json.memories), `memories is not an array: ${r.text}`);
      return r.json.memories;
    }

    // ---------------------------------------------------------------- §6 harness checks

    test('health: 200 ok with version 1.0.0 and known capabilities, as JSON (golden)', async () => {
      const r = await c.health();
      assert.equal(r.status, 200, r.text);
      assert.match(r.contentType ?? '', /^application\/json/);
      matchGolden(r.json, golden('health_ok.response.json'));
    });

    test('round trip: PUT namespace, commit, search by query finds it, forget removes it', async () => {
      const name = ns('workspace').replace('t-', 'test-1-');
      assert.equal((await c.put(name, { kind: 'workspace' })).status, 200);
      const id = await commitOk(name, fact('hello'));
      const found = await searchOk({ namespaces: [name], query: 'hello' });
      assert.ok(found.some((m) => m.id === id), 'the committed memory is found by its word');
      const f = await c.forget(id, { requested_by_namespace: name });
      assert.equal(f.status, 204, f.text);
      assert.equal(f.text, '', '204 has no body');
      assert.deepEqual(await searchOk({ namespaces: [name] }), []);
    });

    test('idempotency key: the same id twice is one row, with the second content; the id is echoed', async () => {
      const name = await freshNamespace();
      const id = '11111111-2222-3333-4444-555555555555';
      const first = await c.commit(name, fact('first version', { id }));
      assert.equal(first.status, 201, first.text);
      assert.equal(first.json.id, id);
      const second = await c.commit(name, fact('second version (updated)', { id }));
      assert.equal(second.status, 201, second.text);
      assert.equal(second.json.id, id);
      const rows = (await searchOk({ namespaces: [name] })).filter((m) => m.id === id);
      assert.equal(rows.length, 1, 'exactly one row carries the id');
      assert.equal(rows[0].content, 'second version (updated)');
      // An upper-case id is the same UUID.
      const third = await c.commit(name, fact('third version', { id: id.toUpperCase() }));
      assert.equal(third.status, 201, third.text);
      const again = (await searchOk({ namespaces: [name] })).filter((m) => m.id.toLowerCase() === id);
      assert.equal(again.length, 1);
      assert.equal(again[0].content, 'third version');
    });

    test('TTL: an expired memory is never returned; one expiring in a moment disappears once it has expired', async () => {
      const name = await freshNamespace();
      const soon = new Date(Date.now() + 1500);
      const soonId = await commitOk(name, fact('ttl soon', { expires_at: soon.toISOString() }));
      const pastId = await commitOk(name, fact('ttl past', { expires_at: new Date(Date.now() - 3_600_000).toISOString() }));
      const laterId = await commitOk(name, fact('ttl later', { expires_at: new Date(Date.now() + 3_600_000).toISOString() }));
      const now = await searchOk({ namespaces: [name] });
      assert.ok(!now.some((m) => m.id === pastId), 'an expired memory is not listed');
      assert.ok(!(await searchOk({ namespaces: [name], query: 'ttl past' })).some((m) => m.id === pastId), 'nor found by query');
      const later = now.find((m) => m.id === laterId);
      assert.ok(later, 'a memory that has not expired is listed');
      assert.match(later.expires_at, DATE_TIME);
      // Wait until the clock is past the first one's expiry (the harness sleeps 2 s).
      while (Date.now() < soon.getTime() + 500) await new Promise((r) => setTimeout(r, 100));
      const after = await searchOk({ namespaces: [name] });
      assert.ok(!after.some((m) => m.id === soonId), 'the memory that expired meanwhile is gone');
      assert.ok(after.some((m) => m.id === laterId));
    });

    test('concurrency: 100 parallel commits make 100 rows with 100 distinct ids', async () => {
      const name = await freshNamespace();
      const replies = await Promise.all(Array.from({ length: 100 }, (_, i) => c.commit(name, fact(`parallel write ${i}`))));
      for (const r of replies) assert.equal(r.status, 201, r.text);
      const ids = new Set(replies.map((r) => r.json.id));
      assert.equal(ids.size, 100, 'no id collisions');
      const rows = await searchOk({ namespaces: [name], limit: 100 });
      assert.equal(rows.length, 100);
      assert.deepEqual(new Set(rows.map((m) => m.id)), ids);
      assert.deepEqual(new Set(rows.map((m) => m.content)), new Set(Array.from({ length: 100 }, (_, i) => `parallel write ${i}`)));
    });

    test('concurrency: 20 parallel commits of one id are one row', async () => {
      const name = await freshNamespace();
      const id = randomUUID();
      const replies = await Promise.all(Array.from({ length: 20 }, (_, i) => c.commit(name, fact(`same id ${i}`, { id }))));
      for (const r of replies) {
        assert.equal(r.status, 201, r.text);
        assert.equal(r.json.id, id);
      }
      const rows = await searchOk({ namespaces: [name], limit: 100 });
      assert.equal(rows.length, 1);
      assert.equal(rows[0].id, id);
    });

    test('store down: 503 from health (envelope) and an envelope error from the others; recovers when it returns', async (t) => {
      if (!plugin.storeDown || !plugin.storeUp) return t.skip('this plugin cannot be made to lose its store from the test');
      const name = await freshNamespace();
      const id = await commitOk(name, fact('kept across the outage'));
      await plugin.storeDown();
      try {
        const h = await c.health();
        assertError(h, 503);
        assert.notEqual(h.json.code, 'bad_request');
        for (const r of [await c.search({ namespaces: [name] }), await c.commit(name, fact('while down')), await c.put(ns(), { kind: 'workspace' })]) {
          assert.ok(r.status >= 500, `a request while the store is down must fail with 5xx, not ${r.status} (${r.text})`);
          assertError(r, r.status);
          assert.ok(['unavailable', 'internal'].includes(r.json.code));
        }
      } finally {
        await plugin.storeUp();
      }
      // The plugin reconnects on its own: health answers 200 again within a few tries.
      let status = 0;
      for (let i = 0; i < 50 && status !== 200; i++) {
        status = (await c.health()).status;
        if (status !== 200) await new Promise((r) => setTimeout(r, 200));
      }
      assert.equal(status, 200, 'health is 200 again once the store is back');
      const rows = await searchOk({ namespaces: [name] });
      assert.deepEqual(rows.map((m) => m.id), [id], 'the data from before the outage is served again, and nothing written while down');
    });

    // ---------------------------------------------------------------- golden bodies

    test('golden: namespace upsert, memory write and search bodies (minimal and full)', async () => {
      const ws = 'workspace:550e8400-e29b-41d4-a716-446655440000';
      const team = 'team:660e8400-e29b-41d4-a716-446655440001';
      await c.del(ws);
      await c.del(team);
      const put = await c.put(ws, golden('namespace_upsert_workspace.request.json'));
      assert.equal(put.status, 200, put.text);
      matchGolden(put.json, golden('namespace_workspace.response.json'));
      const putFull = await c.put(team, golden('namespace_upsert_full.request.json'));
      assert.equal(putFull.status, 200, putFull.text);
      matchGolden(putFull.json, golden('namespace_full.response.json'));
      const patched = await c.patch(team, golden('namespace_patch_metadata.request.json'));
      assert.equal(patched.status, 200, patched.text);
      matchGolden(patched.json, golden('namespace_patched.response.json'));
      assert.equal(patched.json.created_at, putFull.json.created_at, 'PATCH keeps created_at');

      const w = await c.commit(ws, golden('memory_write_minimal.request.json'));
      assert.equal(w.status, 201, w.text);
      matchGolden(w.json, golden('memory_write_minimal.response.json'));
      const wf = await c.commit(team, golden('memory_write_full.request.json'));
      assert.equal(wf.status, 201, wf.text);
      matchGolden(wf.json, golden('memory_write_full.response.json'));

      const listed = await c.search({ namespaces: [ws] });
      assert.equal(listed.status, 200, listed.text);
      matchGolden(listed.json, golden('search_minimal_memory.response.json'));
      assert.equal(listed.json.memories[0].id, w.json.id);
      const found = await c.search({ namespaces: [team], query: 'espresso grinder' });
      assert.equal(found.status, 200, found.text);
      matchGolden(found.json, golden('search_full_memory.response.json'));

      const multi = await c.search(golden('search_request_multi_namespace.request.json'));
      assert.equal(multi.status, 200, multi.text);
      matchGolden(multi.json, golden('search_empty.response.json'));

      const forget = await c.forget(w.json.id, golden('forget_request.request.json'));
      assert.equal(forget.status, 204, forget.text);
      const missing = await c.patch(ns(), { metadata: {} });
      matchGolden(missing.json, golden('error_not_found.response.json'));
      assert.equal(missing.status, 404);
      assert.equal((await c.del(ws)).status, 204);
      assert.equal((await c.del(team)).status, 204);
    });

    // ---------------------------------------------------------------- namespaces

    test('namespace names: the valid forms of the contract are accepted', async () => {
      const valid = [
        'workspace:550e8400-e29b-41d4-a716-446655440000',
        'team:550e8400-e29b-41d4-a716-446655440000',
        'org:acme-corp',
        'custom:engineering-shared',
        'workspace:abc.def.ghi',
        'workspace:abc_def',
        'team:abc:def',
        'workspace:' + 'a'.repeat(256 - 'workspace:'.length),
      ];
      for (const name of valid) {
        const r = await c.put(name, { kind: 'custom' });
        assert.equal(r.status, 200, `${name}: ${r.text}`);
        assert.equal(r.json.name, name);
        assert.equal(r.json.kind, 'custom', 'the prefix is not checked against the kind');
      }
      for (const name of valid) assert.equal((await c.del(name)).status, 204);
    });

    test('namespace names: every invalid form is a 400 on every route that takes one', async () => {
      const invalid = ['workspace_self', ':foo', 'workspace:', 'WORKSPACE:abc', 'ws1:abc', 'workspace:a%20b', 'workspace:a%2Fb', 'workspace:' + 'a'.repeat(257 - 'workspace:'.length)];
      for (const name of invalid) {
        assertError(await c.put(name, { kind: 'workspace' }), 400, 'bad_request');
        assertError(await c.patch(name, { metadata: {} }), 400, 'bad_request');
        assertError(await c.del(name), 400, 'bad_request');
        assertError(await c.commit(name, fact('x')), 400, 'bad_request');
        const decoded = decodeURIComponent(name);
        assertError(await c.search({ namespaces: [decoded] }), 400, 'bad_request');
        assertError(await c.forget(randomUUID(), { requested_by_namespace: decoded }), 400, 'bad_request');
      }
    });

    test('PUT namespace: kind is required and one of the four; bad expires_at / metadata / body are 400', async () => {
      const name = ns();
      for (const body of [{}, { kind: '' }, { kind: 'bogus' }, { kind: 'Workspace' }, { kind: 7 }, { kind: 'team', expires_at: 'tomorrow' }, { kind: 'team', expires_at: 5 }, { kind: 'team', metadata: [1] }, { kind: 'team', metadata: 'x' }, [], 'workspace']) {
        assertError(await c.put(name, body), 400, 'bad_request');
      }
      assertError(await c.call('PUT', `/v1/namespaces/${name}`, undefined, { raw: '{"kind":' }), 400, 'bad_request');
      assertError(await c.call('PUT', `/v1/namespaces/${name}`), 400, 'bad_request');
      for (const kind of ['workspace', 'team', 'org', 'custom']) {
        const r = await c.put(name, { kind });
        assert.equal(r.status, 200, r.text);
        assert.equal(r.json.kind, kind);
      }
    });

    test('PUT namespace is an idempotent upsert: kind, expires_at and metadata are overwritten, created_at kept', async () => {
      const name = ns();
      const a = await c.put(name, { kind: 'team', expires_at: '2099-01-01T00:00:00Z', metadata: { a: 1 } });
      assert.equal(a.status, 200, a.text);
      assert.equal(Date.parse(a.json.expires_at), Date.parse('2099-01-01T00:00:00Z'));
      assert.deepEqual(a.json.metadata, { a: 1 });
      const b = await c.put(name, { kind: 'org' });
      assert.equal(b.status, 200, b.text);
      assert.equal(b.json.kind, 'org');
      assert.equal(b.json.expires_at ?? null, null, 'absent fields become unset');
      assert.equal(b.json.metadata ?? null, null);
      assert.equal(b.json.created_at, a.json.created_at);
    });

    test('PATCH namespace: an empty patch is 400, an unknown namespace 404, fields set only when given, {} clears metadata', async () => {
      const name = await freshNamespace('team', 'team');
      assertError(await c.patch(name, {}), 400, 'bad_request');
      assertError(await c.patch(name, { expires_at: null, metadata: null }), 400, 'bad_request');
      assertError(await c.patch(name, { expires_at: 'soon' }), 400, 'bad_request');
      assertError(await c.patch(name, { metadata: 3 }), 400, 'bad_request');
      assertError(await c.patch(ns(), { metadata: { a: 1 } }), 404, 'not_found');
      const m = await c.patch(name, { metadata: { owner: 'a' } });
      assert.equal(m.status, 200, m.text);
      assert.deepEqual(m.json.metadata, { owner: 'a' });
      assert.equal(m.json.kind, 'team');
      const e = await c.patch(name, { expires_at: '2098-05-06T07:08:09Z' });
      assert.equal(e.status, 200, e.text);
      assert.equal(Date.parse(e.json.expires_at), Date.parse('2098-05-06T07:08:09Z'));
      assert.deepEqual(e.json.metadata, { owner: 'a' }, 'metadata untouched by a patch of expires_at');
      const cleared = await c.patch(name, { metadata: {} });
      assert.equal(cleared.status, 200, cleared.text);
      assert.ok(cleared.json.metadata === undefined || JSON.stringify(cleared.json.metadata) === '{}', `metadata cleared: ${cleared.text}`);
    });

    test('DELETE namespace: 204 removes it and its memories; 404 when there is none', async () => {
      const name = await freshNamespace();
      const other = await freshNamespace();
      await commitOk(name, fact('goes with its namespace'));
      const kept = await commitOk(other, fact('stays in another namespace'));
      const d = await c.del(name);
      assert.equal(d.status, 204, d.text);
      assertError(await c.del(name), 404, 'not_found');
      assertError(await c.commit(name, fact('x')), 404, 'not_found');
      assert.equal((await c.put(name, { kind: 'workspace' })).status, 200);
      assert.deepEqual(await searchOk({ namespaces: [name] }), [], 'its memories went with it');
      assert.deepEqual((await searchOk({ namespaces: [other] })).map((m) => m.id), [kept]);
    });

    // ---------------------------------------------------------------- commit

    test('commit: content, kind and source are required and checked; 400 for each bad field', async () => {
      const name = await freshNamespace();
      const bad: unknown[] = [
        { kind: 'fact', source: 'agent' },
        fact(''),
        fact('   \n\t '),
        { ...fact('x'), content: 42 },
        { content: 'x', source: 'agent' },
        { content: 'x', kind: 'note', source: 'agent' },
        { content: 'x', kind: 'fact' },
        { content: 'x', kind: 'fact', source: 'system' },
        fact('x', { id: 'not-a-uuid' }),
        fact('x', { id: 12 }),
        fact('x', { pin: 'yes' }),
        fact('x', { expires_at: '2024-13-45' }),
        fact('x', { expires_at: 'next week' }),
        fact('x', { propagation: [1, 2] }),
        fact('x', { propagation: 'all' }),
        fact('x', { embedding: ['a', 'b'] }),
        fact('x', { embedding: 'vector' }),
        fact('x', { embedding: new Array(20000).fill(0.5) }),
        [],
        'content',
      ];
      for (const body of bad) assertError(await c.commit(name, body), 400, 'bad_request');
      assertError(await c.call('POST', `/v1/namespaces/${name}/memories`, undefined, { raw: '{"content": "x", ' }), 400, 'bad_request');
      assertError(await c.call('POST', `/v1/namespaces/${name}/memories`), 400, 'bad_request');
      assert.deepEqual(await searchOk({ namespaces: [name] }), [], 'nothing was written');
      for (const kind of ['fact', 'summary', 'checkpoint']) for (const source of ['agent', 'runtime', 'user']) await commitOk(name, { content: `${kind} ${source}`, kind, source });
      assert.equal((await searchOk({ namespaces: [name], limit: 100 })).length, 9);
    });

    test('commit: a vector of the wrong width is 400; one of the right width is stored', async (t) => {
      const dims = plugin.embeddingDims;
      if (!dims) return t.skip('the plugin under test stores vectors of any width');
      const name = await freshNamespace();
      assertError(await c.commit(name, fact('x', { embedding: axis(dims + 1, 0) })), 400, 'bad_request');
      assertError(await c.commit(name, fact('x', { embedding: axis(dims - 1, 0) })), 400, 'bad_request');
      await commitOk(name, fact('has a vector', { embedding: axis(dims, 0) }));
    });

    test('commit into a namespace that does not exist is 404 (the spec; the reference answers 500)', async () => {
      assertError(await c.commit(ns(), fact('nowhere to go')), 404, 'not_found');
    });

    test('commit: the optional fields come back as written; unknown fields are ignored', async () => {
      const name = await freshNamespace();
      const id = randomUUID();
      const r = await c.commit(name, { ...fact('all fields set'), id, kind: 'checkpoint', source: 'user', expires_at: '2099-02-03T04:05:06Z', propagation: { to: ['team'], n: 1.5, deep: { ok: true } }, pin: true, unknown_field: 'ignored' });
      assert.equal(r.status, 201, r.text);
      const [m] = await searchOk({ namespaces: [name] });
      assert.equal(m.id, id);
      assert.equal(m.namespace, name);
      assert.equal(m.content, 'all fields set');
      assert.equal(m.kind, 'checkpoint');
      assert.equal(m.source, 'user');
      assert.equal(Date.parse(m.expires_at), Date.parse('2099-02-03T04:05:06Z'));
      assert.deepEqual(m.propagation, { to: ['team'], n: 1.5, deep: { ok: true } });
      assert.equal(m.pin, true);
      assert.match(m.created_at, DATE_TIME);
      assert.equal(m.unknown_field, undefined);
      // Optional fields left out are absent (or null), never made up.
      const plain = await commitOk(name, fact('nothing optional'));
      const p = (await searchOk({ namespaces: [name] })).find((x) => x.id === plain);
      assert.ok(p);
      assert.equal(p.expires_at ?? null, null);
      assert.equal(p.propagation ?? null, null);
      assert.ok(p.pin === undefined || p.pin === false);
    });

    test('commit with an id upserts every field, and the content is searchable by its new words only', async () => {
      const name = await freshNamespace();
      const id = randomUUID();
      await commitOk(name, fact('zebra crossing', { id, pin: true, kind: 'summary' }));
      await commitOk(name, fact('giraffe neck', { id }));
      assert.deepEqual((await searchOk({ namespaces: [name], query: 'zebra' })).map((m) => m.id), []);
      const [m] = await searchOk({ namespaces: [name], query: 'giraffe' });
      assert.equal(m?.id, id);
      assert.equal(m.kind, 'fact');
      assert.ok(m.pin === undefined || m.pin === false, 'pin was overwritten');
    });

    // ---------------------------------------------------------------- search

    test('search: request validation (namespaces, query, kinds, limit, embedding)', async () => {
      const name = await freshNamespace();
      const bad: unknown[] = [
        {},
        { namespaces: [] },
        { namespaces: 'workspace:a' },
        { namespaces: [42] },
        { namespaces: ['Bad Name'] },
        { namespaces: [name], query: 5 },
        { namespaces: [name], kinds: ['fact', 'opinion'] },
        { namespaces: [name], kinds: 'fact' },
        { namespaces: [name], limit: 0 },
        { namespaces: [name], limit: 101 },
        { namespaces: [name], limit: -1 },
        { namespaces: [name], limit: 2.5 },
        { namespaces: [name], limit: '5' },
        { namespaces: [name], embedding: ['x'] },
        { namespaces: [name], embedding: { a: 1 } },
        { namespaces: [name], embedding: new Array(20000).fill(1) },
        [],
      ];
      for (const body of bad) assertError(await c.search(body), 400, 'bad_request');
      assertError(await c.call('POST', '/v1/search', undefined, { raw: 'not json' }), 400, 'bad_request');
      assertError(await c.call('POST', '/v1/search'), 400, 'bad_request');
      for (const limit of [1, 100]) assert.equal((await c.search({ namespaces: [name], limit })).status, 200);
    });

    test('search: limit defaults to 20 and is honoured up to 100', async () => {
      const name = await freshNamespace();
      await Promise.all(Array.from({ length: 25 }, (_, i) => commitOk(name, fact(`row ${i} limitword`))));
      assert.equal((await searchOk({ namespaces: [name] })).length, 20);
      assert.equal((await searchOk({ namespaces: [name], query: 'limitword' })).length, 20);
      assert.equal((await searchOk({ namespaces: [name], limit: 100 })).length, 25);
      assert.equal((await searchOk({ namespaces: [name], limit: 3 })).length, 3);
    });

    test('search: only the namespaces asked for; several at once; an empty result is an empty array', async () => {
      const a = await freshNamespace();
      const b = await freshNamespace('team', 'team');
      const other = await freshNamespace();
      const ia = await commitOk(a, fact('walrus in a'));
      const ib = await commitOk(b, fact('walrus in b'));
      await commitOk(other, fact('walrus elsewhere'));
      const both = await searchOk({ namespaces: [a, b], query: 'walrus' });
      assert.deepEqual(new Set(both.map((m) => m.id)), new Set([ia, ib]));
      for (const m of both) assert.equal(m.namespace, m.id === ia ? a : b);
      const r = await c.search({ namespaces: [ns()] });
      assert.equal(r.status, 200);
      assert.deepEqual(r.json, { memories: [] }, 'an array, never null');
    });

    test('search: a query of 2+ characters matches words with a numeric score; 1 character matches as a substring', async () => {
      const name = await freshNamespace();
      const coffee = await commitOk(name, fact('the customer likes strong coffee'));
      const tea = await commitOk(name, fact('the customer likes green tea'));
      const found = await searchOk({ namespaces: [name], query: 'coffee' });
      assert.deepEqual(found.map((m) => m.id), [coffee]);
      assert.equal(typeof found[0].score, 'number');
      assert.deepEqual((await searchOk({ namespaces: [name], query: 'pizza' })), []);
      const g = await searchOk({ namespaces: [name], query: 'g' });
      assert.deepEqual(new Set(g.map((m) => m.id)), new Set([coffee, tea]), '"g" is in "strong" and in "green"');
      assert.deepEqual((await searchOk({ namespaces: [name], query: 'q' })).map((m) => m.id), []);
    });

    test('search: the kinds filter', async () => {
      const name = await freshNamespace();
      const f = await commitOk(name, fact('kind filter row', { kind: 'fact' }));
      const s = await commitOk(name, fact('kind filter row', { kind: 'summary' }));
      const k = await commitOk(name, fact('kind filter row', { kind: 'checkpoint' }));
      assert.deepEqual((await searchOk({ namespaces: [name], kinds: ['summary'] })).map((m) => m.id), [s]);
      assert.deepEqual(new Set((await searchOk({ namespaces: [name], kinds: ['fact', 'checkpoint'], query: 'filter' })).map((m) => m.id)), new Set([f, k]));
      assert.equal((await searchOk({ namespaces: [name], kinds: [] })).length, 3, 'an empty kinds list filters nothing');
    });

    test('search: pinned rows come first, with a query and without', async () => {
      const name = await freshNamespace();
      await commitOk(name, fact('pinword pinword pinword unpinned best match'));
      const pinned = await commitOk(name, fact('pinword in a long pinned memory with many other words around it', { pin: true }));
      await commitOk(name, fact('pinword unpinned'));
      const byQuery = await searchOk({ namespaces: [name], query: 'pinword' });
      assert.equal(byQuery.length, 3);
      assert.equal(byQuery[0].id, pinned);
      assert.equal(byQuery[0].pin, true);
      const listed = await searchOk({ namespaces: [name] });
      assert.equal(listed[0].id, pinned);
      assert.equal((await searchOk({ namespaces: [name], query: 'w' }))[0].id, pinned);
    });

    test('search: without a query, the newest first', async () => {
      const name = await freshNamespace();
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) {
        ids.push(await commitOk(name, fact(`listed ${i}`)));
        // created_at must differ (clocks have a millisecond resolution at best).
        await new Promise((r) => setTimeout(r, 15));
      }
      assert.deepEqual((await searchOk({ namespaces: [name] })).map((m) => m.id), [...ids].reverse());
    });

    test('search by embedding: cosine order, nearest first, scores in [-1, 1]', async (t) => {
      const dims = plugin.embeddingDims;
      if (!dims) return t.skip('the plugin under test did not say the width of its vectors');
      const name = await freshNamespace();
      const near = await commitOk(name, fact('vector near', { embedding: axis(dims, 0) }));
      const mid = await commitOk(name, fact('vector mid', { embedding: [...axis(dims, 0, 0.5)].map((x, i) => (i === 1 ? 0.5 : x)) }));
      const far = await commitOk(name, fact('vector far', { embedding: axis(dims, 1) }));
      const found = await searchOk({ namespaces: [name], embedding: axis(dims, 0, 3) });
      assert.deepEqual(found.map((m) => m.id), [near, mid, far]);
      for (const m of found) assert.ok(typeof m.score === 'number' && m.score >= -1.0001 && m.score <= 1.0001, `score ${m.score}`);
      assert.ok(Math.abs(found[0].score - 1) < 1e-4);
    });

    // ---------------------------------------------------------------- forget

    test('forget: 404 from another namespace (the row stays), 404 for an unknown id, 400 without requested_by_namespace', async () => {
      const name = await freshNamespace();
      const other = await freshNamespace();
      const id = await commitOk(name, fact('not yours to forget'));
      assertError(await c.forget(id, { requested_by_namespace: other }), 404, 'not_found');
      assert.deepEqual((await searchOk({ namespaces: [name] })).map((m) => m.id), [id], 'still there');
      assertError(await c.forget(randomUUID(), { requested_by_namespace: name }), 404, 'not_found');
      assertError(await c.forget(id, {}), 400, 'bad_request');
      assertError(await c.forget(id, { requested_by_namespace: 7 }), 400, 'bad_request');
      assertError(await c.call('DELETE', `/v1/memories/${id}`), 400, 'bad_request');
      assertError(await c.call('DELETE', `/v1/memories/${id}`, undefined, { raw: '{' }), 400, 'bad_request');
      assert.equal((await c.forget(id, { requested_by_namespace: name })).status, 204);
      assertError(await c.forget(id, { requested_by_namespace: name }), 404, 'not_found');
    });

    // ---------------------------------------------------------------- routing and transport

    test('routing: unknown paths 404, wrong methods 404/405, empty names and ids 400, all in the envelope', async () => {
      const name = await freshNamespace();
      assertError(await c.call('GET', '/v1/nope'), 404, 'not_found');
      assertError(await c.call('GET', '/'), 404, 'not_found');
      assertError(await c.call('POST', '/v1/health', {}), 404, 'not_found');
      assertError(await c.call('GET', '/v1/search'), 404, 'not_found');
      assertError(await c.call('GET', `/v1/namespaces/${name}`), 405, 'bad_request');
      assertError(await c.call('POST', `/v1/namespaces/${name}`, { kind: 'workspace' }), 405, 'bad_request');
      assertError(await c.call('GET', `/v1/namespaces/${name}/memories`), 404, 'not_found');
      assertError(await c.call('POST', `/v1/namespaces/${name}/other`, fact('x')), 404, 'not_found');
      assertError(await c.call('PUT', '/v1/namespaces/', { kind: 'workspace' }), 400, 'bad_request');
      assertError(await c.call('DELETE', '/v1/memories/', { requested_by_namespace: name }), 400, 'bad_request');
      assertError(await c.call('GET', `/v1/memories/${randomUUID()}`), 404, 'not_found');
      // The client leaves ':' unescaped; an escaped one names the same namespace.
      const r = await c.commit(name.replace(':', '%3A'), fact('escaped colon'));
      assert.equal(r.status, 201, r.text);
      assert.equal(r.json.namespace, name);
    });

    test('a request body over the size limit is 413 in the envelope, and the plugin keeps serving', async () => {
      const name = await freshNamespace();
      const limit = plugin.maxBodyBytes ?? 16 * 1024 * 1024;
      const big = fact('x'.repeat(limit + 1024));
      assertError(await c.commit(name, big), 413);
      assert.equal((await c.health()).status, 200);
      await commitOk(name, fact('small enough'));
    });

    test('bearer token: every route but health needs it when the plugin has one', async (t) => {
        if (!plugin.token) return t.skip('the plugin under test was started without a token');
        const name = await freshNamespace();
        const noAuth = [
          () => c.call('PUT', `/v1/namespaces/${ns()}`, { kind: 'workspace' }, { auth: null }),
          () => c.call('POST', `/v1/namespaces/${name}/memories`, fact('x'), { auth: null }),
          () => c.call('POST', '/v1/search', { namespaces: [name] }, { auth: null }),
          () => c.call('DELETE', `/v1/namespaces/${name}`, undefined, { auth: `Bearer ${plugin.token}x` }),
          () => c.call('POST', '/v1/search', { namespaces: [name] }, { auth: `Basic ${plugin.token}` }),
          () => c.call('POST', '/v1/search', { namespaces: [name] }, { auth: 'Bearer ' }),
        ];
        for (const call of noAuth) {
          const r = await call();
          assert.ok(r.status === 401 || r.status === 403, `expected 401/403, got ${r.status}`);
          assertError(r, r.status);
        }
        assert.equal((await c.call('GET', '/v1/health', undefined, { auth: null })).status, 200, 'health needs no token');
        assert.deepEqual(await searchOk({ namespaces: [name] }), [], 'nothing was written without the token');
      });
  });
}

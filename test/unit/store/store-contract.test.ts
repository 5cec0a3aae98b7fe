// One memory-store contract, run unchanged against every backend: the app's SQLite file,
// embedded PGlite and (with TEST_DATABASE_URL) a real PostgreSQL. Each backend only says how
// to open a fresh store, how to put prompt fragments where that backend keeps them, and how
// to count logged searches; every assertion is shared.
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testTargets } from '../../helpers/targets.js';
import { openDb, type Db } from '../../../src/postgres/connection.js';
import { installSchema } from '../../../src/postgres/schema.js';
import { writeFragments } from '../../../src/postgres/writer.js';
import { fragmentFromSource } from '../../../src/postgres/fragments.js';
import { LocalProvider } from '../../../src/embed/local-provider.js';
import { emptyEmbedStats } from '../../../src/embed/types.js';
import { openMemoryStore, resolveMemoryType } from '../../../src/store/index.js';
import { SqliteMemoryStore } from '../../../src/store/sqlite-store.js';
import type { MemoryStore, TextEmbedder } from '../../../src/store/types.js';
import type { SourceRow } from '../../../src/source/types.js';
import { readMetadata } from '../../../src/source/metadata.js';

export function localEmbedder(dimensions = 384): TextEmbedder {
  const provider = new LocalProvider({ dimensions });
  return {
    model: provider.model,
    dimensions: provider.dimensions,
    async embed(texts: string[]) {
      const out = await provider.embed(texts.map((text) => ({ text })), emptyEmbedStats());
      return out.map((r) => {
        if (!('vector' in r)) throw new Error(r.rejected);
        return r.vector;
      });
    },
  };
}

/** A prompt fragment as the app wrote it: a system_prompts row with metadata. */
interface FragmentDef {
  id: string;
  content: string;
  metadata: Record<string, unknown>;
}

interface Harness {
  store: MemoryStore;
  seedFragments(defs: FragmentDef[]): Promise<void>;
  analyticsCount(userId: string): Promise<number>;
  close(): Promise<void>;
}

type Factory = () => Promise<Harness>;

function sourceRowOf(f: FragmentDef): SourceRow {
  return {
    rowid: 0,
    id: f.id,
    userId: 'system_prompts',
    content: f.content,
    contentBytes: Buffer.byteLength(f.content),
    embedding: { encoding: 'null', vector: null },
    metadata: readMetadata(JSON.stringify(f.metadata)),
    createdAt: new Date('2024-05-01T10:00:00Z'),
    updatedAt: null,
  };
}

const FRAGMENTS: FragmentDef[] = [
  { id: 'frag_core_all', content: 'Greet the customer by name.', metadata: { type: 'system_prompt', category: 'general_guidelines', priority: 'high', agent_type: 'all', context_tier: 'core' } },
  { id: 'frag_sales_core', content: 'Mention the grinder bundle once.', metadata: { type: 'system_prompt', category: 'sales_guidelines', priority: 'medium', agent_type: 'sales', context_tier: 'core' } },
  { id: 'frag_std_noagent', content: 'Quote specs from the catalogue only.', metadata: { type: 'system_prompt', category: 'product_guidelines', priority: 'low' } },
  { id: 'frag_full_all', content: 'Use remembered preferences.', metadata: { type: 'system_prompt', category: 'memory_usage', priority: 'high', agent_type: 'all', context_tier: 'full' } },
  { id: 'frag_products_core', content: 'Describe products from facts.', metadata: { type: 'system_prompt', category: 'product_facts', priority: 'high', agent_type: 'products', context_tier: 'core' } },
  { id: 'frag_numeric', content: 'Escalate refunds above $500.', metadata: { type: 'system_prompt', category: 'refunds', priority: 7, agent_type: 'sales', context_tier: 'standard' } },
  { id: 'frag_inactive', content: 'An old rule nobody uses.', metadata: { type: 'system_prompt', category: 'old', priority: 'high', agent_type: 'all', context_tier: 'core', is_active: false } },
];

export function memoryStoreContract(name: string, factory: Factory, teardown?: () => Promise<void>): void {
  const withStore = async (fn: (h: Harness) => Promise<void>) => {
    const h = await factory();
    try {
      await fn(h);
    } finally {
      await h.close();
    }
  };

  describe(`memory store contract on ${name}`, () => {
    if (teardown) after(teardown);
    test('add stores a memory that get returns as written', () =>
      withStore(async ({ store }) => {
        const r = await store.add({ userId: 'user_1', content: 'Maria prefers Ethiopia Yirgacheffe for espresso.', metadata: { category: 'preferences', source: 'test' } });
        assert.equal(r.duplicate, false);
        assert.match(r.id, /^mem_[0-9a-f-]{36}$/);
        const m = await store.get(r.id);
        assert.ok(m);
        assert.equal(m.id, r.id);
        assert.equal(m.userId, 'user_1');
        assert.equal(m.content, 'Maria prefers Ethiopia Yirgacheffe for espresso.');
        assert.deepEqual(m.metadata, { category: 'preferences', source: 'test' });
        assert.equal(m.category, 'preferences');
        assert.equal(typeof m.importanceScore, 'number');
        assert.ok(m.createdAt instanceof Date && !Number.isNaN(m.createdAt.getTime()));
        assert.ok(Math.abs(m.createdAt.getTime() - Date.now()) < 120_000, `createdAt ${m.createdAt.toISOString()} is now`);
        assert.equal(await store.get('mem_does_not_exist'), null);
      }));

    test('exact dedup is per user: same user refused, another user stored', () =>
      withStore(async ({ store }) => {
        const text = 'The customer likes oat milk in a large flat white.';
        const a = await store.add({ userId: 'user_1', content: text });
        assert.equal(a.duplicate, false);
        const again = await store.add({ userId: 'user_1', content: `  ${text.toUpperCase()}  \r\n`.trimStart() });
        assert.equal(again.duplicate, true);
        assert.equal(again.duplicateOf, a.id);
        assert.equal(again.id, a.id);
        const other = await store.add({ userId: 'user_2', content: text });
        assert.equal(other.duplicate, false, 'the same text under another user is not a duplicate');
        assert.notEqual(other.id, a.id);
        assert.equal((await store.stats('user_1')).totalMemories, 1);
        assert.equal((await store.stats('user_2')).totalMemories, 1);
        const all = await store.stats();
        assert.equal(all.totalMemories, 2);
        assert.equal(all.users, 2);
      }));

    test('add with an explicit id writes that id, and again replaces its content', () =>
      withStore(async ({ store }) => {
        const r = await store.add({ id: 'mem_fixed_1', userId: 'user_1', content: 'Ships to Portland on Mondays.' });
        assert.deepEqual(r, { id: 'mem_fixed_1', duplicate: false });
        await store.add({ id: 'mem_fixed_1', userId: 'user_1', content: 'Ships to Seattle on Tuesdays.' });
        assert.equal((await store.get('mem_fixed_1'))?.content, 'Ships to Seattle on Tuesdays.');
        assert.equal((await store.stats('user_1')).totalMemories, 1);
      }));

    test('search returns the user\'s best match first, with similarity, and logs the search', () =>
      withStore(async ({ store, analyticsCount }) => {
        const oat = await store.add({ userId: 'user_1', content: 'Zoë loves oat-milk flat whites and hates very dark roasts.' });
        await store.add({ userId: 'user_1', content: 'Order 4411 for the Rocket Appartamento was delayed by the carrier.' });
        await store.add({ userId: 'user_1', content: 'Wholesale account Café Lumière is on net-30 terms.' });
        const foreign = await store.add({ userId: 'user_2', content: 'Zoë loves oat-milk flat whites and hates very dark roasts!' });
        assert.equal(await analyticsCount('user_1'), 0);

        const hits = await store.search('oat-milk flat whites', 'user_1', 2);
        assert.equal(hits.length, 2);
        assert.equal(hits[0]!.id, oat.id);
        assert.ok(hits.every((h) => h.userId === 'user_1' && h.id !== foreign.id), 'only the asking user\'s memories');
        assert.ok(hits[0]!.similarity > 0 && hits[0]!.similarity <= 1 + 1e-6, `similarity ${hits[0]!.similarity}`);
        assert.ok(hits[0]!.similarity >= hits[1]!.similarity, 'best first');
        assert.equal(await analyticsCount('user_1'), 1);

        const exact = await store.search('Zoë loves oat-milk flat whites and hates very dark roasts.', 'user_1', 5);
        assert.equal(exact.length, 3);
        assert.equal(exact[0]!.id, oat.id);
        assert.ok(Math.abs(exact[0]!.similarity - 1) < 1e-4, `identical text has similarity 1, got ${exact[0]!.similarity}`);
        assert.equal(await analyticsCount('user_1'), 2);

        assert.deepEqual(await store.search('anything', 'user_nobody', 5), []);
        assert.equal(await analyticsCount('user_nobody'), 1, 'an empty search is logged too');
      }));

    test('delete removes a memory once; stats follow', () =>
      withStore(async ({ store }) => {
        const a = await store.add({ userId: 'user_1', content: 'Grace wants a descaling reminder every six weeks.', metadata: { category: 'reminders', importance: 'high' } });
        const b = await store.add({ userId: 'user_1', content: 'Kenji asked about the Niche Zero grinder.', metadata: { category: 'questions' } });
        await store.add({ userId: 'user_3', content: 'Olga prefers replies in German.', metadata: { category: 'preferences' } });
        let st = await store.stats();
        assert.equal(st.totalMemories, 3);
        assert.equal(st.users, 2);
        assert.equal(st.categories, 3);
        assert.equal(typeof st.avgImportance, 'number');
        assert.equal(typeof st.totalAccesses, 'number');
        assert.ok(st.latestMemory instanceof Date);
        assert.equal(await store.delete(a.id), true);
        assert.equal(await store.get(a.id), null);
        assert.equal(await store.delete(a.id), false, 'a second delete finds nothing');
        st = await store.stats();
        assert.equal(st.totalMemories, 2);
        assert.equal((await store.stats('user_1')).totalMemories, 1);
        assert.equal((await store.get(b.id))?.content, 'Kenji asked about the Niche Zero grinder.');
        // Deleting the original lets the same text be stored again.
        const again = await store.add({ userId: 'user_1', content: 'Grace wants a descaling reminder every six weeks.' });
        assert.equal(again.duplicate, false);
      }));

    test('assemblePrompt: active fragments for the agent or all agents, tier ≤ requested, priority order', () =>
      withStore(async ({ store, seedFragments, analyticsCount }) => {
        await seedFragments(FRAGMENTS);
        assert.equal((await store.stats()).fragments, FRAGMENTS.length - 1, 'inactive fragments are not counted');
        const mem = await store.add({ userId: 'user_1', content: 'Sam drinks oat milk cappuccinos every morning.' });

        const core = await store.assemblePrompt('oat milk cappuccino', 'user_1', 'sales', 'core');
        assert.deepEqual(core.fragments.map((f) => f.id), ['frag_core_all', 'frag_sales_core']);
        assert.deepEqual(core.fragments.map((f) => f.priority), [10, 5]);
        assert.equal(core.memories[0]?.id, mem.id);
        assert.match(core.text, /## general_guidelines\nGreet the customer by name\./);
        assert.match(core.text, /## Relevant memories\n- Sam drinks oat milk cappuccinos every morning\./);
        assert.ok(core.text.indexOf('general_guidelines') < core.text.indexOf('sales_guidelines'));
        assert.equal(await analyticsCount('user_1'), 1, 'assemblePrompt searches, and the search is logged');

        const standard = await store.assemblePrompt('oat milk', 'user_1', 'sales', 'standard');
        assert.deepEqual(standard.fragments.map((f) => f.id), ['frag_core_all', 'frag_numeric', 'frag_sales_core', 'frag_std_noagent']);
        assert.deepEqual(standard.fragments.map((f) => f.priority), [10, 7, 5, 1]);
        const std = standard.fragments.find((f) => f.id === 'frag_std_noagent')!;
        assert.equal(std.agentType, null);
        assert.equal(std.contextTier, 'standard');
        assert.equal(std.category, 'product_guidelines');

        const full = await store.assemblePrompt('oat milk', 'user_1', 'products', 'full');
        assert.deepEqual(full.fragments.map((f) => f.id), ['frag_core_all', 'frag_full_all', 'frag_products_core', 'frag_std_noagent']);
        assert.ok(!full.fragments.some((f) => f.id === 'frag_inactive'));

        const nobody = await store.assemblePrompt('oat milk', 'user_without_memories', 'orchestrator', 'core');
        assert.deepEqual(nobody.memories, []);
        assert.deepEqual(nobody.fragments.map((f) => f.id), ['frag_core_all']);
        assert.doesNotMatch(nobody.text, /Relevant memories/);
      }));

    test('fragments are not memories: get, search and stats do not see them', () =>
      withStore(async ({ store, seedFragments }) => {
        await seedFragments(FRAGMENTS.slice(0, 2));
        assert.equal(await store.get('frag_core_all'), null);
        assert.equal(await store.delete('frag_core_all'), false);
        assert.deepEqual(await store.search('Greet the customer by name', 'system_prompts', 5), []);
        assert.equal((await store.stats()).totalMemories, 0);
        assert.equal((await store.stats()).fragments, 2);
      }));
  });
}

// ---------------------------------------------------------------- backends

const dir = mkdtempSync(join(tmpdir(), 'mm-contract-'));
let fileNo = 0;

memoryStoreContract('sqlite', async () => {
  const path = join(dir, `store-${++fileNo}.db`);
  const store = await openMemoryStore({ type: 'sqlite', sqlitePath: path, embedder: localEmbedder(), env: {} });
  assert.ok(store instanceof SqliteMemoryStore);
  // A second connection, as another process (the app's admin tooling) would have.
  const side = () => new Database(path);
  return {
    store,
    async seedFragments(defs) {
      const db = side();
      try {
        const ins = db.prepare(`INSERT INTO memories (id, user_id, content, embedding, metadata, created_at, updated_at) VALUES (?, 'system_prompts', ?, NULL, ?, '2024-05-01 10:00:00', '2024-05-01 10:00:00')`);
        for (const f of defs) ins.run(f.id, f.content, JSON.stringify(f.metadata));
      } finally {
        db.close();
      }
    },
    async analyticsCount(userId) {
      const db = side();
      try {
        const has = db.prepare(`SELECT 1 FROM sqlite_master WHERE name = 'memory_analytics'`).get();
        if (!has) return 0;
        return Number(db.prepare(`SELECT count(*) FROM memory_analytics WHERE user_id = ?`).pluck().get(userId));
      } finally {
        db.close();
      }
    },
    close: () => store.close(),
  };
});

for (const target of testTargets()) {
  // One database per backend (a fresh PGlite takes seconds); each store starts on empty tables.
  let shared: Promise<Db> | null = null;
  memoryStoreContract(
    target.name,
    async () => {
      shared ??= (async () => {
        const db = await openDb(await target.fresh());
        await installSchema(db, { dimensions: 384 });
        return db;
      })();
      const db = await shared;
      await db.exec('TRUNCATE memories, memory_duplicates, memory_analytics, prompt_fragments CASCADE');
      const store = await openMemoryStore({ type: 'postgres', db, embedder: localEmbedder(), env: {} });
      return {
        store,
        async seedFragments(defs) {
          await writeFragments(db, defs.map((f) => fragmentFromSource(sourceRowOf(f))));
        },
        async analyticsCount(userId) {
          const [r] = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM memory_analytics WHERE user_id = $1`, [userId]);
          return Number(r!.n);
        },
        close: () => store.close(),
      };
    },
    async () => {
      if (shared) await (await shared).close();
    },
  );
}

describe('openMemoryStore picks the backend', () => {
  test('MEMORY_TYPE decides when options do not; options win; anything else is a usage error', async () => {
    assert.equal(resolveMemoryType(undefined, {}), 'postgres');
    assert.equal(resolveMemoryType(undefined, { MEMORY_TYPE: 'sqlite' }), 'sqlite');
    assert.equal(resolveMemoryType(undefined, { MEMORY_TYPE: ' Postgres ' }), 'postgres');
    assert.equal(resolveMemoryType('postgres', { MEMORY_TYPE: 'sqlite' }), 'postgres');
    assert.throws(() => resolveMemoryType(undefined, { MEMORY_TYPE: 'mysql' }), (e: any) => e.exitCode === 2 && /MEMORY_TYPE must be sqlite or postgres/.test(e.message));
    assert.throws(() => resolveMemoryType('redis', {}), (e: any) => e.exitCode === 2);
    await assert.rejects(openMemoryStore({ embedder: localEmbedder(), env: { MEMORY_TYPE: 'sqlite' } }), /MEMORY_SQLITE_PATH/);
    const path = join(dir, 'env.db');
    const store = await openMemoryStore({ embedder: localEmbedder(), env: { MEMORY_TYPE: 'sqlite', MEMORY_SQLITE_PATH: path } });
    try {
      assert.equal(store.backend, 'sqlite');
      assert.equal(store.model, 'local-hash-v1');
    } finally {
      await store.close();
    }
  });

  test('the Postgres backend refuses an embedder of another width', async () => {
    const db = await openDb({ pgliteDir: 'memory://' });
    try {
      await installSchema(db, { dimensions: 384 });
      await assert.rejects(openMemoryStore({ type: 'postgres', db, embedder: localEmbedder(256), env: {} }), /vector\(384\)/);
    } finally {
      await db.close();
    }
  });
});

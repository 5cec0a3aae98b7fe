// Dedup: exact duplicates (canonical form, case-folded, per user) are stored once, recorded,
// and never embedded; --dedup fuzzy (word-set Jaccard) and --dedup semantic (cosine by a
// pgvector query) record near-duplicates, with a configurable threshold and --dedup-skip.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testTargets } from '../helpers/targets.js';
import { runCli, targetArgs, parseJson } from '../helpers/cli.js';
import { startFakeOpenAI, type FakeOpenAI } from '../helpers/fake-openai.js';
import { withDb, writeMemoryFile, sentTexts, freshTarget, type HandRow } from '../helpers/rerun.js';
import { localEmbedding } from '../../src/embed/local-provider.js';
import { defaultFragments } from '../../src/postgres/fragments.js';
import { FUZZY_POOL_PER_USER } from '../../src/pipeline/dedup.js';
import type { TargetOptions } from '../../src/postgres/connection.js';
import type { Db } from '../../src/postgres/connection.js';

const dir = mkdtempSync(join(tmpdir(), 'mm-dedup-'));
const sha256 = (s: string) => createHash('sha256').update(s, 'utf8').digest('hex');

// ---- exact
const HELLO = 'Hello World\r\nsecond line  '; // CRLF and trailing spaces: stored as is
const HELLO_CANONICAL = 'Hello World\nsecond line\n';
const HELLO_UPPER = 'HELLO WORLD\nSECOND LINE'; // same memory after case-folding
const HELLO_BOB_LOWER = 'hello world\nsecond line\n\n';
const MARIA = 'Maria prefers Ethiopia Yirgacheffe for espresso.';
const CAFE_NFD = 'Cafe\u0301 order for Zoe\u0308: two bags.';
const CAFE_NFC = 'Caf\u00e9 order for Zo\u00eb: two bags.';
const exactRows: HandRow[] = [
  { id: 'a1', user: 'alice', content: HELLO },
  { id: 'a2', user: 'alice', content: MARIA },
  { id: 'a3', user: 'alice', content: HELLO_UPPER },
  { id: 'b1', user: 'bob', content: HELLO },
  { id: 'a4', user: 'alice', content: MARIA },
  { id: 'a5', user: 'alice', content: CAFE_NFD },
  { id: 'b2', user: 'bob', content: HELLO_BOB_LOWER },
  { id: 'a6', user: 'alice', content: CAFE_NFC },
  { id: 'b3', user: 'bob', content: MARIA + ' ' },
  { id: 'a7', user: 'alice', content: 'Grace Kim wants the Niche Zero grinder reminder every 4 weeks.' },
];

// ---- near duplicates
const S1 =
  'The customer Maria Rossi prefers Ethiopia Yirgacheffe beans for her morning espresso and orders two bags every single week from the Portland store';
const S1_SWAP = S1.replace('orders', 'buys'); // Jaccard 21/23 = 0.913, local cosine ≈ 0.95
const S1_PUNCT = 'the customer, Maria Rossi: prefers ethiopia yirgacheffe beans for her morning espresso and orders two bags every single week from the Portland store!'; // Jaccard 1.0, not an exact duplicate
const S1_REWORD = S1.replace('two bags every single week', 'three bags every month'); // Jaccard 0.79, local cosine ≈ 0.88
const OTHER = 'Kenji Watanabe reported that the Rancilio Silvia shows error E05 after twelve shots; advised a full descale.';
const nearRows: HandRow[] = [
  { id: 'n1', user: 'alice', content: S1 },
  { id: 'n2', user: 'alice', content: S1_SWAP },
  { id: 'n3', user: 'alice', content: OTHER },
  { id: 'n4', user: 'alice', content: S1_PUNCT },
  { id: 'n5', user: 'alice', content: S1_REWORD },
  { id: 'm1', user: 'bob', content: S1_SWAP },
];

const exactFile = join(dir, 'exact.db');
const nearFile = join(dir, 'near.db');
before(() => {
  writeMemoryFile(exactFile, exactRows);
  writeMemoryFile(nearFile, nearRows);
});

function cosine(a: string, b: string): number {
  const x = localEmbedding(a, 384);
  const y = localEmbedding(b, 384);
  let d = 0;
  let nx = 0;
  let ny = 0;
  for (let i = 0; i < x.length; i++) {
    d += x[i]! * y[i]!;
    nx += x[i]! * x[i]!;
    ny += y[i]! * y[i]!;
  }
  return d / Math.sqrt(nx * ny);
}

async function ids(db: Db): Promise<string[]> {
  return (await db.query<{ id: string }>(`SELECT id FROM memories ORDER BY id`)).map((r) => r.id);
}

async function dups(db: Db): Promise<{ original_id: string; duplicate_id: string; user_id: string; duplicate_hash: string; similarity_score: number; dedup_type: string }[]> {
  const rows = await db.query(
    `SELECT original_id, duplicate_id, user_id, duplicate_hash, similarity_score, dedup_type FROM memory_duplicates ORDER BY duplicate_id, dedup_type`,
  );
  return rows.map((r) => ({ ...r, duplicate_hash: String(r['duplicate_hash']).trim(), similarity_score: Number(r['similarity_score']) })) as any;
}

describe('dedup', { concurrency: true }, () => {
  for (const target of testTargets()) {
    describe(`on ${target.name}`, { concurrency: 1 }, () => {
      let api: FakeOpenAI;
      before(async () => {
        api = await startFakeOpenAI();
      });
      after(async () => {
        await api?.close();
      });
      const local = (t: TargetOptions, file: string, extra: string[]) =>
        runCli(['migrate', '--sqlite', file, ...targetArgs(t), '--embedder', 'local', '--skip-test', '--json', ...extra]);

      test('exact: canonical hash, byte-identical content, per-user, recorded, never embedded', async () => {
        const t = await freshTarget(target);
        const res = await runCli(
          ['migrate', '--sqlite', exactFile, ...targetArgs(t), '--model', 'text-embedding-3-small', '--dimensions', '16', '--batch-size', '2', '--skip-test', '--json'],
          { OPENAI_API_KEY: 'sk-test-dedup-0001', OPENAI_BASE_URL: api.url },
        );
        assert.equal(res.code, 0, res.stderr);
        const r = parseJson(res);
        assert.deepEqual(r.memories.duplicates, { exact: 4, fuzzy: 0, semantic: 0, total: 4 });
        assert.equal(r.memories.migrated, 6);
        assert.equal(r.users.alice.duplicates, 3);
        assert.equal(r.users.bob.duplicates, 1);

        // Duplicates are never sent; identical texts of two users are sent once.
        const sent = sentTexts(api.embeddingRequests);
        for (const never of [HELLO_UPPER, 'hello world\nsecond line', MARIA + ' ']) assert.ok(!sent.includes(never), `sent ${JSON.stringify(never)}`);
        const defaults = new Set(defaultFragments().map((f) => f.content));
        const memoryTexts = sent.filter((s) => !defaults.has(s) && s !== 'memory-migrate connection check');
        assert.equal(sent.filter((s) => s === 'Hello World\nsecond line').length, 1);
        assert.equal(memoryTexts.length, 4, JSON.stringify(memoryTexts));
        assert.equal(r.embeddings.computed + r.embeddings.cached, 6 + 7);

        await withDb(t, async (db) => {
          assert.deepEqual(await ids(db), ['a1', 'a2', 'a5', 'a7', 'b1', 'b3'].sort());
          const rows = await db.query<{ id: string; content: string; content_hash: string; dedup_hash: string }>(
            `SELECT id, content, content_hash, dedup_hash FROM memories ORDER BY id`,
          );
          const byId = new Map(rows.map((x) => [x.id, x]));
          assert.equal(byId.get('a1')!.content, HELLO, 'content byte-identical, CRLF and trailing spaces kept');
          assert.equal(byId.get('b1')!.content, HELLO, 'the same text under another user keeps its row');
          assert.equal(byId.get('a5')!.content, CAFE_NFD, 'NFD content is not normalised in storage');
          assert.equal(byId.get('b3')!.content, MARIA + ' ', 'bob keeps his copy of alice\'s text');
          assert.equal(byId.get('a1')!.content_hash.trim(), sha256(HELLO_CANONICAL));
          assert.equal(byId.get('a1')!.dedup_hash.trim(), sha256(HELLO_CANONICAL.toLowerCase()));
          assert.equal(byId.get('a5')!.content_hash.trim(), sha256(CAFE_NFC + '\n'), 'the hash is over the NFC form');
          assert.equal(byId.get('b3')!.content_hash.trim(), sha256(MARIA + '\n'));

          assert.deepEqual(await dups(db), [
            { original_id: 'a1', duplicate_id: 'a3', user_id: 'alice', duplicate_hash: sha256(HELLO_UPPER + '\n'), similarity_score: 1, dedup_type: 'exact' },
            { original_id: 'a2', duplicate_id: 'a4', user_id: 'alice', duplicate_hash: sha256(MARIA + '\n'), similarity_score: 1, dedup_type: 'exact' },
            { original_id: 'a5', duplicate_id: 'a6', user_id: 'alice', duplicate_hash: sha256(CAFE_NFC + '\n'), similarity_score: 1, dedup_type: 'exact' },
            { original_id: 'b1', duplicate_id: 'b2', user_id: 'bob', duplicate_hash: sha256('hello world\nsecond line\n'), similarity_score: 1, dedup_type: 'exact' },
          ]);
        });

        // A re-run still counts them as duplicates and embeds nothing.
        api.reset();
        const again = parseJson(
          await runCli(
            ['migrate', '--sqlite', exactFile, ...targetArgs(t), '--model', 'text-embedding-3-small', '--dimensions', '16', '--batch-size', '2', '--skip-test', '--json'],
            { OPENAI_API_KEY: 'sk-test-dedup-0001', OPENAI_BASE_URL: api.url },
          ),
        );
        assert.deepEqual(again.memories.duplicates, { exact: 4, fuzzy: 0, semantic: 0, total: 4 });
        assert.equal(again.memories.unchanged, 6);
        assert.equal(api.embeddingRequests.length, 0);
      });

      test('--dedup fuzzy records word-set Jaccard ≥ 0.9 per user; --dedup-threshold and --dedup-skip', async () => {
        // Default threshold 0.9: the one-word swap (0.913) and the punctuation variant (1.0).
        const t1 = await freshTarget(target);
        const r1 = parseJson(await local(t1, nearFile, ['--dedup', 'fuzzy', '--batch-size', '2']));
        assert.deepEqual(r1.memories.duplicates, { exact: 0, fuzzy: 2, semantic: 0, total: 2 });
        assert.equal(r1.memories.migrated, 6, 'recorded, still stored');
        await withDb(t1, async (db) => {
          const d = await dups(db);
          assert.deepEqual(
            d.map((x) => [x.duplicate_id, x.original_id, x.dedup_type, x.user_id]),
            [['n2', 'n1', 'fuzzy', 'alice'], ['n4', 'n1', 'fuzzy', 'alice']],
          );
          assert.ok(Math.abs(d[0]!.similarity_score - 21 / 23) < 1e-9, String(d[0]!.similarity_score));
          assert.equal(d[1]!.similarity_score, 1);
          assert.equal(d[0]!.duplicate_hash, sha256(S1_SWAP + '\n'));
        });

        // A stricter threshold keeps only the punctuation variant; --dedup-skip does not store it.
        const t2 = await freshTarget(target);
        const r2 = parseJson(await local(t2, nearFile, ['--dedup', 'fuzzy', '--dedup-threshold', '0.95', '--dedup-skip', '--batch-size', '100']));
        assert.deepEqual(r2.memories.duplicates, { exact: 0, fuzzy: 1, semantic: 0, total: 1 });
        assert.equal(r2.memories.migrated, 5);
        assert.equal(r2.embeddings.computed + r2.embeddings.cached, 5 + 7, 'a skipped match is not embedded');
        await withDb(t2, async (db) => {
          assert.deepEqual(await ids(db), ['m1', 'n1', 'n2', 'n3', 'n5']);
          assert.deepEqual((await dups(db)).map((x) => [x.duplicate_id, x.original_id, x.similarity_score]), [['n4', 'n1', 1]]);
        });

        // Exact mode records none of them.
        const t3 = await freshTarget(target);
        const r3 = parseJson(await local(t3, nearFile, ['--batch-size', '2']));
        assert.deepEqual(r3.memories.duplicates, { exact: 0, fuzzy: 0, semantic: 0, total: 0 });
        assert.equal(r3.memories.migrated, 6);
      });

      test(`--dedup fuzzy compares with the user's ${FUZZY_POOL_PER_USER.toLocaleString('en-US')} most recent memories, not older ones`, async () => {
        // One more stored memory than the pool holds: the oldest is outside it.
        const text = (i: number) => `note ${i} about order ${i * 7} coffee grinder beans roast ${i * 13} week`;
        const heavy: HandRow[] = Array.from({ length: FUZZY_POOL_PER_USER + 1 }, (_, i) => ({ id: `h${i}`, user: 'heavy', content: text(i) }));
        const before = join(dir, `pool-before-${target.name}.db`);
        writeMemoryFile(before, heavy);
        const t = await freshTarget(target);
        // Narrow vectors: the pool is about texts, and 10,001 rows load faster so.
        const narrow = ['--dimensions', '16'];
        assert.equal((await local(t, before, narrow)).code, 0);
        // Two later rows with the same words (Jaccard 1.0): one of the oldest memory, one of the newest.
        const newest = FUZZY_POOL_PER_USER;
        const after = join(dir, `pool-after-${target.name}.db`);
        writeMemoryFile(after, [
          ...heavy,
          { id: 'echo-oldest', user: 'heavy', content: `Note 0: about order 0, coffee grinder beans roast 0 week!` },
          { id: 'echo-newest', user: 'heavy', content: `Note ${newest}: about order ${newest * 7}, coffee grinder beans roast ${newest * 13} week!` },
        ]);
        const r = parseJson(await local(t, after, [...narrow, '--dedup', 'fuzzy']));
        assert.deepEqual(r.memories.duplicates, { exact: 0, fuzzy: 1, semantic: 0, total: 1 });
        assert.equal(r.memories.migrated, 2);
        await withDb(t, async (db) => {
          assert.deepEqual((await dups(db)).map((x) => [x.duplicate_id, x.original_id, x.similarity_score]), [['echo-newest', `h${newest}`, 1]]);
        });
      });

      test('--dedup semantic records cosine ≥ 0.85 within the user by a pgvector query', async () => {
        const swap = cosine(S1, S1_SWAP);
        const reword = cosine(S1, S1_REWORD);
        assert.ok(swap > 0.9 && reword > 0.85 && reword < 0.9 && cosine(S1, OTHER) < 0.5, `${swap} ${reword}`);

        // Batches of 2: n2 meets n1 inside its batch, n4/n5 meet the stored n1.
        const t1 = await freshTarget(target);
        const res = await local(t1, nearFile, ['--dedup', 'semantic', '--batch-size', '2']);
        assert.equal(res.code, 0, res.stderr);
        const r1 = parseJson(res);
        assert.deepEqual(r1.memories.duplicates, { exact: 0, fuzzy: 0, semantic: 3, total: 3 });
        assert.equal(r1.memories.migrated, 6);
        assert.equal(r1.users.alice.duplicates, 3);
        await withDb(t1, async (db) => {
          const d = await dups(db);
          assert.deepEqual(
            d.map((x) => [x.duplicate_id, x.original_id, x.dedup_type, x.user_id]),
            [['n2', 'n1', 'semantic', 'alice'], ['n4', 'n1', 'semantic', 'alice'], ['n5', 'n1', 'semantic', 'alice']],
          );
          assert.ok(Math.abs(d[0]!.similarity_score - swap) < 1e-5, `${d[0]!.similarity_score} vs ${swap}`);
          assert.ok(Math.abs(d[2]!.similarity_score - reword) < 1e-5, `${d[2]!.similarity_score} vs ${reword}`);
          assert.equal(d[2]!.duplicate_hash, sha256(S1_REWORD + '\n'));
        });
        // Re-run: nothing new is recorded, nothing is embedded.
        const again = parseJson(await local(t1, nearFile, ['--dedup', 'semantic', '--batch-size', '2']));
        assert.equal(again.memories.unchanged, 6);
        assert.equal(again.memories.duplicates.semantic, 0);
        assert.equal(again.embeddings.computed, 0);
        await withDb(t1, async (db) => assert.equal((await dups(db)).length, 3));

        // One batch, --dedup-threshold 0.9 and --dedup-skip: the swap is not stored, the reword
        // (0.88) is below the threshold and stays.
        const t2 = await freshTarget(target);
        const r2 = parseJson(await local(t2, nearFile, ['--dedup', 'semantic', '--dedup-threshold', '0.9', '--dedup-skip', '--batch-size', '100']));
        assert.equal(r2.memories.duplicates.semantic, 2);
        assert.equal(r2.memories.migrated, 4);
        await withDb(t2, async (db) => {
          assert.deepEqual(await ids(db), ['m1', 'n1', 'n3', 'n5']);
          assert.deepEqual((await dups(db)).map((x) => [x.duplicate_id, x.original_id]), [['n2', 'n1'], ['n4', 'n1']]);
        });
      });
    });
  }
});

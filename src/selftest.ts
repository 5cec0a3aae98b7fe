// The self-test: a short script of real operations against the live target, through the
// same MemoryStore an app would use. It leaves nothing behind, and checks that it did not.
import { randomBytes } from 'node:crypto';
import type { Db } from './postgres/connection.js';
import { PostgresMemoryStore } from './store/postgres-store.js';
import type { TextEmbedder } from './store/types.js';
import type { SelftestCheck } from './report.js';
import { errorMessage } from './errors.js';
import { searchForm } from './postgres/cutover.js';
import { tableDimensions } from './postgres/schema.js';
import { vectorToText } from './postgres/vector-text.js';

export interface SelftestResult {
  passed: boolean;
  checks: SelftestCheck[];
}

export async function runSelftest(db: Db, embedder: TextEmbedder): Promise<SelftestResult> {
  const checks: SelftestCheck[] = [];
  const user = `memory_migrate_selftest_${randomBytes(4).toString('hex')}`;
  const content = `Self-test memory ${user}: the customer prefers oat milk in a large flat white.`;
  const check = async (name: string, fn: () => Promise<string | void>) => {
    try {
      const detail = await fn();
      checks.push({ name, ok: true, ...(detail ? { detail } : {}) });
    } catch (err) {
      checks.push({ name, ok: false, detail: errorMessage(err) });
    }
  };

  let store: PostgresMemoryStore | null = null;
  let storedId: string | null = null;
  await check('open memory store', async () => {
    store = await PostgresMemoryStore.open(db, embedder);
  });
  if (store) {
    const s: PostgresMemoryStore = store;
    await check('store a test memory', async () => {
      const r = await s.add({ userId: user, content, metadata: { category: 'selftest' } });
      if (r.duplicate) throw new Error('a fresh test memory was reported as a duplicate');
      storedId = r.id;
      return `id ${r.id}`;
    });
    await check('find it by similarity search', async () => {
      const hits = await s.search('oat milk flat white preference', user, 3);
      if (hits[0]?.id !== storedId) throw new Error(`best match was ${hits[0]?.id ?? 'nothing'}, expected ${storedId}`);
      return `best match similarity ${hits[0]!.similarity.toFixed(3)}`;
    });
    await check('search uses the vector index', async () => {
      // The query form the cutover report prints (an adopted app's table, with its own index and operator).
      const form = await searchForm(db, (await tableDimensions(db))!);
      if (!form.index) return 'no vector index yet (built after loading rows)';
      const [vec] = await embedder.embed(['index probe']);
      const plan = await db.transaction(async (tx) => {
        await tx.exec('SET LOCAL enable_seqscan = off');
        return tx.query(`EXPLAIN ${form.query}`, [vectorToText(vec!), 5]);
      });
      const text = plan.map((r) => Object.values(r)[0]).join('\n');
      if (!text.includes(form.index)) throw new Error(`plan does not use ${form.index}:\n${text}`);
      return `EXPLAIN shows ${form.index}`;
    });
    await check('embedding dimensions', async () => {
      const [row] = await db.query<{ d: number; model: string }>(
        `SELECT vector_dims(embedding) AS d, embedding_model AS model FROM memories WHERE id = $1`,
        [storedId],
      );
      if (Number(row?.d) !== embedder.dimensions) throw new Error(`stored ${row?.d} dims, expected ${embedder.dimensions}`);
      return `${row!.d} dimensions (${row!.model})`;
    });
    await check('assemble a prompt', async () => {
      const p = await s.assemblePrompt('what milk does the customer like', user, 'sales', 'standard');
      if (p.memories.length < 1) throw new Error('no memories in the assembled prompt');
      if (p.fragments.length < 1) throw new Error('no prompt fragments for agent sales, tier standard');
      return `${p.memories.length} memories, ${p.fragments.length} fragments`;
    });
    await check('duplicate detection', async () => {
      const r = await s.add({ userId: user, content: content.toUpperCase() + '  \r\n' });
      if (!r.duplicate) throw new Error('the same content (case-folded) was stored twice');
      return `recognised as a duplicate of ${r.duplicateOf}`;
    });
    await check('read stats', async () => {
      const st = await s.stats();
      if (st.totalMemories < 1) throw new Error('stats report no memories');
      return `${st.totalMemories} memories, ${st.users} users, ${st.fragments} fragments`;
    });
  }
  await check('clean up test data', async () => {
    await db.query(`DELETE FROM memory_duplicates WHERE user_id = $1`, [user]);
    await db.query(`DELETE FROM memories WHERE user_id = $1`, [user]);
    await db.query(`DELETE FROM memory_analytics WHERE user_id = $1`, [user]);
    const [left] = await db.query<{ n: number }>(
      `SELECT (SELECT count(*) FROM memories WHERE user_id = $1) + (SELECT count(*) FROM memory_duplicates WHERE user_id = $1)
            + (SELECT count(*) FROM memory_analytics WHERE user_id = $1) AS n`,
      [user],
    );
    if (Number(left!.n) !== 0) throw new Error(`${left!.n} test rows remain`);
    return 'no test rows remain';
  });
  return { passed: checks.every((c) => c.ok), checks };
}

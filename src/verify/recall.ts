// Index recall: does the ivfflat index find each sampled row from its own vector, at the probes
// the store uses? Below the target, the smallest probes that reaches it is suggested.
import { cosineDistanceSql, ivfflatIndexLists, ivfflatProbes } from '../postgres/indexes.js';
import type { Db } from '../postgres/connection.js';
import { OWN_SCHEMA, adoptedTable } from '../postgres/adopted-table.js';
import { quoteIdent } from '../sql-identifier.js';
import { RECALL_TARGET, type VerifyReport } from './report.js';

export async function measureRecall(db: Db, dims: number, rows: { id: string; vec: string }[], report: VerifyReport): Promise<void> {
  // An adopted app's table is searched directly, as the app will (memories is a view over it).
  const adopted = await adoptedTable(db);
  const lists = await ivfflatIndexLists(db, 'memories_embedding_idx', adopted?.schema ?? null);
  if (lists === null) {
    if (rows.length > 0) report.notes.push('no vector index memories_embedding_idx: recall not measured (migrate builds it after loading)');
    return;
  }
  if (rows.length === 0) return;
  const probes = ivfflatProbes(lists);
  const recallAt = async (p: number): Promise<number> => {
    let hits = 0;
    await db.transaction(async (tx) => {
      // Force the index: on a small table the planner would scan, which always "finds" the row.
      await tx.exec(`SET LOCAL ivfflat.probes = ${p}; SET LOCAL enable_seqscan = off;`);
      for (const r of rows) {
        const [top] = await tx.query<{ id: string; distance: number }>(
          adopted
            ? `SELECT COALESCE(l.source_id, x.id) AS id, x.distance
                 FROM (SELECT ${quoteIdent(adopted.idColumn.name)}::text AS id, ${cosineDistanceSql(dims, '$1')} AS distance FROM ${adopted.relation}
                        WHERE embedding IS NOT NULL ORDER BY distance LIMIT 1) x
                 LEFT JOIN ${OWN_SCHEMA}.memory_links l ON l.target_id = x.id`
            : `SELECT id, ${cosineDistanceSql(dims, '$1')} AS distance FROM memories WHERE embedding IS NOT NULL ORDER BY distance LIMIT 1`,
          [r.vec],
        );
        // A row whose vector is identical (the same text under another user) may come first.
        if (top && (top.id === r.id || Number(top.distance) <= 1e-6)) hits++;
      }
    });
    return hits / rows.length;
  };
  const recall = await recallAt(probes);
  report.recall = recall;
  report.index = { name: 'memories_embedding_idx', lists, probes, suggestedProbes: null, fix: null };
  if (recall < RECALL_TARGET) {
    const fix = await findProbes(recallAt, probes, lists);
    report.index.suggestedProbes = fix.probes;
    report.index.fix =
      `recall@1 is ${recall.toFixed(3)} at ivfflat.probes = ${probes} (lists = ${lists}); probes = ${fix.probes} gives ${fix.recall.toFixed(3)}: ` +
      `SET ivfflat.probes = ${fix.probes}; (per session) or ALTER DATABASE <db> SET ivfflat.probes = ${fix.probes};`;
  }
}

/**
 * The smallest probes whose recall reaches the target: doubling from the current setting
 * until it is reached, then bisecting (recall only grows with probes; probes = lists is an
 * exact search, so the search always ends).
 */
export async function findProbes(
  recallAt: (probes: number) => Promise<number>,
  probes: number,
  lists: number,
  targetRecall = RECALL_TARGET,
): Promise<{ probes: number; recall: number }> {
  let lo = probes; // known to fall short
  let hi = lo;
  let hiRecall = 0;
  for (let p = Math.min(lists, Math.max(probes + 1, probes * 2)); ; p = Math.min(lists, p * 2)) {
    hiRecall = await recallAt(p);
    hi = p;
    if (hiRecall >= targetRecall || p >= lists) break;
    lo = p;
  }
  if (hiRecall < targetRecall) return { probes: hi, recall: hiRecall };
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    const r = await recallAt(mid);
    if (r >= targetRecall) {
      hi = mid;
      hiRecall = r;
    } else {
      lo = mid;
    }
  }
  return { probes: hi, recall: hiRecall };
}

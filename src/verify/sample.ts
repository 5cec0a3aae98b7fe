// The seeded sample, field by field: content (byte for byte, and its hash), the embedding's
// width and model, and with --source-model the reused vector bit for bit. The rows that pass
// go on to the recall check.
import type { SourceFile } from '../source/reader.js';
import type { SourceRow } from '../source/types.js';
import { contentHash } from '../source/canonical.js';
import { parseVectorText } from '../postgres/vector-text.js';
import type { Db } from '../postgres/connection.js';
import type { RecordMismatch, VerifyReport } from './report.js';
import { measureRecall } from './recall.js';

/** mulberry32: small, fast, and the same sequence on every platform. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** k distinct items of `items`, chosen by a seeded partial Fisher-Yates shuffle. */
export function seededSample<T>(items: readonly T[], k: number, seed: number): T[] {
  const a = items.slice();
  const next = prng(seed);
  const n = Math.min(k, a.length);
  for (let i = 0; i < n; i++) {
    const j = i + Math.floor(next() * (a.length - i));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a.slice(0, n);
}

/** Where two texts first differ, with a little context from each side. */
export function describeTextDiff(a: string, b: string): string {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  const from = Math.max(0, i - 20);
  const cut = (s: string) => JSON.stringify((from > 0 ? '…' : '') + s.slice(from, i + 30) + (s.length > i + 30 ? '…' : ''));
  return `differs at character ${i} (lengths ${a.length} and ${b.length}): SQLite ${cut(a)}, Postgres ${cut(b)}`;
}

export interface SampleOptions {
  sampleSize: number;
  seed: number;
  model: string | null;
  dims: number;
  sourceModel: string | null;
}

interface TargetRow {
  id: string;
  user_id: string;
  content: string;
  content_hash: string;
  dims: number | null;
  embedding_model: string | null;
  vec: string | null;
}

export async function sampleCheck(
  db: Db,
  source: SourceFile,
  memoryRowids: number[],
  o: SampleOptions,
  report: VerifyReport,
  mismatch: RecordMismatch,
): Promise<void> {
  const picked = seededSample(memoryRowids, o.sampleSize, o.seed).sort((a, b) => a - b);
  const rows: SourceRow[] = [];
  for (const rowid of picked) {
    for (const r of source.rows({ afterRowid: rowid - 1, limit: 1 })) rows.push(r);
  }
  report.sampleIds = rows.map((r) => r.id);
  const targetRows = new Map<string, TargetRow>();
  for (let i = 0; i < rows.length; i += 500) {
    const ids = rows.slice(i, i + 500).map((r) => r.id);
    const got = await db.query<TargetRow>(
      `SELECT id, user_id, content, content_hash,
              CASE WHEN embedding IS NULL THEN NULL ELSE vector_dims(embedding) END AS dims,
              embedding_model, embedding::text AS vec
         FROM memories WHERE id IN (SELECT jsonb_array_elements_text($1::text::jsonb))`,
      [JSON.stringify(ids)],
    );
    for (const g of got) targetRows.set(g.id, g);
  }

  const reuse = o.sourceModel !== null && o.sourceModel === o.model;
  const searchable: { id: string; vec: string }[] = [];
  for (const src of rows) {
    const t = targetRows.get(src.id);
    const user = src.userId;
    if (!t) {
      mismatch({ id: src.id, user, check: 'missing', detail: 'sampled row disappeared from Postgres during verify' });
      continue;
    }
    report.checked++;
    const m = (check: string, detail: string) => mismatch({ id: src.id, user, check, detail });
    if (!Buffer.from(t.content, 'utf8').equals(Buffer.from(src.content, 'utf8'))) {
      m('content', `content ${describeTextDiff(src.content, t.content)}`);
    } else if (String(t.content_hash).trim() !== contentHash(src.content)) {
      m('content', 'content_hash does not match the content');
    }
    if (t.vec === null) {
      m('embedding', 'no embedding stored');
      continue;
    }
    let vectorOk = true;
    if (Number(t.dims) !== o.dims) {
      m('embedding', `embedding has ${t.dims} dimensions, expected ${o.dims}`);
      vectorOk = false;
    }
    // An app's plain SQL, written for the seed's schema, does not know embedding_model: NULL
    // means "not recorded", not another model (the width is still checked).
    if (o.model !== null && t.embedding_model !== null && t.embedding_model !== o.model) {
      m('embedding', `embedding_model is ${t.embedding_model ?? 'NULL'}, expected ${o.model}`);
    }
    if (reuse && src.embedding.vector && src.embedding.vector.length === o.dims) {
      const stored = parseVectorText(t.vec);
      const a = Buffer.from(stored.buffer, stored.byteOffset, stored.byteLength);
      const b = Buffer.from(src.embedding.vector.buffer, src.embedding.vector.byteOffset, src.embedding.vector.byteLength);
      if (!a.equals(b)) {
        let at = 0;
        while (at < stored.length && Object.is(stored[at], src.embedding.vector[at])) at++;
        m('vector', `reused vector differs from the source vector (${o.sourceModel}) at index ${at}: ${src.embedding.vector[at]} → ${stored[at]}`);
      }
    }
    if (vectorOk) searchable.push({ id: src.id, vec: t.vec });
  }

  await measureRecall(db, o.dims, searchable, report);
}

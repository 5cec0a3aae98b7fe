// `verify --to-plugin URL`: the parity gate before a cutover to a plugin. The memories that
// belong in the plugin are decided from the SQLite file exactly as the backfill decides them
// (plan.ts); for a sample of namespaces, what the plugin returns (a search with no query) is
// compared with them: every memory missing, in another namespace, or with different content,
// kind or source is named. Exit 3 on any mismatch, 0 on none.
//
// The contract has no paging: a search returns at most 100 memories. A namespace with more is
// listed (the newest 100) and then each memory not in that list is looked up by a search for
// its own content (the plugin's `fts`); a plugin without `fts` cannot show such a memory, and
// verify says so as a mismatch rather than pass what it could not see.
import { randomInt } from 'node:crypto';
import type { SourceFile } from '../source/reader.js';
import type { Output } from '../output.js';
import { rowUuid } from '../postgres/row-uuid.js';
import { EXIT_MISMATCH } from '../verify/report.js';
import { connectPlugin, type PluginTargetFlags } from './connect.js';
import type { PluginClient, PluginMemory } from './http.js';
import { NamespaceMap, planBatches, planOptions } from './plan.js';

export interface PluginVerifyFlags extends PluginTargetFlags {
  sqlite: string;
  /** Namespaces to compare (default 50, as memory-backfill -verify). */
  sample?: number;
  seed?: number;
}

export const DEFAULT_NAMESPACE_SAMPLE = 50;
const SEARCH_MAX = 100;

export interface PluginMismatch {
  id: string | null;
  user: string | null;
  namespace: string | null;
  check: 'missing' | 'content' | 'kind' | 'source' | 'namespace' | 'rejected' | 'unverifiable';
  detail: string;
}

export interface PluginVerifyReport {
  ok: boolean;
  command: 'verify --to-plugin';
  source: string;
  plugin: string;
  namespaceTemplate: string;
  seed: number;
  namespaces: { total: number; sampled: number };
  /** Memories expected in the sampled namespaces, and how many of them matched. */
  checked: number;
  matched: number;
  /** Memories in sampled namespaces that the source does not account for (e.g. written by the app since). */
  extra: number;
  perNamespace: Record<string, { expected: number; matched: number; missing: number; different: number; extra: number }>;
  mismatchCount: number;
  mismatches: PluginMismatch[];
  notes: string[];
  durationMs: number;
}

interface Expected {
  sourceId: string;
  user: string;
  content: string;
}

/** Verifies from an open source (closed by the caller). */
export async function verifyPlugin(flags: PluginVerifyFlags, source: SourceFile, out: Output): Promise<{ report: PluginVerifyReport; exitCode: number }> {
  const started = Date.now();
  const plugin = await connectPlugin(flags, out);
  const seed = flags.seed ?? randomInt(0, 2 ** 31 - 1);
  const report: PluginVerifyReport = {
    ok: false,
    command: 'verify --to-plugin',
    source: flags.sqlite,
    plugin: plugin.client.displayUrl,
    namespaceTemplate: plugin.template,
    seed,
    namespaces: { total: 0, sampled: 0 },
    checked: 0,
    matched: 0,
    extra: 0,
    perNamespace: {},
    mismatchCount: 0,
    mismatches: [],
    notes: [],
    durationMs: 0,
  };
  const mismatch = (m: PluginMismatch) => {
    report.mismatchCount++;
    if (report.mismatches.length < 1000) report.mismatches.push(m);
  };

  // What belongs in the plugin, per namespace (uuid → source row).
  const names = new NamespaceMap(plugin.template);
  const expected = new Map<string, Map<string, Expected>>();
  const opts = planOptions(source, {}, { dryRun: true });
  for await (const batch of planBatches(opts)) {
    for (const r of batch.rejects) mismatch({ id: r.id, user: r.user, namespace: null, check: 'rejected', detail: r.reason });
    for (const m of batch.memories) {
      const ns = names.of(m.userId);
      if (!('name' in ns)) {
        mismatch({ id: m.id, user: m.userId, namespace: null, check: 'rejected', detail: ns.problem });
        continue;
      }
      let map = expected.get(ns.name);
      if (!map) expected.set(ns.name, (map = new Map()));
      map.set(rowUuid(m.id), { sourceId: m.id, user: m.userId, content: m.content });
    }
  }

  const all = [...expected.keys()].sort();
  const sampled = sample(all, flags.sample ?? DEFAULT_NAMESPACE_SAMPLE, seed);
  report.namespaces = { total: all.length, sampled: sampled.length };
  const fts = plugin.health.capabilities.includes('fts');
  for (const ns of sampled) {
    const want = expected.get(ns)!;
    const per = { expected: want.size, matched: 0, missing: 0, different: 0, extra: 0 };
    report.perNamespace[ns] = per;
    const listed = await plugin.client.search({ namespaces: [ns], limit: SEARCH_MAX });
    const complete = listed.length < SEARCH_MAX;
    const got = new Map(listed.map((m) => [m.id.toLowerCase(), m]));
    for (const [uuid, e] of want) {
      report.checked++;
      let m = got.get(uuid);
      if (!m && !complete) {
        if (!fts) {
          per.missing++;
          mismatch({ id: e.sourceId, user: e.user, namespace: ns, check: 'unverifiable', detail: `the namespace holds ${SEARCH_MAX} or more memories and the plugin has no fts to look this one up (${uuid})` });
          continue;
        }
        m = await findByContent(plugin.client, ns, uuid, e.content);
      }
      if (!m) {
        per.missing++;
        mismatch({ id: e.sourceId, user: e.user, namespace: ns, check: 'missing', detail: `memory ${uuid} is not in the plugin` });
        continue;
      }
      const diffs = compare(m, ns, e);
      if (diffs.length > 0) {
        per.different++;
        for (const d of diffs) mismatch({ id: e.sourceId, user: e.user, namespace: ns, ...d });
        continue;
      }
      per.matched++;
      report.matched++;
    }
    if (complete) {
      per.extra = listed.filter((m) => !want.has(m.id.toLowerCase())).length;
      report.extra += per.extra;
    }
  }
  if (report.extra > 0) {
    report.notes.push(`${report.extra} memories in the sampled namespaces are not from the SQLite file (written through the plugin since the backfill?): not a mismatch`);
  }
  report.ok = report.mismatchCount === 0;
  report.durationMs = Date.now() - started;
  return { report, exitCode: report.ok ? 0 : EXIT_MISMATCH };
}

function compare(m: PluginMemory, ns: string, e: Expected): { check: PluginMismatch['check']; detail: string }[] {
  const out: { check: PluginMismatch['check']; detail: string }[] = [];
  if (m.namespace !== ns) out.push({ check: 'namespace', detail: `in namespace ${m.namespace}, expected ${ns}` });
  if (m.content !== e.content) out.push({ check: 'content', detail: `content differs (plugin: ${preview(m.content)}, source: ${preview(e.content)})` });
  if (m.kind !== 'fact') out.push({ check: 'kind', detail: `kind ${m.kind}, expected fact` });
  if (m.source !== 'agent') out.push({ check: 'source', detail: `source ${m.source}, expected agent` });
  return out;
}

function preview(s: string): string {
  return JSON.stringify(s.length > 60 ? s.slice(0, 57) + '...' : s);
}

async function findByContent(client: PluginClient, ns: string, uuid: string, content: string): Promise<PluginMemory | undefined> {
  const found = await client.search({ namespaces: [ns], query: content, limit: SEARCH_MAX });
  return found.find((m) => m.id.toLowerCase() === uuid);
}

/** n of the items, chosen by a seeded shuffle (all of them when there are no more than n). */
function sample<T>(items: T[], n: number, seed: number): T[] {
  if (items.length <= n) return items;
  let s = seed >>> 0 || 1;
  const rand = () => {
    // xorshift32: repeatable from the printed seed.
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
  const copy = [...items];
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [copy[i], copy[j]] = [copy[j]!, copy[i]!];
  }
  return copy.slice(0, n).sort();
}

export function renderPluginVerify(r: PluginVerifyReport, info: (l: string) => void, error: (l: string) => void): void {
  info(`Verifying ${r.source} against the plugin at ${r.plugin} (namespaces ${r.namespaceTemplate})`);
  info(`Namespaces: ${r.namespaces.sampled} of ${r.namespaces.total} compared (seed ${r.seed}); memories: ${r.checked} expected, ${r.matched} match`);
  for (const n of r.notes) info(`Note: ${n}`);
  if (r.ok) {
    info('✅ Parity verified: no mismatches.');
    return;
  }
  const shown = r.mismatches.slice(0, 50);
  error(`❌ ${r.mismatchCount} mismatch${r.mismatchCount === 1 ? '' : 'es'}${r.mismatchCount > shown.length ? ` (first ${shown.length})` : ''}:`);
  for (const m of shown) error(`  ${m.id ?? '?'}${m.user !== null ? ` (${m.user}${m.namespace ? `, ${m.namespace}` : ''})` : ''} — ${m.check}: ${m.detail}`);
}

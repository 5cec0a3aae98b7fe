// Writes a realistic EspressoBot-layout memory file (Layout A in
// /work/shared/reference/source-formats.md): deterministic for a seed, with every embedding
// encoding, system_prompts / system_metrics rows, exact and near duplicates, the same text
// under two users, unicode and CRLF content, and the broken rows real files contain.
//
//   node dist/scripts/make-fixture.js --out <file> [--rows N] [--dims D]
//        [--encoding json|csv|f32|mixed] [--users U] [--seed S]
import Database from 'better-sqlite3';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { LAYOUT_A_SQL } from '../src/source/layout.js';
import { isMain } from './is-main.js';
import { FIXTURE_LAYOUTS, makeLayoutFixture, type FixtureLayout } from './layout-fixtures.js';

export type FixtureEncoding = 'json' | 'csv' | 'f32' | 'mixed';

export interface FixtureOptions {
  out: string;
  /** Total rows, all kinds included (default 240). */
  rows?: number;
  /** Embedding dimensions (default 1536). */
  dims?: number;
  /** How embeddings are stored; 'mixed' rotates json/csv/f32 by row (default 'mixed'). */
  encoding?: FixtureEncoding;
  /** Number of real users, 'user_1'..'user_U' (default 6). */
  users?: number;
  /** PRNG seed (default 1). */
  seed?: number;
}

/** What the generated file holds; every count is a number of rows. */
export interface FixtureSummary {
  out: string;
  rows: number;
  dims: number;
  encoding: FixtureEncoding;
  seed: number;
  /** Rows per user_id, system users included. */
  perUser: Record<string, number>;
  /** Rows of real users (user_1..user_U), duplicates and broken rows included. */
  userMemories: number;
  systemPrompts: number;
  systemMetrics: number;
  /** Rows that repeat an earlier row of the same user (same dedupHash): removed by dedup. */
  exactDuplicates: { total: number; identical: number; caseOnly: number; whitespaceOnly: number };
  /** Deliberate near duplicates: an earlier row of the same user with one word changed. */
  nearDuplicates: number;
  /** Rows whose text is also stored (earlier) under another user: must NOT be deduplicated. */
  crossUserCopies: number;
  emptyContent: number;
  /** Content shorter than 10 characters (the app rejected these at write time). */
  shortContent: number;
  /** Rows with non-ASCII content (accents, CJK, emoji). */
  unicodeContent: number;
  /** Rows whose content has CRLF line endings. */
  crlfContent: number;
  invalidMetadata: number;
  /** Stored embeddings by what they decode to. */
  embeddings: {
    json: number;
    csv: number;
    f32: number;
    null: number;
    empty: number;
    nan: number;
    wrongLength: number;
    pickle: number;
  };
  ids: { timestamped: number; uuid: number };
  timestamps: { sqlite: number; iso: number; epochMs: number };
}

// ---------------------------------------------------------------------------------------
// Seeded PRNG (sfc32, seeded through splitmix32): fast and identical on every platform.

type Rng = () => number;

function splitmix32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

function sfc32(seed: number): Rng {
  const sm = splitmix32(seed);
  let a = sm() | 0;
  let b = sm() | 0;
  let c = sm() | 0;
  let d = sm() | 0;
  const next = (): number => {
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return (t >>> 0) / 4294967296;
  };
  for (let i = 0; i < 12; i++) next();
  return next;
}

class R {
  constructor(readonly next: Rng) {}
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  pick<T>(arr: readonly T[]): T {
    return arr[Math.floor(this.next() * arr.length)]!;
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  u32(): number {
    return Math.floor(this.next() * 4294967296) >>> 0;
  }
  base36(n: number): string {
    const alphabet = '0123456789abcdefghijklmnopqrstuvwxyz';
    let s = '';
    for (let i = 0; i < n; i++) s += alphabet[Math.floor(this.next() * 36)];
    return s;
  }
  uuid(): string {
    const hex = '0123456789abcdef';
    let s = '';
    for (let i = 0; i < 32; i++) {
      let v = Math.floor(this.next() * 16);
      if (i === 12) v = 4;
      if (i === 16) v = 8 + (v & 3);
      s += hex[v];
      if (i === 7 || i === 11 || i === 15 || i === 19) s += '-';
    }
    return s;
  }
}

// ---------------------------------------------------------------------------------------
// Content.

const NAMES = [
  'Maria Rossi', 'José García', 'Zoë Hart', 'Björn Larsson', 'François Dubois', 'Ana Lúcia Costa',
  'Søren Madsen', 'Chloé Martin', 'Mateo Fernández', 'Priya Patel', "Liam O'Brien", 'Aiyana Brooks',
  'Kenji Watanabe', 'Olga Nowak', 'Dmitri Volkov', 'Fatima Zahra', 'Tomás Ortega', 'Grace Kim',
  'Hannah Müller', 'Noah Williams', 'Amélie Laurent', 'Raj Mehta', 'Elif Şahin', 'Łukasz Zieliński',
  'Sarah Johnson', 'David Chen', 'Emily Clark', 'Michael Brown', 'Laura Evans', 'James Wilson', 'Olivia Turner',
  'Daniel Scott', 'Sophie Baker', 'Ben Carter', 'Rachel Green', 'Tom Harris', 'Nina Patel', 'Chris Morgan',
  'Megan Reid', 'Sam Taylor', 'Kevin Lee', 'Julia Roberts', 'Peter Walsh', 'Anna Fischer', 'Mark Davies',
];
const CJK_NAMES = ['王芳', '李伟', '张静', '陈磊', '刘洋'];
const JP_NAMES = ['山田太郎', '佐藤花子', '鈴木一郎', '高橋美咲'];
const PRODUCTS = [
  'Breville Barista Express', 'La Marzocco Linea Mini', 'Rocket Appartamento', 'Eureka Mignon Specialita',
  'Baratza Encore', 'Fellow Stagg EKG kettle', 'Rancilio Silvia', 'Gaggia Classic Pro', 'Niche Zero grinder',
  'Profitec Pro 600', 'Lelit Bianca', 'Comandante C40', 'AeroPress', 'Chemex 6-cup', 'Hario V60',
  'Decent DE1', 'Bezzera Unica', 'DF64 grinder',
];
const BEANS = [
  'Ethiopia Yirgacheffe', 'Colombia Huila', 'Brazil Cerrado', 'Kenya AA', 'Guatemala Antigua',
  'Sumatra Mandheling', 'the house espresso blend', 'Swiss Water decaf', 'Costa Rica Tarrazú', 'Rwanda Nyamasheke',
];
const ACCESSORIES = [
  'a 58mm bottomless portafilter', 'the IMS precision basket', 'an Acaia Lunar scale', 'a 600ml milk pitcher',
  'the water filter kit', 'descaling tablets', 'a WDT tool', 'a spouted 51mm portafilter',
];
const CITIES = ['Portland', 'Montréal', 'São Paulo', 'München', 'Kraków', 'Austin', 'Melbourne', 'Zürich', 'Seattle', 'Lyon'];
const PERIODS = ['week', 'two weeks', 'month', 'six weeks'];
const REASONS = [
  'the carrier lost the parcel', 'the grinder was back-ordered', 'customs held the shipment',
  'the warehouse mislabelled the box', 'a storm closed the depot',
];
const RETURN_REASONS = ['too loud', 'arrived with a dented drip tray', 'wrong voltage', 'changed their mind', 'steam wand leaks'];
const FIXES = ['a full descale', 'replacing the group gasket', 'a finer grind', 'backflushing daily', 'checking the pump pressure'];
const TONES = ['friendly', 'formal', 'brief', 'playful'];
const LANGUAGES = ['English', 'French', 'Spanish', 'German', 'Portuguese'];
const GRINDS = ['espresso', 'fine', 'medium', 'coarse', 'whole bean'];
const WHOLESALE = ['Café Lumière', 'Bäckerei Kühn', 'Kaffeehaus Zürich', 'Blue Door Roasters', 'Ñandú Coffee', 'Northside Deli'];

function dateText(r: R): string {
  const d = new Date(Date.UTC(2024, r.int(0, 11), r.int(1, 28)));
  return d.toISOString().slice(0, 10);
}

const TEMPLATES: ((r: R) => string)[] = [
  (r) => `${r.pick(NAMES)} prefers ${r.pick(BEANS)} for espresso and orders ${r.int(1, 6)} bags every ${r.pick(PERIODS)}.`,
  (r) =>
    `Order #${r.int(1000, 99999)} for ${r.pick(NAMES)} (${r.pick(PRODUCTS)}) was delayed by ${r.int(2, 14)} days because ${r.pick(REASONS)}; we promised ${r.int(5, 20)}% off the next order.`,
  (r) =>
    `${r.pick(NAMES)} asked whether the ${r.pick(PRODUCTS)} works with ${r.pick(ACCESSORIES)}. I confirmed it does${r.pick(['.', ', with an adapter.', ' after a firmware update.'])}`,
  (r) => {
    const name = r.pick(NAMES);
    return `${name} prefers replies in ${r.pick(LANGUAGES)} and a ${r.pick(TONES)} tone; signs emails as "${name.split(' ')[0]}" (ticket ${r.int(100, 9999)}).`;
  },
  (r) =>
    `${r.pick(NAMES)}'s café in ${r.pick(CITIES)} goes through about ${r.int(3, 40)} kg of ${r.pick(BEANS)} a week and wants a quote for the ${r.pick(PRODUCTS)}.`,
  (r) =>
    `${r.pick(NAMES)} loves oat-milk flat whites ☕️ and hates very dark roasts 😅 — suggest ${r.pick(BEANS)} next time (order #${r.int(1000, 99999)}).`,
  (r) => `客户${r.pick(CJK_NAMES)}喜欢${r.pick(PRODUCTS)}，每${r.int(1, 4)}周订购一次${r.pick(BEANS)}（订单 ${r.int(1000, 99999)}）。`,
  (r) => `${r.pick(JP_NAMES)}さんは${r.pick(PRODUCTS)}の修理について問い合わせました（注文番号 ${r.int(1000, 99999)}）。`,
  (r) =>
    `Shipping notes for ${r.pick(NAMES)}:\r\n- ${r.pick(['Leave at the back door', 'Ring twice', 'Deliver to reception', 'No signature needed'])}\r\n- ${r.pick(['Weekdays only', 'Not before 9am', 'Call on arrival'])}\r\n- Order #${r.int(1000, 99999)}`,
  (r) =>
    `Troubleshooting log for the ${r.pick(PRODUCTS)}:\n1. Shots run in ${r.int(8, 15)} seconds\n2. Suggested ${r.pick(FIXES)}\n3. Customer will report back by ${dateText(r)}.`,
  (r) =>
    `Return request: ${r.pick(NAMES)} wants to return the ${r.pick(PRODUCTS)} bought on ${dateText(r)} (order #${r.int(1000, 99999)}); reason: ${r.pick(RETURN_REASONS)}.`,
  (r) =>
    `${r.pick(NAMES)} is allergic to ${r.pick(['dairy', 'soy', 'nuts', 'gluten'])}; do not recommend ${r.pick(['milk-based drinks', 'flavoured syrups', 'the seasonal pastry box'])} (noted ${dateText(r)}).`,
  (r) =>
    `Wholesale account ${r.pick(WHOLESALE)} is on net-${r.pick([15, 30, 45])} terms with a credit limit of $${r.int(1, 40) * 500}.`,
  (r) =>
    `${r.pick(NAMES)} subscribed to the ${r.pick(['monthly', 'fortnightly', 'weekly'])} ${r.pick(BEANS)} subscription at ${r.pick(GRINDS)} grind; next shipment on ${dateText(r)}.`,
  (r) =>
    `${r.pick(NAMES)} reported that the ${r.pick(PRODUCTS)} shows error ${r.pick(['E01', 'E05', 'E12', 'F3'])} after ${r.int(2, 60)} shots; advised ${r.pick(FIXES)}.`,
  (r) =>
    `${r.pick(NAMES)} wants a crème brûlée latte recipe for the ${r.pick(PRODUCTS)} and asked about the café's naïve-beginner workshop on ${dateText(r)}.`,
  (r) => {
    const name = r.pick(NAMES);
    return `Preferred pickup for ${name}: ${r.pick(['Monday', 'Tuesday', 'Thursday', 'Saturday'])} mornings at the ${r.pick(CITIES)} store; contact ${name.split(' ')[0]!.toLowerCase()}${r.int(1, 99)}@example.com.`;
  },
  (r) => `${r.pick(NAMES)} schreibt lieber auf Deutsch: „Bitte die Bohnen ${r.pick(['fein', 'mittel', 'grob'])} mahlen.“ (Bestellung ${r.int(1000, 99999)})`,
  (r) => `VIP 🌟 ${r.pick(NAMES)}: always include a free sample of ${r.pick(BEANS)} with orders over $${r.int(50, 300)}.`,
  (r) => `${r.pick(NAMES)} wants to be reminded to descale the ${r.pick(PRODUCTS)} every ${r.int(2, 8)} weeks (since ${dateText(r)}).`,
];

/** One-word swaps for near duplicates. */
const SWAPS: [RegExp, string][] = [
  [/\bprefers\b/, 'likes'],
  [/\basked\b/, 'wondered'],
  [/\bdelayed\b/, 'held'],
  [/\bwants\b/, 'needs'],
  [/\bloves\b/, 'adores'],
  [/\bevery\b/, 'each'],
  [/\breported\b/, 'said'],
  [/\bpromised\b/, 'offered'],
  [/\bconfirmed\b/, 'verified'],
  [/\bsubscribed\b/, 'signed'],
  [/\balways\b/, 'usually'],
  [/\bterms\b/, 'conditions'],
];

const SYSTEM_PROMPTS: { content: string; category: string; priority: string; tags: string[]; agent_type: string; context_tier?: string }[] = [
  {
    content:
      'Always greet the customer by name when it is known, keep answers under 150 words unless asked for detail, and never invent order numbers.',
    category: 'general_guidelines', priority: 'high', tags: ['tone', 'general'], agent_type: 'all', context_tier: 'core',
  },
  {
    content:
      'When a customer asks about an espresso machine, mention the matching grinder bundle once; do not push a bundle twice in the same conversation.',
    category: 'sales_guidelines', priority: 'high', tags: ['sales', 'upsell'], agent_type: 'sales', context_tier: 'core',
  },
  {
    content:
      'Quote boiler sizes, pump type and PID support from the product catalogue only; if a spec is missing, say so instead of guessing.',
    category: 'product_guidelines', priority: 'medium', tags: ['products', 'specs'], agent_type: 'all',
  },
  {
    content:
      "Discounts above 15% need a manager's approval.\nPrice-match requests must include a link to the competitor's listing.",
    category: 'pricing_guidelines', priority: 'medium', tags: ['pricing', 'discounts'], agent_type: 'sales', context_tier: 'standard',
  },
  {
    content:
      'Use remembered preferences (grind size, milk choice, roast level) to personalise recommendations, but never read a stored address back to the customer in full.',
    category: 'memory_usage', priority: 'low', tags: ['memory', 'privacy'], agent_type: 'all', context_tier: 'full',
  },
];

const SYSTEM_METRICS = [
  '{"metric":"memories_written","value":1834,"window":"24h"}',
  'memory_search_latency_ms p95=212 p50=48 (window 1h)',
];

const AGENTS = ['EspressoBot', 'sales_agent', 'products_agent', 'orchestrator'];
const MODELS = ['gpt-4o-mini', 'gpt-4.1-mini', 'gpt-4o', 'o3-mini'];

// ---------------------------------------------------------------------------------------
// The plan: one entry per row, decided before anything is written.

type EmbKind = 'normal' | 'null' | 'empty' | 'nan' | 'wrong' | 'pickle';
type Kind = 'memory' | 'identical' | 'case' | 'whitespace' | 'near' | 'cross' | 'sysPrompt' | 'sysMetric';

interface Plan {
  kind: Kind;
  userId: string;
  content: string;
  /** Seed of the base vector; derived rows reuse their original's. */
  vecSeed: number;
  /** Relative noise added to the base vector (0 = the same vector). */
  noise: number;
  noiseSeed: number;
  emb: EmbKind;
  invalidMeta?: boolean;
  prompt?: (typeof SYSTEM_PROMPTS)[number];
  /** Sort key: the row's place in the file. */
  key: number;
}

function foldKey(userId: string, content: string): string {
  // Same rule as canonical.ts dedupHash (NFC, CRLF->LF, trailing whitespace, final newline, lower-case).
  const lines = content.normalize('NFC').replace(/\r\n?/g, '\n').split('\n').map((l) => l.trimEnd());
  while (lines.length && lines[lines.length - 1] === '') lines.pop();
  return `${userId}\u0000${lines.join('\n').toLowerCase()}`;
}

export function makeFixture(opts: FixtureOptions): FixtureSummary {
  const rows = opts.rows ?? 240;
  const dims = opts.dims ?? 1536;
  const encoding = opts.encoding ?? 'mixed';
  const userCount = opts.users ?? 6;
  const seed = opts.seed ?? 1;
  if (!Number.isInteger(rows) || rows < 1) throw new RangeError(`rows must be a positive integer, got ${rows}`);
  if (!Number.isInteger(dims) || dims < 2) throw new RangeError(`dims must be an integer >= 2, got ${dims}`);
  if (!Number.isInteger(userCount) || userCount < 1) throw new RangeError(`users must be a positive integer, got ${userCount}`);
  if (!['json', 'csv', 'f32', 'mixed'].includes(encoding)) throw new RangeError(`unknown encoding ${encoding}`);

  const r = new R(sfc32(seed));
  const users = Array.from({ length: userCount }, (_, i) => `user_${i + 1}`);
  // Skewed: user_1 has the most memories.
  const weights = users.map((_, i) => 1 / Math.pow(i + 1, 0.6));
  const totalWeight = weights.reduce((a, b) => a + b, 0);
  const pickUser = (): string => {
    let x = r.next() * totalWeight;
    for (let i = 0; i < users.length; i++) {
      x -= weights[i]!;
      if (x < 0) return users[i]!;
    }
    return users[users.length - 1]!;
  };

  // Per-user keys (what dedup compares) and global texts: every generated text is unique in
  // the whole file, so the only cross-user copies are the deliberate ones.
  const seen = new Set<string>();
  const seenText = new Set<string>();
  const uniqueContent = (userId: string, make: () => string): string => {
    let text = make();
    for (let i = 0; seenText.has(foldKey('', text)); i++) {
      text = i < 20 ? make() : `${make()} (ref ${r.int(10000, 99999)})`;
    }
    seen.add(foldKey(userId, text));
    seenText.add(foldKey('', text));
    return text;
  };
  const newMemory = (userId: string, emb: EmbKind = 'normal'): Plan => ({
    kind: 'memory',
    userId,
    content: uniqueContent(userId, () => r.pick(TEMPLATES)(r)),
    vecSeed: r.u32(),
    noise: 0,
    noiseSeed: 0,
    emb,
    key: 0,
  });

  // Special rows, most important first; small files keep only what fits.
  const specials: Plan[] = [];
  const special = (p: Omit<Plan, 'vecSeed' | 'noise' | 'noiseSeed' | 'key'>): void => {
    specials.push({ ...p, vecSeed: r.u32(), noise: 0, noiseSeed: 0, key: 0 });
  };
  for (const emb of ['null', 'empty', 'nan', 'wrong', 'pickle'] as const) specials.push(newMemory(pickUser(), emb));
  for (const p of SYSTEM_PROMPTS) special({ kind: 'sysPrompt', userId: 'system_prompts', content: p.content, emb: 'normal', prompt: p });
  special({ kind: 'memory', userId: pickUser(), content: '', emb: 'normal' });
  special({ kind: 'memory', userId: pickUser(), content: 'ok thx', emb: 'normal' });
  for (const m of SYSTEM_METRICS) special({ kind: 'sysMetric', userId: 'system_metrics', content: m, emb: 'normal' });
  const badMeta = newMemory(pickUser());
  badMeta.invalidMeta = true;
  specials.push(badMeta);
  const keptSpecials = rows >= 60 ? specials : specials.slice(0, Math.floor(rows / 4));

  const derivedTotal = rows >= 20 ? Math.round(rows * 0.05) + Math.max(1, Math.round(rows * 0.02)) : 0;
  const crossCount = userCount >= 2 && rows >= 20 ? Math.max(1, Math.round(rows * 0.005)) : 0;
  const normalCount = Math.max(1, rows - keptSpecials.length - derivedTotal - crossCount);
  const dupCount = rows >= 20 ? Math.round(rows * 0.05) : 0;
  const nearCount = rows - keptSpecials.length - normalCount - dupCount - crossCount;

  const normals: Plan[] = [];
  for (let i = 0; i < normalCount; i++) normals.push(newMemory(pickUser()));
  const base = [...normals, ...keptSpecials];
  shuffle(base, r);
  base.forEach((p, i) => (p.key = i));
  const end = base.length;
  const afterOriginal = (orig: Plan): number => orig.key + (1 - r.next() * 0.999) * (end - orig.key);

  const derived: Plan[] = [];
  // Exact duplicates: half identical, a quarter differing only by case, a quarter only by
  // trailing whitespace / line endings.
  for (let i = 0; i < dupCount; i++) {
    const kind: Kind = i % 4 === 1 ? 'case' : i % 4 === 3 ? 'whitespace' : 'identical';
    let orig = r.pick(normals);
    let content = orig.content;
    if (kind === 'case') {
      for (let tries = 0; content.toLowerCase() === content && content.toUpperCase() === content && tries < 50; tries++) {
        orig = r.pick(normals);
        content = orig.content;
      }
      content = content.toLowerCase() !== content ? content.toLowerCase() : content.toUpperCase();
    } else if (kind === 'whitespace') {
      content = content.includes('\r\n')
        ? content.replace(/\r\n/g, '\n') + '\n'
        : content.includes('\n')
          ? content.replace(/\n/g, '\r\n') + '  '
          : content + r.pick(['  ', '\r\n', '\n\n', ' \t']);
    }
    derived.push({ kind, userId: orig.userId, content, vecSeed: orig.vecSeed, noise: kind === 'identical' ? 0 : 0.03, noiseSeed: r.u32(), emb: 'normal', key: afterOriginal(orig) });
  }
  for (let i = 0; i < nearCount; i++) {
    let made: Plan | undefined;
    for (let tries = 0; !made && tries < 200; tries++) {
      const orig = r.pick(normals);
      const swaps = SWAPS.filter(([re]) => re.test(orig.content));
      if (swaps.length === 0) continue;
      const [re, word] = r.pick(swaps);
      const content = orig.content.replace(re, word);
      const k = foldKey(orig.userId, content);
      if (seen.has(k) || seenText.has(foldKey('', content))) continue;
      seen.add(k);
      seenText.add(foldKey('', content));
      made = { kind: 'near', userId: orig.userId, content, vecSeed: orig.vecSeed, noise: 0.15, noiseSeed: r.u32(), emb: 'normal', key: afterOriginal(orig) };
    }
    derived.push(made ?? { ...newMemory(pickUser()), key: r.next() * end });
  }
  for (let i = 0; i < crossCount; i++) {
    let made: Plan | undefined;
    for (let tries = 0; !made && tries < 200; tries++) {
      const orig = r.pick(normals);
      const other = r.pick(users.filter((u) => u !== orig.userId));
      const k = foldKey(other, orig.content);
      if (seen.has(k)) continue;
      seen.add(k);
      made = { kind: 'cross', userId: other, content: orig.content, vecSeed: orig.vecSeed, noise: 0, noiseSeed: 0, emb: 'normal', key: afterOriginal(orig) };
    }
    derived.push(made ?? { ...newMemory(pickUser()), key: r.next() * end });
  }
  const plan = [...base, ...derived].sort((a, b) => a.key - b.key);

  return writePlan(plan, { out: opts.out, rows: plan.length, dims, encoding, seed, r });
}

function shuffle<T>(arr: T[], r: R): void {
  for (let i = arr.length - 1; i > 0; i--) {
    const j = Math.floor(r.next() * (i + 1));
    [arr[i], arr[j]] = [arr[j]!, arr[i]!];
  }
}

// ---------------------------------------------------------------------------------------
// Writing.

function sqliteTime(ms: number): string {
  return new Date(ms).toISOString().slice(0, 19).replace('T', ' ');
}

function writePlan(
  plan: Plan[],
  o: { out: string; rows: number; dims: number; encoding: FixtureEncoding; seed: number; r: R },
): FixtureSummary {
  const { dims, encoding, r } = o;
  const out = resolve(o.out);
  mkdirSync(dirname(out), { recursive: true });
  for (const suffix of ['', '-wal', '-shm', '-journal']) {
    if (existsSync(out + suffix)) rmSync(out + suffix);
  }

  const summary: FixtureSummary = {
    out: o.out,
    rows: plan.length,
    dims,
    encoding,
    seed: o.seed,
    perUser: {},
    userMemories: 0,
    systemPrompts: 0,
    systemMetrics: 0,
    exactDuplicates: { total: 0, identical: 0, caseOnly: 0, whitespaceOnly: 0 },
    nearDuplicates: 0,
    crossUserCopies: 0,
    emptyContent: 0,
    shortContent: 0,
    unicodeContent: 0,
    crlfContent: 0,
    invalidMetadata: 0,
    embeddings: { json: 0, csv: 0, f32: 0, null: 0, empty: 0, nan: 0, wrongLength: 0, pickle: 0 },
    ids: { timestamped: 0, uuid: 0 },
    timestamps: { sqlite: 0, iso: 0, epochMs: 0 },
  };

  const db = new Database(out);
  try {
    db.pragma('journal_mode = MEMORY');
    db.pragma('synchronous = OFF');
    db.exec(LAYOUT_A_SQL);
    const insert = db.prepare(
      'INSERT INTO memories (id, user_id, content, embedding, metadata, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)',
    );

    const vec = new Float64Array(dims);
    const noise = new Float64Array(dims);
    const f32 = new Float32Array(dims);
    const rounded: number[] = new Array(dims).fill(0);
    const start = Date.UTC(2024, 0, 15, 9, 0, 0);
    const span = 600 * 86_400_000;
    const meanGap = span / Math.max(1, plan.length);
    const uuidFrom = Math.floor(plan.length * 0.85);
    let t = start;
    let conversation = '';
    const ids = new Set<string>();

    const writeAll = db.transaction(() => {
      for (let i = 0; i < plan.length; i++) {
        const p = plan[i]!;
        t += Math.max(1000, Math.floor(r.next() * 2 * meanGap));
        const created = t;
        const updated = r.chance(0.1) ? created + r.int(60, 72 * 3600) * 1000 : created;

        // Timestamps: mostly SQLite text, some ISO with T and Z, some epoch milliseconds.
        const fmt = r.next();
        let createdVal: string | number;
        let updatedVal: string | number;
        if (fmt < 0.9) {
          createdVal = sqliteTime(created);
          updatedVal = sqliteTime(updated);
          summary.timestamps.sqlite++;
        } else if (fmt < 0.95) {
          createdVal = new Date(created).toISOString();
          updatedVal = new Date(updated).toISOString();
          summary.timestamps.iso++;
        } else {
          createdVal = created;
          updatedVal = updated;
          summary.timestamps.epochMs++;
        }

        let id: string;
        do {
          id = i < uuidFrom ? `mem_${created}_${r.base36(9)}` : `mem_${r.uuid()}`;
        } while (ids.has(id));
        ids.add(id);
        if (i < uuidFrom) summary.ids.timestamped++;
        else summary.ids.uuid++;

        if (conversation === '' || r.chance(0.3)) conversation = `conv_${created}_${r.base36(6)}`;
        let metadata: string;
        if (p.kind === 'sysPrompt') {
          const pr = p.prompt!;
          metadata = JSON.stringify({
            type: 'system_prompt',
            category: pr.category,
            priority: pr.priority,
            tags: pr.tags,
            agent_type: pr.agent_type,
            ...(pr.context_tier ? { context_tier: pr.context_tier } : {}),
            timestamp: new Date(created).toISOString(),
          });
        } else if (p.kind === 'sysMetric') {
          metadata = JSON.stringify({ type: 'metric', timestamp: new Date(created).toISOString() });
        } else {
          metadata = JSON.stringify({
            timestamp: new Date(created).toISOString(),
            conversationId: conversation,
            agent: r.pick(AGENTS),
            extractedFrom: 'conversation',
            source: r.pick(MODELS),
          });
          if (p.invalidMeta) {
            metadata = metadata.slice(0, Math.floor(metadata.length / 2));
            summary.invalidMetadata++;
          }
        }

        // Embedding.
        const rowEncoding = encoding === 'mixed' ? (['json', 'csv', 'f32'] as const)[i % 3] : encoding;
        let embedding: string | Buffer | null;
        if (p.emb === 'null') {
          embedding = null;
          summary.embeddings.null++;
        } else if (p.emb === 'empty') {
          embedding = '';
          summary.embeddings.empty++;
        } else {
          fillUnitVector(vec, p.vecSeed);
          if (p.noise > 0) {
            fillUnitVector(noise, p.noiseSeed);
            for (let k = 0; k < dims; k++) vec[k] = vec[k]! + p.noise * noise[k]!;
            normalize(vec);
          }
          const n = p.emb === 'wrong' ? dims - 1 : dims;
          if (p.emb === 'pickle') {
            embedding = pickleFloatList(vec);
            summary.embeddings.pickle++;
          } else {
            if (p.emb === 'nan') {
              vec[Math.floor(r.next() * dims)] = NaN;
              summary.embeddings.nan++;
            } else if (p.emb === 'wrong') {
              summary.embeddings.wrongLength++;
            } else {
              summary.embeddings[rowEncoding]++;
            }
            if (rowEncoding === 'f32') {
              for (let k = 0; k < dims; k++) f32[k] = vec[k]!;
              embedding = Buffer.from(f32.buffer, 0, n * 4);
            } else {
              // Text the way the app stored API floats: JSON.stringify of a number array
              // (or the same numbers comma-joined, as UTF-8 bytes).
              rounded.length = n;
              for (let k = 0; k < n; k++) rounded[k] = Math.round(vec[k]! * 1e9) / 1e9;
              const body = rounded.join(',');
              embedding = rowEncoding === 'json' ? `[${body}]` : Buffer.from(body, 'utf8');
            }
          }
        }

        insert.run(id, p.userId, p.content, embedding, metadata, createdVal, updatedVal);

        summary.perUser[p.userId] = (summary.perUser[p.userId] ?? 0) + 1;
        if (p.kind === 'sysPrompt') summary.systemPrompts++;
        else if (p.kind === 'sysMetric') summary.systemMetrics++;
        else summary.userMemories++;
        if (p.kind === 'identical') summary.exactDuplicates.identical++;
        if (p.kind === 'case') summary.exactDuplicates.caseOnly++;
        if (p.kind === 'whitespace') summary.exactDuplicates.whitespaceOnly++;
        if (p.kind === 'near') summary.nearDuplicates++;
        if (p.kind === 'cross') summary.crossUserCopies++;
        if (p.content === '') summary.emptyContent++;
        else if (p.content.length < 10) summary.shortContent++;
        if (/[^\x00-\x7f]/.test(p.content)) summary.unicodeContent++;
        if (p.content.includes('\r\n')) summary.crlfContent++;
      }
    });
    writeAll();
  } finally {
    db.close();
  }
  const d = summary.exactDuplicates;
  d.total = d.identical + d.caseOnly + d.whitespaceOnly;
  return summary;
}

/** Fills `out` with a pseudo-random unit vector determined by `seed`. */
function fillUnitVector(out: Float64Array, seed: number): void {
  const next = sfc32(seed);
  for (let i = 0; i < out.length; i++) out[i] = next() * 2 - 1;
  normalize(out);
}

function normalize(v: Float64Array): void {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i]! * v[i]!;
  const inv = 1 / Math.sqrt(s);
  for (let i = 0; i < v.length; i++) v[i] = v[i]! * inv;
}

/** A Python pickle (protocol 4) of a list of floats, as `pickle.dumps(list)` writes it. */
function pickleFloatList(v: Float64Array): Buffer {
  const parts: Buffer[] = [Buffer.from([0x5d, 0x94])]; // EMPTY_LIST, MEMOIZE
  for (let i = 0; i < v.length; i += 1000) {
    const n = Math.min(1000, v.length - i);
    const batch = Buffer.alloc(2 + n * 9);
    batch[0] = 0x28; // MARK
    for (let k = 0; k < n; k++) {
      batch[1 + k * 9] = 0x47; // BINFLOAT, big-endian double
      batch.writeDoubleBE(v[i + k]!, 2 + k * 9);
    }
    batch[batch.length - 1] = 0x65; // APPENDS
    parts.push(batch);
  }
  parts.push(Buffer.from([0x2e])); // STOP
  const body = Buffer.concat(parts);
  const head = Buffer.alloc(11);
  head[0] = 0x80; // PROTO
  head[1] = 4;
  head[2] = 0x95; // FRAME
  head.writeBigUInt64LE(BigInt(body.length), 3);
  return Buffer.concat([head, body]);
}

// ---------------------------------------------------------------------------------------
// CLI.

function usage(): string {
  return 'usage: node dist/scripts/make-fixture.js --out <file> [--rows N] [--dims D] [--encoding json|csv|f32|mixed] [--users U] [--seed S]';
}

function parseArgs(argv: string[]): FixtureOptions {
  const opts: Partial<FixtureOptions> = {};
  const intArg = (name: string, v: string | undefined): number => {
    if (v === undefined || !/^\d+$/.test(v)) throw new Error(`${name} needs a whole number, got ${v ?? 'nothing'}`);
    return Number(v);
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = argv[i + 1];
    switch (a) {
      case '--out':
        if (!v) throw new Error('--out needs a file path');
        opts.out = v;
        i++;
        break;
      case '--rows':
        opts.rows = intArg(a, v);
        i++;
        break;
      case '--dims':
        opts.dims = intArg(a, v);
        i++;
        break;
      case '--users':
        opts.users = intArg(a, v);
        i++;
        break;
      case '--seed':
        opts.seed = intArg(a, v);
        i++;
        break;
      case '--encoding':
        if (v !== 'json' && v !== 'csv' && v !== 'f32' && v !== 'mixed') throw new Error(`--encoding must be json, csv, f32 or mixed, got ${v ?? 'nothing'}`);
        opts.encoding = v;
        i++;
        break;
      case '-h':
      case '--help':
        console.log(usage());
        process.exit(0);
      default:
        throw new Error(`unknown argument ${a}`);
    }
  }
  if (!opts.out) throw new Error('--out is required');
  return opts as FixtureOptions;
}

if (isMain(import.meta.url) && process.argv.includes('--layout')) {
  // --layout NAME --out FILE: a small fixture of another source layout (layout-fixtures.ts).
  const arg = (name: string): string | undefined => process.argv[process.argv.indexOf(name) + 1];
  const layout = arg('--layout') as FixtureLayout;
  const out = arg('--out');
  if (!out || !(FIXTURE_LAYOUTS as readonly string[]).includes(layout)) {
    console.error(`make-fixture: usage: --layout ${FIXTURE_LAYOUTS.join('|')} --out <file>`);
    process.exit(2);
  }
  const fx = await makeLayoutFixture(layout, out);
  console.log(JSON.stringify({ layout, out, rows: fx.rows.length, deleted: fx.deletedIds.length }, null, 2));
} else if (isMain(import.meta.url)) {
  let opts: FixtureOptions;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (err) {
    console.error(`make-fixture: ${(err as Error).message}\n${usage()}`);
    process.exit(2);
  }
  const started = Date.now();
  const summary = makeFixture(opts);
  console.error(`wrote ${summary.rows} rows to ${summary.out} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  console.log(JSON.stringify(summary, null, 2));
}

// sql/003_canonical_hash.sql must hash exactly as src/source/canonical.ts does, or a row a
// trigger hashed would not match the migration's hashes (verify would call it changed, dedup
// would miss it). Checked over a corpus of edge cases and seeded random text on every target,
// and the generated case-folding table is checked against this Node's toLowerCase.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { canonicalize, contentHash, dedupHash } from '../../../src/source/canonical.js';
import { withDb } from '../../../src/postgres/connection.js';
import { installSchema, sqlDir } from '../../../src/postgres/schema.js';
import { SQL_FILE, casefoldPairs, casefoldSqlBlock } from '../../../scripts/gen-casefold-sql.js';
import { testTargets } from '../../helpers/targets.js';

// Deterministic PRNG so a failure can be reproduced.
let seed = 20250301;
const rnd = (): number => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)]!;

/** What trimEnd removes, plus near misses it keeps (U+0085, U+180E) and line breaks. */
const SPACES = [0x09, 0x0b, 0x0c, 0x20, 0xa0, 0x1680, 0x2000, 0x2005, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000, 0xfeff, 0x85, 0x180e, 0x0a, 0x0d];
/** Characters that exercise NFC and case folding. */
const LETTERS = [0x41, 0x65, 0x301, 0x308, 0x327, 0x3a3, 0x3c2, 0x3c3, 0x130, 0x131, 0xdf, 0x1e9e, 0x212a, 0x1100, 0x1161, 0x11a8, 0xac00, 0x10400, 0x13a0, 0x531];

function randomCodePoint(): number {
  for (;;) {
    const r = rnd();
    const c =
      r < 0.25 ? 0x20 + Math.floor(rnd() * 0x5f)
      : r < 0.4 ? pick(SPACES)
      : r < 0.5 ? pick(LETTERS)
      : r < 0.75 ? 1 + Math.floor(rnd() * 0xffff)
      : r < 0.9 ? 0x10000 + Math.floor(rnd() * 0x10000)
      : 1 + Math.floor(rnd() * 0x10ffff);
    // PostgreSQL text cannot hold NUL, and UTF-8 has no lone surrogates.
    if (c < 0xd800 || c > 0xdfff) return c;
  }
}

function corpus(): string[] {
  const fixed = [
    '', '\n', '\n\n\n', ' ', '\t\n \n', 'Hello, World!', 'plain ascii line\nsecond line\n',
    'a\r\nb\rc\r\n\r\n', '\r', '\r\r\n\n\r', 'mixed \r\n\ttabs\t\r\nend',
    'trailing spaces   \nand tabs\t\t\nnbsp\u00a0\nideographic\u3000\nline sep\u2028\npara sep\u2029\nzwnbsp\ufeff\n',
    'text\n   \n\t\n\u00a0\u3000\n', 'kept\u0085\nkept\u180e\nkept\u200b\n', 'x\u0085', 'x\u180e \u180e',
    'e\u0301', 'Cafe\u0301 CAFE\u0301', 'A\u030a\u0327', '\u212b \u212a \u2126', '\u1100\u1161\u11a8',
    'ΟΔΥΣΣΕΥΣ', 'Οδυσσευς', 'όσος', 'ΌΣΟΣ', 'Σ', 'ΑΣ.', 'ΑΣ\nΣΑ', 'ς σ Σ', 'İstanbul', 'İ\u0307', 'ıI',
    'Straße STRASSE ẞ', 'ПРИВЕТ МИР Ёж', 'ԱՐԱՐԱՏ', 'ᏣᎳᎩ ꭰ', '𐐀𐐁𐐂 𐐨', '🙂👍🏽 👨‍👩‍👧 🇩🇪', 'ǅǈǋ ᾈ ᾼ',
    'ⅠⅡⅢ ⒶⒷ Ａ', '𞤀𞤁 𖹀', 'a\\b\'c"d$$e',
  ];
  // Every mapped uppercase character, so each entry of the table reaches the server once.
  const upper = casefoldPairs().map(([c]) => String.fromCodePoint(c));
  for (let i = 0; i < upper.length; i += 40) fixed.push(upper.slice(i, i + 40).join(''));
  const random: string[] = [];
  for (let i = 0; i < 2000; i++) {
    const n = Math.floor(rnd() * 40);
    let s = '';
    for (let j = 0; j < n; j++) s += String.fromCodePoint(randomCodePoint());
    random.push(s);
  }
  return [...fixed, ...random];
}

/** A string with every non-printable-ASCII character as \u{…}, for failure messages. */
const show = (s: string) => JSON.stringify(s).replace(/[^\x20-\x7e]/gu, (c) => `\\u{${c.codePointAt(0)!.toString(16)}}`);

describe('canonical hashes in SQL (sql/003_canonical_hash.sql)', () => {
  test('dedupHash folds final sigma to sigma; contentHash keeps the case', () => {
    assert.equal(dedupHash('ΟΔΥΣΣΕΥΣ'), dedupHash('οδυσσευσ'));
    assert.equal(dedupHash('ΟΔΥΣΣΕΥΣ'), dedupHash('οδυσσευς'));
    assert.notEqual(contentHash('ΟΔΥΣΣΕΥΣ'), contentHash('οδυσσευσ'));
    assert.notEqual(contentHash('οδυσσευς'), contentHash('οδυσσευσ'));
  });

  test('the generated case-folding table matches this Node', () => {
    const text = readFileSync(join(sqlDir(), SQL_FILE), 'utf8');
    assert.ok(
      text.includes(casefoldSqlBlock()),
      `sql/${SQL_FILE} no longer matches toLowerCase of this Node (Unicode ${process.versions.unicode}): ` +
        'run `npm run build && node dist/scripts/gen-casefold-sql.js` and commit the SQL file',
    );
  });

  const texts = corpus();
  for (const target of testTargets()) {
    test(`${target.name}: SQL hashes equal JavaScript's for ${texts.length} texts`, async (t) => {
      const rows = texts.map((c, i) => ({ i: i + 1, c, ch: contentHash(c), dh: dedupHash(c) }));
      await withDb(await target.fresh(), async (db) => {
        await installSchema(db, { dimensions: 8 });
        const started = performance.now();
        const [res] = await db.query<{ total: number; diffs: string }>(
          `WITH x AS (
             SELECT i, c, ch, dh, memory_migrate_content_hash(c) AS sql_ch, memory_migrate_dedup_hash(c) AS sql_dh
               FROM jsonb_to_recordset($1::text::jsonb) AS x(i int, c text, ch text, dh text))
           SELECT count(*)::int AS total,
                  coalesce(jsonb_agg(jsonb_build_object('i', i, 'canonical', memory_migrate_canonical(c),
                                     'folded', memory_migrate_casefold(memory_migrate_canonical(c)), 'ch', sql_ch, 'dh', sql_dh))
                           FILTER (WHERE sql_ch <> ch OR sql_dh <> dh), '[]')::text AS diffs
             FROM x`,
          [JSON.stringify(rows)],
        );
        t.diagnostic(`${target.name}: ${texts.length} texts hashed and compared in ${(performance.now() - started).toFixed(0)} ms`);
        assert.equal(Number(res!.total), texts.length, 'every text reached the server');
        const diffs = JSON.parse(res!.diffs) as { i: number; canonical: string; folded: string; ch: string; dh: string }[];
        const detail = diffs.slice(0, 5).map((d) => {
          const text = texts[d.i - 1]!;
          const canonical = canonicalize(text);
          return (
            `#${d.i} ${show(text)}\n` +
            (d.canonical === canonical ? '  canonical form equal\n' : `  canonical SQL ${show(d.canonical)}\n            JS  ${show(canonical)}\n`) +
            `  contentHash ${d.ch === rows[d.i - 1]!.ch ? 'equal' : 'differs'}, dedupHash ${d.dh === rows[d.i - 1]!.dh ? 'equal' : `differs (SQL folded ${show(d.folded)})`}`
          );
        });
        assert.equal(diffs.length, 0, `${diffs.length} of ${texts.length} texts hash differently in SQL:\n${detail.join('\n')}`);
      });
    });
  }
});

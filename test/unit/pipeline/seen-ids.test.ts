// The read loop's id bookkeeping (issue 19): SeenIds remembers only the ids the source says may
// repeat (SourceFile.foldedIdsThatMayRepeat, one SQLite grouping query), and still finds every
// clash and repeat it found when it remembered every id; the dry run's and the backfill's dedup
// keys live on disk (ScratchKeys) and are deleted with the run.
import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSource } from '../../../src/source/reader.js';
import { ScratchKeys } from '../../../src/source/scratch-keys.js';
import { newSourceBatch, SeenIds } from '../../../src/pipeline/source-batch.js';
import { RunDedupKeys, StoredKeyFilter } from '../../../src/pipeline/keys.js';
import { createHash } from 'node:crypto';

const dir = mkdtempSync(join(tmpdir(), 'mm-seen-ids-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** An EspressoBot-layout file whose id column is not a key, with these ids in rowid order. */
function fileWithIds(name: string, ids: (string | null)[]): string {
  const path = join(dir, name);
  const db = new Database(path);
  db.exec(`CREATE TABLE memories (id TEXT, user_id TEXT, content TEXT, embedding TEXT, metadata TEXT,
    created_at TEXT, updated_at TEXT)`);
  const ins = db.prepare('INSERT INTO memories (id, user_id, content) VALUES (?, ?, ?)');
  ids.forEach((id, i) => ins.run(id, 'user_a', `memory number ${i}`));
  db.close();
  return path;
}

/** What the read loop marks, batch by batch (one row a batch): clash (with whom) or repeat. */
function marks(path: string): { mayRepeat: string[]; marks: string[] } {
  const source = openSource(path);
  try {
    const mayRepeat = source.foldedIdsThatMayRepeat();
    const seen = new SeenIds(mayRepeat);
    const out: string[] = [];
    for (const row of source.rows()) {
      const batch = newSourceBatch();
      seen.add(row, batch);
      const clash = batch.idClashes?.get(row);
      out.push(clash !== undefined ? `${row.id}~${clash}` : batch.repeatsId ? `${row.id}=` : row.id);
    }
    return { mayRepeat: [...mayRepeat].sort(), marks: out };
  } finally {
    source.close();
  }
}

describe('SeenIds with the source prescan', () => {
  test('unique ASCII ids: nothing may repeat, nothing is remembered or marked', () => {
    const r = marks(fileWithIds('unique.db', ['a', 'b', 'c', 'mem_1', 'MEM_2']));
    assert.deepEqual(r.mayRepeat, []);
    assert.deepEqual(r.marks, ['a', 'b', 'c', 'mem_1', 'MEM_2']);
  });

  test('an ASCII case clash and a repeat are found; other ids are left alone', () => {
    const r = marks(fileWithIds('ascii.db', ['Mem_Case', 'other', 'mem_case', 'rep', 'rep', 'MEM_CASE']));
    assert.deepEqual(r.mayRepeat, ['mem_case', 'rep']);
    assert.deepEqual(r.marks, ['Mem_Case', 'other', 'mem_case~Mem_Case', 'rep', 'rep=', 'MEM_CASE~Mem_Case']);
  });

  test("JavaScript's fold, not SQLite's: the Kelvin sign clashes with k, Σ with σ", () => {
    // SQLite's lower() folds ASCII only: 'K' (U+212A) and 'k' group apart there. Every id with
    // a non-ASCII character is a candidate under its JavaScript fold, so the clash is found.
    const r = marks(fileWithIds('unicode.db', ['k', '\u212A', 'ΣOS', 'σos', 'plain']));
    assert.deepEqual(r.mayRepeat, ['k', 'σos']);
    assert.deepEqual(r.marks, ['k', '\u212A~k', 'ΣOS', 'σos~ΣOS', 'plain']);
  });

  test('a NULL id reads as rowid:N and clashes with a stored id spelled that way', () => {
    const r = marks(fileWithIds('null-id.db', ['ROWID:2', null]));
    assert.deepEqual(r.mayRepeat, ['rowid:2']);
    assert.deepEqual(r.marks, ['ROWID:2', 'rowid:2~ROWID:2']);
  });
});

describe('StoredKeyFilter', () => {
  const hash = (s: string) => createHash('sha256').update(s).digest('hex');
  test('never forgets a key it was given; rarely claims one it was not; keys are per user', () => {
    const filter = new StoredKeyFilter();
    for (let i = 0; i < 200_000; i++) filter.add(`user_${i % 7}`, hash(`stored ${i}`));
    for (let i = 0; i < 200_000; i++) assert.ok(filter.mayHold(`user_${i % 7}`, hash(`stored ${i}`)), `forgot stored ${i}`);
    let claimed = 0;
    for (let i = 0; i < 200_000; i++) if (filter.mayHold(`user_${i % 7}`, hash(`never stored ${i}`))) claimed++;
    // 4 probes into 2^27 bits holding 200k keys: about 2e-8 of keys never stored.
    assert.ok(claimed <= 2, `${claimed} keys never stored were claimed`);
    let otherUser = 0;
    for (let i = 0; i < 10_000; i++) if (filter.mayHold('someone_else', hash(`stored ${i}`))) otherUser++;
    assert.ok(otherUser <= 2, `${otherUser} keys of other users were claimed`);
  });
});

describe('ScratchKeys and RunDedupKeys', () => {
  test('keeps what it is told across commits, and deletes its file on close', () => {
    const before = new Set(readdirSync(tmpdir()).filter((f) => f.startsWith('mm-scratch-keys-')));
    const keys = new ScratchKeys();
    const made = readdirSync(tmpdir()).filter((f) => f.startsWith('mm-scratch-keys-') && !before.has(f));
    assert.equal(made.length, 1);
    // More writes than one transaction holds.
    for (let i = 0; i < 25_000; i++) keys.set(`k${i}`, `v${i}`);
    keys.set('k7', 'replaced');
    assert.equal(keys.get('k0'), 'v0');
    assert.equal(keys.get('k24999'), 'v24999');
    assert.equal(keys.get('k7'), 'replaced');
    assert.equal(keys.get('k25000'), undefined);
    assert.equal(keys.has('k1'), true);
    keys.close();
    keys.close();
    assert.equal(existsSync(join(tmpdir(), made[0]!)), false);
  });

  test('RunDedupKeys: per user, by dedup hash', () => {
    const keys = new RunDedupKeys();
    const h = 'ab'.repeat(32);
    keys.set('user_a', h, 'mem_1');
    assert.equal(keys.get('user_a', h), 'mem_1');
    assert.equal(keys.get('user_b', h), undefined);
    assert.equal(keys.get('user_a', 'cd'.repeat(32)), undefined);
    keys.close();
  });
});

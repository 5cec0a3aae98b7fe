// Timestamps end to end: a hand-made memory file whose created_at / updated_at hold the shapes
// agent stores write (UTC offsets with and without a colon, SQLite text, ISO with Z, epoch
// seconds and milliseconds as integers, reals and numeric strings), migrated by the real CLI;
// Postgres must hold the same instants. The expected UTC instants are written by hand, and
// read back with to_char in UTC, so neither side goes through our parser or JS Date.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { testTargets } from '../helpers/targets.js';
import { runCli, targetArgs, parseJson } from '../helpers/cli.js';
import { withDb } from '../helpers/rerun.js';
import type { TargetOptions } from '../../src/postgres/connection.js';

interface Case {
  label: string;
  /**
   * What the source column holds: a string is TEXT, a bigint INTEGER, a number REAL
   * (better-sqlite3 binds every JS number as REAL, as an app writing Date.now() through it does).
   */
  source: string | number | bigint;
  /** The instant, UTC, microseconds, as written by hand. */
  utc: string;
}

const CASES: Case[] = [
  // Offsets: the stored instant is the local time minus the offset.
  { label: 'ISO, +02:00', source: '2024-01-02T03:04:05+02:00', utc: '2024-01-02T01:04:05.000000Z' },
  { label: 'space, -0530 (no colon)', source: '2024-01-02 03:04:05-0530', utc: '2024-01-02T08:34:05.000000Z' },
  { label: 'ISO, +0530 (no colon)', source: '2024-01-02T03:04:05+0530', utc: '2024-01-01T21:34:05.000000Z' },
  { label: 'ISO with ms, -05:00', source: '2024-01-02T03:04:05.678-05:00', utc: '2024-01-02T08:04:05.678000Z' },
  { label: 'space with ms, +0100', source: '2024-01-02 03:04:05.250+0100', utc: '2024-01-02T02:04:05.250000Z' },
  { label: 'ISO, +02 (hours only)', source: '2024-01-02T03:04:05+02', utc: '2024-01-02T01:04:05.000000Z' },
  { label: 'ISO, +00:00', source: '2024-01-02T03:04:05+00:00', utc: '2024-01-02T03:04:05.000000Z' },
  { label: 'offset crosses the year', source: '2024-12-31T23:30:00-01:00', utc: '2025-01-01T00:30:00.000000Z' },
  { label: 'offset crosses back over a leap day', source: '2024-03-01T00:30:00+01:00', utc: '2024-02-29T23:30:00.000000Z' },
  { label: 'ISO, +14:00 (Kiribati)', source: '2024-01-02T03:04:05+14:00', utc: '2024-01-01T13:04:05.000000Z' },
  // UTC text.
  { label: 'SQLite CURRENT_TIMESTAMP', source: '2024-01-02 03:04:05', utc: '2024-01-02T03:04:05.000000Z' },
  { label: 'ISO, Z', source: '2024-01-02T03:04:05Z', utc: '2024-01-02T03:04:05.000000Z' },
  { label: 'ISO with ms, Z', source: '2024-01-02T03:04:05.678Z', utc: '2024-01-02T03:04:05.678000Z' },
  // Epochs. 1704164645 s = 2024-01-02T03:04:05Z (1704067200 is 2024-01-01T00:00:00Z, + 86400 + 11045).
  { label: 'epoch seconds, integer', source: 1704164645n, utc: '2024-01-02T03:04:05.000000Z' },
  { label: 'epoch milliseconds, integer', source: 1704164645678n, utc: '2024-01-02T03:04:05.678000Z' },
  { label: 'epoch seconds, real', source: 1704164645.5, utc: '2024-01-02T03:04:05.500000Z' },
  { label: 'epoch milliseconds, real', source: 1704164645678, utc: '2024-01-02T03:04:05.678000Z' },
  { label: 'epoch seconds, numeric string', source: '1704164645', utc: '2024-01-02T03:04:05.000000Z' },
  { label: 'epoch milliseconds, numeric string', source: '1704164645678', utc: '2024-01-02T03:04:05.678000Z' },
  { label: 'epoch seconds, numeric string with fraction', source: '1704164645.25', utc: '2024-01-02T03:04:05.250000Z' },
  // 1000000000 s = 2001-09-09T01:46:40Z (the well-known "billennium").
  { label: 'epoch seconds 1e9, integer', source: 1000000000n, utc: '2001-09-09T01:46:40.000000Z' },
  { label: 'epoch milliseconds 1e12, integer', source: 1000000000000n, utc: '2001-09-09T01:46:40.000000Z' },
];

// Sub-millisecond fractions, as Python's datetime.isoformat() / str(datetime) write them.
// PostgreSQL's timestamptz keeps microseconds; see the todo test below.
const MICRO: Case[] = [
  { label: 'ISO with microseconds, Z', source: '2024-01-02T03:04:05.123456Z', utc: '2024-01-02T03:04:05.123456Z' },
  { label: 'Python str(datetime), +00:00', source: '2024-01-02 03:04:05.123456+00:00', utc: '2024-01-02T03:04:05.123456Z' },
  { label: 'Python isoformat(), -05:00', source: '2024-01-02T03:04:05.000250-05:00', utc: '2024-01-02T08:04:05.000250Z' },
];

const dir = mkdtempSync(join(tmpdir(), 'mm-timestamps-'));
const sourcePath = join(dir, 'memory.db');

after(() => rmSync(dir, { recursive: true, force: true }));

/** Row i: created_at is case i, updated_at case i+1 (so both columns see every shape). */
function writeSource(): void {
  const db = new Database(sourcePath);
  try {
    // No declared types on the time columns: values keep their storage class (INTEGER, REAL, TEXT).
    db.exec(`CREATE TABLE memories (id TEXT PRIMARY KEY, user_id TEXT, content TEXT, embedding TEXT, metadata TEXT, created_at, updated_at)`);
    const ins = db.prepare('INSERT INTO memories (id, user_id, content, embedding, metadata, created_at, updated_at) VALUES (?, ?, ?, NULL, ?, ?, ?)');
    CASES.forEach((c, i) => {
      const next = CASES[(i + 1) % CASES.length]!;
      ins.run(`ts_${String(i).padStart(2, '0')}`, 'user_ts', `Timestamp case ${i}: ${c.label}`, '{"agent":"EspressoBot"}', c.source, next.source);
    });
    MICRO.forEach((c, i) => {
      ins.run(`us_${i}`, 'user_ts', `Microsecond case ${i}: ${c.label}`, '{"agent":"EspressoBot"}', c.source, c.source);
    });
    // What SQLite stored is what the cases say (the numbers really are INTEGER / REAL).
    const types = db.prepare(`SELECT typeof(created_at) AS t FROM memories WHERE id LIKE 'ts\\_%' ESCAPE '\\' ORDER BY id`).all() as { t: string }[];
    assert.deepEqual(
      types.map((x) => x.t),
      CASES.map((c) => (typeof c.source === 'string' ? 'text' : typeof c.source === 'bigint' ? 'integer' : 'real')),
    );
  } finally {
    db.close();
  }
}

before(writeSource);
const show = (v: string | number | bigint) => (typeof v === 'string' ? JSON.stringify(v) : String(v));

const UTC_TEXT = `'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'`;

/** created_at / updated_at of rows whose id starts with `prefix`, as UTC text with microseconds, by id. */
async function storedTimes(opts: TargetOptions, prefix: string): Promise<{ id: string; created: string; updated: string }[]> {
  return withDb(opts, (db) =>
    db.query<{ id: string; created: string; updated: string }>(
      `SELECT id,
              to_char(created_at AT TIME ZONE 'UTC', ${UTC_TEXT}) AS created,
              to_char(updated_at AT TIME ZONE 'UTC', ${UTC_TEXT}) AS updated
         FROM memories WHERE starts_with(id, $1) ORDER BY id COLLATE "C"`,
      [prefix],
    ),
  );
}

for (const target of testTargets()) {
  describe(`timestamps on ${target.name}`, () => {
    let migrated: TargetOptions | undefined;

    test('created_at / updated_at land as the same UTC instants as the source', async () => {
      const t = await target.fresh();
      const res = await runCli(['migrate', '--sqlite', sourcePath, ...targetArgs(t), '--embedder', 'local', '--skip-test', '--json']);
      assert.equal(res.code, 0, res.stderr);
      const r = parseJson(res);
      assert.equal(r.ok, true, r.error);
      assert.equal(r.memories.read, CASES.length + MICRO.length);
      assert.equal(r.memories.migrated, CASES.length + MICRO.length);
      migrated = t;

      const rows = await storedTimes(t, 'ts_');
      assert.deepEqual(rows.map((x) => x.id), CASES.map((_, i) => `ts_${String(i).padStart(2, '0')}`));
      const wrong: string[] = [];
      CASES.forEach((c, i) => {
        const row = rows[i]!;
        const next = CASES[(i + 1) % CASES.length]!;
        if (row.created !== c.utc) wrong.push(`created_at ${show(c.source)} (${c.label}): stored ${row.created}, expected ${c.utc}`);
        if (row.updated !== next.utc) wrong.push(`updated_at ${show(next.source)} (${next.label}): stored ${row.updated}, expected ${next.utc}`);
      });
      assert.deepEqual(wrong, []);
    });

    test(
      'sub-millisecond fractions keep their microseconds',
      async () => {
        assert.ok(migrated, 'the migration above ran');
        const rows = await storedTimes(migrated, 'us_');
        assert.deepEqual(
          rows.map((x) => [x.created, x.updated]),
          MICRO.map((c) => [c.utc, c.utc]),
        );
      },
    );

    test('verify passes on these timestamps, and names a created_at moved by one microsecond', async () => {
      assert.ok(migrated, 'the migration above ran');
      const clean = await runCli(['verify', '--sqlite', sourcePath, ...targetArgs(migrated), '--json']);
      assert.equal(clean.code, 0, clean.stdout + clean.stderr);
      await withDb(migrated, (db) => db.query(`UPDATE memories SET created_at = created_at + interval '1 microsecond' WHERE id = 'us_0'`));
      const moved = await runCli(['verify', '--sqlite', sourcePath, ...targetArgs(migrated), '--json']);
      assert.equal(moved.code, 3, moved.stdout + moved.stderr);
      const named = parseJson(moved).mismatches.map((m: { id: string; check: string }) => `${m.id}:${m.check}`);
      assert.deepEqual(named, ['us_0:created_at']);
    });
  });
}

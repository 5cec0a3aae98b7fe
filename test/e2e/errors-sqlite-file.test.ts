// The SQLite file, through the real CLI as a child process: a file that is missing, a
// directory, not SQLite, corrupt, locked or unreadable is refused with one line that names the
// problem and the fix, and nothing is written to the target; a WAL file is read with its -wal
// sidecar. Data problems inside a good file are counted per row instead.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  statSync,
  truncateSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { testTargets } from '../helpers/targets.js';
import { CLI, runCli, targetArgs, parseJson, sha256File, type CliResult } from '../helpers/cli.js';
import { scratchFolder, makeDb, STANDARD } from '../helpers/sqlite-files.js';
import { assertOneLineUsage, assertNothingWritten, local } from '../helpers/refusals.js';
import { openDb } from '../../src/postgres/connection.js';

const { root, tmpPath } = scratchFolder('mm-errors-');

// ------------------------------------------------------------------------------ the SQLite file
for (const target of testTargets('the SQLite file')) {
  describe(`the SQLite file (${target.name})`, { concurrency: 4 }, () => {
    const refused = async (file: string, re: RegExp, extra: string[] = [], env: Record<string, string | undefined> = {}) => {
      const t = await target.fresh();
      const res = await runCli(['migrate', '--sqlite', file, ...targetArgs(t), ...local, ...extra], env);
      assertOneLineUsage(res, re);
      await assertNothingWritten(t);
      return res;
    };

    test('missing', async () => {
      const p = join(root, 'nowhere', 'missing.db');
      await refused(p, /source file .*missing\.db does not exist; check the --sqlite path/);
      assert.equal(existsSync(p), false, 'not created by the attempt');
    });

    test('a directory', async () => {
      const d = tmpPath('dir.db');
      mkdirSync(d);
      await refused(d, /dir\.db is a directory, not a SQLite file; pass the path of the \.db file itself/);
    });

    test('not SQLite (a text file)', async () => {
      const p = tmpPath('notes.db');
      writeFileSync(p, 'these are my notes, not a database\n'.repeat(40));
      await refused(p, /notes\.db is not a SQLite database \(unknown header\)/);
    });

    test('encrypted or an unknown header (SQLCipher-like random bytes)', async () => {
      const p = tmpPath('cipher.db');
      writeFileSync(p, randomBytes(16384));
      await refused(p, /cipher\.db is not a SQLite database \(unknown header\); if it is encrypted \(SQLCipher\), decrypt it first/);
    });

    test('corrupt: "database disk image is malformed"', async () => {
      const p = tmpPath('corrupt.db');
      makeDb(p, 400);
      const size = statSync(p).size;
      const fd = openSync(p, 'r+');
      writeSync(fd, Buffer.alloc(2048, 0xa7), 0, 2048, 4096 * 2);
      writeSync(fd, Buffer.alloc(2048, 0x3c), 0, 2048, Math.floor(size / 2));
      closeSync(fd);
      await refused(p, /corrupt\.db is corrupt \(database disk image is malformed\); salvage it with `sqlite3 .*corrupt\.db \.recover \| sqlite3 recovered\.db`/);
    });

    test('corrupt: truncated', async () => {
      const p = tmpPath('truncated.db');
      makeDb(p, 400);
      truncateSync(p, Math.floor(statSync(p).size / 3));
      await refused(p, /truncated\.db is corrupt .*salvage it with/);
    });

    test('a memories table without content, and one without user_id', async () => {
      const noContent = tmpPath('nocontent.db');
      const a = new Database(noContent);
      a.exec(`CREATE TABLE memories (id TEXT PRIMARY KEY, user_id TEXT, body TEXT); INSERT INTO memories VALUES ('m1', 'u', 'x')`);
      a.close();
      await refused(noContent, /memories table in .*nocontent\.db has no content column; .*expected columns id, user_id, content/);
      const noUser = tmpPath('nouser.db');
      const b = new Database(noUser);
      b.exec(`CREATE TABLE memories (id TEXT PRIMARY KEY, owner TEXT, content TEXT); INSERT INTO memories VALUES ('m1', 'u', 'x')`);
      b.close();
      await refused(noUser, /memories table in .*nouser\.db has no user_id column/);
    });

    test('locked by a writer: gives up after --busy-timeout', async () => {
      const p = tmpPath('locked.db');
      makeDb(p, 10);
      const writer = new Database(p);
      try {
        writer.exec('BEGIN EXCLUSIVE');
        writer.prepare(`INSERT INTO memories (id, user_id, content) VALUES ('x', 'u', 'uncommitted')`).run();
        const started = Date.now();
        await refused(p, /locked\.db is locked by another connection \(still locked after 400 ms\); stop the app that is writing to it, or copy the file/, [
          '--busy-timeout',
          '400',
        ]);
        const waited = Date.now() - started;
        assert.ok(waited >= 400 && waited < 15_000, `waited ${waited} ms`);
      } finally {
        writer.exec('ROLLBACK');
        writer.close();
      }
    });

    test('a WAL file with a -wal sidecar: the committed WAL rows are read', async () => {
      const p = tmpPath('wal.db');
      const writer = new Database(p);
      try {
        writer.pragma('journal_mode = WAL');
        writer.pragma('wal_autocheckpoint = 0');
        writer.exec(STANDARD);
        const ins = writer.prepare('INSERT INTO memories (id, user_id, content) VALUES (?, ?, ?)');
        writer.transaction(() => {
          for (let i = 0; i < 12; i++) ins.run(`w${i}`, 'user_wal', `remembered only in the WAL, number ${i}`);
        })();
        assert.ok(statSync(p + '-wal').size > 0, 'the rows are in the -wal file');
        const mainBefore = sha256File(p);
        const t = await target.fresh();
        const res = await runCli(['migrate', '--sqlite', p, ...targetArgs(t), ...local, '--skip-test', '--json']);
        assert.equal(res.code, 0, res.stderr);
        const r = parseJson(res);
        assert.equal(r.source.layout, 'memories');
        assert.equal(r.memories.read, 12);
        assert.equal(r.memories.migrated, 12);
        assert.equal(sha256File(p), mainBefore, 'the main file is untouched');
      } finally {
        writer.close();
      }
    });
  });
}

describe('the SQLite file: unreadable', () => {
  test('a file the user cannot read (the CLI runs as nobody)', async () => {
    const dir = tmpPath('x').replace(/x$/, 'noperm');
    mkdirSync(dir, { recursive: true });
    const p = join(dir, 'secret.db');
    makeDb(p, 3);
    const pg = join(dir, 'pg');
    chmodSync(root, 0o755);
    chmodSync(join(dir, '..'), 0o755);
    chmodSync(dir, 0o777);
    chmodSync(p, 0o000);
    try {
      const res = await runAs(65534, ['migrate', '--sqlite', p, '--pglite-dir', pg, ...local]);
      assertOneLineUsage(res, /cannot read .*secret\.db \(permission denied\); run as a user that can read it, or copy it somewhere readable/);
      assert.equal(existsSync(pg), false, 'the PGlite directory was not even created');
    } finally {
      chmodSync(p, 0o600);
      chmodSync(root, 0o700);
    }
  });
});

/** runCli, but as another user (tests run as root, and root reads anything). */
function runAs(uid: number, args: string[]): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const env: Record<string, string> = { PATH: process.env.PATH ?? '/usr/bin:/bin', CI: 'true', HOME: '/tmp' };
    const child = spawn(process.execPath, [CLI, ...args], { uid, gid: uid, env, cwd: '/tmp', stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

// ------------------------------------------------------------------------------ data problems
/** One row of each data problem, among good rows. */
function makeProblemFile(path: string): void {
  const db = new Database(path);
  db.exec(STANDARD);
  const ins = db.prepare('INSERT INTO memories (id, user_id, content, embedding, metadata) VALUES (?, ?, ?, ?, ?)');
  const vec = (n: number, fill = 0.01) => JSON.stringify(Array.from({ length: n }, (_, i) => (i % 7) * fill + 0.001));
  db.transaction(() => {
    for (let i = 0; i < 8; i++) ins.run(`ok_${i}`, 'user_a', `a perfectly good memory number ${i}`, null, '{"category":"note"}');
    // Non-UTF-8 bytes: once as a BLOB, once as TEXT holding invalid bytes.
    ins.run('bad_utf8_blob', 'user_a', Buffer.from([0x63, 0x61, 0x66, 0xe9, 0x20, 0xff, 0xfe]), null, '{}');
    db.exec(`INSERT INTO memories (id, user_id, content) VALUES ('bad_utf8_text', 'user_a', CAST(X'6f6b20c328' AS TEXT))`);
    ins.run('huge', 'user_b', 'x'.repeat(1024 * 1024 + 10), null, '{}');
    ins.run('Mem_Case', 'user_b', 'the first of two ids that differ only in case', null, '{}');
    ins.run('mem_case', 'user_b', 'the second of two ids that differ only in case', null, '{}');
    ins.run('meta_not_json', 'user_b', 'metadata that is not JSON', null, '{category: note, oops');
    ins.run('emb_nan', 'user_c', 'an embedding with NaN in it', `[NaN,${vec(383).slice(1)}`, '{}');
    ins.run('emb_short', 'user_c', 'an embedding of the wrong length', vec(5), '{}');
    ins.run('emb_good', 'user_c', 'an embedding that is fine', vec(384), '{}');
    ins.run('null_user', null, 'a memory without a user', null, '{}');
  })();
  db.close();
}

for (const target of testTargets('data problems are counted per row, not fatal')) {
  describe(`data problems are counted per row, not fatal (${target.name})`, () => {
    test('non-UTF-8, over 1 MB, ids differing in case, metadata not JSON, NaN / wrong-length vectors, NULL user_id', async () => {
      const p = tmpPath('problems.db');
      makeProblemFile(p);
      const t = await target.fresh();
      const reportFile = tmpPath('report.json');
      const res = await runCli([
        'migrate', '--sqlite', p, ...targetArgs(t), ...local, '--source-model', 'local-hash-v1', '--skip-test', '--json', '--report', reportFile,
      ]);
      assert.equal(res.code, 0, res.stderr);
      const r = parseJson(res);
      assert.equal(r.memories.read, 18);
      assert.deepEqual(r.memories.skippedByReason, {
        'content is not valid UTF-8': 2,
        'content over 1 MB': 1,
        'id differs only in case from Mem_Case': 1,
        'user_id is NULL': 1,
      });
      assert.equal(r.memories.skipped, 5);
      assert.equal(r.memories.migrated, 13);
      assert.equal(r.memories.warnings['metadata not JSON (kept as {raw})'], 1);
      assert.equal(r.memories.warnings['stored vector invalid, re-embedded'], 2);
      assert.equal(r.embeddings.invalidStored, 2);
      assert.equal(r.embeddings.reused, 1);
      // The --report file lists every skipped row with id, user and reason.
      const full = JSON.parse(readFileSync(reportFile, 'utf8'));
      const skipped = new Map<string, { user: string | null; reason: string }>(full.skippedRows.map((s: any) => [s.id, s]));
      assert.equal(skipped.size, 5);
      assert.deepEqual(skipped.get('null_user'), { id: 'null_user', user: null, reason: 'user_id is NULL' });
      assert.deepEqual(skipped.get('huge'), { id: 'huge', user: 'user_b', reason: 'content over 1 MB' });
      assert.deepEqual(skipped.get('mem_case'), { id: 'mem_case', user: 'user_b', reason: 'id differs only in case from Mem_Case' });
      assert.equal(skipped.get('bad_utf8_text')?.reason, 'content is not valid UTF-8');
      assert.deepEqual(full.rejectedRows, []);
      // The stored rows: the raw metadata kept, the bad vectors replaced by fresh ones.
      const db = await openDb(t);
      try {
        const [m] = await db.query<{ md: any }>(`SELECT metadata AS md FROM memories WHERE id = 'meta_not_json'`);
        assert.equal(typeof m!.md === 'string' ? JSON.parse(m!.md).raw : m!.md.raw, '{category: note, oops');
        const [n] = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM memories WHERE embedding IS NULL`);
        assert.equal(Number(n!.n), 0);
      } finally {
        await db.close();
      }
    });
  });
}

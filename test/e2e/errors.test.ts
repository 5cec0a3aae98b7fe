// Every "clear error" of issue 7, through the real CLI as a child process: exit code 2, ONE
// line on stderr that names the problem and the fix (no stack unless DEBUG=memory-migrate),
// and nothing written to the target. Data problems are counted per row instead. Cases that
// need a real server (authentication, privileges, statement timeout) run when
// TEST_DATABASE_URL is set.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import postgres from 'postgres';
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { createServer, type Server, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testTargets } from '../helpers/targets.js';
import { CLI, runCli, targetArgs, parseJson, sha256File, type CliResult } from '../helpers/cli.js';
import { startFakeOpenAI, type FakeOpenAI } from '../helpers/fake-openai.js';
import { openDb, type TargetOptions } from '../../src/postgres/connection.js';
import { mapSchemaError } from '../../src/postgres/schema.js';
import { describeLoadError, UsageError } from '../../src/errors.js';

const root = mkdtempSync(join(tmpdir(), 'mm-errors-'));
after(() => {
  try {
    chmodSync(root, 0o700);
  } catch {
    /* gone */
  }
  rmSync(root, { recursive: true, force: true });
});
let counter = 0;
function tmpPath(name: string): string {
  const dir = join(root, `t${++counter}`);
  mkdirSync(dir, { recursive: true });
  return join(dir, name);
}

const PG_URL = process.env.TEST_DATABASE_URL;

/** A small memory file in the app's layout: `n` rows over 3 users. */
function makeDb(path: string, n: number, schema = STANDARD): void {
  const db = new Database(path);
  db.exec(schema);
  const ins = db.prepare('INSERT INTO memories (id, user_id, content, metadata, created_at) VALUES (?, ?, ?, ?, ?)');
  db.transaction(() => {
    for (let i = 0; i < n; i++) {
      ins.run(`mem_${String(i).padStart(4, '0')}`, `user_${i % 3}`, `memory ${i}: the user likes item ${i * 7} `.repeat(4), '{"category":"pref"}', '2024-05-06 07:08:09');
    }
  })();
  db.close();
}
const STANDARD = `CREATE TABLE memories (
  id TEXT PRIMARY KEY, user_id TEXT, content TEXT, embedding BLOB, metadata TEXT,
  created_at DATETIME DEFAULT CURRENT_TIMESTAMP, updated_at DATETIME DEFAULT CURRENT_TIMESTAMP)`;

const good = tmpPath('good.db');
before(() => makeDb(good, 30));

/** Exit 2, one line on stderr, the expected text, no stack trace. */
function assertOneLineUsage(res: CliResult, re: RegExp): void {
  assert.equal(res.code, 2, `exit ${res.code}\nstdout: ${res.stdout}\nstderr: ${res.stderr}`);
  const lines = res.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line on stderr, got:\n${res.stderr}`);
  assert.match(lines[0]!, /^memory-migrate: /);
  assert.match(lines[0]!, re);
  assert.doesNotMatch(res.stderr, /^\s+at /m, 'no stack trace');
}

async function tablesIn(t: TargetOptions): Promise<string[]> {
  const db = await openDb(t);
  try {
    const rows = await db.query<{ name: string }>(
      `SELECT tablename AS name FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1`,
    );
    return rows.map((r) => r.name);
  } finally {
    await db.close();
  }
}

/** Nothing was written: no PGlite cluster at all, or no tables in the PostgreSQL database. */
async function assertNothingWritten(t: TargetOptions): Promise<void> {
  if (t.pgliteDir) {
    assert.equal(existsSync(join(t.pgliteDir, 'PG_VERSION')), false, `a PGlite cluster was created in ${t.pgliteDir}`);
  } else {
    assert.deepEqual(await tablesIn(t), [], 'tables were created in the target');
  }
}

/** A fresh PGlite directory that does not exist yet. */
function pgliteTarget(): TargetOptions {
  return { pgliteDir: join(tmpPath('pg'), 'data') };
}

const local = ['--embedder', 'local'];

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

// ------------------------------------------------------------------------------ the target
describe('the target', { concurrency: 4 }, () => {
  test('DATABASE_URL malformed (flag and environment)', async () => {
    // In an empty working directory: a run that fell back to the default target would create
    // ./.memory-migrate/pgdata there; a refused run leaves the directory empty.
    const cwd = mkdtempSync(join(root, 'cwd-'));
    const a = await runCli(['migrate', '--sqlite', good, ...local, '--database-url', 'postgres//mm:Hunter2pw@localhost/db'], {}, undefined, { cwd });
    assertOneLineUsage(a, /DATABASE_URL is malformed .*: use postgres:\/\/user:\*\*\*@host:5432\/database, or unset it to use embedded PGlite/);
    assert.doesNotMatch(a.stderr, /Hunter2pw/);
    assert.deepEqual(readdirSync(cwd), [], 'the run with a malformed --database-url wrote to its working directory');
    const b = await runCli(['migrate', '--sqlite', good, ...local], { DATABASE_URL: 'mysql://root:Hunter2pw@127.0.0.1:3306/agent' }, undefined, { cwd });
    assertOneLineUsage(b, /DATABASE_URL is malformed \(mysql:\/\/root:\*\*\*@127\.0\.0\.1:3306\/agent\)/);
    assert.doesNotMatch(b.stderr, /Hunter2pw/);
    assert.deepEqual(readdirSync(cwd), [], 'the run with a malformed DATABASE_URL wrote to its working directory');
  });

  test('host unreachable: refused at once on a closed port', async () => {
    const started = Date.now();
    const res = await runCli(['migrate', '--sqlite', good, ...local, '--database-url', `postgres://mm:pw12345@127.0.0.1:${await closedPort()}/agent`]);
    assertOneLineUsage(res, /cannot reach PostgreSQL at postgres:\/\/mm:\*\*\*@127\.0\.0\.1:\d+\/agent \(ECONNREFUSED\): check the host and port and that the server is running/);
    assert.ok(Date.now() - started < 15_000);
  });

  test('host unreachable: a server that never answers, bounded by --connect-timeout', async () => {
    const silent = await silentServer();
    try {
      // 60 s only stops a hung CLI (it would exit by signal and fail below); the outcome is asserted, not the time.
      const res = await runCli(['migrate', '--sqlite', good, ...local, '--connect-timeout', '1', '--database-url', `postgres://mm:pw12345@127.0.0.1:${silent.port}/agent`], {}, 60_000);
      assert.equal(res.signal, null, 'the CLI gave up by itself');
      assertOneLineUsage(res, /cannot reach PostgreSQL at postgres:\/\/mm:\*\*\*@127\.0\.0\.1:\d+\/agent: no answer within 1 s \(--connect-timeout\)/);
      assert.ok(silent.connections() >= 1, 'the CLI connected to the silent server and waited for an answer');
    } finally {
      silent.close();
    }
  });

  for (const target of testTargets('a vector width that does not match the existing table')) {
    test(`a vector width that does not match the existing table (${target.name}): names the column, suggests --dimensions / --force-recreate, writes nothing`, async () => {
      const t = await target.fresh();
      const first = await runCli(['migrate', '--sqlite', good, ...targetArgs(t), ...local, '--dimensions', '1536', '--skip-test', '--limit', '5']);
      assert.equal(first.code, 0, first.stderr);
      const before = await snapshot(t);
      const res = await runCli(['migrate', '--sqlite', good, ...targetArgs(t), ...local, '--skip-test']);
      assertOneLineUsage(
        res,
        /memories\.embedding in the target is vector\(1536\) but this run embeds with 384 dimensions: pass --dimensions 1536 .*or --force-recreate to back up the tables and rebuild them/,
      );
      assert.deepEqual(await snapshot(t), before, `${target.name}: the failed run changed the target`);
    });
  }

  test('pgvector unavailable: the server\'s error becomes one line with the fix', () => {
    // PostgreSQL 15's error when the extension is not installed on the server.
    const err = Object.assign(new Error('extension "vector" is not available'), {
      name: 'PostgresError',
      severity: 'ERROR',
      code: '0A000',
      detail: 'Could not open extension control file "/usr/share/postgresql/15/extension/vector.control": No such file or directory.',
      hint: 'The extension must first be installed on the system where PostgreSQL is running.',
      routine: 'CreateExtension',
    });
    const mapped = mapSchemaError(err, '001_extension.sql');
    assert.ok(mapped instanceof UsageError);
    assert.match(mapped.message, /^pgvector is not installed on the target PostgreSQL server: install the pgvector extension there .*or omit --database-url to use embedded PGlite$/);
    assert.ok(!mapped.message.includes('\n'));
    // Older servers say it differently (code 58P01).
    const old = Object.assign(new Error('could not open extension control file "/usr/share/postgresql/13/extension/vector.control": No such file or directory'), { code: '58P01' });
    assert.match(mapSchemaError(old, '001_extension.sql').message, /^pgvector is not installed/);
  });

  test('disk full and statement timeout mid-load: one line, exit 2, says the batch rolled back and to resume', () => {
    const disk = describeLoadError(Object.assign(new Error('could not extend file "base/16384/16402": No space left on device'), { code: '53100' }));
    assert.ok(disk instanceof UsageError);
    assert.match(disk.message, /^the target ran out of disk space .*: the batch in flight was rolled back and every batch before it is committed; free space on the database server, then run the same command again to resume$/);
    const timeout = describeLoadError(Object.assign(new Error('canceling statement due to statement timeout'), { code: '57014' }));
    assert.ok(timeout instanceof UsageError);
    assert.match(timeout.message, /statement_timeout.*run the same command again to resume/);
  });
});

/** What a failed run must not change: tables, row counts, ledger rows, the column width. */
async function snapshot(t: TargetOptions) {
  const db = await openDb(t);
  try {
    const tables = (
      await db.query<{ name: string }>(`SELECT tablename AS name FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1`)
    ).map((r) => r.name);
    const [c] = await db.query<{ mem: number; runs: number; width: number }>(
      `SELECT (SELECT count(*)::int FROM memories) AS mem, (SELECT count(*)::int FROM migration_runs) AS runs,
              (SELECT atttypmod FROM pg_attribute WHERE attrelid = 'memories'::regclass AND attname = 'embedding') AS width`,
    );
    return { tables, mem: Number(c!.mem), runs: Number(c!.runs), width: Number(c!.width) };
  } finally {
    await db.close();
  }
}

async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** A TCP server on loopback that accepts connections and never says a word. */
async function silentServer(): Promise<{ port: number; connections(): number; close(): void }> {
  const sockets = new Set<import('node:net').Socket>();
  let connections = 0;
  const s: Server = createServer((c) => {
    connections++;
    sockets.add(c);
    c.on('error', () => {});
  });
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return {
    port: (s.address() as AddressInfo).port,
    connections: () => connections,
    close() {
      for (const c of sockets) c.destroy();
      s.close();
    },
  };
}

// ------------------------------------------------------------------------------ real PostgreSQL
describe('the target: a real PostgreSQL server', { skip: PG_URL ? false : 'TEST_DATABASE_URL is not set' }, () => {
  const admin = PG_URL ? postgres(PG_URL, { max: 2, onnotice: () => {} }) : null;
  const made: { roles: string[]; dbs: string[] } = { roles: [], dbs: [] };
  const urlFor = (user: string, password: string, db: string) => {
    const u = new URL(PG_URL!);
    u.username = user;
    u.password = password;
    u.pathname = `/${db}`;
    return u.toString();
  };
  const newRole = async (extra = '') => {
    const name = `mm_role_${randomBytes(5).toString('hex')}`;
    const password = `pw_${randomBytes(6).toString('hex')}`;
    await admin!.unsafe(`CREATE ROLE ${name} LOGIN PASSWORD '${password}' ${extra}`);
    made.roles.push(name);
    return { name, password };
  };
  const newDb = async (owner?: string, withVector = false) => {
    const name = `mm_test_${randomBytes(6).toString('hex')}`;
    await admin!.unsafe(`CREATE DATABASE ${name}${owner ? ` OWNER ${owner}` : ''}`);
    made.dbs.unshift(name);
    if (withVector) await asSuperuser(name, (sql) => sql.unsafe('CREATE EXTENSION vector'));
    return name;
  };
  const asSuperuser = async <T>(db: string, fn: (sql: postgres.Sql) => Promise<T>): Promise<T> => {
    const sql = postgres(urlFor(new URL(PG_URL!).username, decodeURIComponent(new URL(PG_URL!).password), db), { max: 1, onnotice: () => {} });
    try {
      return await fn(sql);
    } finally {
      await sql.end();
    }
  };
  after(async () => {
    if (!admin) return;
    for (const d of made.dbs) await admin.unsafe(`DROP DATABASE IF EXISTS ${d} WITH (FORCE)`).catch(() => {});
    for (const r of made.roles) await admin.unsafe(`DROP ROLE IF EXISTS ${r}`).catch(() => {});
    await admin.end();
  });

  test('authentication failed (wrong password)', async () => {
    const dbName = await newDb();
    const res = await runCli(['migrate', '--sqlite', good, ...local, '--database-url', urlFor('mm', 'not-the-password-7x', dbName)]);
    assertOneLineUsage(res, /PostgreSQL authentication failed for postgres:\/\/mm:\*\*\*@127\.0\.0\.1:\d+\/mm_test_\w+: check the user name and password in DATABASE_URL/);
    assert.doesNotMatch(res.stdout + res.stderr, /not-the-password-7x/);
    await assertNothingWritten({ databaseUrl: urlFor('mm', decodeURIComponent(new URL(PG_URL!).password), dbName) });
  });

  test('database missing', async () => {
    const u = new URL(PG_URL!);
    u.pathname = '/mm_no_such_database_here';
    const res = await runCli(['migrate', '--sqlite', good, ...local, '--database-url', u.toString()]);
    assertOneLineUsage(res, /the database in postgres:\/\/mm:\*\*\*@.*\/mm_no_such_database_here does not exist: create it \(createdb\) or fix the database name in DATABASE_URL/);
    const [row] = await admin!`SELECT count(*)::int AS n FROM pg_database WHERE datname = 'mm_no_such_database_here'`;
    assert.equal(row!.n, 0, 'the database was not created');
  });

  test('no CREATE privilege: neither for the extension nor in the schema', async () => {
    const role = await newRole();
    // 1. pgvector is not in the database yet, and the role may not create it.
    const bare = await newDb();
    const a = await runCli(['migrate', '--sqlite', good, ...local, '--database-url', urlFor(role.name, role.password, bare)]);
    assertOneLineUsage(
      a,
      /permission denied while installing the schema \(001_extension\.sql: permission denied to create extension "vector"\): connect as a role that may CREATE in this database, or have a superuser run CREATE EXTENSION vector and GRANT CREATE/,
    );
    await asSuperuser(bare, async (sql) => {
      const [row] = await sql`SELECT count(*)::int AS n FROM pg_extension WHERE extname = 'vector'`;
      assert.equal(row!.n, 0);
    });
    assert.deepEqual(await asSuperuser(bare, (sql) => sql`SELECT tablename FROM pg_tables WHERE schemaname = 'public'`).then((r) => r.length), 0);
    // 2. A superuser installed pgvector, but the role may not create tables in public.
    const withVector = await newDb(undefined, true);
    const b = await runCli(['migrate', '--sqlite', good, ...local, '--database-url', urlFor(role.name, role.password, withVector)]);
    assertOneLineUsage(b, /permission denied while installing the schema \(002_tables\.sql: permission denied for schema public\): connect as a role that may CREATE/);
    assert.equal(await asSuperuser(withVector, (sql) => sql`SELECT tablename FROM pg_tables WHERE schemaname = 'public'`).then((r) => r.length), 0);
  });

  test('statement timeout mid-load: the batch rolls back, the message says to resume, a re-run completes', async () => {
    const role = await newRole();
    await admin!.unsafe(`ALTER ROLE ${role.name} SET statement_timeout = '1s'`);
    const dbName = await newDb(role.name, true);
    const roleUrl = urlFor(role.name, role.password, dbName);
    const src = tmpPath('slow.db');
    const s = new Database(src);
    s.exec(STANDARD);
    const ins = s.prepare('INSERT INTO memories (id, user_id, content) VALUES (?, ?, ?)');
    s.transaction(() => {
      for (let i = 0; i < 100; i++) ins.run(i === 50 ? 'm_slow' : `m_${i}`, `user_${i % 2}`, `memory ${i} about topic ${i * 13}`);
    })();
    s.close();
    const schemaRun = await runCli(['schema', '--database-url', roleUrl, ...local]);
    assert.equal(schemaRun.code, 0, schemaRun.stderr);
    // Row 51 (in the third batch of 20) takes longer than the role's statement_timeout.
    await asSuperuser(dbName, (sql) =>
      sql.unsafe(`
        CREATE FUNCTION mm_test_slow_row() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.id = 'm_slow' THEN PERFORM pg_sleep(5); END IF; RETURN NEW; END $$;
        CREATE TRIGGER mm_test_slow BEFORE INSERT ON memories FOR EACH ROW EXECUTE FUNCTION mm_test_slow_row();`),
    );
    const args = ['migrate', '--sqlite', src, ...local, '--skip-test', '--batch-size', '20'];
    const res = await runCli([...args, '--database-url', roleUrl]);
    assertOneLineUsage(
      res,
      /the target cancelled a statement \(canceling statement due to statement timeout\): the batch in flight was rolled back and every batch before it is committed; raise statement_timeout .*then run the same command again to resume/,
    );
    await asSuperuser(dbName, async (sql) => {
      const [m] = await sql`SELECT count(*)::int AS n, max(id) AS last FROM memories`;
      assert.equal(m!.n, 40, 'the two committed batches, and nothing of the third');
      const [run] = await sql`SELECT status, checkpoint_rowid, error FROM migration_runs ORDER BY id DESC LIMIT 1`;
      assert.equal(run!.status, 'failed');
      assert.equal(Number(run!.checkpoint_rowid), 40);
      assert.match(run!.error, /statement timeout/);
      await sql.unsafe('DROP TRIGGER mm_test_slow ON memories');
    });
    const again = await runCli([...args, '--database-url', urlFor('mm', decodeURIComponent(new URL(PG_URL!).password), dbName), '--json']);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stderr, /Resuming: run #\d+ ended failed at source rowid 40/);
    const r = parseJson(again);
    assert.equal(r.memories.migrated, 60);
    assert.equal(r.memories.unchanged, 40);
    await asSuperuser(dbName, async (sql) => {
      const [m] = await sql`SELECT count(*)::int AS n FROM memories`;
      assert.equal(m!.n, 100);
    });
  });
});

// ------------------------------------------------------------------------------ embeddings
describe('embeddings: refused before anything is written', { concurrency: 4 }, () => {
  let api: FakeOpenAI;
  let keyed: FakeOpenAI;
  before(async () => {
    api = await startFakeOpenAI();
    keyed = await startFakeOpenAI({ apiKey: 'sk-the-right-key-000111' });
  });
  after(async () => {
    await api.close();
    await keyed.close();
  });
  const run = async (extra: string[], env: Record<string, string | undefined>) => {
    const t = pgliteTarget();
    const res = await runCli(['migrate', '--sqlite', good, ...targetArgs(t), '--skip-test', ...extra], env);
    return { res, t };
  };

  test('missing OPENAI_API_KEY with --embedder openai suggests --embedder local', async () => {
    const { res, t } = await run(['--embedder', 'openai'], { OPENAI_API_KEY: undefined, OPENAI_BASE_URL: undefined });
    assertOneLineUsage(res, /OPENAI_API_KEY is not set; set it, or use --embedder local for an offline trial run/);
    await assertNothingWritten(t);
  });

  test('a base URL that is not a URL', async () => {
    const { res, t } = await run([], { OPENAI_API_KEY: 'sk-some-key-1234567', OPENAI_BASE_URL: 'api.openai.com/v1' });
    assertOneLineUsage(res, /^memory-migrate: OPENAI_BASE_URL is not a URL: api\.openai\.com\/v1 \(expected e\.g\. https:\/\/api\.openai\.com\/v1\)/);
    await assertNothingWritten(t);
  });

  test('a base URL where nothing listens', async () => {
    const port = await closedPort();
    const { res, t } = await run([], { OPENAI_API_KEY: 'sk-some-key-1234567', OPENAI_BASE_URL: `http://127.0.0.1:${port}/v1` });
    assertOneLineUsage(
      res,
      /cannot reach the embedding API at http:\/\/127\.0\.0\.1:\d+\/v1 \(ECONNREFUSED\): check OPENAI_BASE_URL .* or use --embedder local for an offline trial/,
    );
    await assertNothingWritten(t);
  });

  test('a base URL with the wrong path (no embeddings endpoint there)', async () => {
    const { res, t } = await run([], { OPENAI_API_KEY: 'sk-some-key-1234567', OPENAI_BASE_URL: api.url.replace(/\/v1$/, '/api') });
    assertOneLineUsage(res, /no OpenAI-compatible embeddings endpoint at http:\/\/127\.0\.0\.1:\d+\/api\/embeddings \(HTTP 404\): check OPENAI_BASE_URL \(it usually ends in \/v1\)/);
    await assertNothingWritten(t);
  });

  test('a key the server rejects', async () => {
    const { res, t } = await run([], { OPENAI_API_KEY: 'sk-the-wrong-key-999888', OPENAI_BASE_URL: keyed.url });
    // A rejected key exits 1 (the issue's contract for a 401), after one request, nothing written.
    assert.equal(res.code, 1, `exit ${res.code}\nstderr: ${res.stderr}`);
    assert.equal(res.stderr.trim().split('\n').length, 1, res.stderr);
    assert.match(res.stderr, /the embedding API at http:\/\/127\.0\.0\.1:\d+\/v1 rejected the API key \(401: Incorrect API key provided\.\): check OPENAI_API_KEY and OPENAI_BASE_URL/);
    assert.doesNotMatch(res.stderr, /the-wrong-key/);
    await assertNothingWritten(t);
  });

  test('an unknown model', async () => {
    const before = api.embeddingRequests.length;
    const { res, t } = await run(['--model', 'text-embedding-9-huge', '--dimensions', '256'], {
      OPENAI_API_KEY: 'sk-some-key-1234567',
      OPENAI_BASE_URL: api.url,
    });
    assertOneLineUsage(
      res,
      /embedding model text-embedding-9-huge is not available at http:\/\/127\.0\.0\.1:\d+\/v1 \(404: The model `text-embedding-9-huge` does not exist or you do not have access to it\.\): pick a model the server has with --model/,
    );
    assert.equal(api.embeddingRequests.length - before, 1, 'one probe request decided it');
    await assertNothingWritten(t);
  });

  test('a model the server lists costs no embedding request to check', async () => {
    const own = await startFakeOpenAI();
    try {
      const { res } = await run(['--json', '--limit', '3'], { OPENAI_API_KEY: 'sk-some-key-1234567', OPENAI_BASE_URL: own.url });
      assert.equal(res.code, 0, res.stderr);
      const r = parseJson(res);
      assert.ok(r.embeddings.requests > 0);
      assert.equal(own.embeddingRequests.length, r.embeddings.requests, 'the check itself sent no embedding request');
      assert.ok(own.requests.some((q) => q.method === 'GET' && q.path === '/v1/models'));
    } finally {
      await own.close();
    }
  });
});

// ------------------------------------------------------------------------------ stack traces
describe('stack traces', () => {
  test('only with DEBUG=memory-migrate', async () => {
    const missing = join(root, 'nowhere', 'x.db');
    const plain = await runCli(['migrate', '--sqlite', missing, ...local]);
    assertOneLineUsage(plain, /does not exist/);
    const debug = await runCli(['migrate', '--sqlite', missing, ...local], { DEBUG: 'memory-migrate' });
    assert.equal(debug.code, 2);
    assert.match(debug.stderr, /^memory-migrate: source file .* does not exist/);
    assert.match(debug.stderr, /^\s+at /m, 'a stack trace with DEBUG=memory-migrate');
  });

  test('--json still prints one JSON object on stdout when a run fails', async () => {
    const res = await runCli(['migrate', '--sqlite', join(root, 'nowhere', 'x.db'), ...local, '--json']);
    assert.equal(res.code, 2);
    const obj = parseJson(res);
    assert.equal(obj.ok, false);
    assert.match(obj.error, /does not exist/);
    assert.equal(res.stderr.trim().split('\n').length, 1);
  });
});

void spawnSync;

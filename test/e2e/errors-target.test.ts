// The target, through the real CLI as a child process: a malformed DATABASE_URL, a host that
// refuses or never answers, and a vector width that does not match the existing table are
// refused with one line that names the problem and the fix, writing nothing; the server's own
// errors (pgvector missing, disk full, statement timeout) are mapped to such a line. Cases that
// need a real server (authentication, privileges, statement timeout) run when
// TEST_DATABASE_URL is set.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import postgres from 'postgres';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync } from 'node:fs';
import { createServer, type Server, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { testTargets } from '../helpers/targets.js';
import { runCli, targetArgs, parseJson } from '../helpers/cli.js';
import { scratchFolder, makeDb, STANDARD } from '../helpers/sqlite-files.js';
import { assertOneLineUsage, assertNothingWritten, closedPort, local } from '../helpers/refusals.js';
import { openDb, type TargetOptions } from '../../src/postgres/connection.js';
import { mapSchemaError } from '../../src/postgres/schema.js';
import { describeLoadError, UsageError } from '../../src/errors.js';

const { root, tmpPath } = scratchFolder('mm-errors-');

const PG_URL = process.env.TEST_DATABASE_URL;

const good = tmpPath('good.db');
before(() => makeDb(good, 30));

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
    assertOneLineUsage(b, /permission denied while installing the schema \(00[24]_[a-z]+\.sql: permission denied for schema public\): connect as a role that may CREATE/);
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

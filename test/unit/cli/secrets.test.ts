// Secrets never reach output: URL passwords are masked and API keys removed in logs, errors,
// --json, the --report file, the ledger and --help. Failing runs with a known password and a
// known key are grepped everywhere they could have left a trace.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import postgres from 'postgres';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli, type CliResult } from '../../helpers/cli.js';
import { startFakeOpenAI, type FakeOpenAI } from '../../helpers/fake-openai.js';
import { openDb, type TargetOptions } from '../../../src/postgres/connection.js';
import { maskUrl, redact, redactDeep, registerProcessSecrets, registerSecret, registerUrlSecrets } from '../../../src/secrets.js';

const root = mkdtempSync(join(tmpdir(), 'mm-secrets-'));
after(() => rmSync(root, { recursive: true, force: true }));
let counter = 0;
const tmpPath = (name: string) => {
  const dir = join(root, `t${++counter}`);
  mkdirSync(dir, { recursive: true });
  return join(dir, name);
};

const source = join(root, 'memory.db');
before(() => {
  const db = new Database(source);
  db.exec(`CREATE TABLE memories (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, content TEXT NOT NULL, embedding BLOB, metadata TEXT)`);
  const ins = db.prepare('INSERT INTO memories (id, user_id, content) VALUES (?, ?, ?)');
  for (let i = 0; i < 12; i++) ins.run(`m${i}`, `user_${i % 2}`, `memory number ${i} about the coffee order ${i * 3}`);
  db.close();
});

describe('masking functions', () => {
  test('maskUrl: the password goes, everything else stays', () => {
    assert.equal(maskUrl('postgres://app:s3cret@db.internal:5432/agent'), 'postgres://app:***@db.internal:5432/agent');
    assert.equal(maskUrl('postgresql://app:p@ss@db:5432/agent?sslmode=require'), 'postgresql://app:***@db:5432/agent?sslmode=require');
    assert.equal(maskUrl('postgres://db:5432/agent?user=app&password=s3cret'), 'postgres://db:5432/agent?user=app&password=***');
    assert.equal(maskUrl('postgres//app:s3cret@db/agent'), 'postgres//app:***@db/agent');
    assert.equal(maskUrl('postgres://app@db/agent'), 'postgres://app@db/agent');
    assert.equal(maskUrl('https://api.openai.com/v1'), 'https://api.openai.com/v1');
  });

  test('redact: registered secrets, URL passwords, key-like tokens, Bearer; JSON stays JSON', () => {
    registerSecret('Zebra-Horse-4471');
    registerUrlSecrets('postgres://u:enc%2Fpw%40x@h/db');
    assert.equal(redact('the key Zebra-Horse-4471 leaked'), 'the key *** leaked');
    assert.equal(redact('decoded enc/pw@x, encoded enc%2Fpw%40x'), 'decoded ***, encoded ***');
    assert.equal(redact('key sk-proj-abcdefghijklmnop in a message'), 'key sk-*** in a message');
    assert.equal(redact('Authorization: Bearer abc.def-ghi_jkl'), 'Authorization: Bearer ***');
    assert.equal(redact('conninfo host=db password=hunter22 user=app'), 'conninfo host=db password=*** user=app');
    const json = JSON.stringify({ a: 'x://b:c', d: 'e@f', url: 'postgres://u:pw@h/db', k: 'Zebra-Horse-4471' });
    assert.deepEqual(JSON.parse(redact(json)), { a: 'x://b:c', d: 'e@f', url: 'postgres://u:***@h/db', k: '***' });
    assert.deepEqual(redactDeep({ nested: ['Zebra-Horse-4471'] }), { nested: ['***'] });
  });

  test('registerProcessSecrets: --database-url=…, a bare URL argument, and the environment', () => {
    registerProcessSecrets(['node', 'cli', '--database-url=postgres://u:Argv-Pw-1@h/db', 'postgres://v:Argv-Pw-2@h/db'], {
      OPENAI_API_KEY: 'not-an-sk-key-0099',
      DATABASE_URL: 'postgres://w:Env-Pw-3@h/db',
    });
    assert.equal(redact('Argv-Pw-1 Argv-Pw-2 not-an-sk-key-0099 Env-Pw-3'), '*** *** *** ***');
  });

  test('placeholder keys for local servers are not secrets: OPENAI_API_KEY=local leaves "local" alone', () => {
    registerProcessSecrets(['node', 'cli'], { OPENAI_API_KEY: 'local' });
    registerSecret('ollama');
    assert.equal(redact('--embedder local, model local-hash-v1, served by ollama'), '--embedder local, model local-hash-v1, served by ollama');
  });
});

/** Every place a failed run can leave text. */
async function traces(res: CliResult, reportFile: string, target?: TargetOptions): Promise<string> {
  const parts = [res.stdout, res.stderr];
  if (existsSync(reportFile)) parts.push(readFileSync(reportFile, 'utf8'));
  if (target && (target.databaseUrl || existsSync(join(target.pgliteDir!, 'PG_VERSION')))) {
    const db = await openDb(target);
    try {
      const tables = await db.query(`SELECT 1 FROM pg_tables WHERE tablename = 'migration_runs'`);
      if (tables.length > 0) {
        const rows = await db.query<{ row: string }>(`SELECT row_to_json(r)::text AS row FROM migration_runs r`);
        assert.ok(rows.length > 0, 'the failed run is in the ledger');
        parts.push(...rows.map((r) => r.row));
      }
    } finally {
      await db.close();
    }
  }
  return parts.join('\n');
}

function assertClean(text: string, secrets: string[]): void {
  for (const s of secrets) assert.ok(!text.includes(s), `secret ${s.slice(0, 3)}… found in:\n${text.slice(0, 4000)}`);
}

describe('failing runs leave no secret anywhere', () => {
  // Not sk-shaped on purpose: it must be removed because it is known, not because of its shape.
  const KEY = `KEY-${randomBytes(8).toString('hex')}`;
  let api: FakeOpenAI;
  before(async () => {
    // The key is valid for listing models, then the embeddings endpoint refuses it and quotes
    // it back, as some servers do.
    api = await startFakeOpenAI({
      fault: () => ({ status: 401, body: { error: { message: `Incorrect API key provided: ${KEY}.`, type: 'invalid_request_error', code: 'invalid_api_key' } } }),
    });
  });
  after(() => api.close());

  test('an unreachable server with a password in DATABASE_URL (also with DEBUG=memory-migrate)', async () => {
    const password = `Pw-${randomBytes(6).toString('hex')}`;
    const s = createServer();
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    const port = (s.address() as AddressInfo).port;
    await new Promise<void>((r) => s.close(() => r()));
    for (const env of [{}, { DEBUG: 'memory-migrate' }]) {
      const reportFile = tmpPath('report.json');
      const url = `postgres://app:${password}@127.0.0.1:${port}/agent`;
      const res = await runCli(['migrate', '--sqlite', source, '--embedder', 'local', '--json', '--report', reportFile], {
        ...env,
        DATABASE_URL: url,
      });
      assert.equal(res.code, 2, res.stderr);
      const all = await traces(res, reportFile);
      assert.match(all, /postgres:\/\/app:\*\*\*@127\.0\.0\.1/);
      assertClean(all, [password]);
    }
  });

  test('the embedding API refuses the key mid-run and quotes it back (PGlite ledger)', async () => {
    const t = { pgliteDir: join(tmpPath('pg'), 'data') };
    const reportFile = tmpPath('report.json');
    const res = await runCli(['migrate', '--sqlite', source, '--pglite-dir', t.pgliteDir, '--json', '--skip-test', '--report', reportFile], {
      OPENAI_API_KEY: KEY,
      OPENAI_BASE_URL: api.url,
    });
    assert.equal(res.code, 1, res.stderr);
    assert.match(res.stderr, /embedding API rejected the credentials \(401\)/);
    assert.match(res.stderr, /Incorrect API key provided: \*\*\*/);
    const all = await traces(res, reportFile, t);
    assert.match(all, /"status":"failed"/);
    assertClean(all, [KEY]);
  });

  const PG_URL = process.env.TEST_DATABASE_URL;
  test('PostgreSQL: a known password in the URL, a known key, authentication failure and a failed run', { skip: PG_URL ? false : 'TEST_DATABASE_URL is not set' }, async () => {
    const admin = postgres(PG_URL!, { max: 1, onnotice: () => {} });
    const role = `mm_secret_${randomBytes(4).toString('hex')}`;
    // Characters that need percent-encoding: both forms must stay out of the output.
    const password = `Pw@${randomBytes(6).toString('hex')}/x`;
    const dbName = `mm_test_${randomBytes(6).toString('hex')}`;
    await admin.unsafe(`CREATE ROLE ${role} LOGIN PASSWORD '${password}'`);
    await admin.unsafe(`CREATE DATABASE ${dbName} OWNER ${role}`);
    try {
      const su = new URL(PG_URL!);
      su.pathname = `/${dbName}`;
      const suSql = postgres(su.toString(), { max: 1, onnotice: () => {} });
      await suSql.unsafe('CREATE EXTENSION vector');
      await suSql.end();
      const url = new URL(PG_URL!);
      url.username = role;
      url.password = encodeURIComponent(password);
      url.pathname = `/${dbName}`;
      const secrets = [password, encodeURIComponent(password), KEY];

      // 1. Authentication failure: a wrong password that is just as secret.
      const wrong = new URL(url);
      const wrongPassword = `Wrong-${randomBytes(6).toString('hex')}`;
      wrong.password = wrongPassword;
      const r1File = tmpPath('report.json');
      const r1 = await runCli(['migrate', '--sqlite', source, '--database-url', wrong.toString(), '--embedder', 'local', '--report', r1File]);
      assert.equal(r1.code, 2, r1.stderr);
      assert.match(r1.stderr, /authentication failed/);
      assertClean(await traces(r1, r1File), [...secrets, wrongPassword]);

      // 2. A run that gets as far as the ledger, then fails on the embedding API.
      const r2File = tmpPath('report.json');
      const r2 = await runCli(['migrate', '--sqlite', source, '--database-url', url.toString(), '--json', '--skip-test', '--report', r2File], {
        OPENAI_API_KEY: KEY,
        OPENAI_BASE_URL: api.url,
      });
      assert.equal(r2.code, 1, r2.stderr);
      const all = await traces(r2, r2File, { databaseUrl: url.toString() });
      assert.match(all, /"status":"failed"/);
      assert.match(all, new RegExp(`postgres://${role}:\\*\\*\\*@`));
      assertClean(all, secrets);

      // 3. status shows the ledger: still clean.
      const r3 = await runCli(['status', '--database-url', url.toString(), '--json']);
      assert.equal(r3.code, 0, r3.stderr);
      assertClean(r3.stdout + r3.stderr, secrets);
    } finally {
      await admin.unsafe(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).catch(() => {});
      await admin.unsafe(`DROP ROLE IF EXISTS ${role}`).catch(() => {});
      await admin.end();
    }
  });
});

describe('--help', () => {
  test('examples show masked URLs only, and a password on the command line is not echoed', async () => {
    const top = await runCli(['--help']);
    const commands = [...top.stdout.matchAll(/^  ([a-z][a-z-]*)\b/gm)].map((m) => m[1]!).filter((c) => c !== 'help');
    assert.ok(commands.includes('migrate'));
    for (const c of commands) {
      const res = await runCli([c, '--help']);
      assert.equal(res.code, 0, `${c}: ${res.stderr}`);
      for (const m of res.stdout.matchAll(/[a-z]+:\/\/[^\s:/@]+:([^\s@]*)@/g)) {
        assert.equal(m[1], '***', `${c} --help shows a URL with a password: ${m[0]}`);
      }
    }
    const bad = await runCli(['migrate', '--database-url', 'postgres://u:Echoed-Pw-55@h/db', '--embedder', 'nonsense']);
    assert.equal(bad.code, 2);
    assertClean(bad.stdout + bad.stderr, ['Echoed-Pw-55']);
  });
});

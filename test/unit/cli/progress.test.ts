// Progress and reports: the live bar on a terminal (cli-progress), plain lines elsewhere,
// --quiet, --json on every command, the summary table, and --help for every command.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { PassThrough } from 'node:stream';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, runCli, parseJson } from '../../helpers/cli.js';
import { startFakeOpenAI } from '../../helpers/fake-openai.js';
import { writeMemoryFile } from '../../helpers/rerun.js';
import { createProgress, createStepProgress, isInteractive } from '../../../src/progress.js';
import type { Output } from '../../../src/output.js';
import { emptyEmbedStats } from '../../../src/embed/types.js';

const root = mkdtempSync(join(tmpdir(), 'mm-progress-'));
after(() => rmSync(root, { recursive: true, force: true }));
let counter = 0;
const tmpDir = () => {
  const d = join(root, `t${++counter}`);
  mkdirSync(d, { recursive: true });
  return d;
};

const source = join(root, 'memory.db');
before(() => {
  const db = new Database(source);
  db.exec(`CREATE TABLE memories (id TEXT PRIMARY KEY, user_id TEXT, content TEXT NOT NULL, embedding BLOB, metadata TEXT)`);
  const ins = db.prepare('INSERT INTO memories (id, user_id, content) VALUES (?, ?, ?)');
  db.transaction(() => {
    for (let i = 0; i < 60; i++) ins.run(`m${i}`, `user_${i % 3}`, `memory ${i}: prefers ${['tea', 'coffee', 'water'][i % 3]} number ${i}`);
    ins.run('m_null', null, 'a row without a user');
  })();
  db.close();
});

/** An Output that records what it was given. */
function recorder(opts: { quiet?: boolean; json?: boolean } = {}): Output & { lines: string[]; errors: string[] } {
  const lines: string[] = [];
  const errors: string[] = [];
  return {
    json: opts.json ?? false,
    quiet: opts.quiet ?? false,
    lines,
    errors,
    info: (l) => {
      if (!opts.quiet) lines.push(l);
    },
    error: (l) => errors.push(l),
    result: () => {},
  };
}

type FakeTerminal = PassThrough & { isTTY: boolean; columns: number; text(): string; drawn(re: RegExp): Promise<void> };

/** A stream that says it is a terminal, and keeps what is drawn on it. */
function fakeTerminal(): FakeTerminal {
  const s = new PassThrough() as FakeTerminal;
  let buf = '';
  s.on('data', (d) => (buf += d));
  s.isTTY = true;
  s.columns = 200;
  s.text = () => buf;
  // Resolves once something matching re has been drawn (cli-progress redraws on its own timer).
  // The 30 s limit only turns a bar that is never drawn into a failure instead of a hang.
  s.drawn = (re) =>
    new Promise<void>((resolve, reject) => {
      const check = () => {
        if (!re.test(buf)) return;
        clearTimeout(timer);
        s.off('data', onData);
        resolve();
      };
      const onData = () => check();
      const timer = setTimeout(() => {
        s.off('data', onData);
        reject(new Error(`never drawn: ${re}\n--- drawn so far:\n${JSON.stringify(buf)}`));
      }, 30_000);
      s.on('data', onData);
      check();
    });
  return s;
}

describe('progress', () => {
  test('tokens per minute against the rate limit the API reported', () => {
    let now = 0;
    const out = recorder();
    const stats = { ...emptyEmbedStats(), requests: 3 };
    const p = createProgress(out, { label: 'memories', total: 1000, interactive: false, now: () => now, plainIntervalMs: 5000, service: { stats } });
    // 30,000 tokens in the first 30 s, then 30,000 in the next 15 s: the last minute's rate.
    now = 30_000;
    stats.tokens = 30_000;
    p.update(500);
    assert.match(out.lines[0]!, /requests 3 \(in flight 0\), tokens\/min 60,000, cache hits/);
    stats.rateLimit = { tokensPerMin: 150_000, requestsPerMin: 3_000 };
    now = 45_000;
    stats.tokens = 60_000;
    p.update(1000);
    assert.match(out.lines[1]!, /tokens\/min 80,000 of 150,000, cache hits/);
  });

  test('not a terminal: a plain line at most every interval, and the last one always', () => {
    let now = 0;
    const out = recorder();
    const stats = { ...emptyEmbedStats(), requests: 7, cached: 3, retries: 1 };
    const p = createProgress(out, {
      label: 'memories',
      total: 1000,
      interactive: false,
      now: () => now,
      plainIntervalMs: 5000,
      service: { stats },
      provider: { inflight: 2 },
    });
    for (let done = 100; done <= 1000; done += 100) {
      now += 1500; // a batch every 1.5 s
      p.update(done);
    }
    p.stop();
    // t = 6 s, 12 s, and the final 100% at 15 s.
    assert.equal(out.lines.length, 3, out.lines.join('\n'));
    assert.match(out.lines[0]!, /^memories: 400\/1000 rows \(40%\), 67 rows\/s, ETA 9 s, requests 7 \(in flight 2\), cache hits 3, retries 1$/);
    assert.match(out.lines[2]!, /^memories: 1000\/1000 rows \(100%\), 67 rows\/s, ETA 0 s/);
  });

  test('on a terminal: a live bar with rows, rate, ETA, requests in flight, cache hits and retries', async () => {
    const term = fakeTerminal();
    const stats = { ...emptyEmbedStats(), requests: 12, cached: 5, retries: 2 };
    const provider = { inflight: 3 };
    const p = createProgress(recorder(), { label: 'memories', total: 1000, interactive: true, stream: term, service: { stats }, provider, refreshMs: 20 });
    // cli-progress draws at most every 100 ms: wait until each state has been drawn.
    p.update(500);
    await term.drawn(/memories [█░]+ 50% \| 500\/1000 rows \| \d+ rows\/s \| ETA \S+ \| requests 12 \(3 in flight\) \| cache hits 5 \| retries 2/);
    provider.inflight = 4;
    await term.drawn(/requests 12 \(4 in flight\)/); // the counters refresh between row updates
    p.update(1000);
    p.stop();
    const text = term.text();
    assert.match(text, /\x1b\[/, 'drawn with terminal escapes');
    assert.match(text, /memories [█░]+ 50% \| 500\/1000 rows \| \d+ rows\/s \| ETA \S+ \| requests 12 \(3 in flight\) \| cache hits 5 \| retries 2/);
    assert.match(text, /requests 12 \(4 in flight\)/);
    assert.match(text, /100% \| 1000\/1000 rows/);
  });

  test('the index build: its own bar on a terminal, its log lines after it', async () => {
    const term = fakeTerminal();
    const out = recorder();
    const s = createStepProgress(out, { label: 'indexes', total: 3, interactive: true, stream: term });
    s.start('building memories_embedding_idx');
    s.log('building ivfflat index memories_embedding_idx on memories: 10 rows');
    await term.drawn(/indexes [█░]+ 0\/3 \| building memories_embedding_idx/);
    s.finish();
    s.start('ANALYZE');
    await term.drawn(/indexes [█░]+ 1\/3 \| ANALYZE/);
    s.finish();
    s.stop();
    assert.match(term.text(), /indexes [█░]+ 0\/3 \| building memories_embedding_idx/);
    assert.match(term.text(), /indexes [█░]+ 1\/3 \| ANALYZE/);
    assert.match(term.text(), /indexes [█░]+ 2\/3 \| done/);
    assert.deepEqual(out.lines, ['building ivfflat index memories_embedding_idx on memories: 10 rows']);
  });

  test('--quiet draws nothing; CI=true is never interactive', () => {
    const term = fakeTerminal();
    const out = recorder({ quiet: true });
    const p = createProgress(out, { label: 'memories', total: 10, interactive: true, stream: term });
    p.update(10);
    p.stop();
    const s = createStepProgress(out, { label: 'indexes', total: 3, interactive: true, stream: term });
    s.start('x');
    s.stop();
    assert.equal(term.text(), '');
    assert.deepEqual(out.lines, []);
    assert.equal(isInteractive({ CI: 'true' }), false);
    assert.equal(isInteractive({ CI: '1' }), false);
  });

  test('a real terminal (script(1)): the live bars are drawn', { skip: hasScript() ? false : 'script(1) is not installed' }, () => {
    const dir = tmpDir();
    const env: Record<string, string> = { ...(process.env as Record<string, string>), COLUMNS: '160' };
    delete env['CI'];
    delete env['DATABASE_URL'];
    const cmd = `${process.execPath} ${CLI} migrate --sqlite ${source} --pglite-dir ${join(dir, 'pg')} --embedder local --skip-test --batch-size 20`;
    const res = spawnSync('script', ['-qec', cmd, '/dev/null'], { env, encoding: 'utf8', timeout: 120_000 });
    assert.equal(res.status, 0, res.stdout + res.stderr);
    assert.match(res.stdout, /memories [█░]+ 100% \| 61\/61 rows \| \d+ rows\/s \| ETA \S+ \| requests 0 \(0 in flight\) \| cache hits 0 \| retries 0/);
    assert.match(res.stdout, /indexes [█░]+ 3\/3/);
    assert.match(res.stdout, /Migration completed successfully/);
  });
});

function hasScript(): boolean {
  return spawnSync('script', ['--version'], { encoding: 'utf8' }).status === 0;
}

describe('output modes', () => {
  test('plain (not a terminal): progress lines, the summary table with times, self-test lines', async () => {
    const dir = tmpDir();
    const res = await runCli(['migrate', '--sqlite', source, '--pglite-dir', join(dir, 'pg'), '--embedder', 'local']);
    assert.equal(res.code, 0, res.stderr);
    assert.equal(res.stderr, '');
    const out = res.stdout;
    assert.match(out, /^memories: 61\/61 rows \(100%\), \d+ rows\/s, ETA 0 s, requests 0 \(in flight 0\), cache hits 0, retries 0$/m);
    assert.doesNotMatch(out, /\x1b\[/, 'no terminal escapes when not on a terminal');
    assert.match(out, /^table +read +migrated +updated +unchanged +duplicates +skipped +errors +time$/m);
    assert.match(out, /^memories +61 +60 +0 +0 +0 +1 +0 +\d+\.\d+ s$/m);
    assert.match(out, /^prompt_fragments +0 +7 +0 +0 +0 +0 +0$/m);
    assert.match(out, /^memory_duplicates +0$/m);
    assert.match(out, /^vector indexes +\d+\.\d+ s$/m);
    assert.match(out, /^self-test +\d+\.\d+ s$/m);
    assert.match(out, /^total +0 +\d+\.\d+ s$/m);
    assert.match(out, /^embeddings \(local-hash-v1, 384 dims\): reused 0, cached 0, computed \d+, requests 0, retries 0, tokens 0, truncated 0, rejected 0, estimated cost \$0\.0000$/m);
    assert.match(out, /^skipped: user_id is NULL 1$/m);
    assert.match(out, /^✅ /m);
    // The columns line up: every table row is as wide as the header's columns.
    const header = out.split('\n').find((l) => l.startsWith('table '))!;
    const memLine = out.split('\n').find((l) => l.startsWith('memories '))!;
    assert.equal(memLine.length, header.length);
  });

  let jsonDir = '';
  test('--json on every command: exactly one JSON object on stdout, logs on stderr', async () => {
    const dir = (jsonDir = tmpDir());
    const pg = ['--pglite-dir', join(dir, 'pg')];
    const reportFile = join(dir, 'report.json');
    const runs: [string, string[]][] = [
      ['schema', ['schema', ...pg, '--embedder', 'local', '--json']],
      ['migrate', ['migrate', '--sqlite', source, ...pg, '--embedder', 'local', '--json', '--report', reportFile]],
      ['selftest', ['selftest', ...pg, '--embedder', 'local', '--json']],
      ['status', ['status', ...pg, '--json']],
      ['verify', ['verify', '--sqlite', source, ...pg, '--json']],
      ['search', ['search', 'coffee', '--user', 'user_1', ...pg, '--json']],
      ['rollback', ['rollback', '--sqlite', source, ...pg, '--dry-run', '--json']],
    ];
    for (const [name, args] of runs) {
      const res = await runCli(args);
      assert.equal(res.code, 0, `${name}: ${res.stderr}`);
      const obj = parseJson(res);
      assert.equal(typeof obj, 'object', name);
      assert.equal(obj.ok, true, `${name}: ${res.stdout}`);
      assert.match(res.stderr, /using embedded PostgreSQL/, `${name}: logs go to stderr`);
    }
    // --report: the same object, with every skipped and rejected row.
    const report = JSON.parse(readFileSync(reportFile, 'utf8'));
    assert.deepEqual(report.skippedRows, [{ id: 'm_null', user: null, reason: 'user_id is NULL' }]);
    assert.deepEqual(report.rejectedRows, []);
    assert.equal(report.memories.migrated, 60);
  });

  test('--quiet prints nothing on success, and the error on failure', async () => {
    // A re-run against the target the --json test migrated: quick, and it still prints nothing.
    const dir = jsonDir;
    const ok = await runCli(['migrate', '--sqlite', source, '--pglite-dir', join(dir, 'pg'), '--embedder', 'local', '--skip-test', '--quiet']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, '');
    assert.equal(ok.stderr, '');
    const bad = await runCli(['migrate', '--sqlite', join(dir, 'missing.db'), '--embedder', 'local', '--quiet']);
    assert.equal(bad.code, 2);
    assert.equal(bad.stdout, '');
    assert.match(bad.stderr, /^memory-migrate: source file .* does not exist/);
  });
});

describe('--report', () => {
  test('lists the inputs the embedding API rejected (id, user, reason) next to the skipped rows', async () => {
    const api = await startFakeOpenAI({ poison: 'memory 4:' });
    try {
      const dir = tmpDir();
      const reportFile = join(dir, 'report.json');
      const rejectFile = join(dir, 'rejects.jsonl');
      // An earlier run's line in the reject file is not this run's.
      writeFileSync(rejectFile, JSON.stringify({ id: 'old', user: 'u', reason: 'from an earlier run' }) + '\n');
      const res = await runCli(
        ['migrate', '--sqlite', source, '--pglite-dir', join(dir, 'pg'), '--skip-test', '--json', '--report', reportFile, '--reject-file', rejectFile],
        { OPENAI_API_KEY: 'sk-report-test-123456', OPENAI_BASE_URL: api.url },
      );
      assert.equal(res.code, 0, res.stderr);
      const printed = parseJson(res);
      const full = JSON.parse(readFileSync(reportFile, 'utf8'));
      for (const r of [printed, full]) {
        assert.equal(r.embeddings.rejected, 1);
        assert.equal(r.rejectedRows.length, 1);
        assert.equal(r.rejectedRows[0].id, 'm4');
        assert.equal(r.rejectedRows[0].user, 'user_1');
        assert.match(r.rejectedRows[0].reason, /HTTP 400: .*Invalid input: contains forbidden content/);
        assert.deepEqual(r.skippedRows, [{ id: 'm_null', user: null, reason: 'user_id is NULL' }]);
      }
    } finally {
      await api.close();
    }
  });

  test('holds every skipped row, past the 1,000 printed, and leaves no temp file behind', async () => {
    const dir = tmpDir();
    const file = join(dir, 'skips.db');
    const skipped = Array.from({ length: 2500 }, (_, i) => ({ id: `s${i}`, user: null, content: `orphan ${i}` }));
    writeMemoryFile(file, [...skipped, { id: 'kept', user: 'user_1', content: 'likes dark roast' }]);
    const temp = join(dir, 'tmp');
    mkdirSync(temp);
    const reportFile = join(dir, 'report.json');
    const res = await runCli(
      ['migrate', '--sqlite', file, '--pglite-dir', join(dir, 'pg'), '--embedder', 'local', '--skip-test', '--json', '--report', reportFile],
      { TMPDIR: temp },
    );
    assert.equal(res.code, 0, res.stderr);
    assert.equal(parseJson(res).skippedRows.length, 1000);
    const full = JSON.parse(readFileSync(reportFile, 'utf8'));
    assert.deepEqual(full.skippedRows, skipped.map((s) => ({ id: s.id, user: null, reason: 'user_id is NULL' })));
    assert.deepEqual(full.rejectedRows, []);
    assert.equal(full.memories.migrated, 1);
    assert.deepEqual(readdirSync(temp).filter((f) => f.startsWith('mm-')), [], 'scratch files removed');
  });
});

describe('--help', () => {
  test('every command lists every flag with its default, and has an example', async () => {
    const top = await runCli(['--help']);
    assert.equal(top.code, 0);
    const commands = [...top.stdout.matchAll(/^  ([a-z][a-z-]*)\b/gm)].map((m) => m[1]!).filter((c) => c !== 'help');
    for (const c of ['migrate', 'schema', 'selftest', 'status']) assert.ok(commands.includes(c), `${c} is listed`);
    for (const c of commands) {
      const res = await runCli([c, '--help']);
      assert.equal(res.code, 0, `${c}: ${res.stderr}`);
      const options = res.stdout.split(/\n(?:Examples?:)/)[0]!.split(/^Options:$/m)[1] ?? '';
      // One entry per flag: a line starting with "  -", plus its wrapped continuation lines.
      const entries = options.split(/\n(?=  -)/).map((e) => e.replace(/\s+/g, ' ').trim()).filter((e) => e.startsWith('-'));
      assert.ok(entries.length > 1, `${c} has options`);
      for (const e of entries) {
        if (/^-h, --help/.test(e)) continue;
        assert.match(e, /default|required/, `${c}: no default shown for: ${e}`);
      }
      assert.match(res.stdout, /\nExamples?:\n {2}(\S+=\S+ )?memory-migrate /, `${c} has an example`);
    }
  });
});

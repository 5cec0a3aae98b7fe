// What a failed run prints, through the real CLI as a child process: one line on stderr and a
// stack trace only with DEBUG=memory-migrate; with --json, still one JSON object on stdout.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { runCli, parseJson } from '../helpers/cli.js';
import { scratchFolder } from '../helpers/sqlite-files.js';
import { assertOneLineUsage, local } from '../helpers/refusals.js';

const { root } = scratchFolder('mm-errors-');

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

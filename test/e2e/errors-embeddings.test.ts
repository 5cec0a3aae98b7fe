// Embeddings, through the real CLI as a child process: a missing key, a base URL that is not a
// URL, unreachable or has the wrong path, a rejected key and an unknown model are refused with
// one line that names the problem and the fix, before anything is written to the target.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { runCli, targetArgs, parseJson } from '../helpers/cli.js';
import { startFakeOpenAI, type FakeOpenAI } from '../helpers/fake-openai.js';
import { scratchFolder, makeDb } from '../helpers/sqlite-files.js';
import { assertOneLineUsage, assertNothingWritten, closedPort } from '../helpers/refusals.js';
import type { TargetOptions } from '../../src/postgres/connection.js';

const { tmpPath } = scratchFolder('mm-errors-');

const good = tmpPath('good.db');
before(() => makeDb(good, 30));

/** A fresh PGlite directory that does not exist yet. */
function pgliteTarget(): TargetOptions {
  return { pgliteDir: join(tmpPath('pg'), 'data') };
}

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
    // A rejected key exits 1 (the contract for a 401), after one request, nothing written.
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

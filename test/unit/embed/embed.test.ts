// The embedding pipeline: through the REAL openai client against a local OpenAI-compatible
// server that counts requests and injects faults; the persistent cache on PGlite (and on
// PostgreSQL when TEST_DATABASE_URL is set).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RunError, UsageError } from '../../../src/errors.js';
import {
  DEFAULT_OPENAI_MODEL,
  KNOWN_MODELS,
  PRICES_AS_OF,
  defaultDimensions,
  estimateCostUsd,
  resolveDimensions,
  supportsDimensions,
} from '../../../src/embed/models.js';
import { countTokens, truncateToTokens } from '../../../src/embed/tokens.js';
import { minRequests, planBatches } from '../../../src/embed/batching.js';
import { OpenAIProvider, type OpenAIProviderOptions } from '../../../src/embed/openai-provider.js';
import { parseDurationMs, retryAfterFromHeaders } from '../../../src/embed/rate-limit.js';
import { LOCAL_MODEL, LocalProvider, localEmbedding } from '../../../src/embed/local-provider.js';
import { EmbeddingCache, embeddingCacheKey } from '../../../src/embed/cache.js';
import { parseVectorText, vectorToText } from '../../../src/postgres/vector-text.js';
import { EmbeddingService } from '../../../src/embed/service.js';
import { createProvider } from '../../../src/embed/index.js';
import { verifyEmbeddingEndpoint } from '../../../src/embed/endpoint-check.js';
import { emptyEmbedStats, type EmbedInput, type EmbedResult } from '../../../src/embed/types.js';
import { canonicalize } from '../../../src/source/canonical.js';
import type { Db } from '../../../src/postgres/connection.js';
import { fakeVector, startFakeOpenAI, type FakeOpenAI } from '../../helpers/fake-openai.js';
import { freshDb, memoryDb, testTargets } from '../../helpers/targets.js';

const KEY = 'sk-test-fake-key-0123456789abcdef';
const MODEL = 'text-embedding-3-small';

// ------------------------------------------------------------------ data

/** Deterministic pseudo-random generator (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORDS = (
  'coffee espresso grinder customer order shipping prefers likes milk oat latte beans roast dark light monday ' +
  'meeting invoice refund shopify product price discount bundle subscription weekly email phone address note ' +
  'remember always never morning evening decaf machine warranty repair parts filter water temperature'
).split(' ');

/** Realistic memory-like texts: 3..`maxWords` words each, all distinct. */
function memoryTexts(n: number, seed = 1, maxWords = 60): string[] {
  const r = rng(seed);
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const len = 3 + Math.floor(r() * r() * (maxWords - 3));
    const words: string[] = [];
    for (let k = 0; k < len; k++) words.push(WORDS[Math.floor(r() * WORDS.length)]!);
    out.push(`memory ${i}: ${words.join(' ')}`);
  }
  return out;
}

function inputsOf(texts: string[], user = 'u1'): EmbedInput[] {
  return texts.map((text, i) => ({ text, ref: { id: `m${i}`, user } }));
}

function vectorsOf(results: EmbedResult[]): Float32Array[] {
  return results.map((r, i) => {
    assert.ok('vector' in r, `input ${i} was rejected: ${'rejected' in r ? r.rejected : ''}`);
    return r.vector;
  });
}

function sameBits(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

function norm(v: Float32Array): number {
  let s = 0;
  for (const x of v) s += x * x;
  return Math.sqrt(s);
}

function cosine(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s / (norm(a) * norm(b));
}

function provider(server: FakeOpenAI, extra: Partial<OpenAIProviderOptions> = {}): OpenAIProvider {
  return new OpenAIProvider({
    apiKey: KEY,
    baseURL: server.url,
    model: MODEL,
    retryBaseMs: 5,
    retryMaxMs: 50,
    timeoutMs: 10_000,
    ...extra,
  });
}

/** The embedding_cache DDL, straight from the schema file (no copy to drift). */
function cacheDdl(): string {
  const sql = readFileSync(new URL('../../../../sql/005_tables.sql', import.meta.url), 'utf8');
  const m = /CREATE TABLE IF NOT EXISTS embedding_cache \([\s\S]*?\n\);/.exec(sql);
  assert.ok(m, 'embedding_cache DDL not found in sql/005_tables.sql');
  return `CREATE EXTENSION IF NOT EXISTS vector;\n${m[0]}`;
}

// ------------------------------------------------------------------ models, tokens, batching

describe('models', () => {
  test('known models: widths, dimensions support, prices', () => {
    assert.equal(DEFAULT_OPENAI_MODEL, 'text-embedding-3-small');
    assert.equal(defaultDimensions('text-embedding-3-small'), 1536);
    assert.equal(defaultDimensions('text-embedding-3-large'), 3072);
    assert.equal(defaultDimensions('text-embedding-ada-002'), 1536);
    assert.equal(defaultDimensions(LOCAL_MODEL), 384);
    assert.equal(supportsDimensions('text-embedding-3-large'), true);
    assert.equal(supportsDimensions('text-embedding-ada-002'), false);
    assert.equal(supportsDimensions('nomic-embed-text'), false);
    assert.ok(Math.abs(estimateCostUsd('text-embedding-3-small', 1_000_000)! - 0.02) < 1e-12);
    assert.ok(Math.abs(estimateCostUsd('text-embedding-3-large', 2_000_000)! - 0.26) < 1e-12);
    assert.ok(Math.abs(estimateCostUsd('text-embedding-ada-002', 500_000)! - 0.05) < 1e-12);
    assert.equal(estimateCostUsd(LOCAL_MODEL, 10_000_000), 0);
    assert.equal(estimateCostUsd('nomic-embed-text', 1000), null);
    assert.match(PRICES_AS_OF, /^2025-/);
    assert.equal(Object.keys(KNOWN_MODELS).length, 4);
  });

  test('unknown models need --dimensions; --dimensions is validated per model', () => {
    assert.throws(() => defaultDimensions('nomic-embed-text'), (e: unknown) => e instanceof UsageError && /unknown embedding model nomic-embed-text: pass --dimensions N/.test(e.message));
    assert.throws(() => resolveDimensions('nomic-embed-text'), UsageError);
    assert.deepEqual(resolveDimensions('nomic-embed-text', 768), { dimensions: 768, send: true });
    assert.deepEqual(resolveDimensions('text-embedding-3-small'), { dimensions: 1536, send: false });
    assert.deepEqual(resolveDimensions('text-embedding-3-small', 1536), { dimensions: 1536, send: false });
    assert.deepEqual(resolveDimensions('text-embedding-3-large', 1024), { dimensions: 1024, send: true });
    assert.deepEqual(resolveDimensions('text-embedding-ada-002', 1536), { dimensions: 1536, send: false });
    assert.throws(() => resolveDimensions('text-embedding-ada-002', 512), /does not support --dimensions/);
    assert.throws(() => resolveDimensions('text-embedding-3-small', 2048), /larger than/);
    assert.throws(() => resolveDimensions('text-embedding-3-small', 0), UsageError);
    assert.throws(() => resolveDimensions('text-embedding-3-small', 1.5), UsageError);
  });
});

describe('tokens', () => {
  test('counts with cl100k_base, special tokens are plain text', () => {
    assert.equal(countTokens('hello world'), 2);
    assert.equal(countTokens(''), 0);
    assert.ok(countTokens('a <|endoftext|> b') > 3);
  });

  test('truncateToTokens cuts by tokens and decodes back', () => {
    const short = truncateToTokens('hello world', 10);
    assert.deepEqual(short, { text: 'hello world', truncated: false, tokens: 2 });
    const long = 'word '.repeat(100);
    const t = truncateToTokens(long, 10);
    assert.equal(t.truncated, true);
    assert.ok(t.tokens <= 10);
    assert.ok(long.startsWith(t.text));
    // A cut inside multi-byte characters never leaves a broken character behind.
    const emoji = '☕🫘'.repeat(50);
    const e = truncateToTokens(emoji, 7);
    assert.ok(e.tokens <= 7);
    assert.ok(!e.text.includes('\uFFFD'));
    assert.ok(emoji.startsWith(e.text));
  });
});

describe('planBatches', () => {
  function check(items: { tokens: number }[], limits: { maxInputs: number; maxTokens: number }) {
    const plan = planBatches(items, limits);
    const seen = new Set<number>();
    for (const b of plan) {
      assert.ok(b.length >= 1 && b.length <= limits.maxInputs, `batch of ${b.length} inputs`);
      const tok = b.reduce((s, i) => s + items[i]!.tokens, 0);
      assert.ok(tok <= limits.maxTokens, `batch of ${tok} tokens`);
      for (const i of b) {
        assert.ok(!seen.has(i), `index ${i} twice`);
        seen.add(i);
      }
    }
    assert.equal(seen.size, items.length);
    return plan;
  }

  test('empty, one request, and limits respected', () => {
    assert.deepEqual(planBatches([]), []);
    assert.deepEqual(planBatches([{ tokens: 5 }, { tokens: 7 }]), [[0, 1]]);
    assert.equal(minRequests([]), 0);
    const items = Array.from({ length: 5000 }, () => ({ tokens: 1 }));
    assert.equal(check(items, { maxInputs: 2048, maxTokens: 300_000 }).length, 3);
  });

  test('meets the lower bound max(ceil(n/maxInputs), ceil(tokens/maxTokens)) on realistic data', () => {
    const configs = [
      { maxInputs: 16, maxTokens: 2000 },
      { maxInputs: 2048, maxTokens: 300_000 },
      { maxInputs: 64, maxTokens: 4000 },
      { maxInputs: 100, maxTokens: 8191 },
      { maxInputs: 10, maxTokens: 1500 },
    ];
    for (let seed = 1; seed <= 6; seed++) {
      const r = rng(seed);
      for (const limits of configs) {
        for (const n of [1, 17, 300, 3000]) {
          // Memory texts: mostly short, a long tail up to a few hundred tokens.
          const items = Array.from({ length: n }, () => ({ tokens: 5 + Math.floor(r() * r() * r() * 600) }));
          const plan = check(items, limits);
          assert.equal(plan.length, minRequests(items, limits), `seed ${seed} n ${n} ${JSON.stringify(limits)}`);
        }
      }
    }
  });

  test('both limits nearly binding: still the minimum', () => {
    // 160 inputs of ~125 tokens: exactly 10 requests by count (16 each) and by tokens (2000 each).
    const r = rng(99);
    const items = Array.from({ length: 160 }, () => ({ tokens: 110 + Math.floor(r() * 25) }));
    const limits = { maxInputs: 16, maxTokens: 2000 };
    const plan = check(items, limits);
    assert.equal(plan.length, minRequests(items, limits));
  });
});

// ------------------------------------------------------------------ the OpenAI provider

describe('OpenAIProvider against the fake server', () => {
  let server: FakeOpenAI;
  before(async () => {
    server = await startFakeOpenAI({ apiKey: KEY });
  });
  after(async () => {
    await server.close();
  });

  test('clean run: vectors equal the server\'s, in input order; base64 and float agree', async () => {
    server.reset();
    server.setOptions({ fault: undefined, rateHeaders: undefined, poison: undefined });
    const texts = memoryTexts(50, 3);
    const stats = emptyEmbedStats();
    const p = provider(server, { maxInputs: 16 });
    const vecs = vectorsOf(await p.embed(inputsOf(texts), stats));
    texts.forEach((t, i) => assert.ok(sameBits(vecs[i]!, fakeVector(MODEL, t, 1536)), `vector ${i}`));
    assert.equal(stats.requests, 4);
    assert.equal(stats.requests, server.embeddingRequests.length);
    assert.equal(stats.retries, 0);
    assert.equal(stats.tokens, texts.reduce((s, t) => s + countTokens(t), 0));
    assert.ok(server.embeddingRequests.every((r) => r.body.encoding_format === 'base64'));
    assert.ok(server.embeddingRequests.every((r) => r.body.dimensions === undefined), 'native width: no dimensions sent');

    server.reset();
    const pf = provider(server, { maxInputs: 16, encodingFormat: 'float' });
    const floats = vectorsOf(await pf.embed(inputsOf(texts), emptyEmbedStats()));
    assert.ok(server.embeddingRequests.every((r) => r.body.encoding_format === 'float'));
    floats.forEach((v, i) => assert.ok(sameBits(v, vecs[i]!)));
  });

  test('30% 429 (Retry-After) plus 500s: same vectors as a clean run', async (t) => {
    const texts = memoryTexts(400, 7);
    const limits = { maxInputs: 16, maxTokens: 2000 };

    server.reset();
    server.setOptions({ fault: undefined, rateHeaders: undefined });
    const cleanStats = emptyEmbedStats();
    const clean = vectorsOf(await provider(server, limits).embed(inputsOf(texts), cleanStats));
    const cleanRequests = server.embeddingRequests.length;

    server.reset();
    let n429 = 0;
    let n500 = 0;
    // Exactly 3 in 10 requests get a 429, 1 in 10 a 500, whatever batch they carry.
    server.setFaults((n) => {
      const k = n % 10;
      if (k === 1 || k === 4 || k === 7) {
        n429++;
        // Both header forms, small so the test is quick.
        return n429 % 2 ? { status: 429, retryAfter: '0' } : { status: 429, retryAfterMs: 3 };
      }
      if (k === 9) {
        n500++;
        return { status: 500 };
      }
      return undefined;
    });
    const stats = emptyEmbedStats();
    const faulty = vectorsOf(await provider(server, { ...limits, maxRetries: 12 }).embed(inputsOf(texts), stats));
    server.setFaults(undefined);

    assert.equal(faulty.length, clean.length);
    faulty.forEach((v, i) => assert.ok(sameBits(v, clean[i]!), `vector ${i} differs from the clean run`));
    const sent = server.embeddingRequests.length;
    assert.equal(stats.requests, sent, 'every attempt is counted');
    assert.equal(stats.retries, n429 + n500, 'every 429/500 was retried once');
    assert.equal(sent, cleanRequests + n429 + n500);
    assert.equal(stats.tokens, cleanStats.tokens, 'tokens count billed requests only');
    assert.ok(n429 / sent >= 0.25 && n429 / sent <= 0.35, `429 share ${n429}/${sent}`);
    t.diagnostic(
      `clean: ${cleanRequests} requests; faulty: ${sent} requests, ${stats.retries} retries ` +
        `(${n429} x 429 = ${((100 * n429) / sent).toFixed(1)}%, ${n500} x 500)`,
    );
  });

  test('timeouts and dropped connections are retried', async (t) => {
    server.reset();
    let n = 0;
    server.setFaults(() => {
      n++;
      // An answer 5 s late against a 2 s timeout: a timeout however slow the machine, while a
      // normal answer has 2 s, so no other request times out.
      if (n === 1) return { delayMs: 5000 };
      if (n === 2) return { destroy: true };
      return undefined;
    });
    const stats = emptyEmbedStats();
    const texts = memoryTexts(5, 11);
    const vecs = vectorsOf(await provider(server, { timeoutMs: 2000, concurrency: 1 }).embed(inputsOf(texts), stats));
    server.setFaults(undefined);
    texts.forEach((s, i) => assert.ok(sameBits(vecs[i]!, fakeVector(MODEL, s, 1536))));
    assert.equal(stats.retries, 2);
    assert.equal(stats.requests, 3);
    t.diagnostic(`timeout + reset: ${stats.requests} requests, ${stats.retries} retries`);
  });

  test('retries exhausted: RunError naming --max-retries', async () => {
    server.reset();
    server.setFaults(() => ({ status: 503 }));
    const stats = emptyEmbedStats();
    await assert.rejects(
      provider(server, { maxRetries: 2 }).embed(inputsOf(['x y z']), stats),
      (e: unknown) => e instanceof RunError && e.exitCode === 1 && /after 2 retries/.test(e.message) && /--max-retries/.test(e.message),
    );
    server.setFaults(undefined);
    assert.equal(stats.requests, 3);
    assert.equal(stats.retries, 2);
  });

  test('401: exactly one request, RunError naming OPENAI_API_KEY, key never printed', async () => {
    server.reset();
    const wrong = 'sk-wrong-key-abcdefghijklmnop';
    // A server that quotes the key back, as some do.
    server.setFaults(() => ({
      status: 401,
      body: { error: { message: `Incorrect API key provided: ${wrong}`, type: 'invalid_request_error', code: 'invalid_api_key' } },
    }));
    const stats = emptyEmbedStats();
    const p = provider(server, { apiKey: wrong, maxInputs: 8, concurrency: 4 });
    let caught: unknown;
    try {
      await p.embed(inputsOf(memoryTexts(100, 5)), stats);
    } catch (e) {
      caught = e;
    }
    server.setFaults(undefined);
    assert.ok(caught instanceof RunError, `expected RunError, got ${String(caught)}`);
    assert.equal(caught.exitCode, 1);
    assert.match(caught.message, /embedding API rejected the credentials \(401\): check OPENAI_API_KEY and OPENAI_BASE_URL/);
    assert.ok(!caught.message.includes(wrong), 'the API key leaked into the message');
    assert.equal(server.embeddingRequests.length, 1, 'a bad key costs exactly one request');
    assert.equal(stats.requests, 1);
    assert.equal(stats.retries, 0);
  });

  test('a 401 in the middle of a run stops it and abandons requests in flight', async () => {
    server.reset();
    server.setFaults((n) => (n >= 3 ? { status: 401 } : { delayMs: 20 }));
    const stats = emptyEmbedStats();
    await assert.rejects(
      provider(server, { maxInputs: 2, concurrency: 4 }).embed(inputsOf(memoryTexts(200, 9)), stats),
      (e: unknown) => e instanceof RunError && /OPENAI_API_KEY/.test(e.message),
    );
    server.setFaults(undefined);
    // 100 batches planned; the run stopped after the few that were already in flight.
    assert.ok(server.embeddingRequests.length <= 2 + 4, `${server.embeddingRequests.length} requests`);
    assert.equal(stats.retries, 0);
  });

  test('server unreachable: retried, then a RunError naming OPENAI_BASE_URL', async () => {
    const dead = await startFakeOpenAI();
    const url = dead.url;
    await dead.close();
    const stats = emptyEmbedStats();
    await assert.rejects(
      new OpenAIProvider({ apiKey: KEY, baseURL: url, maxRetries: 2, retryBaseMs: 5 }).embed(inputsOf(['x']), stats),
      (e: unknown) => e instanceof RunError && /cannot reach the embedding API/.test(e.message) && /OPENAI_BASE_URL/.test(e.message),
    );
    assert.equal(stats.requests, 3);
    assert.equal(stats.retries, 2);
  });

  test('real 401 from the server (wrong Authorization header) behaves the same', async () => {
    server.reset();
    const p = provider(server, { apiKey: 'sk-another-wrong-key-000000', maxInputs: 4 });
    await assert.rejects(p.embed(inputsOf(memoryTexts(20, 6)), emptyEmbedStats()), /OPENAI_API_KEY/);
    assert.equal(server.embeddingRequests.length, 1);
  });

  test('a poisoned input in a batch of 20 is isolated into the reject file; the rest are embedded', async (t) => {
    server.reset();
    server.setOptions({ poison: '<<POISON>>' });
    const dir = mkdtempSync(join(tmpdir(), 'mm-embed-'));
    const rejectFile = join(dir, 'rejects.jsonl');
    const texts = memoryTexts(20, 8);
    texts[13] = `${texts[13]} <<POISON>>`;
    const stats = emptyEmbedStats();
    const results = await provider(server, { rejectFile }).embed(inputsOf(texts, 'alice'), stats);
    server.setOptions({ poison: undefined });
    results.forEach((r, i) => {
      if (i === 13) {
        assert.ok('rejected' in r);
        assert.match(r.rejected, /HTTP 400/);
      } else {
        assert.ok('vector' in r && sameBits(r.vector, fakeVector(MODEL, texts[i]!, 1536)), `input ${i}`);
      }
    });
    assert.equal(stats.rejected, 1);
    const lines = readFileSync(rejectFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(lines.length, 1);
    assert.equal(lines[0].id, 'm13');
    assert.equal(lines[0].user, 'alice');
    assert.match(lines[0].reason, /400/);
    assert.equal(stats.requests, server.embeddingRequests.length);
    t.diagnostic(`isolating 1 bad input of 20 took ${stats.requests} requests`);
  });

  test('request count equals the minimum the token limits allow', async (t) => {
    server.reset();
    const texts = memoryTexts(300, 12, 120);
    const limits = { maxInputs: 16, maxTokens: 2000 };
    server.setOptions({ maxInputs: 16, maxTokens: 2000 });
    const stats = emptyEmbedStats();
    vectorsOf(await provider(server, limits).embed(inputsOf(texts), stats));
    server.setOptions({ maxInputs: undefined, maxTokens: undefined });
    const bound = minRequests(texts.map((s) => ({ tokens: countTokens(s) })), limits);
    assert.equal(server.embeddingRequests.length, bound);
    assert.equal(stats.requests, bound);
    t.diagnostic(`300 texts, ${stats.tokens} tokens: ${bound} requests (lower bound ${bound})`);
  });

  test('an input over 8,191 tokens is truncated for embedding only, and counted', async () => {
    server.reset();
    const long = 'espresso '.repeat(9000);
    assert.ok(countTokens(long) > 8191);
    const inputs = inputsOf(['short one', long]);
    const stats = emptyEmbedStats();
    const out = vectorsOf(await provider(server).embed(inputs, stats));
    assert.equal(stats.truncated, 1);
    assert.equal(inputs[1]!.text, long, 'the input text is untouched');
    const sent: string[] = server.embeddingRequests[0]!.body.input;
    const sentLong = sent.find((s) => s.startsWith('espresso'))!;
    assert.ok(countTokens(sentLong) <= 8191);
    assert.ok(long.startsWith(sentLong));
    assert.ok(sameBits(out[1]!, fakeVector(MODEL, truncateToTokens(long, 8191).text, 1536)));
  });

  test('x-ratelimit-remaining-requests 0 with reset 200ms makes the next request wait', async () => {
    server.reset();
    server.setOptions({ rateHeaders: { remainingRequests: 0, remainingTokens: 1_000_000, resetRequests: '200ms', resetTokens: '1ms' } });
    const p = provider(server, { maxInputs: 2, concurrency: 2 });
    const t0 = performance.now();
    vectorsOf(await p.embed(inputsOf(['a b', 'c d', 'e f', 'g h']), emptyEmbedStats()));
    const elapsed = performance.now() - t0;
    server.setOptions({ rateHeaders: undefined });
    assert.equal(server.embeddingRequests.length, 2);
    assert.ok(elapsed >= 150, `second request should wait for the reset, elapsed ${elapsed.toFixed(0)} ms`);
  });

  test('x-ratelimit-remaining-tokens below the next batch makes it wait for the token reset', async () => {
    server.reset();
    server.setOptions({ rateHeaders: { remainingRequests: 100, remainingTokens: 1, resetRequests: '1ms', resetTokens: '0.2s' } });
    const p = provider(server, { maxInputs: 1, concurrency: 1 });
    const t0 = performance.now();
    vectorsOf(await p.embed(inputsOf(['one two three', 'four five six']), emptyEmbedStats()));
    const elapsed = performance.now() - t0;
    server.setOptions({ rateHeaders: undefined });
    assert.ok(elapsed >= 150, `elapsed ${elapsed.toFixed(0)} ms`);
  });

  test('404 for the model: RunError naming the model and --model, one request', async () => {
    server.reset();
    const p = provider(server, { model: 'nomic-embed-text', dimensions: 768 });
    await assert.rejects(
      p.embed(inputsOf(['hello']), emptyEmbedStats()),
      (e: unknown) => e instanceof RunError && /nomic-embed-text/.test(e.message) && /--model/.test(e.message),
    );
    assert.equal(server.embeddingRequests.length, 1);
    assert.equal(server.embeddingRequests[0]!.body.dimensions, 768, 'explicit --dimensions is sent for unknown models');
  });

  test('--dimensions for text-embedding-3-*: sent, and the width is checked', async () => {
    server.reset();
    const p = provider(server, { model: 'text-embedding-3-large', dimensions: 256 });
    const [v] = vectorsOf(await p.embed(inputsOf(['dims']), emptyEmbedStats()));
    assert.equal(v!.length, 256);
    assert.equal(server.embeddingRequests[0]!.body.dimensions, 256);

    server.setOptions({ ignoreDimensions: true });
    await assert.rejects(
      provider(server, { dimensions: 512 }).embed(inputsOf(['dims']), emptyEmbedStats()),
      (e: unknown) => e instanceof RunError && /returned 1536-dimensional vectors/.test(e.message) && /--dimensions 1536/.test(e.message),
    );
    server.setOptions({ ignoreDimensions: false });
  });

  test('empty text is rejected without a request', async () => {
    server.reset();
    const stats = emptyEmbedStats();
    const out = await provider(server).embed(inputsOf(['']), stats);
    assert.ok('rejected' in out[0]!);
    assert.equal(stats.rejected, 1);
    assert.equal(server.embeddingRequests.length, 0);
  });

  test('progress callback and inflight', async () => {
    server.reset();
    const seen: number[] = [];
    let maxInflight = 0;
    const p = provider(server, {
      maxInputs: 5,
      concurrency: 3,
      onProgress: (pr) => {
        seen.push(pr.done);
        maxInflight = Math.max(maxInflight, pr.inflight);
      },
    });
    vectorsOf(await p.embed(inputsOf(memoryTexts(40, 21)), emptyEmbedStats()));
    assert.equal(seen.at(-1), 40);
    assert.ok(maxInflight <= 3);
    assert.equal(p.inflight, 0);
  });

  test('at most `concurrency` requests in flight', async () => {
    server.reset();
    let inflight = 0;
    let peak = 0;
    server.setFaults(() => {
      inflight++;
      peak = Math.max(peak, inflight);
      setTimeout(() => inflight--, 30);
      return { delayMs: 30 };
    });
    vectorsOf(await provider(server, { maxInputs: 2, concurrency: 3 }).embed(inputsOf(memoryTexts(24, 4)), emptyEmbedStats()));
    server.setFaults(undefined);
    assert.ok(peak <= 3, `peak ${peak}`);
    assert.ok(peak >= 2, `peak ${peak}: requests should overlap`);
  });

  test('the endpoint check: a listed model costs one GET /models and no embedding; an unknown one a single probe', async () => {
    const base = { baseURL: server.url, apiKey: KEY, dimensions: 1536, sendDimensions: false };
    const seen = () => server.requests.map((r) => `${r.method} ${r.path}`);
    server.reset();
    assert.equal(await verifyEmbeddingEndpoint({ ...base, model: MODEL }), 'listed');
    assert.deepEqual(seen(), ['GET /v1/models']);
    assert.equal(server.requests[0]!.authorization, `Bearer ${KEY}`);
    // Ollama lists "name:latest" for "name".
    server.setOptions({ models: { 'nomic-embed-text:latest': 768 } });
    try {
      server.reset();
      assert.equal(await verifyEmbeddingEndpoint({ ...base, model: 'nomic-embed-text', dimensions: 768 }), 'listed');
      assert.deepEqual(seen(), ['GET /v1/models']);
    } finally {
      server.setOptions({ models: undefined });
    }
    server.reset();
    await assert.rejects(
      verifyEmbeddingEndpoint({ ...base, model: 'text-embedding-9-huge', dimensions: 256, sendDimensions: true }),
      (e: unknown) => e instanceof UsageError && /^embedding model text-embedding-9-huge is not available at .*pick a model the server has with --model/.test(e.message),
    );
    assert.deepEqual(seen(), ['GET /v1/models', 'POST /v1/embeddings']);
  });
});

describe('provider construction', () => {
  test('missing API key, bad base URL, bad numbers: UsageError', () => {
    assert.throws(
      () => new OpenAIProvider({ apiKey: '' }),
      (e: unknown) => e instanceof UsageError && e.message === 'OPENAI_API_KEY is not set; set it, or use --embedder local for an offline trial run',
    );
    assert.throws(() => new OpenAIProvider({ apiKey: KEY, baseURL: 'ftp://example.com/v1' }), UsageError);
    assert.throws(() => new OpenAIProvider({ apiKey: KEY, baseURL: 'not a url' }), UsageError);
    assert.throws(() => new OpenAIProvider({ apiKey: KEY, concurrency: 0 }), UsageError);
    assert.throws(() => new OpenAIProvider({ apiKey: KEY, model: 'my-ollama-model' }), /pass --dimensions/);
  });

  test('createProvider: defaults and checks', () => {
    const saved = process.env['OPENAI_API_KEY'];
    const savedUrl = process.env['OPENAI_BASE_URL'];
    try {
      delete process.env['OPENAI_API_KEY'];
      delete process.env['OPENAI_BASE_URL'];
      assert.throws(() => createProvider({ embedder: 'openai' }), /OPENAI_API_KEY is not set/);
      const p = createProvider({ embedder: 'openai', apiKey: KEY });
      assert.equal(p.model, DEFAULT_OPENAI_MODEL);
      assert.equal(p.dimensions, 1536);
      const l = createProvider({ embedder: 'local' });
      assert.equal(l.model, LOCAL_MODEL);
      assert.equal(l.dimensions, 384);
      assert.equal(createProvider({ embedder: 'local', dimensions: 64 }).dimensions, 64);
      assert.throws(() => createProvider({ embedder: 'local', model: 'text-embedding-3-small' }), UsageError);
      assert.throws(() => createProvider({ embedder: 'nope' as 'local' }), UsageError);
    } finally {
      if (saved !== undefined) process.env['OPENAI_API_KEY'] = saved;
      if (savedUrl !== undefined) process.env['OPENAI_BASE_URL'] = savedUrl;
    }
  });

  test('header parsing: reset durations and Retry-After', () => {
    assert.equal(parseDurationMs('1s'), 1000);
    assert.equal(parseDurationMs('6m0s'), 360_000);
    assert.equal(parseDurationMs('20ms'), 20);
    assert.equal(parseDurationMs('1h2m3.5s'), 3_723_500);
    assert.equal(parseDurationMs('0.5s'), 500);
    assert.equal(parseDurationMs('2'), 2000);
    assert.equal(parseDurationMs('soon'), undefined);
    assert.equal(parseDurationMs(null), undefined);
    const h = (o: Record<string, string>) => new Headers(o);
    assert.equal(retryAfterFromHeaders(h({ 'retry-after-ms': '150' })), 150);
    assert.equal(retryAfterFromHeaders(h({ 'retry-after': '2' })), 2000);
    assert.equal(retryAfterFromHeaders(h({ 'retry-after': '600' })), 60_000, 'capped at 60 s');
    const now = Date.parse('2025-01-01T00:00:00Z');
    assert.equal(retryAfterFromHeaders(h({ 'retry-after': 'Wed, 01 Jan 2025 00:00:03 GMT' }), now), 3000);
    assert.equal(retryAfterFromHeaders(h({})), undefined);
  });
});

// ------------------------------------------------------------------ local provider

describe('LocalProvider', () => {
  test('deterministic, unit length, never zero, lexical', async () => {
    const a = new LocalProvider();
    const b = new LocalProvider();
    const texts = ['The customer prefers oat milk in a latte', 'the CUSTOMER prefers oat milk in a latte!', 'Invoice 42 was refunded on Monday', '', '   ', '☕'];
    const va = vectorsOf(await a.embed(inputsOf(texts), emptyEmbedStats()));
    const vb = vectorsOf(await b.embed(inputsOf(texts), emptyEmbedStats()));
    va.forEach((v, i) => {
      assert.equal(v.length, 384);
      assert.ok(sameBits(v, vb[i]!), 'same text, same bits');
      assert.ok(Math.abs(norm(v) - 1) < 1e-5, `norm ${norm(v)}`);
      assert.ok(v.every((x) => Number.isFinite(x)));
    });
    assert.ok(sameBits(va[0]!, localEmbedding(texts[0]!)));
    assert.ok(cosine(va[0]!, va[1]!) > 0.95, 'case and punctuation barely matter');
    assert.ok(cosine(va[0]!, va[2]!) < cosine(va[0]!, va[1]!));
    const v64 = localEmbedding('hello', 64);
    assert.equal(v64.length, 64);
    assert.ok(Math.abs(norm(v64) - 1) < 1e-5);
    assert.throws(() => new LocalProvider({ dimensions: 0 }), UsageError);
  });

  test('through the service: computed counted, no requests', async () => {
    const stats = emptyEmbedStats();
    const svc = new EmbeddingService({ provider: new LocalProvider(), stats });
    const out = vectorsOf(await svc.embedTexts(inputsOf(['one', 'two', 'one'])));
    assert.equal(out.length, 3);
    assert.equal(stats.computed, 2);
    assert.equal(stats.cached, 1);
    assert.equal(stats.requests, 0);
    const pf = await svc.preflight(inputsOf(['three']));
    assert.equal(pf.estimatedCostUsd, 0);
    assert.equal(pf.requests, 0);
  });
});

// ------------------------------------------------------------------ the service and the cache

describe('EmbeddingService', () => {
  let server: FakeOpenAI;
  before(async () => {
    server = await startFakeOpenAI({ apiKey: KEY });
  });
  after(async () => {
    await server.close();
  });

  test('identical texts in one call are embedded once', async () => {
    server.reset();
    const stats = emptyEmbedStats();
    const svc = new EmbeddingService({ provider: provider(server), stats });
    const texts = ['likes dark roast', 'orders on monday', 'likes dark roast', 'likes dark roast\r\n', 'orders on monday  '];
    const out = vectorsOf(await svc.embedTexts(inputsOf(texts)));
    const sent: string[] = server.embeddingRequests.flatMap((r) => r.body.input);
    assert.deepEqual(sent.sort(), ['likes dark roast', 'orders on monday']);
    assert.equal(stats.computed, 2);
    assert.equal(stats.cached, 3);
    assert.ok(sameBits(out[0]!, out[2]!) && sameBits(out[0]!, out[3]!) && sameBits(out[1]!, out[4]!));
    assert.ok(sameBits(out[0]!, fakeVector(MODEL, 'likes dark roast', 1536)));

    // Same service again: the LRU answers, no request.
    server.reset();
    vectorsOf(await svc.embedTexts(inputsOf(['likes dark roast'])));
    assert.equal(server.embeddingRequests.length, 0);
    assert.equal(stats.cached, 4);
  });

  test('a text another call is embedding is not sent again when that call finishes during the cache lookup', async () => {
    server.reset();
    // The second call's cache lookup returns only once the first call has finished.
    let lookupWaitsFor: Promise<unknown> | null = null;
    class SlowCache extends EmbeddingCache {
      override async getMany(keys: readonly string[]) {
        if (lookupWaitsFor) await lookupWaitsFor;
        return super.getMany(keys);
      }
    }
    const stats = emptyEmbedStats();
    const svc = new EmbeddingService({ provider: provider(server), cache: new SlowCache(), stats });
    const first = await svc.submit(inputsOf(['likes dark roast']));
    lookupWaitsFor = first.done;
    const second = await svc.submit(inputsOf(['likes dark roast', 'orders on monday']));
    const [a] = vectorsOf(await first.done);
    const [b, c] = vectorsOf(await second.done);
    const sent: string[] = server.embeddingRequests.flatMap((r) => r.body.input);
    assert.deepEqual(sent.sort(), ['likes dark roast', 'orders on monday']);
    assert.equal(stats.computed, 2);
    assert.ok(sameBits(a!, b!) && !sameBits(b!, c!));
  });

  test('a rejected text is rejected for every input that has it, and not cached', async () => {
    server.reset();
    server.setOptions({ poison: 'BAD' });
    const stats = emptyEmbedStats();
    const svc = new EmbeddingService({ provider: provider(server), stats });
    const out = await svc.embedTexts(inputsOf(['fine text', 'BAD text', 'BAD text']));
    server.setOptions({ poison: undefined });
    assert.ok('vector' in out[0]!);
    assert.ok('rejected' in out[1]! && 'rejected' in out[2]!);
    assert.equal(stats.rejected, 2);
    assert.equal(stats.computed, 1);
    assert.equal(stats.computed + stats.cached + stats.rejected, 3);
  });

  test('preflight: tokens, requests, cost and ETA without sending anything', async () => {
    server.reset();
    const stats = emptyEmbedStats();
    const p = provider(server, { maxInputs: 16, maxTokens: 2000, concurrency: 2 });
    const svc = new EmbeddingService({ provider: p, stats, nominalRequestSeconds: 1 });
    const texts = memoryTexts(100, 31);
    const withDupes = [...texts, texts[0]!, texts[1]!];
    const pf = await svc.preflight(inputsOf(withDupes));
    assert.equal(server.embeddingRequests.length, 0);
    const tokens = texts.reduce((s, t) => s + countTokens(t), 0);
    assert.equal(pf.texts, 100);
    assert.equal(pf.cached, 2);
    assert.equal(pf.tokens, tokens);
    assert.equal(pf.requests, minRequests(texts.map((t) => ({ tokens: countTokens(t) })), { maxInputs: 16, maxTokens: 2000 }));
    assert.ok(Math.abs(pf.estimatedCostUsd - (tokens / 1e6) * 0.02) < 1e-12);
    assert.equal(pf.priceKnown, true);
    assert.equal(pf.etaSeconds, Math.ceil(pf.requests / 2));
    assert.equal(stats.requests, 0);

    // After a real run of half the texts, the preflight counts them as cached.
    await svc.embedTexts(inputsOf(texts.slice(0, 50)));
    const sentBefore = server.embeddingRequests.length;
    const pf2 = await svc.preflight(inputsOf(texts));
    assert.equal(pf2.cached, 50);
    assert.equal(pf2.texts, 50);
    assert.equal(server.embeddingRequests.length, sentBefore);
  });

  test('cache keys and vector text round-trip', () => {
    const k = embeddingCacheKey(MODEL, 1536, canonicalize('hello'));
    assert.match(k, /^[0-9a-f]{64}$/);
    assert.notEqual(k, embeddingCacheKey(MODEL, 512, canonicalize('hello')));
    assert.notEqual(k, embeddingCacheKey('text-embedding-3-large', 1536, canonicalize('hello')));
    const v = fakeVector(MODEL, 'round trip', 64);
    assert.ok(sameBits(parseVectorText(vectorToText(v)), v));
  });

  test('the LRU is bounded by bytes', async () => {
    const cache = new EmbeddingCache({ maxBytes: 100_000 });
    const entries = Array.from({ length: 100 }, (_, i) => ({ key: `k${i}`, model: MODEL, dimensions: 1536, vector: new Float32Array(1536) }));
    await cache.putMany(entries);
    assert.ok(cache.memoryBytes <= 100_000);
    assert.ok(cache.memoryEntries < 100 && cache.memoryEntries > 0);
    const got = await cache.getMany(['k99', 'k0']);
    assert.ok(got.has('k99'));
    assert.ok(!got.has('k0'), 'oldest entries were evicted');
  });

  async function persistentCacheRoundTrip(db: Db) {
    await db.exec(cacheDdl());
    const texts = memoryTexts(30, 41);
    server.reset();
    const stats1 = emptyEmbedStats();
    const svc1 = new EmbeddingService({ provider: provider(server, { maxInputs: 8 }), cache: new EmbeddingCache({ db }), stats: stats1 });
    const first = vectorsOf(await svc1.embedTexts(inputsOf(texts)));
    assert.ok(server.embeddingRequests.length > 0);
    assert.equal(stats1.computed, 30);
    const rows = await db.query<{ n: number | string }>('SELECT count(*)::int AS n FROM embedding_cache');
    assert.equal(Number(rows[0]!.n), 30);

    // A second run: new provider, new service, empty LRU, same database -> zero requests.
    server.reset();
    const stats2 = emptyEmbedStats();
    const svc2 = new EmbeddingService({ provider: provider(server, { maxInputs: 8 }), cache: new EmbeddingCache({ db }), stats: stats2 });
    const second = vectorsOf(await svc2.embedTexts(inputsOf(texts)));
    assert.equal(server.embeddingRequests.length, 0, 'a second run sends 0 requests');
    assert.equal(stats2.requests, 0);
    assert.equal(stats2.cached, 30);
    assert.equal(stats2.computed, 0);
    second.forEach((v, i) => assert.ok(sameBits(v, first[i]!), `cached vector ${i} is bit-identical`));

    // Dry-run cache: reads the table, never writes it.
    const dry = new EmbeddingService({ provider: provider(server), cache: new EmbeddingCache({ db, dryRun: true }), stats: emptyEmbedStats() });
    await dry.embedTexts(inputsOf(['a brand new text']));
    const after = await db.query<{ n: number | string }>('SELECT count(*)::int AS n FROM embedding_cache');
    assert.equal(Number(after[0]!.n), 30);

    // Another model or width never hits these entries.
    server.reset();
    const other = new EmbeddingService({
      provider: provider(server, { dimensions: 512 }),
      cache: new EmbeddingCache({ db }),
      stats: emptyEmbedStats(),
    });
    await other.embedTexts(inputsOf(texts.slice(0, 3)));
    assert.ok(server.embeddingRequests.length > 0);
  }

  test('persistent cache on in-memory PGlite: a second run sends 0 requests', async () => {
    const db = await memoryDb();
    try {
      await persistentCacheRoundTrip(db);
    } finally {
      await db.close();
    }
  });

  for (const target of testTargets()) {
    test(`persistent cache on ${target.name}: a second run sends 0 requests`, async () => {
      const { db } = await freshDb(target);
      try {
        await persistentCacheRoundTrip(db);
      } finally {
        await db.close();
      }
    });
  }
});

test('reject file is not created when nothing is rejected', async () => {
  const server = await startFakeOpenAI({ apiKey: KEY });
  try {
    const dir = mkdtempSync(join(tmpdir(), 'mm-embed-'));
    const rejectFile = join(dir, 'rejects.jsonl');
    vectorsOf(await provider(server, { rejectFile }).embed(inputsOf(['all good']), emptyEmbedStats()));
    assert.equal(existsSync(rejectFile), false);
  } finally {
    await server.close();
  }
});

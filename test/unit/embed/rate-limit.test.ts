// Rate limits as OpenAI enforces them (continuous buckets, 429s with its wording), against the
// real openai client and a local server that enforces them the same way, with the minute
// compressed to a fraction of a second so the tests stay fast. Outcomes are counted at the
// server: what it admitted, refused, and the vectors it returned. No timings are asserted.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RunError } from '../../../src/errors.js';
import { countTokens } from '../../../src/embed/tokens.js';
import { OpenAIProvider, type OpenAIProviderOptions } from '../../../src/embed/openai-provider.js';
import { Bucket, parseRateLimitMessage, RateBudget } from '../../../src/embed/rate-limit.js';
import { EmbeddingService } from '../../../src/embed/service.js';
import { EmbeddingCache } from '../../../src/embed/cache.js';
import { EmbedCancelled, emptyEmbedStats, type EmbedInput, type EmbedResult } from '../../../src/embed/types.js';
import { fakeVector, startFakeOpenAI, type FakeOpenAI } from '../../helpers/fake-openai.js';

const KEY = 'sk-test-rate-0123456789abcdef';
const MODEL = 'text-embedding-3-small';
const DIMS = 64;

const WORDS = 'coffee espresso grinder customer order shipping prefers likes milk oat latte beans roast dark light monday'.split(' ');

/** Distinct memory-like texts of `words` words each. */
function texts(n: number, words = 30, seed = 1): string[] {
  const out: string[] = [];
  let a = seed;
  for (let i = 0; i < n; i++) {
    const w: string[] = [];
    for (let k = 0; k < words; k++) {
      a = (a * 1103515245 + 12345) >>> 0;
      w.push(WORDS[a % WORDS.length]!);
    }
    out.push(`memory ${seed}-${i}: ${w.join(' ')}`);
  }
  return out;
}

function inputs(list: string[]): EmbedInput[] {
  return list.map((text, i) => ({ text, ref: { id: `m${i}`, user: 'u1' } }));
}

function assertVectors(list: string[], results: EmbedResult[]): void {
  assert.equal(results.length, list.length);
  results.forEach((r, i) => {
    assert.ok('vector' in r, `input ${i} was rejected: ${'rejected' in r ? r.rejected : ''}`);
    assert.deepEqual(Array.from(r.vector), Array.from(fakeVector(MODEL, list[i]!, DIMS)), `vector ${i}`);
  });
}

function provider(server: FakeOpenAI, extra: Partial<OpenAIProviderOptions> = {}): OpenAIProvider {
  return new OpenAIProvider({ apiKey: KEY, baseURL: server.url, model: MODEL, dimensions: DIMS, retryBaseMs: 5, retryMaxMs: 50, timeoutMs: 10_000, ...extra });
}

/** Tokens the server counted for each admitted request, in order. */
function admittedTokens(server: FakeOpenAI): number[] {
  return server.embeddingRequests
    .filter((r) => r.status === 200)
    .map((r) => (r.body.input as string[]).reduce((s, t) => s + countTokens(t), 0));
}

describe('the rate-limit model', () => {
  test('OpenAI 429 messages: which limit, the numbers, the wait', () => {
    const tooLarge = parseRateLimitMessage(
      'Request too large for text-embedding-3-small in organization org-x on tokens per min (TPM): Limit 60000, Requested 123138. ' +
        'The input or output tokens must be reduced in order to run successfully.',
    );
    assert.deepEqual(tooLarge, { kind: 'too-large', unit: 'tokens', limit: 60000, requested: 123138 });
    const rate = parseRateLimitMessage(
      'Rate limit reached for text-embedding-3-small in organization org-x on tokens per min (TPM): Limit 1000000, Used 985316, Requested 24570. Please try again in 588ms. Visit https://platform.openai.com/account/rate-limits to learn more.',
    );
    assert.deepEqual(rate, { kind: 'rate', unit: 'tokens', limit: 1000000, requested: 24570, retryMs: 588 });
    assert.equal(parseRateLimitMessage('Rate limit reached for requests per min (RPM): Limit 3000, Used 3000, Requested 1. Please try again in 1.5s.').retryMs, 1500);
    assert.equal(parseRateLimitMessage('Rate limit reached for requests per min (RPM): Limit 3000').unit, 'requests');
  });

  test('a bucket refills continuously from the level the server reported, minus what was sent since', () => {
    const b = new Bucket();
    // 60,000 per minute = 1 per ms; 30,000 left when a request sent at t=0 was admitted.
    b.observe({ limit: 60_000, remaining: 30_000, resetMs: 30_000, sentAt: 0, sentAfter: 0, now: 0 });
    assert.equal(b.windowMs, 60_000);
    // Answered at t=0 for a request sent at t=0: no round trip to credit.
    assert.equal(b.levelAt(0), 30_000);
    assert.equal(b.levelAt(10_000), 40_000, 'refilled 10 s worth, not waiting for a reset');
    assert.equal(b.levelAt(100_000), 60_000, 'never above the limit');
    assert.equal(b.waitMs(35_000, 0), 5_000);
    b.spend(20_000, 0);
    assert.equal(b.levelAt(0), 10_000);
    // An answer to a request sent before that spend: what was sent after it is not in its number.
    b.observe({ limit: 60_000, remaining: 30_000, resetMs: 30_000, sentAt: 0, sentAfter: 20_000, now: 0 });
    assert.equal(b.levelAt(0), 10_000);
    // A request above the whole limit waits for a full bucket, not forever.
    assert.equal(b.waitMs(90_000, 0), 50_000);
  });

  test('the refill window is read from the reset header (a server with a compressed minute)', () => {
    const b = new Bucket();
    // 6,000 of 12,000 used, full again in 250 ms: the bucket refills in 500 ms.
    b.observe({ limit: 12_000, remaining: 6_000, resetMs: 250, sentAt: 0, sentAfter: 0, now: 0 });
    assert.ok(Math.abs(b.windowMs - 500) < 1, String(b.windowMs));
    // A rounded reset near a minute is a minute.
    const m = new Bucket();
    m.observe({ limit: 1_000_000, remaining: 500_000, resetMs: 31_000, sentAt: 0, sentAfter: 0, now: 0 });
    assert.equal(m.windowMs, 60_000);
    const budget = new RateBudget();
    budget.tokens.observe({ limit: 12_000, remaining: 6_000, resetMs: 250, sentAt: 0, sentAfter: 0, now: 0 });
    assert.ok(Math.abs(budget.perMinute!.tokensPerMin - 1_440_000) < 2000, JSON.stringify(budget.perMinute));
    assert.equal(budget.requestCap(), 1_500, 'requests are an eighth of the bucket');
  });

  test('a 429 teaches the server\'s token count; it is only ever raised', () => {
    const budget = new RateBudget();
    budget.rejected(undefined, { kind: 'too-large', unit: 'tokens', limit: 10_000, requested: 10_400 }, 10_000, undefined);
    assert.equal(budget.tokens.limit, 10_000);
    assert.equal(budget.ratio, 1.04);
    budget.rejected(undefined, { kind: 'too-large', unit: 'tokens', limit: 10_000, requested: 9_000 }, 10_000, undefined);
    assert.equal(budget.ratio, 1.04);
    assert.equal(budget.serverTokens(1000), 1040);
  });
});

describe('OpenAIProvider under a rate limit', () => {
  let server: FakeOpenAI;
  before(async () => {
    server = await startFakeOpenAI({ apiKey: KEY });
  });
  after(async () => {
    await server.close();
  });

  test('a quota far below the first request: split on "Request too large", every text embedded', async () => {
    // The case scaled down: a limit of 3,000 tokens a (compressed) minute; the first
    // request is at most 8,192 tokens and the texts total ~20,000.
    server.reset();
    server.setOptions({ rateLimit: { tokens: 3000, requests: 1000, windowMs: 1000 } });
    const list = texts(500, 30, 3);
    const stats = emptyEmbedStats();
    const p = provider(server);
    const out = await p.embed(inputs(list), stats);
    server.setOptions({ rateLimit: undefined });
    assertVectors(list, out);
    assert.ok(server.rateStats.tooLarge >= 1, 'the first request was too large');
    assert.equal(stats.rateLimited, server.rateStats.tooLarge + server.rateStats.rateLimited);
    assert.equal(stats.requests, server.embeddingRequests.length);
    // 3,000 tokens and 1,000 requests a second, as the headers tell (the reset is rounded).
    assert.ok(Math.abs(stats.rateLimit!.tokensPerMin - 180_000) <= 1800, JSON.stringify(stats.rateLimit));
    assert.ok(Math.abs(stats.rateLimit!.requestsPerMin - 60_000) <= 600, JSON.stringify(stats.rateLimit));
    // Once the limit is known, every request is well inside it.
    const sizes = admittedTokens(server);
    assert.ok(sizes.slice(1).every((t) => t <= 3000 / 4), `request sizes ${sizes.join(',')}`);
    assert.ok(server.rateStats.rateLimited <= Math.ceil(0.05 * sizes.length), `paced: ${server.rateStats.rateLimited} requests ran into the limit`);
  });

  test('an input the limit can never admit is rejected; the run goes on', async () => {
    server.reset();
    server.setOptions({ rateLimit: { tokens: 400, requests: 1000, windowMs: 200 } });
    const dir = mkdtempSync(join(tmpdir(), 'mm-rate-'));
    const rejectFile = join(dir, 'rejects.jsonl');
    const list = texts(40, 20, 4);
    list[7] = `${'espresso '.repeat(600)}end`;
    const stats = emptyEmbedStats();
    const out = await provider(server, { rejectFile }).embed(inputs(list), stats);
    server.setOptions({ rateLimit: undefined });
    out.forEach((r, i) => {
      if (i === 7) assert.ok('rejected' in r && /rate limit|429/.test(r.rejected), JSON.stringify(r));
      else assert.ok('vector' in r, `input ${i}`);
    });
    assert.equal(stats.rejected, 1);
    const lines = readFileSync(rejectFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    assert.deepEqual(lines.map((l) => l.id), ['m7']);
  });

  test('paced by the bucket: a run many times the bucket gets almost no 429s', async () => {
    // ~24,000 tokens through a 4,000-token bucket refilling in 400 ms, 8 requests in flight at
    // most: without the model, the requests would run into the limit again and again.
    server.reset();
    server.setOptions({ rateLimit: { tokens: 4000, requests: 10_000, windowMs: 400, msPer1kTokens: 5 } });
    const list = texts(600, 30, 5);
    const stats = emptyEmbedStats();
    const out = await provider(server, { concurrency: 8 }).embed(inputs(list), stats);
    server.setOptions({ rateLimit: undefined });
    assertVectors(list, out);
    const sent = server.embeddingRequests.length;
    assert.ok(server.rateStats.rateLimited <= Math.ceil(sent * 0.05), `${server.rateStats.rateLimited} of ${sent} requests were 429`);
    assert.ok(stats.throttledMs > 0, 'requests were held back');
    assert.ok(server.rateStats.tokens > 4000 * 3, 'the run was several buckets long');
  });

  test('the requests bucket is paced too', async () => {
    server.reset();
    server.setOptions({ rateLimit: { tokens: 1_000_000, requests: 5, windowMs: 300 } });
    const list = texts(40, 10, 6);
    const stats = emptyEmbedStats();
    const out = await provider(server, { maxInputs: 2, concurrency: 4 }).embed(inputs(list), stats);
    server.setOptions({ rateLimit: undefined });
    assertVectors(list, out);
    assert.equal(server.embeddingRequests.filter((r) => r.status === 200).length, 20);
    assert.ok(server.rateStats.rateLimited <= 1, `${server.rateStats.rateLimited} 429s`);
  });

  test('429s for the rate limit do not use up --max-retries; an exhausted quota stops at once', async () => {
    server.reset();
    server.setFaults((n) => (n <= 4 ? { status: 429, retryAfterMs: 2 } : undefined));
    const list = texts(3, 5, 7);
    const stats = emptyEmbedStats();
    assertVectors(list, await provider(server, { maxRetries: 1 }).embed(inputs(list), stats));
    assert.equal(stats.rateLimited, 4);
    assert.equal(stats.retries, 4);

    server.reset();
    server.setFaults(() => ({
      status: 429,
      body: { error: { message: 'You exceeded your current quota, please check your plan and billing details.', type: 'insufficient_quota', code: 'insufficient_quota' } },
    }));
    await assert.rejects(
      provider(server).embed(inputs(texts(10, 5, 8)), emptyEmbedStats()),
      (e: unknown) => e instanceof RunError && /quota is used up/.test(e.message),
    );
    server.setFaults(undefined);
    assert.equal(server.embeddingRequests.length, 1);
  });
});

describe('calls queued ahead', () => {
  let server: FakeOpenAI;
  before(async () => {
    server = await startFakeOpenAI({ apiKey: KEY });
  });
  after(async () => {
    await server.close();
  });

  test('overlapping calls: sent in call order, a shared text once, each answer cached before its call returns', async () => {
    server.reset();
    const cache = new EmbeddingCache();
    const service = new EmbeddingService({ provider: provider(server, { maxInputs: 8, concurrency: 2 }), cache, stats: emptyEmbedStats() });
    const a = texts(30, 10, 9);
    const b = [...texts(30, 10, 10), a[3]!];
    const [ra, rb] = await Promise.all([service.embedTexts(inputs(a)), service.embedTexts(inputs(b))]);
    assertVectors(a, ra!);
    assertVectors(b, rb!);
    const sent = server.embeddingRequests.flatMap((r) => r.body.input as string[]);
    assert.equal(sent.length, 60, 'the shared text was sent once');
    assert.equal(new Set(sent).size, 60);
    // The first call's texts all went before the last of the second call's.
    const lastOfA = Math.max(...a.map((t) => sent.indexOf(t)));
    assert.ok(lastOfA < sent.indexOf(b[29]!), 'calls are served in order');
    assert.equal(service.stats.computed, 60);
    assert.equal(service.stats.cached, 1);
    const keys = [...a, ...b].map((t) => service.keyFor(t));
    assert.equal((await cache.getMany(keys)).size, 60);
  });

  test('cancelQueued: nothing more is sent, what was in flight is kept', async () => {
    server.reset();
    let release: () => void = () => {};
    const held = new Promise<void>((r) => (release = r));
    server.setFaults((n) => (n === 1 ? undefined : { hold: held }));
    const cache = new EmbeddingCache();
    const service = new EmbeddingService({ provider: provider(server, { maxInputs: 4, concurrency: 2 }), cache, stats: emptyEmbedStats() });
    const list = texts(40, 8, 11);
    const call = service.embedTexts(inputs(list));
    call.catch(() => {});
    // Wait for the probe and two held requests.
    while (server.embeddingRequests.length < 3) await new Promise((r) => setTimeout(r, 5));
    const cancelled = service.cancelQueued();
    release();
    await cancelled;
    await assert.rejects(call, (e: unknown) => e instanceof EmbedCancelled);
    server.setFaults(undefined);
    assert.equal(server.embeddingRequests.length, 3, 'nothing was sent after the cancel');
    const answered = server.embeddingRequests.flatMap((r) => r.body.input as string[]);
    const kept = await cache.getMany(answered.map((t) => service.keyFor(t)));
    assert.equal(kept.size, answered.length, 'answers in flight at the cancel are in the cache');
  });
});

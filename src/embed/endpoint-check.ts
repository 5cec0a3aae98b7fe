// Before a migration writes anything, check that the embedding API answers, accepts the key
// and has the model, so a bad key, base URL or model is a one-line exit 2 with an untouched
// target instead of a failure half-way through the load.
//
// GET {base}/models costs nothing and settles the common case (OpenAI, Ollama, vLLM list their
// models). Only when the model is not listed (Azure deployments, servers without /models) is
// one tiny embedding request sent to decide.
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { RunError, UsageError } from '../errors.js';
import { maskUrl, redact } from '../secrets.js';

export interface VerifyOptions {
  baseURL: string;
  apiKey: string;
  model: string;
  dimensions: number;
  /** Whether requests carry `dimensions` (as the provider sends them). */
  sendDimensions: boolean;
  /** Per-request timeout for GET /models (default 15 s); the probe gets 4× that. */
  timeoutMs?: number;
}

/** 'listed': /models has the model. 'probed': an embedding request worked. 'unverified': the
 * server is busy (429/5xx) now; the run's own retries will deal with it. */
export type VerifyResult = 'listed' | 'probed' | 'unverified';

const OFFLINE_HINT = 'or use --embedder local for an offline trial';

export async function verifyEmbeddingEndpoint(o: VerifyOptions): Promise<VerifyResult> {
  const base = o.baseURL.replace(/\/+$/, '');
  const where = maskUrl(base);
  const timeoutMs = o.timeoutMs ?? 15_000;
  const call = async (path: string, init: { method: string; body?: string }, ms: number) => {
    let res: { status: number; ok: boolean; text: string };
    try {
      res = await send(`${base}${path}`, init.method, o.apiKey, init.body, ms);
    } catch (err) {
      const cause = describeFetchError(err, ms);
      throw new UsageError(
        `cannot reach the embedding API at ${where} (${cause}): check OPENAI_BASE_URL (e.g. https://api.openai.com/v1) and the network, ${OFFLINE_HINT}`,
      );
    }
    const text = res.text;
    let body: any = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = null;
    }
    const serverMessage = redact(String(body?.error?.message ?? body?.message ?? text.slice(0, 200)).replace(/\s+/g, ' ').trim());
    if (res.status === 401 || res.status === 403) {
      // Exit 1, as a 401 mid-run: the credentials are a run-time fact of the server, and the
      // run stops after this one request with nothing written.
      throw new RunError(
        `the embedding API at ${where} rejected the API key (${res.status}: ${serverMessage}): check OPENAI_API_KEY and OPENAI_BASE_URL, ${OFFLINE_HINT}`,
        1,
      );
    }
    return { status: res.status, ok: res.ok, body, serverMessage, json: body !== null };
  };

  const listed = await call('/models', { method: 'GET' }, timeoutMs);
  if (listed.ok && Array.isArray(listed.body?.data)) {
    const ids = (listed.body.data as { id?: unknown }[]).map((m) => String(m?.id ?? ''));
    if (ids.some((id) => sameModel(id, o.model))) return 'listed';
  }

  const probe = await call(
    '/embeddings',
    {
      method: 'POST',
      body: JSON.stringify({
        model: o.model,
        input: ['memory-migrate connection check'],
        encoding_format: 'float',
        ...(o.sendDimensions ? { dimensions: o.dimensions } : {}),
      }),
    },
    timeoutMs * 4,
  );
  if (probe.ok) {
    const vec = probe.body?.data?.[0]?.embedding;
    if (!Array.isArray(vec) && typeof vec !== 'string') {
      throw new UsageError(
        `the server at ${where} did not answer like an OpenAI-compatible embeddings API: check OPENAI_BASE_URL (it usually ends in /v1)`,
      );
    }
    const width = Array.isArray(vec) ? vec.length : Buffer.from(vec, 'base64').length / 4;
    if (width !== o.dimensions) {
      throw new UsageError(
        `${o.model} at ${where} returns ${width}-dimensional vectors, not ${o.dimensions}: pass --dimensions ${width}, or a model that returns ${o.dimensions}`,
      );
    }
    return 'probed';
  }
  const modelProblem =
    probe.body?.error?.code === 'model_not_found' || /model/i.test(probe.serverMessage) ? probe.serverMessage : null;
  if ((probe.status === 404 || probe.status === 400 || probe.status === 422) && modelProblem) {
    throw new UsageError(
      `embedding model ${o.model} is not available at ${where} (${probe.status}: ${modelProblem}): pick a model the server has with --model ` +
        `(models this tool does not know also need --dimensions), ${OFFLINE_HINT}`,
    );
  }
  if (probe.status === 400 && /dimension/i.test(probe.serverMessage)) {
    throw new UsageError(`${o.model} at ${where} refused --dimensions ${o.dimensions} (${probe.serverMessage}): drop --dimensions or pick another width`);
  }
  if (probe.status === 404 || probe.status === 405 || !probe.json) {
    throw new UsageError(
      `no OpenAI-compatible embeddings endpoint at ${where}/embeddings (HTTP ${probe.status}): check OPENAI_BASE_URL (it usually ends in /v1), ${OFFLINE_HINT}`,
    );
  }
  // 429 / 5xx: reachable, the key was not refused; the run's own retries handle a busy server.
  return 'unverified';
}

/** "nomic-embed-text" names "nomic-embed-text:latest" (Ollama); "models/x" names "x". */
function sameModel(listed: string, wanted: string): boolean {
  if (listed === wanted) return true;
  const strip = (s: string) => s.replace(/^models\//, '').replace(/:latest$/, '');
  return strip(listed) === strip(wanted);
}

/**
 * One request on a connection of its own (no keep-alive): a pooled socket left behind here
 * could be closed by the server by the time the load's first request picks it up.
 */
function send(url: string, method: string, apiKey: string, body: string | undefined, ms: number) {
  return new Promise<{ status: number; ok: boolean; text: string }>((resolve, reject) => {
    const u = new URL(url);
    const req = (u.protocol === 'https:' ? httpsRequest : httpRequest)(
      u,
      {
        method,
        agent: false,
        headers: {
          authorization: `Bearer ${apiKey}`,
          accept: 'application/json',
          ...(body !== undefined ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } : {}),
        },
        signal: AbortSignal.timeout(ms),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          resolve({ status, ok: status >= 200 && status < 300, text: Buffer.concat(chunks).toString('utf8') });
        });
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

function describeFetchError(err: unknown, ms: number): string {
  const e = err as { name?: string; code?: string; message?: string; cause?: { name?: string } };
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError' || e?.cause?.name === 'TimeoutError') return `no answer within ${Math.round(ms / 1000)} s`;
  if (e?.code) return e.code;
  return redact(e?.message ?? String(err));
}

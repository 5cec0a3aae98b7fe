// What an embeddings API answer means: the vectors, checked and decoded; or, for a failure,
// whether to retry it (408/409/429/5xx, connection errors and timeouts), bisect the batch
// (400/413/422: some input is refused), or stop the whole run with a one-line reason
// (401/403 credentials, 404 model or endpoint, the rest).
import type OpenAI from 'openai';
import { APIConnectionError, APIError, APIUserAbortError } from 'openai';
import { RunError } from '../errors.js';
import { maskUrl, redact } from '../secrets.js';
import { retryAfterFromHeaders } from './rate-limit.js';

/** Thrown for 400/413/422: the request's inputs are refused; bisect to find which. */
export class BadInputError extends Error {
  constructor(readonly reason: string) {
    super(reason);
  }
}

export type ApiFailure = { kind: 'retry'; retryAfterMs?: number } | { kind: 'stop'; error: Error };

export function classifyApiError(err: unknown, model: string, baseURL: string): ApiFailure {
  if (err instanceof RunError || err instanceof BadInputError) return { kind: 'stop', error: err };
  if (err instanceof APIUserAbortError) return { kind: 'stop', error: err };
  if (err instanceof APIConnectionError) return { kind: 'retry' }; // includes timeouts
  if (err instanceof APIError && typeof err.status === 'number') {
    const status = err.status;
    const serverMessage = redact(err.message);
    if (status === 401 || status === 403) {
      return {
        kind: 'stop',
        error: new RunError(
          `embedding API rejected the credentials (${status}): check OPENAI_API_KEY and OPENAI_BASE_URL ` +
            `(server said: ${serverMessage}; base URL ${maskUrl(baseURL)})`,
          1,
        ),
      };
    }
    if (status === 404) {
      const code = (err.code ?? '').toString();
      const isModel = code === 'model_not_found' || /model/i.test(err.message);
      return {
        kind: 'stop',
        error: new RunError(
          isModel
            ? `embedding model ${model} was not found at ${maskUrl(baseURL)} (404: ${serverMessage}): ` +
                `choose a model the server has with --model (unknown models also need --dimensions)`
            : `embedding endpoint not found (404) at ${maskUrl(baseURL)}/embeddings: check OPENAI_BASE_URL ` +
                `(it usually ends in /v1)`,
          1,
        ),
      };
    }
    if (status === 400 || status === 413 || status === 422) {
      return { kind: 'stop', error: new BadInputError(`HTTP ${status}: ${serverMessage}`) };
    }
    if (status === 408 || status === 409 || status === 429 || status >= 500) {
      return { kind: 'retry', retryAfterMs: retryAfterFromHeaders(err.headers) };
    }
    return { kind: 'stop', error: new RunError(`embedding request failed: ${serverMessage}`, 1) };
  }
  // Anything else is a bug or an unexpected failure: do not retry it blindly.
  return { kind: 'stop', error: err instanceof Error ? err : new Error(String(err)) };
}

/** An error's message with secrets masked. */
export function describeError(err: unknown): string {
  return redact(err instanceof Error ? err.message : String(err));
}

/** The response's vectors in input order, each checked for width; RunError when malformed. */
export function decodeEmbeddings(data: OpenAI.CreateEmbeddingResponse, expected: number, dimensions: number, model: string): Float32Array[] {
  const rows = Array.isArray(data?.data) ? data.data : [];
  if (rows.length !== expected) {
    throw new RunError(`the embedding server returned ${rows.length} vectors for ${expected} inputs`, 1);
  }
  const out: Float32Array[] = new Array(expected);
  rows.forEach((row, k) => {
    const idx = typeof row.index === 'number' ? row.index : k;
    const vec = toFloat32(row.embedding as unknown);
    if (vec.length !== dimensions) {
      throw new RunError(
        `the embedding server returned ${vec.length}-dimensional vectors for ${model}, expected ${dimensions}: ` +
          `pass --dimensions ${vec.length} (or a model that returns ${dimensions})`,
        1,
      );
    }
    if (idx < 0 || idx >= expected || out[idx]) {
      throw new RunError(`the embedding server returned an invalid index ${idx}`, 1);
    }
    out[idx] = vec;
  });
  return out;
}

/** Base64 little-endian float32 (what the client asks for by default) or a JSON number array. */
export function toFloat32(embedding: unknown): Float32Array {
  if (typeof embedding === 'string') {
    const buf = Buffer.from(embedding, 'base64');
    if (buf.length % 4 !== 0) throw new RunError('the embedding server returned a malformed base64 vector', 1);
    const out = new Float32Array(buf.length / 4);
    for (let i = 0; i < out.length; i++) out[i] = buf.readFloatLE(i * 4);
    return out;
  }
  if (embedding instanceof Float32Array) return new Float32Array(embedding);
  if (Array.isArray(embedding)) return Float32Array.from(embedding as number[]);
  throw new RunError('the embedding server returned a vector that is neither base64 nor a number array', 1);
}

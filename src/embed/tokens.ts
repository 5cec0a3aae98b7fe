// Token-exact counting for batching and truncation, with the tokenizer OpenAI's embedding
// models use (cl100k_base for text-embedding-3-* and ada-002). Characters/4 is not good
// enough: a 300,000-token request limit overshot by one token is a 400 for the whole batch.
import { encode, decode } from 'gpt-tokenizer/encoding/cl100k_base';

// Text such as "<|endoftext|>" inside a memory is ordinary text to the embeddings API, not a
// control token; gpt-tokenizer throws on it by default, so treat every special token as text.
const AS_TEXT = { disallowedSpecial: new Set<string>() };

export function encodeTokens(text: string): number[] {
  return encode(text, AS_TEXT);
}

export function countTokens(text: string): number {
  return encodeTokens(text).length;
}

export interface Truncated {
  /** The text to embed: the input itself, or its first `max` tokens decoded back. */
  text: string;
  truncated: boolean;
  /** Tokens in `text`. */
  tokens: number;
}

/**
 * Cuts `text` to at most `max` tokens. Used for the embedding request only: the stored
 * content is never shortened. A cut inside a multi-byte character leaves a replacement
 * character at the end, which is dropped.
 */
export function truncateToTokens(text: string, max: number): Truncated {
  const ids = encodeTokens(text);
  if (ids.length <= max) return { text, truncated: false, tokens: ids.length };
  let keep = Math.max(0, max);
  for (;;) {
    let out = decode(ids.slice(0, keep));
    out = out.replace(/\uFFFD+$/, '');
    // Decoding then re-encoding can merge differently at the cut; make sure it still fits.
    const n = countTokens(out);
    if (n <= max || keep === 0) return { text: out, truncated: true, tokens: n };
    keep -= n - max;
  }
}

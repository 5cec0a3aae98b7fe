// pgvector's text form of a vector ('[1,0.5,-3e-05]'), through the pgvector package: for the
// statements that send or read vectors as text (binary COPY writes them as bytes instead).
import pgvector from 'pgvector';

export function vectorToText(v: Float32Array | readonly number[]): string {
  return pgvector.toSql(Array.from(v)) as string;
}

/** A vector's text as PostgreSQL prints it, back to float32. */
export function parseVectorText(text: string): Float32Array {
  const body = text.trim();
  if (!body.startsWith('[') || !body.endsWith(']')) throw new Error(`not a vector literal: ${body.slice(0, 40)}`);
  if (body.slice(1, -1).trim() === '') return new Float32Array(0);
  return Float32Array.from(pgvector.fromSql(body) as number[]);
}

// Sharding: which users a `--shard index/count` run covers. One function decides it, in
// JavaScript and (registered on the reader's connection) in SQL, for migrate, verify and tests.
import { createHash } from 'node:crypto';
import { UsageError } from '../errors.js';

/** Name of the SQL function the reader registers: mm_shard(user_id, count). */
export const SHARD_FUNCTION = 'mm_shard';

/**
 * The shard a user belongs to: the first 4 bytes of sha256(user_id ?? '') read as an unsigned
 * big-endian integer, modulo count. Every part of the tool must use this one function.
 */
export function shardOf(userId: string | null, count: number): number {
  if (!Number.isInteger(count) || count < 1) throw new RangeError(`shard count must be a positive integer, got ${count}`);
  const digest = createHash('sha256').update(userId ?? '', 'utf8').digest();
  return digest.readUInt32BE(0) % count;
}

/** shardOf as a SQL function, cached per (count, user). */
export function shardFunction(): (userId: unknown, count: unknown) => number {
  const cache = new Map<string, number>();
  return (userId, count) => {
    const u = userId === null || userId === undefined ? null : String(userId);
    const n = Number(count);
    const key = `${n}\u0000${u === null ? '\u0001' : u}`;
    let s = cache.get(key);
    if (s === undefined) {
      s = shardOf(u, n);
      if (cache.size > 100_000) cache.clear();
      cache.set(key, s);
    }
    return s;
  };
}

/** The shard of a filter, checked: a UsageError when index or count is not usable. */
export function checkShard(shard: { index: number; count: number }): { index: number; count: number } {
  const { index, count } = shard;
  if (!Number.isInteger(count) || count < 1 || !Number.isInteger(index) || index < 0 || index >= count) {
    throw new UsageError(`invalid shard ${index} of ${count}; the shard index must be a whole number with 0 <= index < count`);
  }
  return { index, count };
}

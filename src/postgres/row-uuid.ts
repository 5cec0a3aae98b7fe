// The UUID of a migrated row, derived from its source id: the same function as
// memory_migrate_uuid() in sql/002_functions.sql (a test compares the two). Computed here so
// the bulk load sends it in the COPY instead of calling a function per row in the server.
import crypto, { createHash } from 'node:crypto';

// One-shot crypto.hash (Node >= 20.12) costs two thirds of a Hash object per id: 0.2 s less
// Node CPU per 300k rows of a first load (issue 19).
const oneShot = (crypto as { hash?: (algorithm: string, data: string, encoding: 'buffer') => Buffer }).hash;

export function rowUuid(id: string): string {
  const name = 'memory-migrate:' + id;
  const b = oneShot ? oneShot('sha256', name, 'buffer') : createHash('sha256').update(name, 'utf8').digest();
  b[6] = (b[6]! & 0x0f) | 0x80; // version 8: custom, name-based
  b[8] = (b[8]! & 0x3f) | 0x80; // RFC 9562 variant
  const h = b.toString('hex', 0, 16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

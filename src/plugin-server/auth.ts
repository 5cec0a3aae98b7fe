// The bearer token serve may require (beyond the contract, whose reference trusts its
// network): compared in constant time. Both sides are hashed first so the comparison has
// equal lengths whatever the caller sends, and the token's length does not leak either.
import { createHash, timingSafeEqual } from 'node:crypto';

export class BearerToken {
  private readonly digest: Buffer;

  constructor(token: string) {
    this.digest = sha256(token);
  }

  /** True when the Authorization header carries this token. */
  accepts(authorization: string | undefined): boolean {
    const m = /^Bearer[ \t]+(.+)$/i.exec(authorization ?? '');
    const given = sha256(m ? m[1]!.trim() : '');
    return timingSafeEqual(given, this.digest) && m !== null;
  }
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

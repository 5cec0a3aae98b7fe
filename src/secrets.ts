// Secrets never reach output: every URL we print goes through maskUrl, and every message
// that might quote one (driver errors do) goes through redact.

/** postgres://user:secret@host/db -> postgres://user:***@host/db. Leaves non-URLs alone. */
export function maskUrl(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/[^:/?#@\s]*):([^@/\s]*)@/i, '$1:***@');
}

const known = new Set<string>();

/** Remember a secret value so redact() removes it wherever it appears. */
export function registerSecret(value: string | undefined | null): void {
  if (value && value.length >= 4) known.add(value);
}

/** Registers the password in a connection URL, if it has one. */
export function registerUrlSecrets(url: string | undefined): void {
  if (!url) return;
  const m = /^[a-z][a-z0-9+.-]*:\/\/[^:/?#@\s]*:([^@/\s]*)@/i.exec(url);
  if (m?.[1]) {
    registerSecret(m[1]);
    try {
      registerSecret(decodeURIComponent(m[1]));
    } catch {
      /* not percent-encoded */
    }
  }
  const pw = /[?&]password=([^&]+)/.exec(url);
  if (pw?.[1]) registerSecret(decodeURIComponent(pw[1]));
}

/** Masks URL passwords, registered secrets and API-key-looking tokens in any text. */
export function redact(text: string): string {
  let out = text.replace(/([a-z][a-z0-9+.-]*:\/\/[^:/?#@\s]*):([^@/\s]*)@/gi, '$1:***@');
  for (const s of known) out = out.split(s).join('***');
  out = out.replace(/\bsk-[A-Za-z0-9_-]{8,}/g, 'sk-***');
  return out;
}

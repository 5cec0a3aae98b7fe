// Secrets never reach output: every URL we print goes through maskUrl, and every message
// that might quote one (driver errors do) goes through redact. The CLI registers the
// secrets it can see (URL passwords in its arguments and environment, the API key) before it
// parses anything, so even commander's own messages are clean.

// scheme://user:password@ — the password may itself contain '@' (unencoded): it runs to the
// last '@' before the host, so "u:p@ss@host" masks all of "p@ss".
// Quotes end a match, so masking text that is JSON never breaks the JSON.
const URL_PASSWORD = /([a-z][a-z0-9+.-]*:\/\/[^:/?#@\s"]*):([^/?#\s"]*)@/gi;

/** postgres://user:secret@host/db -> postgres://user:***@host/db. Leaves non-URLs alone. */
export function maskUrl(url: string): string {
  return url
    .replace(new RegExp(URL_PASSWORD.source, 'i'), '$1:***@')
    .replace(LOOSE_PASSWORD, '$1:***@')
    .replace(/([?&]password=)[^&#\s"]*/gi, '$1***');
}

// user:password@ in something that is not quite a URL ("postgres//u:pw@host", "u:pw@host").
const LOOSE_PASSWORD = /([^\s:/@"]+):([^\s@/"]+)@/g;

const known = new Set<string>();

/**
 * Remember a secret value so redact() removes it wherever it appears. Placeholders are not
 * secrets: local servers take any key, and OPENAI_API_KEY=local must not turn every "local"
 * in the output into "***" (short all-lowercase words are ignored; so is anything under 4).
 */
export function registerSecret(value: string | undefined | null): void {
  if (!value || value.length < 4) return;
  if (value.length < 12 && /^[a-z-]+$/.test(value)) return;
  known.add(value);
}

/** Registers the password in a connection URL, if it has one. */
export function registerUrlSecrets(url: string | undefined): void {
  if (!url) return;
  for (const m of url.matchAll(URL_PASSWORD)) {
    if (!m[2]) continue;
    registerSecret(m[2]);
    try {
      registerSecret(decodeURIComponent(m[2]));
    } catch {
      /* not percent-encoded */
    }
  }
  // Only in something URL-like, so "user:name@" in a file path is not taken for a password.
  if (url.includes('//')) {
    for (const m of url.matchAll(LOOSE_PASSWORD)) {
      if (m[2] !== '***') registerSecret(m[2]);
    }
  }
  for (const pw of url.matchAll(/[?&]password=([^&#\s"]+)/gi)) {
    registerSecret(pw[1]);
    try {
      registerSecret(decodeURIComponent(pw[1]!));
    } catch {
      /* not percent-encoded */
    }
  }
}

/** Environment variables whose values are secrets wherever they appear. */
export const SECRET_ENV = ['OPENAI_API_KEY', 'DATABASE_URL', 'TEST_DATABASE_URL', 'MEMORY_EVENTS_HMAC_SECRET', 'PGPASSWORD'];

/**
 * Registers every secret the process can see: the secret environment variables and URL
 * passwords in the command-line arguments (--database-url x and --database-url=x alike).
 */
export function registerProcessSecrets(argv: string[] = process.argv, env: NodeJS.ProcessEnv = process.env): void {
  for (const name of SECRET_ENV) {
    const v = env[name];
    if (!v) continue;
    if (name.endsWith('_URL')) registerUrlSecrets(v);
    else registerSecret(v);
  }
  for (const arg of argv) registerUrlSecrets(arg);
}

/** Masks URL passwords, registered secrets and API-key-looking tokens in any text. */
export function redact(text: string): string {
  let out = text.replace(URL_PASSWORD, '$1:***@');
  out = out.replace(/\b(password=)[^&#\s"]*/gi, "$1***");
  // Longest first, so a secret that contains a shorter one is removed whole.
  for (const s of [...known].sort((a, b) => b.length - a.length)) out = out.split(s).join('***');
  out = out.replace(/\bsk-[A-Za-z0-9_-]{8,}/g, 'sk-***');
  out = out.replace(/\b(Bearer\s+)[A-Za-z0-9._~+/=-]{8,}/g, '$1***');
  return out;
}

/** redact() over every string in a JSON-able value (keys kept). */
export function redactDeep<T>(value: T): T {
  return JSON.parse(redact(JSON.stringify(value ?? null))) as T;
}

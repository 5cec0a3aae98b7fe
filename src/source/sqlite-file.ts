// The one place that opens an agent's SQLite memory file (the reader, the app-side store and
// rollback's write-back all come through here), and the one place that turns what goes wrong
// on the way into a one-line UsageError saying what is wrong and what to do about it.
import Database from 'better-sqlite3';
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { UsageError } from '../errors.js';

/** An open SQLite connection (better-sqlite3's), for the modules of src/source and the store. */
export type SqliteDb = Database.Database;
export type SqliteStatement = Database.Statement;

export const DEFAULT_BUSY_TIMEOUT_MS = 5000;
const SQLITE_HEADER = Buffer.from('SQLite format 3\0', 'latin1');

export interface OpenSqliteOptions {
  /** Open read-only (default false: read-write). */
  readonly?: boolean;
  /** Refuse to create the file when it does not exist (default false). */
  fileMustExist?: boolean;
  /** How long to wait for another connection's lock before giving up (default 5000 ms). */
  busyTimeoutMs?: number;
}

/** Opens `path` with better-sqlite3; an error on the way is mapped by describeSqliteError. */
export function openSqliteFile(path: string, opts: OpenSqliteOptions = {}): SqliteDb {
  const busyTimeoutMs = opts.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
  try {
    return new Database(path, { readonly: opts.readonly ?? false, fileMustExist: opts.fileMustExist ?? false, timeout: busyTimeoutMs });
  } catch (err) {
    throw describeSqliteError(err, path, busyTimeoutMs);
  }
}

/** Turns a file-system error met while opening `path` into a UsageError (or returns it unchanged). */
export function describeFsError(err: unknown, path: string): Error {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  switch (code) {
    case 'ENOENT':
      return new UsageError(`source file ${path} does not exist; check the --sqlite path`);
    case 'ENOTDIR':
      return new UsageError(`source file ${path} does not exist (a parent of it is not a directory); check the --sqlite path`);
    case 'EISDIR':
      return new UsageError(`${path} is a directory, not a SQLite file; pass the path of the .db file itself`);
    case 'EACCES':
    case 'EPERM':
      return new UsageError(
        `cannot read ${path} (permission denied); run as a user that can read it, or copy it somewhere readable and migrate the copy`,
      );
    case 'ELOOP':
      return new UsageError(`${path} is a symbolic link loop; pass the real path of the .db file`);
    default:
      return err instanceof Error ? err : new Error(String(err));
  }
}

/**
 * Turns a better-sqlite3 error met while reading `path` into a UsageError naming the problem
 * and the fix (or returns it unchanged when it is not something the operator can fix).
 */
export function describeSqliteError(err: unknown, path: string, busyTimeoutMs = DEFAULT_BUSY_TIMEOUT_MS): Error {
  if (!(err instanceof Error)) return new Error(String(err));
  const code = (err as { code?: unknown }).code;
  if (typeof code !== 'string' || !code.startsWith('SQLITE_')) return err;
  if (code === 'SQLITE_NOTADB') {
    return new UsageError(`${path} is not a SQLite database (unknown header); if it is encrypted (SQLCipher), decrypt it first`);
  }
  if (code.startsWith('SQLITE_CORRUPT') || code === 'SQLITE_IOERR_SHORT_READ' || /malformed/i.test(err.message)) {
    return new UsageError(
      `${path} is corrupt (${err.message}); salvage it with \`sqlite3 ${path} .recover | sqlite3 recovered.db\` and migrate recovered.db`,
    );
  }
  if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) {
    return new UsageError(
      `${path} is locked by another connection (still locked after ${busyTimeoutMs} ms); stop the app that is writing to it, or copy the file (with its -wal) and migrate the copy`,
    );
  }
  if (code === 'SQLITE_READONLY_ROLLBACK') {
    return new UsageError(
      `${path} has a hot journal (${path}-journal) from an interrupted write, which a read-only reader cannot roll back; copy both files together (as copy.db and copy.db-journal), open the copy once with \`sqlite3 copy.db "PRAGMA quick_check"\` so SQLite rolls the write back, and migrate copy.db`,
    );
  }
  if (code.startsWith('SQLITE_READONLY') || code === 'SQLITE_CANTOPEN_ISDIR') {
    return new UsageError(
      `cannot read ${path} in WAL mode without write access to its -shm/-wal files (${code}); copy ${path} and its -wal file to a writable directory and migrate the copy`,
    );
  }
  if (code.startsWith('SQLITE_CANTOPEN') || code === 'SQLITE_PERM' || code === 'SQLITE_AUTH') {
    return new UsageError(
      `cannot open ${path} (${err.message}); check that the file, its directory and any -wal/-shm files are readable, or copy it somewhere readable and migrate the copy`,
    );
  }
  if (code.startsWith('SQLITE_IOERR')) {
    return new UsageError(`I/O error reading ${path} (${code}: ${err.message}); copy the file to a local disk and migrate the copy`);
  }
  return err;
}

/** Checks the path before SQLite sees it (exists, readable, a SQLite header); returns the file size. */
export function checkFile(path: string): number {
  let size: number;
  try {
    const st = statSync(path);
    if (st.isDirectory()) throw Object.assign(new Error('is a directory'), { code: 'EISDIR' });
    size = st.size;
  } catch (err) {
    throw describeFsError(err, path);
  }
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    throw describeFsError(err, path);
  }
  try {
    const head = Buffer.alloc(100);
    let got = 0;
    try {
      got = readSync(fd, head, 0, head.length, 0);
    } catch (err) {
      throw describeFsError(err, path);
    }
    if (size === 0) return 0; // an empty file: SQLite reads it as an empty database
    if (got < SQLITE_HEADER.length || !head.subarray(0, SQLITE_HEADER.length).equals(SQLITE_HEADER)) {
      throw new UsageError(`${path} is not a SQLite database (unknown header); if it is encrypted (SQLCipher), decrypt it first`);
    }
    if (got < 100) {
      throw new UsageError(
        `${path} is corrupt (truncated to ${got} bytes); salvage it with \`sqlite3 ${path} .recover | sqlite3 recovered.db\` and migrate recovered.db`,
      );
    }
  } finally {
    closeSync(fd);
  }
  return size;
}

/** sha256 hex of the file's bytes (the main file only, not its -wal), read in 1 MiB chunks. */
export function fileSha256(path: string): string {
  const hash = createHash('sha256');
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(1 << 20);
    let pos = 0;
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, pos);
      if (n === 0) break;
      hash.update(buf.subarray(0, n));
      pos += n;
    }
  } finally {
    closeSync(fd);
  }
  return hash.digest('hex');
}

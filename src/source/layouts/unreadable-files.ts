// Stores that are not SQLite files, met where a SQLite file was expected: refused before
// SQLite sees them, with what to do instead (a LanceDB directory, a LlamaIndex JSON store).
import { closeSync, openSync, readdirSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { UsageError } from '../../errors.js';

export function refuseUnreadableFile(path: string): void {
  let st;
  try {
    st = statSync(path);
  } catch {
    return; // checkFile names the problem
  }
  if (st.isDirectory()) {
    let entries: string[] = [];
    try {
      entries = readdirSync(path);
    } catch {
      return;
    }
    if (path.replace(/[/\\]+$/, '').endsWith('.lance') || entries.some((e) => e.endsWith('.lance') || e === '_versions' || e === 'data' && entries.includes('_latest.manifest'))) {
      throw new UsageError(
        `${path} is a LanceDB directory, not a SQLite file; memory-migrate does not read LanceDB: export the table with Python (table.to_pandas() to SQLite) and migrate that with --map`,
      );
    }
    if (entries.includes('chroma.sqlite3')) {
      throw new UsageError(`${path} is a Chroma directory; pass its database file: --sqlite ${join(path, 'chroma.sqlite3')}`);
    }
    return;
  }
  if (st.size === 0) return;
  const head = Buffer.alloc(Math.min(st.size, 4096));
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return; // checkFile names the problem (permission denied, ...)
  }
  try {
    readSync(fd, head, 0, head.length, 0);
  } catch {
    return;
  } finally {
    closeSync(fd);
  }
  const text = head.toString('utf8').trimStart();
  if (text.startsWith('{') && /"(embedding_dict|docstore\/data|index_store\/data|text_id_to_ref_doc_id|metadata_dict)"/.test(text)) {
    throw new UsageError(
      `${path} is a LlamaIndex JSON store, not a SQLite file; memory-migrate does not read it: load it in LlamaIndex and write the nodes (text, embedding, metadata) to a SQLite table, then migrate that with --map`,
    );
  }
}

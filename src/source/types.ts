// What the SQLite reader hands to the pipeline: one normalised row per source memory,
// whatever layout or embedding encoding the file used.
import type { SourceMetadata } from './metadata.js';

/** How a row's embedding was stored. Sniffed per row, never per file. */
export type EmbeddingEncoding = 'json' | 'csv' | 'f32' | 'null' | 'empty' | 'bad';

export interface DecodedEmbedding {
  encoding: EmbeddingEncoding;
  /** The vector when it decoded to finite numbers with a non-zero norm; otherwise null. */
  vector: Float32Array | null;
  /** Why the stored value cannot be reused (NaN, zero norm, undecodable, pickle...). */
  problem?: string;
}

export interface SourceRow {
  /** SQLite rowid: the stable order of the file, used for checkpoints. */
  rowid: number;
  id: string;
  userId: string | null;
  /** Content exactly as stored (decoded as UTF-8). */
  content: string;
  /** Set when the content bytes were not valid UTF-8 (the row is then skipped). */
  contentProblem?: string;
  /** Size of the stored content in bytes. */
  contentBytes: number;
  embedding: DecodedEmbedding;
  /** The metadata as jsonb will hold it (exact JSON text), and a look inside. */
  metadata: SourceMetadata;
  createdAt: Date | null;
  updatedAt: Date | null;
}

export interface SourceFilter {
  /** Only these user ids (repeatable --user). */
  users?: string[];
  /** Only users whose shard matches: hash(user_id) mod count === index. */
  shard?: { index: number; count: number };
  /** Only rows with rowid greater than this (resume after a checkpoint). */
  afterRowid?: number;
  /** At most this many rows. */
  limit?: number;
}

export type SourceLayout =
  | 'memories' // the EspressoBot/better-sqlite3 layout (metadata or meta_data)
  | 'empty' // zero-byte file, or no tables
  | (string & {}); // another layout (src/source/layouts/), by its --layout name, or 'map'

export interface SourceInfo {
  path: string;
  layout: SourceLayout;
  /** Name of the metadata column actually present ('metadata' | 'meta_data' | null). */
  metadataColumn: string | null;
  /** Journal mode of the file, e.g. 'wal' or 'delete'. */
  journalMode: string;
  /** Tables and views found in the file (lets the caller say what a non-memory file holds). */
  tables?: string[];
  /** Size of the main file in bytes (the -wal sidecar not included). */
  sizeBytes?: number;
  /** What became user_id (--user-from as text: column, collection, partition, metadata:<key>, const:<value>). */
  userFrom?: string;
  /** The model of the stored vectors, when the file records it, and where that was read. */
  sourceModel?: { model: string; from: string };
  /** What the migration should tell the operator about this file. */
  notes?: string[];
  /** Why rollback cannot write this layout back (absent: it can). */
  noWriteBack?: string;
}

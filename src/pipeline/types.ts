// The shapes the pipeline's steps hand to one another: what a run is asked to do, what it
// reports, and a batch on its way from the source to the target.
import type { Db } from '../postgres/connection.js';
import type { BinaryCopyWriter } from '../postgres/copy-binary.js';
import type { FragmentRow } from '../postgres/fragments.js';
import type { DuplicateRow, MemoryRow } from '../postgres/writer.js';
import type { SourceFile } from '../source/reader.js';
import type { SourceFilter, SourceRow } from '../source/types.js';
import type { EmbeddingService } from '../embed/service.js';
import type { EmbedInput } from '../embed/types.js';
import type { MemoryCounts, SkippedRow } from '../report.js';
import type { RunDedupKeys, StoredKeyFilter } from './keys.js';

export interface DedupOptions {
  mode: 'exact' | 'fuzzy' | 'semantic';
  /** Jaccard threshold for fuzzy (default 0.9), cosine similarity for semantic (default 0.85). */
  threshold?: number;
  /** Skip fuzzy/semantic matches instead of only recording them. */
  skipMatches?: boolean;
}

export interface PipelineOptions {
  source: SourceFile;
  /** The target; null when a dry run has no schema to read from. */
  db: Db | null;
  embeddings: EmbeddingService;
  model: string;
  dimensions: number;
  /** Model that produced the stored SQLite vectors (declared by the operator). */
  sourceModel: string | null;
  filter: SourceFilter;
  dedup: DedupOptions;
  batchSize: number;
  dryRun: boolean;
  runId: number | null;
  /** --reject-file: rows PostgreSQL cannot store are appended to it once they are recorded. */
  rejectFile?: string;
  /** Also keep each memory's user in its metadata as user_id (see withUserId). */
  userInMetadata?: boolean;
  signal?: AbortSignal;
  onProgress?: (p: PipelineProgress) => void;
  onSkip?: (row: SkippedRow) => void;
  /**
   * Where a dry run hands the texts a real run would embed, one group per embedding call, as
   * it decides them: the dry run's preflight tallies them, the --batch-api pre-pass streams
   * them into batch files. Without it a dry run only counts.
   */
  embedSink?: (inputs: EmbedInput[]) => Promise<void>;
}

export interface PipelineProgress {
  done: number;
  total: number;
  memories: MemoryCounts;
}

export interface FragmentCounts {
  read: number;
  migrated: number;
  updated: number;
  unchanged: number;
  defaults: number;
}

export interface UserCounts {
  read: number;
  migrated: number;
  updated: number;
  unchanged: number;
  duplicates: number;
  skipped: number;
  rejected: number;
}

export interface PipelineResult {
  memories: MemoryCounts;
  fragments: FragmentCounts;
  users: Record<string, UserCounts>;
  invalidStored: number;
  skippedRows: SkippedRow[];
  lastRowid: number | null;
}

/** Source rows in read order, with what the read loop noticed about their ids. */
export interface SourceBatch {
  rows: SourceRow[];
  /** Rows whose id differs only in case from an earlier row's id: that earlier id. */
  idClashes: Map<SourceRow, string> | null;
  /** Some row repeats an earlier row's id exactly (the first one may be stored by now). */
  repeatsId: boolean;
}

/** A memory on its way to the target. `source` is null, and `embedding` too, once its batch is encoded. */
export interface PreparedMemory extends MemoryRow {
  source: SourceRow | null;
  /** False for a stored row whose content is unchanged (a metadata-only update keeps its vector). */
  changedContent: boolean;
}

/** Where a vector goes: a memory, or a prompt fragment (whose row has no vector fields until it gets one). */
export interface EmbedTarget {
  embedding?: Float32Array | null;
  embeddingModel?: string | null;
}

export interface EmbedItem {
  target: EmbedTarget;
  input: EmbedInput;
}

export type FragmentToWrite = FragmentRow & EmbedTarget;

/** A batch ready to be written: everything decided, counted (in `counts`) and encoded. */
export interface PreparedBatch {
  /** This batch's counts, added to the run's once it commits. */
  counts: PipelineResult;
  lastRowid: number;
  /** The memories to write: new ones, and stored ones whose content or metadata changed. */
  memories: PreparedMemory[];
  /** Ids whose memory the target stores already (an update, not an insert). */
  stored: Set<string>;
  fragments: FragmentToWrite[];
  duplicates: DuplicateRow[];
  skips: SkippedRow[];
  /** Rows PostgreSQL cannot store: recorded as rejected skips (see commit.ts). */
  rejects: SkippedRow[];
  /** Ids recorded as exact duplicates by an earlier run that no longer are. */
  staleDuplicates: string[];
  /** The memories encoded for COPY, or null when the write must encode (rows without timestamps). */
  encoded: Uint8Array | null;
  /** The RunState.writers entry `encoded` lives in. */
  writerSlot: number;
}

/** The dedup keys a batch's memories will have in the target once it commits. */
export interface InflightKeys {
  /** Dedup key to the first memory id with it. */
  owners: Map<string, string>;
  /** Memory id to its dedup key. */
  keyOf: Map<string, string>;
}

/** What the batches of one run share. */
export interface RunState {
  /**
   * Dedup keys (user + dedup hash) of the rows this run would store, for the whole run: only
   * in a dry run, whose rows the target never sees (every other run asks the target).
   */
  runKeys: RunDedupKeys | null;
  /**
   * A first load's dedup keys as a filter of fixed size: which keys need asking the target
   * about at all (only a key this run may have stored).
   */
  storedKeys: StoredKeyFilter | null;
  /** Skip the lookup of existing ids: a first load into an empty target. */
  fresh: boolean;
  /**
   * The batches decided and not committed (their transactions may be open, or not started)
   * while the next one is decided: their keys as they will be once they commit (the target
   * still shows the old ones).
   */
  inflight: InflightKeys | null;
  /** The keys of every batch decided and not committed yet, in batch order. */
  uncommitted: InflightKeys[];
  /** Two encoders: one batch's bytes are on their way to the server while the next is encoded. */
  writers: [BinaryCopyWriter, BinaryCopyWriter];
  batches: number;
}

/** What the target holds for one id of a batch. */
export interface Existing {
  /** The stored memory's content hash; null when only a duplicate record has the id. */
  contentHash: string | null;
  sameMetadata: boolean;
  duplicateOf: string | null;
  /** The recorded original's stored user and dedup_hash (to tell a stale record). */
  originalUser: string | null;
  originalDedupHash: string | null;
}

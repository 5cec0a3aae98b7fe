// The memory-store contract an agent app codes against. Two backends implement it: the
// Postgres schema this tool migrates into, and the SQLite layout the app used before. The
// MEMORY_TYPE switch picks one, which makes rollback a configuration change.

export interface MemoryRecord {
  id: string;
  userId: string;
  content: string;
  metadata: Record<string, unknown>;
  category: string | null;
  importanceScore: number;
  embeddingModel: string | null;
  createdAt: Date;
  updatedAt: Date;
}

export interface SearchHit extends MemoryRecord {
  /** Cosine similarity, 1 = identical direction. */
  similarity: number;
}

export interface FragmentRecord {
  id: string;
  category: string;
  priority: number;
  content: string;
  agentType: string | null;
  contextTier: 'core' | 'standard' | 'full';
}

export interface AddInput {
  userId: string;
  content: string;
  metadata?: Record<string, unknown>;
  id?: string;
}

export interface AddResult {
  id: string;
  /** true when the user already had this content (exact, case-folded); nothing new was stored. */
  duplicate: boolean;
  duplicateOf?: string;
}

export interface StoreStats {
  totalMemories: number;
  users: number;
  categories: number;
  avgImportance: number;
  totalAccesses: number;
  latestMemory: Date | null;
  fragments: number;
}

export interface AssembledPrompt {
  memories: SearchHit[];
  fragments: FragmentRecord[];
  text: string;
}

export interface MemoryStore {
  readonly backend: 'sqlite' | 'postgres';
  readonly model: string;
  add(input: AddInput): Promise<AddResult>;
  search(query: string, userId: string, k?: number): Promise<SearchHit[]>;
  get(id: string): Promise<MemoryRecord | null>;
  delete(id: string): Promise<boolean>;
  stats(userId?: string): Promise<StoreStats>;
  assemblePrompt(query: string, userId: string, agentType: string, tier: 'core' | 'standard' | 'full', k?: number): Promise<AssembledPrompt>;
  close(): Promise<void>;
}

/** Tiers are cumulative: standard includes core, full includes everything. */
export function tiersUpTo(tier: 'core' | 'standard' | 'full'): string[] {
  return tier === 'core' ? ['core'] : tier === 'standard' ? ['core', 'standard'] : ['core', 'standard', 'full'];
}

export function formatPrompt(fragments: FragmentRecord[], memories: SearchHit[]): string {
  const parts = fragments.map((f) => `## ${f.category}\n${f.content}`);
  if (memories.length > 0) parts.push(`## Relevant memories\n${memories.map((m) => `- ${m.content}`).join('\n')}`);
  return parts.join('\n\n');
}

/** What a store needs to turn text into vectors: the model name it records, and embed(). */
export interface TextEmbedder {
  readonly model: string;
  readonly dimensions: number;
  embed(texts: string[]): Promise<Float32Array[]>;
}

// The pipeline as the rest of the CLI uses it.
export { runPipeline, Interrupted } from './run.js';
export { mirrorDeletes, noDeletes, type MirrorScope } from './mirror-deletes.js';
export type { DedupOptions, PipelineOptions, PipelineProgress, PipelineResult } from './types.js';

// migrate --batch-api, before the load: fills the embedding cache through the Batch API, so
// the ordinary load that follows finds every vector there and sends no online request.
//
// 1. Batches an earlier run left open (interrupted, killed, on another machine) are taken up
//    from the ledger and waited for first: what they hold is not sent again.
// 2. A dry pass of the pipeline decides, batch by batch, exactly what the load would embed
//    (stored vectors reused, unchanged rows skipped, duplicates dropped), and streams those
//    texts into JSONL files on disk, uploaded as each fills up: memory stays bounded by one
//    file's bookkeeping, however many rows the source has.
// 3. The new batches are polled to the end; their answers go into the cache as they arrive.
import { BatchWaitStopped, type BatchEmbedder } from '../embed/batch-api.js';
import { Interrupted, runPipeline } from './run.js';
import type { PipelineOptions } from './types.js';

export interface BatchPrepassResult {
  /** Open batches of an earlier run taken up. */
  resumed: number;
}

export async function fillCacheFromBatches(
  opts: PipelineOptions,
  batches: BatchEmbedder,
  log: (line: string) => void,
): Promise<BatchPrepassResult> {
  try {
    const resumed = await batches.resume();
    if (resumed > 0) {
      log(`Batch API: waiting for ${resumed} batch${resumed === 1 ? '' : 'es'} an earlier run created`);
      await batches.waitAll();
    }
    await runPipeline({
      ...opts,
      dryRun: true,
      runId: null,
      embedSink: (inputs) => batches.add(inputs),
      onSkip: undefined,
    });
    await batches.flush();
    if (batches.stats.batches > 0) {
      log(
        `Batch API: ${batches.stats.batches} batch${batches.stats.batches === 1 ? '' : 'es'} created ` +
          `(${batches.stats.requests} requests); polling for results`,
      );
    }
    await batches.waitAll();
    batches.cleanup();
    return { resumed };
  } catch (err) {
    await batches.abandon();
    // Stopped before the load: no row was committed by this run.
    if (err instanceof BatchWaitStopped || err instanceof Interrupted) throw new Interrupted(null);
    throw err;
  }
}

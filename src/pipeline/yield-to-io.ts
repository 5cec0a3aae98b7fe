// Reading, hashing and encoding are synchronous. The batch being written meanwhile needs the
// event loop for each of its round trips and to keep feeding its COPY to the socket, and the
// server sits idle until it gets it: every few rows (about half a millisecond of work) the
// loop gets a turn. Yielding less often leaves the server waiting longer.
export const YIELD_EVERY_ROWS = 10;

export const yieldToIo = () => new Promise<void>((resolve) => setImmediate(resolve));

// Reconnect delays: exponential backoff with full jitter (a random delay between 0 and the exponential
// cap), so that clients dropped together (a server restart, a resync of many sockets) come back spread
// out instead of in waves. Pure: the random source is a parameter.

export interface Backoff {
  initialMs: number;
  maxMs: number;
}

/** The delay before reconnect attempt `failures` (0 for the first attempt after a connection was lost). */
export function fullJitterDelay(backoff: Backoff, failures: number, random: () => number = Math.random): number {
  const cap = Math.min(backoff.maxMs, backoff.initialMs * 2 ** Math.min(failures, 30));
  return Math.floor(random() * cap);
}

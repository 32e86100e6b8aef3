/** Thrown by drivers and providers for failures no retry can fix (bad config, missing binary, …). */
export class NonRetryableError extends Error {
  override name = 'NonRetryableError';
}

/** Options of a read the server serves through its caches. */
export interface ReadOptions {
  /**
   * Skip every cache (edge and Redis) and read as things are now. Costs more, and is limited
   * per client address (`FRESH_READS_PER_MINUTE`); past the limit the read is served from the
   * caches as usual.
   */
  fresh?: boolean
}

/** The headers of a read asking to skip the caches, or none. */
export function fresh(opts: ReadOptions): Record<string, string> {
  return opts.fresh ? { 'cache-control': 'no-cache' } : {}
}

import { RecentlyUnknown } from '../lib/recently-unknown.ts'

/**
 * Queue ids Neon just said nobody created: public reads naming them (settings, stats) are
 * answered 404 without asking Neon again for a moment.
 */
export const unknownQueues = new RecentlyUnknown()

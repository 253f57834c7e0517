import { RecentlyUnknown } from '../lib/recently-unknown.ts'

/**
 * Board ids a board object said nobody created: reads and submissions naming them are answered
 * 404 without waking an object that would ask Neon and then drop itself.
 */
export const unknownBoards = new RecentlyUnknown()

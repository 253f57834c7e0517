import { counter } from '../lib/metrics.ts'

/**
 * Score submissions refused, by reason (the problem type): counted by the board for what it
 * refuses (rate limit, bounds, reused keys, unknown boards), and by the submit route for what
 * the Worker refuses before asking the board (credentials, validation). Refused reads are not
 * submissions and are not counted here.
 */
export const submissionRefusals = counter(
  'nexus_leaderboard_rejections_total',
  'Score submissions refused, by reason (unavailable: the board could not reach Neon; storage_full: ' +
    'a player new to the cycle on a board past 9 GB, answered 503 unavailable)',
)

/**
 * Leaderboard rules that need no storage: how a submission changes a player's standing, which
 * reward a rank earns, and how configuration changes apply to a live board.
 */
import type { SortOrder } from './rank-index.ts'
import type { CycleConfig } from './cycle.ts'

/**
 * How long a board remembers an idempotency key (and its first answer): a retry within it is a
 * replay; after it, the same key is a new submission. Bounds the board's storage.
 */
export const IDEMPOTENCY_TTL_MS = 24 * 60 * 60 * 1000

export type Operator = 'best' | 'set' | 'incr'

export interface RewardTier {
  fromRank: number
  toRank: number
  reward: Record<string, unknown>
}

/** A board's configuration, as validated at the edge and stored in Neon and in the board. */
export interface LeaderboardConfig {
  name: string | null
  sortOrder: SortOrder
  operator: Operator
  cycle: CycleConfig
  scoreMin: number
  scoreMax: number
  subscoreMin: number
  subscoreMax: number
  rewards: RewardTier[]
  submitsPerMinute: number
  metadataMaxBytes: number
  /** Players a cycle holds: past it, new players are refused (those ranked still submit). */
  maxEntries: number
  /**
   * Taking no scores (an exploit under investigation, an event ended early) until a PUT without
   * it; absent when in play, so that configurations from before it compare unchanged.
   */
  paused?: true
  /**
   * Taking scores only from game servers and sessions, never a player's own (a board that counts
   * wins); absent when players submit, as `paused` is.
   */
  serverScoresOnly?: true
}

/**
 * A cycle's players by default, and at most. The rank index is held in memory, in the 128 MB a
 * Durable Object's isolate has (43 bytes a player, 64 MiB at 1.5 million; docs/operating.md,
 * "Cycle size"): a board grown past what fits would be reset by the runtime at every wake, and
 * every object sharing its isolate with it.
 */
export const MAX_ENTRIES_DEFAULT = 1_000_000
export const MAX_ENTRIES_LIMIT = 1_500_000

/**
 * What a board's SQLite may give its entries at `maxEntries`, of the 10 GB Cloudflare allows an
 * object: two cycles' worth (a closed cycle's rows stay until archived and deleted, beside the
 * new cycle's), the rest left to the 24 h of idempotency records, which grow with submissions.
 */
export const ENTRIES_STORAGE_BUDGET_BYTES = 6_000_000_000

/** An entry's bytes in a board's SQLite: a row and its rank index, each holding the metadata. */
export function entryStorageBytes(metadataMaxBytes: number): number {
  return 180 + 2 * metadataMaxBytes
}

/**
 * The largest `maxEntries` whose two cycles fit ENTRIES_STORAGE_BUDGET_BYTES at
 * `metadataMaxBytes` (at most MAX_ENTRIES_LIMIT).
 *
 * @example maxEntriesFitting(512) // 1_500_000
 * @example maxEntriesFitting(4096) // 358_337
 */
export function maxEntriesFitting(metadataMaxBytes: number): number {
  return Math.min(
    MAX_ENTRIES_LIMIT,
    Math.floor(ENTRIES_STORAGE_BUDGET_BYTES / (2 * entryStorageBytes(metadataMaxBytes))),
  )
}

/**
 * A configuration as stored, filled in with what configurations saved before a field existed
 * lack (`maxEntries`: the 1,000,000 they were held to, which a PUT of today would lower for
 * metadata above 1,410 bytes), so that a board compares and applies them alike.
 */
export function withConfigDefaults(
  config: Omit<LeaderboardConfig, 'maxEntries'> & { maxEntries?: number },
): LeaderboardConfig {
  return config.maxEntries === undefined
    ? { ...config, maxEntries: MAX_ENTRIES_DEFAULT }
    : (config as LeaderboardConfig)
}

/**
 * A configuration as answered: its flags, stored only while true, read as true or false, as
 * clients read them.
 */
export function shownConfig(config: LeaderboardConfig): Omit<
  LeaderboardConfig,
  'paused' | 'serverScoresOnly'
> & {
  paused: boolean
  serverScoresOnly: boolean
} {
  return {
    ...config,
    paused: config.paused === true,
    serverScoresOnly: config.serverScoresOnly === true,
  }
}

/** What a finished match submits to its board for each of its winners (a win counted). */
export const MATCH_WIN = { score: 1, subscore: 0 } as const

/**
 * How the idempotency key of a match's win begins (then the session's id). Keys are the
 * player's, whoever submits for them: a player's own submission may not take one, or it would
 * have the session's later submission of their win refused as a reused key.
 */
export const MATCH_WIN_KEY_PREFIX = 'session:'

/**
 * Whether a board's bounds take MATCH_WIN: a queue or a session naming a board that refuses it
 * would lose every win it sends there, with only a log line to show for it.
 */
export function takesMatchWins(
  config: Pick<LeaderboardConfig, 'scoreMin' | 'scoreMax' | 'subscoreMin' | 'subscoreMax'>,
): boolean {
  return (
    config.scoreMin <= MATCH_WIN.score &&
    MATCH_WIN.score <= config.scoreMax &&
    config.subscoreMin <= MATCH_WIN.subscore &&
    MATCH_WIN.subscore <= config.subscoreMax
  )
}

/** The player's standing before a submission, if any. */
export interface Standing {
  score: number
  subscore: number
}

export type Outcome =
  | { changed: true; score: number; subscore: number }
  | { changed: false; score: number; subscore: number }

/** Whether (score, subscore) a ranks strictly ahead of b in this order. */
export function ranksAhead(order: SortOrder, a: Standing, b: Standing): boolean {
  const dir = order === 'desc' ? -1 : 1
  if (a.score !== b.score) return (a.score - b.score) * dir < 0
  return (a.subscore - b.subscore) * dir < 0
}

/**
 * Applies a submission to a player's standing:
 * - `best` keeps the better of the two (a tie keeps the earlier one, so it keeps its tie-break);
 * - `set` replaces it;
 * - `incr` adds score and subscore to it.
 * A standing left as it was (`set` to the same values, `incr` by zero) is unchanged, as a `best`
 * that does not improve is: the entry keeps its tie-break time.
 * The result says whether the standing changed, which decides whether the submission's time
 * becomes the entry's tie-break time.
 *
 * @example
 * applySubmission('best', 'asc', { score: 52.1, subscore: 0 }, { score: 50.4, subscore: 0 })
 * // { changed: true, score: 50.4, subscore: 0 }
 */
export function applySubmission(
  operator: Operator,
  order: SortOrder,
  previous: Standing | undefined,
  submitted: Standing,
): Outcome {
  if (!previous) return { changed: true, ...submitted }
  switch (operator) {
    case 'set':
    case 'incr': {
      const next =
        operator === 'set'
          ? submitted
          : {
              score: previous.score + submitted.score,
              subscore: previous.subscore + submitted.subscore,
            }
      // The same standing again (a loss reported as +0, say) keeps its tie-break time: the
      // earliest submission of the standing score, which this one is not.
      const same = next.score === previous.score && next.subscore === previous.subscore
      return { changed: !same, score: next.score, subscore: next.subscore }
    }
    case 'best':
      return ranksAhead(order, submitted, previous)
        ? { changed: true, ...submitted }
        : { changed: false, ...previous }
  }
}

/**
 * The reward a final rank earns, or undefined. Tiers are validated not to overlap, so at most
 * one matches.
 */
export function rewardFor(tiers: readonly RewardTier[], rank: number): RewardTier | undefined {
  return tiers.find((t) => rank >= t.fromRank && rank <= t.toRank)
}

/** The highest rank any tier pays (0 when none), so archiving knows when rewards are done. */
export function lastRewardedRank(tiers: readonly RewardTier[]): number {
  return tiers.reduce((max, t) => Math.max(max, t.toRank), 0)
}

/** A description of the first pair of overlapping tiers, or null. */
export function overlappingTiers(tiers: readonly RewardTier[]): string | null {
  const sorted = [...tiers].sort((a, b) => a.fromRank - b.fromRank)
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1]!
    const b = sorted[i]!
    if (b.fromRank <= a.toRank) {
      return `ranks ${a.fromRank}-${a.toRank} and ${b.fromRank}-${b.toRank} overlap`
    }
  }
  return null
}

/**
 * The settings a cycle keeps from its start to its close. Changing them on a live board takes
 * effect at the next cycle, so the entries of one cycle are always ranked by one rule.
 */
export interface CycleRules {
  sortOrder: SortOrder
  operator: Operator
}

/** The longest a scheduled close waits before it starts archiving (archiveDelayMs). */
export const ARCHIVE_SPREAD_MS = 2 * 60 * 1000
/** The spread of archive starts for closes frozen long after their boundary (a late alarm). */
export const LATE_ARCHIVE_SPREAD_MS = 10_000

/**
 * How long after its boundary a board's scheduled close starts writing its archive to Neon: a
 * share of `spreadMs` fixed by the board's id (FNV-1a), at most a quarter of the cycle that
 * closed, so that the boards sharing a boundary (every weekly board at Thursday 00:00) do not
 * all open their transactions in the same second, and a short cycle's rewards do not wait long.
 * @example archiveDelayMs('weekly-race', 120_000, 7 * 86_400_000) // the same figure every week
 */
export function archiveDelayMs(boardId: string, spreadMs: number, cycleMs: number): number {
  const window = Math.floor(Math.min(spreadMs, Math.max(0, cycleMs) / 4))
  if (!(window > 0)) return 0
  let hash = 0x811c9dc5
  for (let i = 0; i < boardId.length; i++) {
    hash ^= boardId.charCodeAt(i)
    hash = Math.imul(hash, 0x01000193) >>> 0
  }
  return hash % window
}

import { z } from '@hono/zod-openapi'
import { parseSchedule } from '../core/cycle.ts'
import {
  MAX_ENTRIES_DEFAULT,
  MAX_ENTRIES_LIMIT,
  maxEntriesFitting,
  overlappingTiers,
} from '../core/leaderboard.ts'
import { decimalInt } from '../lib/openapi.ts'
import { boundedJson, DisplayName, NewPlayerId, objectRecord, ResourceId } from '../lib/fields.ts'

/** No score anywhere may exceed this magnitude; boards narrow it with scoreMin/scoreMax. */
export const SCORE_LIMIT = 1e15
/** Hard cap on a submission's metadata; boards choose a limit at or below it. */
export const METADATA_HARD_LIMIT = 4096
/** A board's metadata limit when its config does not set one. */
const METADATA_DEFAULT_BYTES = 512
/** Deep nesting is refused before it costs anything to store, hash or sort. */
const MAX_JSON_DEPTH = 8
/** Longest top-level key of metadata or a reward, in characters (UTF-16 code units). */
const MAX_KEY_LENGTH = 64
/** Largest reward of one tier: UTF-8 bytes of its JSON. */
const REWARD_MAX_BYTES = 1024

const Score = z.number().min(-SCORE_LIMIT).max(SCORE_LIMIT)

/** JSON Schema's bound on an object's keys (a keyword zod-openapi's metadata type lacks). */
const KEY_NAMES: Record<string, unknown> = { propertyNames: { maxLength: MAX_KEY_LENGTH } }

/** A JSON object of keys up to 64 characters (metadata, a reward). */
const JsonObject = objectRecord(z.record(z.string().max(MAX_KEY_LENGTH), z.unknown()), {
  type: 'object',
  additionalProperties: {},
  ...KEY_NAMES,
})

/** What every free-form JSON object here is held to, for the OpenAPI descriptions. */
const JSON_OBJECT_RULES =
  `nested at most ${MAX_JSON_DEPTH} levels (the object itself is the first), top-level keys of ` +
  `at most ${MAX_KEY_LENGTH} characters (UTF-16 code units), none of them "__proto__", and no ` +
  'NUL or unpaired UTF-16 surrogate in any string or key'

const Reward = boundedJson(JsonObject, {
  maxBytes: REWARD_MAX_BYTES,
  maxDepth: MAX_JSON_DEPTH,
}).openapi({
  example: { coins: 500, badge: 'gold' },
  description:
    `A JSON object of at most ${REWARD_MAX_BYTES} bytes (1 KiB: UTF-8 of its JSON), ` +
    JSON_OBJECT_RULES,
})

const RewardTier = z
  .object({
    fromRank: z.number().int().min(1).max(100_000),
    toRank: z.number().int().min(1).max(100_000),
    reward: Reward,
  })
  .strict()
  .refine((t) => t.fromRank <= t.toRank, { message: 'fromRank must be ≤ toRank', path: ['toRank'] })

const Cycle = z
  .union([
    z.object({ every: z.string().max(16) }).strict(),
    z.object({ cron: z.string().max(128) }).strict(),
    z.object({ cron: z.string().max(128), timeZone: z.string().max(64) }).strict(),
    z.null(),
  ])
  .superRefine((v, ctx) => {
    const parsed = parseSchedule(v)
    if ('error' in parsed) ctx.addIssue({ code: 'custom', message: parsed.error })
  })
  .openapi({
    example: { every: '5m' },
    description:
      '{"every":"5m"} (fixed periods from 1970-01-01T00:00Z) | {"cron":"0 0 * * 1"} (UTC) | ' +
      '{"cron":"0 0 * * 1","timeZone":"Europe/Berlin"} (read on that IANA zone’s wall clock: a time ' +
      'a clock set forward skips turns at the change, a time a clock set back repeats turns the ' +
      'first time; the zone answered as written, in the case the runtime spells it) | null (one cycle ' +
      'that never ends)',
  })

const MaxEntries = z
  .number()
  .int()
  .min(1)
  .max(MAX_ENTRIES_LIMIT)
  .openapi({
    description:
      'The players a cycle holds: past it, a new player is refused (409 `conflict` with ' +
      '`limit`) until the next cycle; players already ranked still submit. At most ' +
      '1,500,000, and at most 6,000,000,000 / (2 × (180 + 2 × metadataMaxBytes)), rounded ' +
      'down, which is less above 910 bytes of metadata (358,337 at 4,096): two cycles of ' +
      "entries must fit 6 GB of the board's 10 GB (422 past it). Default: 1,000,000, or that " +
      'bound if lower (above 1,410 bytes).',
  })

/** A PUT's maxEntries, or its default: 1,000,000, or fewer if its metadata allows fewer. */
export function maxEntriesOrDefault(config: {
  maxEntries?: number | undefined
  metadataMaxBytes: number
}): number {
  return (
    config.maxEntries ?? Math.min(MAX_ENTRIES_DEFAULT, maxEntriesFitting(config.metadataMaxBytes))
  )
}

export const LeaderboardConfigInput = z
  .object({
    name: DisplayName.nullable().default(null),
    sortOrder: z.enum(['asc', 'desc']).default('desc'),
    operator: z.enum(['best', 'set', 'incr']).default('best'),
    cycle: Cycle.default(null),
    scoreMin: Score.default(-SCORE_LIMIT),
    scoreMax: Score.default(SCORE_LIMIT),
    subscoreMin: Score.default(-SCORE_LIMIT),
    subscoreMax: Score.default(SCORE_LIMIT),
    rewards: z.array(RewardTier).max(50).default([]),
    submitsPerMinute: z.number().int().min(1).max(600).default(10),
    metadataMaxBytes: z
      .number()
      .int()
      .min(0)
      .max(METADATA_HARD_LIMIT)
      .default(METADATA_DEFAULT_BYTES),
    // Its default depends on metadataMaxBytes: filled in by the PUT (maxEntriesOrDefault).
    maxEntries: MaxEntries.optional(),
    paused: z
      .boolean()
      .optional()
      .openapi({
        description:
          'Takes no scores while true (409 `conflict` with `paused: true`; a retried submission still ' +
          'gets its first answer); reads, imports and the schedule go on. A PUT without it resumes.',
      }),
    serverScoresOnly: z
      .boolean()
      .optional()
      .openapi({
        description:
          'Takes scores only from game servers (the admin key) and from game sessions’ results: a ' +
          'player’s own submission is 403 `forbidden` (a retried one still gets its first answer). ' +
          'For a board that counts wins: any player could otherwise post wins with no game played. ' +
          'A PUT without it takes players’ scores again.',
      }),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.scoreMin > c.scoreMax)
      ctx.addIssue({ code: 'custom', path: ['scoreMax'], message: 'scoreMax must be ≥ scoreMin' })
    if (c.subscoreMin > c.subscoreMax) {
      ctx.addIssue({
        code: 'custom',
        path: ['subscoreMax'],
        message: 'subscoreMax must be ≥ subscoreMin',
      })
    }
    const overlap = overlappingTiers(c.rewards)
    if (overlap) ctx.addIssue({ code: 'custom', path: ['rewards'], message: overlap })
    // Each bound alone is fine; together they could ask for more than the object may store, and
    // a full board refuses every submission and cannot freeze its cycle (no close, no rewards).
    const fitting = maxEntriesFitting(c.metadataMaxBytes)
    if (c.maxEntries !== undefined && c.maxEntries > fitting) {
      ctx.addIssue({
        code: 'custom',
        path: ['maxEntries'],
        message:
          `maxEntries must be ≤ ${fitting} with metadataMaxBytes ${c.metadataMaxBytes}: two ` +
          `cycles of entries (a closed one is kept until archived) must fit 6 GB of the board's ` +
          `10 GB; lower metadataMaxBytes to hold more players`,
      })
    }
  })
  .openapi('LeaderboardConfig')

/**
 * The configuration as a board answers it: every field is there (the defaults filled in), which
 * the input schema, whose fields all have defaults, would leave optional in the OpenAPI document.
 */
type ConfigShape = typeof LeaderboardConfigInput.shape

export const LeaderboardConfigStored = z
  .object(
    Object.fromEntries(
      Object.entries(LeaderboardConfigInput.shape).map(([key, field]) => [
        key,
        field instanceof z.ZodDefault ? field.unwrap() : field,
      ]),
    ) as unknown as {
      [K in keyof ConfigShape]: ConfigShape[K] extends z.ZodDefault<infer T> ? T : ConfigShape[K]
    },
  )
  .extend({
    maxEntries: MaxEntries,
    paused: z.boolean().openapi({ description: 'Taking no scores' }),
    serverScoresOnly: z
      .boolean()
      .openapi({ description: 'Taking scores from game servers and sessions only' }),
  })
  .openapi('LeaderboardConfigStored')

/** A JSON object as stored and answered (metadata, a reward): no bounds to check on the way out. */
export const StoredJsonObject = z.record(z.string(), z.unknown())

const Metadata = boundedJson(JsonObject, {
  maxBytes: METADATA_HARD_LIMIT,
  maxDepth: MAX_JSON_DEPTH,
})

const NullableMetadata = Metadata.nullable()
  .default(null)
  .openapi({
    type: ['object', 'null'],
    additionalProperties: {},
    ...KEY_NAMES,
    description:
      `A JSON object or null: at most ${METADATA_HARD_LIMIT} bytes (UTF-8 of its JSON) and at ` +
      `most the board's \`metadataMaxBytes\` (default ${METADATA_DEFAULT_BYTES}), ` +
      JSON_OBJECT_RULES,
  })

/** The current cycle of a board, as the board reports it. */
export const CycleInfo = z.object({
  cycle: z.number().int(),
  startsAt: z.number(),
  endsAt: z.number().nullable(),
  entries: z.number().int(),
  sortOrder: z.enum(['asc', 'desc']).openapi({
    description: 'The order this cycle ranks by (a config change applies from the next cycle)',
  }),
  operator: z.enum(['best', 'set', 'incr']).openapi({
    description: 'How this cycle combines scores (a config change applies from the next cycle)',
  }),
})

export const ScoreSubmission = z
  .object({
    score: Score.openapi({
      description: 'A finite number within the board’s bounds',
      example: 52.317,
    }),
    subscore: Score.default(0),
    metadata: NullableMetadata,
    playerId: NewPlayerId.optional().openapi({
      description: 'Only with the admin key: the player a game server submits for (not `me`)',
    }),
  })
  .strict()
  .openapi('ScoreSubmission')

export const ImportEntry = z
  .object({
    playerId: NewPlayerId,
    score: Score,
    subscore: Score.default(0),
    metadata: NullableMetadata,
  })
  .strict()

export const SubmitResult = z
  .object({
    cycle: z.number().int(),
    score: z.number().openapi({ description: 'The score this request submitted' }),
    best: z.number().openapi({ description: "The player's standing score after it (what ranks)" }),
    rank: z.number().int(),
    replayed: z
      .boolean()
      .openapi({ description: 'true when this answers a retry of an earlier request' }),
  })
  .openapi('SubmitResult')

export const Entry = z
  .object({
    rank: z.number().int(),
    playerId: z.string(),
    name: z.string().nullable(),
    score: z.number(),
    subscore: z.number(),
    metadata: StoredJsonObject.nullable(),
  })
  .openapi('Entry')

export const TopPage = z
  .object({
    cycle: z.number().int(),
    entries: z.array(Entry),
    nextCursor: z
      .string()
      .nullable()
      .openapi({
        description:
          'The next page, or null at the end. A page may hold fewer entries than `limit` (even ' +
          'none) and still have one: a page scans a bounded part of the board',
      }),
    total: z.number().int(),
  })
  .openapi('TopPage')

export const Limit = (max: number, fallback: number) =>
  decimalInt(1, max)
    .default(fallback)
    .openapi({ type: 'integer', minimum: 1, maximum: max, default: fallback })

export const Cursor = z.string().min(1).max(1100).optional()

/** A board and one of its cycles, as a path names them. */
export const CycleParam = z.object({ id: ResourceId, cycle: decimalInt(1, 2_000_000_000) })

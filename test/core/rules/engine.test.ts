import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import type {
  AnyRules,
  GameResult,
  GameSetup,
  Input,
  LogRecord,
  Rules,
  TickContext,
} from '../../../workers/core/rules/index.ts'
import {
  ReplayError,
  createMatch,
  createRng,
  declarationRefusal,
  diceRace,
  getRules,
  hotPotato,
  isRuleError,
  relay,
  replay,
  resultOf,
  resultRefusal,
  rockPaperScissors,
  ruleError,
  rulesNames,
  seedRng,
  startRefusal,
  optionsRefusal,
  step,
} from '../../../workers/core/rules/index.ts'
import { viewRecord } from '../../../workers/core/rules/engine.ts'
import { deepFreeze, mustCreate, roundTrip, runLive } from './helpers.ts'

const PLAYERS = ['p0', 'p1', 'p2', 'p3']

const setupArb = (
  rules: { players: { min: number; max: number } },
  options: fc.Arbitrary<unknown>,
) =>
  fc.record({
    roster: fc
      .integer({
        min: Math.max(1, rules.players.min),
        max: Math.min(PLAYERS.length, rules.players.max),
      })
      .map((n) => PLAYERS.slice(0, n).map((playerId, team) => ({ playerId, team }))),
    seed: fc.string({ minLength: 1, maxLength: 16 }),
    options,
  })

/** A player from the roster pool or a stranger. */
const playerArb = fc.oneof({ weight: 6, arbitrary: fc.constantFrom(...PLAYERS) }, fc.constant('x'))

/** Junk an attacker might send as an action. */
const junkArb: fc.Arbitrary<unknown> = fc.oneof(
  fc.anything({ maxDepth: 2 }),
  fc.constant({ action: 'message', data: 'z'.repeat(5000) }),
  fc.constant({ action: 'roll', extra: 1 }),
  fc.constant({ type: 'other', action: 'roll' }),
)

/** Inputs with ticks that mostly grow and sometimes go back (which must be refused). */
function inputsArb(validAction: fc.Arbitrary<unknown>): fc.Arbitrary<Input[]> {
  const op = fc.oneof(
    {
      weight: 10,
      arbitrary: fc.record({
        kind: fc.constant('action' as const),
        player: playerArb,
        action: fc.oneof({ weight: 4, arbitrary: validAction }, junkArb),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({ kind: fc.constant('absent' as const), player: playerArb }),
    },
    {
      weight: 1,
      arbitrary: fc.record({ kind: fc.constant('return' as const), player: playerArb }),
    },
    {
      weight: 1,
      arbitrary: fc.record({ kind: fc.constant('connect' as const), player: playerArb }),
    },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('tick' as const) }) },
  )
  return fc
    .array(fc.tuple(op, fc.integer({ min: -1, max: 3 })), { maxLength: 80, size: 'max' })
    .map((ops) => {
      let tick = 0
      return ops.map(([o, dt]): Input => {
        tick = Math.max(0, tick + dt)
        return { ...o, tick } as Input
      })
    })
}

const messageArb = fc.record({
  type: fc.constant('action'),
  action: fc.constant('message'),
  data: fc.jsonValue({ maxDepth: 3 }),
})
const rollArb = fc.constant({ type: 'action', action: 'roll' })
const potatoArb = fc.oneof(
  fc.constant({ type: 'action', action: 'ready' }),
  fc.record({ type: fc.constant('action'), action: fc.constant('pass'), to: playerArb }),
)

const rpsArb = fc.record({
  type: fc.constant('action'),
  move: fc.constantFrom('rock', 'paper', 'scissors'),
})

const cases = [
  { rules: relay, setup: setupArb(relay, fc.constant(undefined)), inputs: inputsArb(messageArb) },
  {
    rules: diceRace,
    setup: setupArb(diceRace, fc.record({ target: fc.integer({ min: 1, max: 30 }) })),
    inputs: inputsArb(rollArb),
  },
  {
    // Timed: connections start the clock (its deadlines are out of these ticks' reach).
    rules: diceRace,
    setup: setupArb(
      diceRace,
      fc.record({ target: fc.integer({ min: 1, max: 30 }), turnSeconds: fc.constant(5) }),
    ),
    inputs: inputsArb(rollArb),
  },
  {
    rules: hotPotato,
    setup: setupArb(
      hotPotato,
      fc
        .record({ minFuse: fc.integer({ min: 1, max: 6 }), spread: fc.nat(6) })
        .map(({ minFuse, spread }) => ({ minFuse, maxFuse: minFuse + spread, startAfter: 10 })),
    ),
    inputs: inputsArb(potatoArb),
  },
  {
    // Hidden moves (its clock's deadlines are out of these ticks' reach).
    rules: rockPaperScissors,
    setup: setupArb(rockPaperScissors, fc.record({ rounds: fc.constantFrom(1, 3, 5) })),
    inputs: inputsArb(rpsArb),
  },
] as const

function checkLog(records: readonly LogRecord[]): void {
  records.forEach((r, i) => expect(r.seq).toBe(i + 1))
  for (let i = 1; i < records.length; i++) {
    expect(records[i]?.input.tick).toBeGreaterThanOrEqual(records[i - 1]?.input.tick ?? 0)
  }
}

describe.each(cases)('engine with $rules.name', ({ rules, setup, inputs }) => {
  const r = rules as Rules<unknown, unknown, unknown>

  it('replaying the log gives the live state; refusals change nothing', () => {
    fc.assert(
      fc.property(setup, inputs, (s: GameSetup, ins) => {
        const live = runLive(r, mustCreate(r, s), ins) // refusals are checked inside
        checkLog(live.records)
        expect(live.match.seq).toBe(live.records.length)
        expect(live.match.tick).toBe(live.records.at(-1)?.input.tick ?? 0)
        expect(roundTrip(live.match)).toEqual(live.match) // plain JSON
        expect(replay(r, s, live.records)).toEqual(live.match)
        // The log as storage returns it (JSON) replays the same.
        expect(replay(r, roundTrip(s), roundTrip(live.records))).toEqual(live.match)
      }),
      { numRuns: 150 },
    )
  })

  it('the same seed and inputs give the same game, across evictions too', () => {
    fc.assert(
      fc.property(setup, inputs, (s: GameSetup, ins) => {
        const first = runLive(r, mustCreate(r, s), ins)
        const again = runLive(r, mustCreate(r, roundTrip(s)), ins)
        const evicted = runLive(r, roundTrip(mustCreate(r, s)), ins, { evictEveryStep: true })
        expect(again.results).toEqual(first.results)
        expect(evicted.results).toEqual(first.results)
        expect(evicted.match).toEqual(first.match)
      }),
      { numRuns: 100 },
    )
  })

  it('refuses inputs that go back in time, and everything once the game is over', () => {
    fc.assert(
      fc.property(setup, inputs, (s: GameSetup, ins) => {
        const live = runLive(r, mustCreate(r, s), ins)
        let lastTick = 0
        ins.forEach((input, i) => {
          const got = live.results[i]
          const stale = input.tick < lastTick
          expect(isRuleError(got) && got.error.code === 'invalid_tick').toBe(stale)
          if (got && !isRuleError(got)) lastTick = got.input.tick
        })
        // Checked directly: a stale tick is refused.
        if (live.match.tick > 0) {
          const out = step(r, live.match, { kind: 'tick', tick: live.match.tick - 1 })
          expect(isRuleError(out) && out.error.code).toBe('invalid_tick')
        }
        if (r.result(live.match.game) !== null) {
          for (const input of ins) {
            const out = step(r, live.match, { ...input, tick: live.match.tick })
            expect(isRuleError(out) && out.error.code).toBe('game_over')
          }
        }
      }),
      { numRuns: 100 },
    )
  })
})

/** The first seq whose die the seed `seed` would roll differently from the log. */
function firstDifferentDie(seed: string, records: LogRecord[]): number {
  const dice = createRng(seedRng(seed))
  const i = records.findIndex((r) => (r.event as { die: number }).die !== dice.int(1, 6))
  if (i === -1) throw new Error('pick another seed')
  return i + 1
}

describe('replay', () => {
  const setup: GameSetup = {
    roster: [
      { playerId: 'a', team: 0 },
      { playerId: 'b', team: 1 },
    ],
    seed: 'tamper',
  }
  const inputs: Input[] = Array.from({ length: 6 }, (_, i) => ({
    kind: 'action',
    player: i % 2 === 0 ? 'a' : 'b',
    tick: i,
    action: { action: 'roll' },
  }))
  const live = runLive(diceRace, mustCreate(diceRace, setup), inputs)

  it('rebuilds the live match', () => {
    expect(live.records).toHaveLength(6)
    expect(replay(diceRace, setup, live.records)).toEqual(live.match)
    expect(replay(diceRace, setup, [])).toEqual(mustCreate(diceRace, setup))
  })

  it('detects a changed event, a gap, a reordering, a foreign seed and a refused input', () => {
    const records = roundTrip(live.records)
    const changed = roundTrip(records)
    const third = changed[2] as LogRecord<{ die: number }>
    if (third.event) third.event.die = third.event.die === 6 ? 1 : third.event.die + 1
    const swapped = [records[1], records[0], ...records.slice(2)] as LogRecord[]
    const renumbered = swapped.map((rec, i) => ({ ...rec, seq: i + 1 }))
    const cases: [LogRecord[], GameSetup, number][] = [
      [changed, setup, 3],
      [[...records.slice(0, 2), ...records.slice(3)], setup, 4],
      [renumbered, setup, 1],
      [records, { ...setup, seed: 'other' }, firstDifferentDie('other', records)],
    ]
    for (const [log, s, seq] of cases) {
      let caught: unknown
      try {
        replay(diceRace, s, log)
      } catch (e) {
        caught = e
      }
      expect(caught).toBeInstanceOf(ReplayError)
      expect((caught as ReplayError).seq).toBe(seq)
    }
    expect(() => replay(diceRace, { ...setup, roster: [] }, records)).toThrow(ReplayError)
  })

  it('replays a log as storage holds it, from rules whose events carry values JSON does not keep', () => {
    // A bug JSON hides: NaN, -0 and a hole in an event. The log holds their JSON form (null,
    // 0, null), as a session logs and sends it; replay compares like with like.
    const noisy: Rules<{ n: number }, { action: 'go' }, unknown> = {
      name: 'noisy',
      players: { min: 1, max: 2 },
      init: () => ({ n: 0 }),
      parseAction: () => ({ action: 'go' }),
      apply: (state) => ({
        state: { n: state.n + 1 },
        event: { n: state.n + 1, ratio: 0 / 0, zero: -0, at: [undefined] },
      }),
      onAbsent: () => ruleError('ignored', 'nothing to do'),
      result: () => null,
      view: (state) => state,
    }
    const solo: GameSetup = { roster: [{ playerId: 'a', team: 0 }], seed: 'noisy' }
    const go: Input[] = [1, 2, 3].map((tick) => ({
      kind: 'action',
      player: 'a',
      tick,
      action: { action: 'go' },
    }))
    const played = runLive(noisy, mustCreate(noisy, solo), go)
    const logged = roundTrip(played.records)
    expect(logged[0]!.event).toEqual({ n: 1, ratio: null, zero: 0, at: [null] })
    expect(replay(noisy, solo, logged)).toEqual(played.match)
  })
})

describe('resultRefusal', () => {
  const roster = [
    { playerId: 'a', team: 0 },
    { playerId: 'b', team: 1 },
  ]
  const good = {
    reason: 'finished' as const,
    winner: 'a',
    placements: [
      { playerId: 'a', team: 0, place: 1, score: 3 },
      { playerId: 'b', team: 1, place: 2 },
    ],
  }

  it('reads a result with no winner field as one with none (plain JavaScript rules)', () => {
    const noField = { ...clock, result: () => ({ reason: 'finished', placements: [] }) }
    const start = mustCreate(clock, { roster: [{ playerId: 'a', team: 0 }], seed: 's' })
    const result = resultOf(noField as unknown as typeof clock, start)
    expect(result).toEqual({ reason: 'finished', placements: [], winner: null })
    const placed = { ...result!, placements: [{ playerId: 'a', team: 0, place: 1 }] }
    expect(resultRefusal(placed, [{ playerId: 'a', team: 0 }])).toBeNull()
  })

  it('takes a result that places every roster player once, the winner first; ties too', () => {
    expect(resultRefusal(good, roster)).toBeNull()
    const tie = good.placements.map((p) => ({ ...p, place: 1 }))
    expect(resultRefusal({ ...good, winner: null, placements: tie }, roster)).toBeNull()
  })

  it.each([
    [
      'zero-based places',
      { placements: good.placements.map((p) => ({ ...p, place: p.place - 1 })) },
      /place 0/,
    ],
    [
      'a place that is not an integer',
      { placements: [good.placements[0]!, { ...good.placements[1]!, place: 1.5 }] },
      /place 1.5/,
    ],
    [
      'an id off the roster',
      { placements: [good.placements[0]!, { playerId: 'x', team: 1, place: 2 }] },
      /'x', not on the roster/,
    ],
    ['a player left out', { placements: [good.placements[0]!] }, /1 of 2/],
    ['a player twice', { placements: [good.placements[0]!, good.placements[0]!] }, /twice/],
    [
      'a player on another team',
      { placements: [good.placements[0]!, { ...good.placements[1]!, team: 0 }] },
      /team 0, not 1/,
    ],
    [
      'a score that is not finite',
      { placements: [{ ...good.placements[0]!, score: Number.NaN }, good.placements[1]!] },
      /finite/,
    ],
    ['a winner not in first place', { winner: 'b' }, /'b' is not in first place/],
    ['a winner of an abandoned game', { reason: 'abandoned' }, /abandoned game has no winner/],
    ['a winner of a cancelled game', { reason: 'cancelled' }, /cancelled game has no winner/],
    ['an unknown reason', { reason: 'timeout' }, /reason 'timeout'/],
  ])('refuses %s', (_what, change, why) => {
    const refusal = resultRefusal({ ...good, ...change } as GameResult, roster)
    expect(refusal).toMatch(why)
  })
})

/** A minimal real-time rule to exercise the tick path: a counter that moves on some ticks. */
interface Clock {
  count: number
  silent: number
}
const clock: Rules<Clock, { action: 'noop' }, { count: number }> = {
  name: 'clock',
  players: { min: 1, max: 2 },
  tickRate: 10,
  init: () => ({ count: 0, silent: 0 }),
  parseAction: (raw) =>
    typeof raw === 'object' && raw !== null && 'action' in raw && raw.action === 'noop'
      ? { action: 'noop' }
      : ruleError('invalid_action', 'noop only'),
  apply: (state, _a, ctx) => ({ state, event: { count: state.count + ctx.rng.int(0, 0) } }),
  onTick(state: Clock, ctx: TickContext) {
    if (ctx.tick % 3 === 0) {
      const count = state.count + ctx.rng.int(1, 6)
      return { state: { ...state, count }, event: { count } }
    }
    if (ctx.tick % 5 === 0) return { state: { ...state, silent: state.silent + 1 } }
    return { state }
  },
  onAbsent: () => ruleError('ignored', 'nothing to do'),
  result: (state) =>
    state.count >= 1000 ? { placements: [], reason: 'finished', winner: null } : null,
  view: (state) => state,
}

describe('ticks', () => {
  const setup: GameSetup = { roster: [{ playerId: 'a', team: 0 }], seed: 'clock' }
  const ticks: Input[] = Array.from({ length: 31 }, (_, tick) => ({ kind: 'tick', tick }))

  it('logs only ticks that did something, and replays them', () => {
    const live = runLive(clock, mustCreate(clock, setup), ticks)
    const logged = live.records.map((r) => [r.input.tick, r.event === null ? 'silent' : 'event'])
    const expected = ticks
      .map((t) => t.tick)
      .filter((t) => t % 3 === 0 || t % 5 === 0)
      .map((t) => [t, t % 3 === 0 ? 'event' : 'silent'])
    expect(logged).toEqual(expected)
    expect(live.match.game.silent).toBe(expected.filter(([, k]) => k === 'silent').length)
    // Unlogged ticks left the match as it was, so the same ticks are replayed from the log alone.
    expect(replay(clock, setup, live.records)).toEqual(live.match)
  })

  it('treats absent hooks of event-driven rules as nothing to log', () => {
    const match = mustCreate(relay, { ...setup })
    expect(step(relay, match, { kind: 'tick', tick: 5 })).toEqual({ match, record: null })
    expect(step(relay, match, { kind: 'connect', player: 'a', tick: 5 })).toEqual({
      match,
      record: null,
    })
    const dice = mustCreate(diceRace, { ...setup })
    expect(step(diceRace, dice, { kind: 'return', player: 'a', tick: 0 })).toEqual({
      match: dice,
      record: null,
    })
  })
})

describe('guards', () => {
  const setup: GameSetup = { roster: [{ playerId: 'a', team: 0 }], seed: 'g' }

  it('refuses a match built by other rules and odd ticks', () => {
    const match = mustCreate(relay, setup)
    const wrong = step(diceRace, match as never, { kind: 'tick', tick: 0 })
    expect(isRuleError(wrong) && wrong.error.code).toBe('wrong_rules')
    for (const tick of [-1, 0.5, Number.NaN, Infinity]) {
      const out = step(relay, match, { kind: 'tick', tick })
      expect(isRuleError(out) && out.error.code).toBe('invalid_tick')
    }
  })

  it("hands rules the generator's draws, never its words (which would let a client predict them)", () => {
    const seen: string[][] = []
    const peeking: typeof relay = {
      ...relay,
      init: (s, rng) => {
        seen.push(Object.keys(rng).sort())
        return relay.init(s, rng)
      },
      apply: (state, action, ctx) => {
        seen.push(Object.keys(ctx.rng).sort())
        return relay.apply(state, action, ctx)
      },
    }
    const match = mustCreate(peeking, setup)
    const action = { type: 'action', action: 'message', data: 'hi' }
    const out = step(peeking, match, { kind: 'action', player: 'a', tick: 1, action })
    expect(isRuleError(out)).toBe(false)
    expect(seen).toEqual([
      ['float', 'int', 'uint32'],
      ['float', 'int', 'uint32'],
    ])
  })

  it('refuses, by throwing, an action whose parse its own parser would not give again: the log keeps parsed actions, and a wake that could not replay them would leave the session unusable', () => {
    const match = mustCreate(relay, setup)
    const frozen = JSON.stringify(match)
    // Reshapes the wire form into another: its own output is not a wire form it takes.
    const reshaping: typeof relay = {
      ...relay,
      parseAction: (raw) => {
        const parsed = relay.parseAction(raw)
        if (isRuleError(parsed)) return parsed
        return { ...parsed, type: 'message' } as never
      },
    }
    const action = { type: 'action', action: 'message', data: 'hi' }
    expect(() => step(reshaping, match, { kind: 'action', player: 'a', tick: 1, action })).toThrow(
      /parsing a parsed action must give an equal one/,
    )
    // A parser that adds a default each time gives another action on the second parse.
    let parses = 0
    const counting: typeof relay = {
      ...relay,
      parseAction: (raw) => {
        const { n: _ignored, ...rest } = raw as Record<string, unknown>
        const parsed = relay.parseAction(rest)
        return isRuleError(parsed) ? parsed : ({ ...parsed, n: ++parses } as never)
      },
    }
    expect(() => step(counting, match, { kind: 'action', player: 'a', tick: 1, action })).toThrow(
      /gives another/,
    )
    expect(JSON.stringify(match)).toBe(frozen)
    // The shipped parser is idempotent: the same action is stepped.
    expect(isRuleError(step(relay, match, { kind: 'action', player: 'a', tick: 1, action }))).toBe(
      false,
    )
  })

  it("calls a game its rules call over from the first state unplayable (a session would start live and refuse everything), for a queue's trial start too; a game that can be played is not", () => {
    // Last player standing, from one player up: alone, it is won before it starts.
    const standing: typeof relay = {
      ...relay,
      name: 'standing',
      players: { min: 1, max: 8 },
      result: (state) =>
        (state as unknown as { players: string[] }).players.length <= 1
          ? { reason: 'finished', winner: 'a', placements: [{ playerId: 'a', team: 0, place: 1 }] }
          : null,
      init: (s) => ({ players: s.roster.map((p) => p.playerId) }) as never,
    }
    const alone = mustCreate(standing, setup)
    expect(startRefusal(standing, alone)).toMatch(/over before it starts/)
    expect(optionsRefusal(standing as AnyRules, setup.roster, undefined)).toMatch(
      /over before it starts/,
    )
    const two = [...setup.roster, { playerId: 'b', team: 1 }]
    expect(startRefusal(standing, mustCreate(standing, { ...setup, roster: two }))).toBeNull()
    expect(optionsRefusal(standing as AnyRules, two, undefined)).toBeNull()
    for (const rules of [relay, diceRace, hotPotato, rockPaperScissors] as AnyRules[]) {
      const roster = Array.from({ length: Math.max(2, rules.players.min) }, (_, i) => ({
        playerId: `p${i}`,
        team: i,
      }))
      expect(optionsRefusal(rules, roster, undefined), rules.name).toBeNull()
    }
  })

  it('checks the setup before the rules see it', () => {
    for (const bad of [null, {}, { roster: 'a', seed: 's' }, { roster: [null], seed: 's' }]) {
      const out = createMatch(relay, bad as unknown as GameSetup)
      expect(isRuleError(out) && out.error.code).toBe('invalid_setup')
    }
    const long = createMatch(relay, { roster: [{ playerId: 'x'.repeat(129), team: 0 }], seed: 's' })
    expect(isRuleError(long) && long.error.code).toBe('invalid_setup')
  })
})

describe('registry', () => {
  it('names the shipped rules and hands them out', () => {
    expect([...rulesNames].sort()).toEqual([
      'dice-race',
      'hot-potato',
      'relay',
      'rock-paper-scissors',
    ])
    expect(getRules('relay')).toBe(relay)
    expect(getRules('dice-race')).toBe(diceRace)
    expect(getRules('hot-potato')).toBe(hotPotato)
    expect(getRules('chess')).toBeUndefined()
    expect(getRules('__proto__')).toBeUndefined()
    expect(getRules('toString')).toBeUndefined()
  })

  it('refuses a module declared so that the session could not run it as written', () => {
    for (const rules of [relay, diceRace, hotPotato, rockPaperScissors]) {
      expect(declarationRefusal(rules)).toBeNull()
    }
    const ticking = clock as unknown as AnyRules
    expect(declarationRefusal({ ...ticking, tickRate: 0 })).toMatch(/tickRate 0/)
    expect(declarationRefusal({ ...ticking, tickRate: Number.NaN })).toMatch(/tickRate NaN/)
    expect(declarationRefusal({ ...ticking, tickRate: 2.5 })).toMatch(/tickRate 2.5/)
    expect(declarationRefusal({ ...ticking, tickRate: 1001 })).toMatch(/tickRate 1001/)
    expect(declarationRefusal({ ...ticking, tickRate: undefined })).toMatch(/need a tickRate/)
    expect(declarationRefusal({ ...ticking, name: 'Clock!' })).toMatch(/name 'Clock!'/)
    // A module in plain JavaScript without a required hook: absences would be dropped.
    expect(declarationRefusal({ ...ticking, onAbsent: undefined } as unknown as AnyRules)).toMatch(
      /onAbsent is required/,
    )
    expect(declarationRefusal({ ...ticking, view: 'state' } as unknown as AnyRules)).toMatch(
      /view is required/,
    )
    // More players than a session holds (every match a queue made would fail at the session),
    // or a range no roster fits.
    for (const players of [
      { min: 2, max: 100 },
      { min: 0, max: 4 },
      { min: 5, max: 4 },
      { min: 1.5, max: 4 },
      { min: 1, max: Number.NaN },
      undefined,
    ]) {
      expect(
        declarationRefusal({ ...ticking, players } as unknown as AnyRules),
        JSON.stringify(players),
      ).toMatch(/players needs whole numbers 1 <= min <= max <= 64/)
    }
    expect(declarationRefusal({ ...ticking, players: { min: 1, max: 64 } })).toBeNull()
  })

  it("takes a plain JavaScript module's refusal at a tick or an abandon as nothing happening: no record, no state changed", () => {
    const refusing = {
      ...clock,
      onTick: () => ruleError('ignored', 'nothing now'),
      onAbandon: () => ruleError('ignored', 'not abandoned'),
    } as unknown as AnyRules
    const setup: GameSetup = { roster: [{ playerId: 'a', team: 0 }], seed: 'refusing' }
    const match = mustCreate(refusing, setup)
    expect(step(refusing, match, { kind: 'tick', tick: 3 })).toEqual({ match, record: null })
    const abandon = step(refusing, match, { kind: 'abandon', tick: 3 })
    expect(isRuleError(abandon)).toBe(true)
  })
})

describe('viewRecord', () => {
  // A record as a hidden-information game logs it: an action with a secret, and its event.
  const record: LogRecord = {
    seq: 4,
    input: { kind: 'action', player: 'p0', tick: 9, action: { card: 'queen' } },
    event: { kind: 'drew', player: 'p0', card: 'queen' },
  }
  type Drew = { kind: string; player: string; card?: string }
  const secretive = {
    ...relay,
    name: 'secretive',
    viewEvent: (event: Drew, player: string) =>
      event.player === player ? event : { kind: event.kind, player: event.player },
  } as unknown as Rules<unknown, unknown, Drew>

  it("leaves another player's action out under rules without viewEvent too; the sender's own record is whole", () => {
    expect(viewRecord(relay, record, 'p0')).toBe(record)
    expect(viewRecord(relay, record, 'p1')).toEqual({
      seq: 4,
      input: { kind: 'action', player: 'p0', tick: 9 },
      event: record.event,
    })
  })

  it("gives a player their view of each event and no other player's action", () => {
    const frozen = deepFreeze(structuredClone(record))
    expect(viewRecord(secretive, frozen, 'p1')).toEqual({
      seq: 4,
      input: { kind: 'action', player: 'p0', tick: 9 },
      event: { kind: 'drew', player: 'p0' },
    })
    // The sender's own record is theirs whole; the stored one is left as it was (frozen).
    expect(viewRecord(secretive, frozen, 'p0')).toEqual(record)
    const tick: LogRecord = { seq: 5, input: { kind: 'tick', tick: 10 }, event: null }
    expect(viewRecord(secretive, tick, 'p1')).toEqual(tick)
  })
})

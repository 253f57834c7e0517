import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import type { PotatoEvent, PotatoState } from '../../../workers/core/rules/hot-potato.ts'
import {
  HOT_POTATO_DEFAULTS,
  HOT_POTATO_TICK_RATE,
  hotPotato,
} from '../../../workers/core/rules/hot-potato.ts'
import type { Input, LogRecord, MatchState, Rng } from '../../../workers/core/rules/index.ts'
import {
  createMatch,
  createRng,
  isRuleError,
  replay,
  seedRng,
  step,
} from '../../../workers/core/rules/index.ts'
import {
  accepted,
  expectDeterministic,
  mustCreate,
  refusalCode,
  roster,
  runLive,
} from './helpers.ts'

const ready = (player: string, tick = 0): Input => ({
  kind: 'action',
  player,
  tick,
  action: { type: 'action', action: 'ready' },
})
const pass = (player: string, to: string, tick = 0): Input => ({
  kind: 'action',
  player,
  tick,
  action: { type: 'action', action: 'pass', to },
})
const tick = (t: number): Input => ({ kind: 'tick', tick: t })
const absent = (player: string, t = 0): Input => ({ kind: 'absent', player, tick: t })
const connect = (player: string, t = 0): Input => ({ kind: 'connect', player, tick: t })

type Match = MatchState<PotatoState>

const ok = (match: Match, input: Input) => accepted(hotPotato, match, input)
const refusedWith = (match: Match, input: Input) => refusalCode(hotPotato, match, input)

/** A tick that changes nothing: no record, the very same match back. */
function quietTick(match: Match, t: number): void {
  const out = step(hotPotato, match, tick(t))
  expect(out).toEqual({ match, record: null })
  if (!isRuleError(out)) expect(out.match).toBe(match)
}

/** Everyone connected at tick `t`: `startAfter` counts from then. */
function allConnected(match: Match, t = 0): Match {
  for (const p of match.game.players) match = ok(match, connect(p.playerId, t)).match
  return match
}

/** Everyone ready at tick `t`; returns the match with the fuse lit. */
function allReady(match: Match, t = 0): Match {
  for (const p of match.game.players) match = ok(match, ready(p.playerId, t)).match
  return match
}

/** The draws the rules make when lighting a fuse, made independently from the same RNG. */
function draw(rng: Rng, live: string[], at: number, min: number, max: number) {
  const holder = live[rng.int(0, live.length - 1)]!
  return { holder, explodesAt: at + rng.int(min, max) }
}

describe('hot-potato', () => {
  it('is real-time, waits for players, and has the documented defaults', () => {
    expect(hotPotato.tickRate).toBe(HOT_POTATO_TICK_RATE)
    expect(HOT_POTATO_TICK_RATE).toBe(5)
    const match = mustCreate(hotPotato, { roster: roster('a', 'b'), seed: 's' })
    expect(match.game).toEqual({
      ...HOT_POTATO_DEFAULTS,
      nobodyReadyEnds: true,
      awaiting: ['a', 'b'],
      startAt: null,
      players: [
        { playerId: 'a', team: 0, ready: false, out: null },
        { playerId: 'b', team: 1, ready: false, out: null },
      ],
      holder: null,
      explodesAt: null,
      round: 0,
      passes: 0,
      outOrder: [],
      outTicks: {},
      winner: null,
      ended: null,
      lastTeamWins: true,
    })
    expect(hotPotato.result(match.game)).toBeNull()
    expect(hotPotato.view(match.game, 'a')).toEqual(match.game)
  })

  it('checks options and roster size', () => {
    const setup = { roster: roster('a', 'b'), seed: 's' }
    expect(
      mustCreate(hotPotato, { ...setup, options: { minFuse: 2, maxFuse: 2, startAfter: 9 } }).game,
    ).toMatchObject({ minFuse: 2, maxFuse: 2, startAfter: 9 })
    expect(mustCreate(hotPotato, { ...setup, options: { maxFuse: 3000 } }).game.maxFuse).toBe(3000)
    expect(mustCreate(hotPotato, { ...setup, options: null }).game.minFuse).toBe(15)
    for (const options of [
      { minFuse: 0 },
      { maxFuse: 3001 },
      { startAfter: -1 },
      { minFuse: 1.5 },
      { minFuse: '5' },
      { minFuse: 10, maxFuse: 9 },
      { minFuse: 51 }, // above the default maxFuse
      { fuse: 9 },
      [],
      5,
      'fast',
    ]) {
      const out = createMatch(hotPotato, { ...setup, options })
      expect(isRuleError(out) && out.error.code).toBe('invalid_options')
    }
    const many = Array.from({ length: 33 }, (_, i) => `p${i}`)
    for (const bad of [
      { roster: roster('solo'), seed: 's' },
      { roster: roster(...many), seed: 's' },
    ]) {
      const out = createMatch(hotPotato, bad)
      expect(isRuleError(out) && out.error.code).toBe('invalid_setup')
    }
  })

  it('lights the fuse when everyone is ready, with a seeded holder and fuse length', () => {
    const options = { minFuse: 4, maxFuse: 9 }
    let match = mustCreate(hotPotato, { roster: roster('a', 'b', 'c'), seed: 'light', options })
    const r1 = ok(match, ready('b', 1))
    expect(r1.event).toEqual({
      kind: 'ready',
      player: 'b',
      tick: 1,
      holder: null,
      explodesAt: null,
    })
    match = ok(r1.match, ready('a', 2)).match
    const rng = createRng(seedRng('light'))
    const want = draw(rng, ['a', 'b', 'c'], 3, 4, 9)
    const lit = ok(match, ready('c', 3))
    expect(lit.event).toEqual({ kind: 'ready', player: 'c', tick: 3, ...want })
    expect(lit.match.game).toMatchObject({ ...want, round: 1 })
    expect(lit.match.rng).toEqual(rng.state())
    expect(refusedWith(lit.match, ready('a', 3))).toBe('already_started')
  })

  it('burns down silently, then knocks the holder out on the first tick at the deadline', () => {
    const seed = 'burn'
    let match = allReady(
      mustCreate(hotPotato, { roster: roster('a', 'b', 'c'), seed, options: { maxFuse: 20 } }),
    )
    const rng = createRng(seedRng(seed))
    const first = draw(rng, ['a', 'b', 'c'], 0, 15, 20)
    expect(match.game).toMatchObject(first)
    for (let t = 0; t < first.explodesAt; t++) quietTick(match, t)
    // A late alarm skips ticks: the deadline still holds, the tick number is what counts.
    const late = first.explodesAt + 3
    const out = ok(match, tick(late))
    const live = ['a', 'b', 'c'].filter((p) => p !== first.holder)
    const second = draw(rng, live, late, 15, 20)
    expect(out.event).toEqual({
      kind: 'exploded',
      player: first.holder,
      tick: late,
      ...second,
      winner: null,
      ended: null,
    })
    match = out.match
    expect(match.game.round).toBe(2)
    expect(match.game.outOrder).toEqual([first.holder])
    expect(match.tick).toBe(late)
  })

  it('passes the potato without resetting the fuse, and refuses bad passes', () => {
    let match = allReady(mustCreate(hotPotato, { roster: roster('a', 'b', 'c'), seed: 'pass' }), 10)
    const holder = match.game.holder!
    const others = ['a', 'b', 'c'].filter((p) => p !== holder)
    const deadline = match.game.explodesAt!
    expect(refusedWith(match, pass(others[0]!, others[1]!, 11))).toBe('not_holder')
    expect(refusedWith(match, pass(holder, holder, 11))).toBe('invalid_target')
    expect(refusedWith(match, pass(holder, 'zed', 11))).toBe('invalid_target')
    expect(refusedWith(match, pass('zed', 'a', 11))).toBe('not_a_player')
    expect(refusedWith(match, pass(holder, others[0]!, deadline))).toBe('too_late')
    const p1 = ok(match, pass(holder, others[0]!, 11))
    expect(p1.event).toEqual({
      kind: 'pass',
      from: holder,
      to: others[0],
      tick: 11,
      explodesAt: deadline,
    })
    match = p1.match
    expect(match.game).toMatchObject({ holder: others[0], explodesAt: deadline, passes: 1 })
    match = ok(match, pass(others[0]!, holder, deadline - 1)).match
    expect(match.game.holder).toBe(holder)
    // The potato explodes in the hands of whoever holds it at the deadline.
    const boom = ok(match, tick(deadline))
    expect(boom.event).toMatchObject({ kind: 'exploded', player: holder })
    match = boom.match
    // Out players can neither act nor receive the potato.
    const next = match.game.holder!
    expect(refusedWith(match, pass(holder, next, deadline))).toBe('out')
    expect(refusedWith(match, pass(next, holder, deadline))).toBe('invalid_target')
    expect(refusedWith(match, ready(holder, deadline))).toBe('out')
  })

  it('refuses malformed actions and passing before the start', () => {
    const match = mustCreate(hotPotato, { roster: roster('a', 'b'), seed: 's' })
    expect(refusedWith(match, pass('a', 'b'))).toBe('not_started')
    const payloads: unknown[] = [
      null,
      'ready',
      42,
      [],
      {},
      { action: 'throw' },
      { action: 'READY' },
      { type: 'chat', action: 'ready' },
      { action: 'ready', to: 'b' },
      { action: 'ready', extra: 1 },
      { action: 'pass' },
      { action: 'pass', to: '' },
      { action: 'pass', to: 7 },
      { action: 'pass', to: 'x'.repeat(129) },
      { action: 'pass', to: 'b', fuse: 99 },
      new Date(),
    ]
    for (const action of payloads) {
      expect(refusedWith(match, { kind: 'action', player: 'a', tick: 0, action })).toBe(
        'invalid_action',
      )
    }
    const once = ok(match, ready('a')).match
    expect(refusedWith(once, ready('a'))).toBe('already_ready')
    // Parsing is idempotent: replay parses logged actions again.
    for (const raw of [{ action: 'ready' }, { type: 'action', action: 'pass', to: 'b' }]) {
      const parsed = hotPotato.parseAction(raw)
      expect(hotPotato.parseAction(parsed)).toEqual(parsed)
    }
  })

  it('lights the fuse at startAfter even if someone is not ready', () => {
    const seed = 'late'
    let match = allConnected(
      mustCreate(hotPotato, {
        roster: roster('a', 'b'),
        seed,
        options: { startAfter: 20, minFuse: 3, maxFuse: 3 },
      }),
    )
    match = ok(match, ready('a', 5)).match
    quietTick(match, 19)
    const rng = createRng(seedRng(seed))
    const want = draw(rng, ['a', 'b'], 21, 3, 3)
    const lit = ok(match, tick(21))
    expect(lit.event).toEqual({ kind: 'lit', tick: 21, ...want })
    // Two players: the first explosion ends the game, won by the other one.
    const end = ok(lit.match, tick(24))
    const winner = want.holder === 'a' ? 'b' : 'a'
    expect(end.event).toEqual({
      kind: 'exploded',
      player: want.holder,
      tick: 24,
      holder: null,
      explodesAt: null,
      winner,
      ended: 'finished',
    })
    expect(hotPotato.result(end.match.game)).toEqual({
      reason: 'finished',
      winner,
      placements: [
        { playerId: winner, team: winner === 'a' ? 0 : 1, place: 1 },
        { playerId: want.holder, team: want.holder === 'a' ? 0 : 1, place: 2 },
      ],
    })
    for (const input of [
      tick(30),
      ready('a', 30),
      pass(winner, want.holder, 30),
      absent('a', 30),
    ]) {
      expect(refusedWith(end.match, input)).toBe('game_over')
    }
    const direct = hotPotato.onTick!(end.match.game, { tick: 99, rng: createRng(end.match.rng) })
    expect(direct.state).toBe(end.match.game)
    expect(direct.event).toBeUndefined()
  })

  it('counts startAfter from the moment everyone still in has connected: nobody loses to a fuse lit while they were still loading, and a no-show leaving starts the count', () => {
    const setup = {
      roster: roster('a', 'b', 'c'),
      seed: 'arrivals',
      options: { startAfter: 20, minFuse: 3, maxFuse: 3 },
    }
    let match = mustCreate(hotPotato, setup)
    const a = ok(match, connect('a', 0))
    expect(a.event).toEqual({
      kind: 'joined',
      player: 'a',
      tick: 0,
      awaiting: ['b', 'c'],
      startAt: null,
    })
    match = ok(a.match, connect('b', 1)).match
    match = ok(match, ready('a', 2)).match
    // c is still loading: long past startAfter, nothing is lit.
    quietTick(match, 100)
    expect(refusedWith(match, connect('a', 100))).toBe('already_joined')
    // A late arrival: the count starts at its connection.
    const late = ok(match, connect('c', 300))
    expect(late.event).toEqual({
      kind: 'joined',
      player: 'c',
      tick: 300,
      awaiting: [],
      startAt: 320,
    })
    quietTick(late.match, 319)
    expect(ok(late.match, tick(320)).event).toMatchObject({ kind: 'lit', tick: 320 })
    // A no-show instead: it forfeits when the join grace ends, and the count starts then, among
    // the players who came.
    const gone = ok(match, absent('c', 450))
    expect(gone.event).toMatchObject({ kind: 'forfeit', player: 'c', winner: null })
    expect(gone.match.game).toMatchObject({ awaiting: [], startAt: 470 })
    quietTick(gone.match, 469)
    const lit = ok(gone.match, tick(470))
    expect(lit.event).toMatchObject({ kind: 'lit', tick: 470 })
    expect(['a', 'b']).toContain(lit.match.game.holder)
    // Everyone who came is ready before then: lit at once, as ever.
    expect(ok(gone.match, ready('b', 455)).event).toMatchObject({ kind: 'ready', player: 'b' })
    expect(ok(gone.match, ready('b', 455)).match.game.explodesAt).toBe(458)
  })

  it('ends abandoned at startAfter when nobody is ready, so nobody wins a match nobody played', () => {
    const setup = { roster: roster('a', 'b', 'c'), seed: 'idle', options: { startAfter: 20 } }
    let match = allConnected(mustCreate(hotPotato, setup))
    // A player who went away before the start is not "still in": the others decide.
    match = ok(match, absent('c', 4)).match
    quietTick(match, 19)
    const end = ok(match, tick(20))
    expect(end.event).toEqual({
      kind: 'abandoned',
      players: ['a', 'b'],
      tick: 20,
      holder: null,
      explodesAt: null,
      ended: 'abandoned',
    })
    expect(hotPotato.result(end.match.game)).toMatchObject({ reason: 'abandoned', winner: null })
    // The two abandoned together share a place (a draw for the ratings), above c who left first.
    expect(
      Object.fromEntries(
        hotPotato.result(end.match.game)!.placements.map((x) => [x.playerId, x.place]),
      ),
    ).toEqual({ a: 1, b: 1, c: 3 })
    expect(refusedWith(end.match, ready('a', 21))).toBe('game_over')

    // A match created before the rule has no `nobodyReadyEnds` in its state: it still lights,
    // so the log it wrote replays to the same game.
    const {
      nobodyReadyEnds: _,
      awaiting: _a,
      startAt: _s,
      ...before
    } = mustCreate(hotPotato, setup).game
    const older: Match = { ...mustCreate(hotPotato, setup), game: before }
    const lit = ok(older, tick(20))
    expect(lit.event).toMatchObject({ kind: 'lit', tick: 20 })
    expect(['a', 'b', 'c']).toContain(lit.match.game.holder)
  })

  it('forfeits absent players: a new round if they held it, the last one in wins by forfeit', () => {
    let match = allReady(mustCreate(hotPotato, { roster: roster('a', 'b', 'c'), seed: 'gone' }))
    const holder = match.game.holder!
    const deadline = match.game.explodesAt!
    const bystander = ['a', 'b', 'c'].find((p) => p !== holder)!
    // A bystander leaving changes neither the holder nor the fuse.
    const f1 = ok(match, absent(bystander, 2))
    expect(f1.event).toEqual({
      kind: 'forfeit',
      player: bystander,
      tick: 2,
      holder,
      explodesAt: deadline,
      winner: null,
      ended: null,
    })
    match = f1.match
    expect(refusedWith(match, absent(bystander, 2))).toBe('already_absent')
    expect(refusedWith(match, absent('nobody', 2))).toBe('not_a_player')
    expect(refusedWith(match, pass(holder, bystander, 2))).toBe('invalid_target')
    // The holder leaving leaves one player: they win by forfeit.
    const last = ['a', 'b', 'c'].find((p) => p !== holder && p !== bystander)!
    const f2 = ok(match, absent(holder, 3))
    expect(f2.event).toEqual({
      kind: 'forfeit',
      player: holder,
      tick: 3,
      holder: null,
      explodesAt: null,
      winner: last,
      ended: 'forfeit',
    })
    const result = hotPotato.result(f2.match.game)
    expect(result?.reason).toBe('forfeit')
    expect(result?.placements.map((p) => [p.playerId, p.place])).toEqual([
      [last, 1],
      [holder, 2],
      [bystander, 3],
    ])
  })

  it('in teams, a team whose opponents are all out has won at once: a no-show team cannot make the game abandoned, nor can the winners leaving', () => {
    const teams = [
      { playerId: 'a1', team: 0 },
      { playerId: 'b1', team: 1 },
      { playerId: 'a2', team: 0 },
      { playerId: 'b2', team: 1 },
    ]
    let match = mustCreate(hotPotato, { roster: teams, seed: 'teams' })
    // Team 0 connects and waits; team 1 never comes, and its graces end.
    match = ok(match, connect('a1', 1)).match
    match = ok(match, connect('a2', 1)).match
    const f1 = ok(match, absent('b1', 600))
    expect(f1.event).toMatchObject({ kind: 'forfeit', player: 'b1', ended: null, winner: null })
    const f2 = ok(f1.match, absent('b2', 600))
    expect(f2.event).toEqual({
      kind: 'forfeit',
      player: 'b2',
      tick: 600,
      holder: null,
      explodesAt: null,
      winner: 'a1',
      ended: 'forfeit',
    })
    const result = hotPotato.result(f2.match.game)!
    expect(result.reason).toBe('forfeit')
    // The winner, then their teammate (never knocked out), then the leavers (out together,
    // the later listed first).
    expect(result.placements.map((p) => [p.playerId, p.place])).toEqual([
      ['a1', 1],
      ['a2', 2],
      ['b2', 3],
      ['b1', 3],
    ])
    // Over: nobody readying at startAfter, or the winners leaving, changes nothing.
    expect(refusedWith(f2.match, absent('a1', 700))).toBe('game_over')
    expect(
      hotPotato.onTick!(f2.match.game, { tick: 10_000, rng: createRng(f2.match.rng) }),
    ).toEqual({ state: f2.match.game })
    // A game created before the rule (no lastTeamWins in its state) plays on, as its log did.
    const { lastTeamWins: _, ...old } = mustCreate(hotPotato, { roster: teams, seed: 'teams' }).game
    let before: Match = { ...mustCreate(hotPotato, { roster: teams, seed: 'teams' }), game: old }
    before = ok(before, absent('b1', 600)).match
    expect(ok(before, absent('b2', 600)).event).toMatchObject({ ended: null, winner: null })
  })

  it('starts a new round when the holder leaves, and refuses the absence of a player already out', () => {
    const seed = 'swap'
    let match = allReady(
      mustCreate(hotPotato, {
        roster: roster('a', 'b', 'c', 'd'),
        seed,
        options: { minFuse: 5, maxFuse: 5 },
      }),
    )
    const rng = createRng(seedRng(seed))
    const first = draw(rng, ['a', 'b', 'c', 'd'], 0, 5, 5)
    match = ok(match, tick(5)).match // first.holder explodes
    const second = draw(
      rng,
      ['a', 'b', 'c', 'd'].filter((p) => p !== first.holder),
      5,
      5,
      5,
    )
    expect(match.game).toMatchObject(second)
    expect(refusedWith(match, absent(first.holder, 6))).toBe('already_out')
    const live = ['a', 'b', 'c', 'd'].filter((p) => p !== first.holder && p !== second.holder)
    const third = draw(rng, live, 7, 5, 5)
    const f = ok(match, absent(second.holder, 7))
    expect(f.event).toEqual({
      kind: 'forfeit',
      player: second.holder,
      tick: 7,
      ...third,
      winner: null,
      ended: null,
    })
    expect(f.match.game.round).toBe(3)
  })

  it('lights the fuse when a no-show is dropped and everyone left is ready', () => {
    let match = mustCreate(hotPotato, { roster: roster('a', 'b', 'c'), seed: 'noshow' })
    match = ok(match, ready('a', 1)).match
    match = ok(match, ready('b', 2)).match
    const f = ok(match, absent('c', 40))
    expect(f.event).toMatchObject({ kind: 'forfeit', player: 'c', tick: 40, winner: null })
    expect(['a', 'b']).toContain(f.match.game.holder)
    expect(f.match.game.explodesAt).toBeGreaterThanOrEqual(40 + HOT_POTATO_DEFAULTS.minFuse)
    // Waiting without everyone ready: a leaver just leaves.
    const waiting = mustCreate(hotPotato, { roster: roster('a', 'b', 'c'), seed: 'noshow' })
    const g = ok(waiting, absent('c', 1))
    expect(g.match.game).toMatchObject({ holder: null, explodesAt: null })
  })

  it('ends abandoned, with no winner, when everyone still in goes away together', () => {
    const setup = { roster: roster('a', 'b', 'c'), seed: 'potato' }
    const inputs: Input[] = [
      ready('a'),
      ready('b'),
      ready('c'),
      absent('c', 1),
      { kind: 'abandon', tick: 2 },
    ]
    const live = runLive(hotPotato, mustCreate(hotPotato, setup), inputs)
    expect(live.records.at(-1)!.event).toEqual({
      kind: 'abandoned',
      players: ['a', 'b'],
      tick: 2,
      holder: null,
      explodesAt: null,
      ended: 'abandoned',
    })
    expect(hotPotato.result(live.match.game)).toMatchObject({ reason: 'abandoned', winner: null })
    expect(
      Object.fromEntries(
        hotPotato.result(live.match.game)!.placements.map((x) => [x.playerId, x.place]),
      ),
    ).toEqual({ a: 1, b: 1, c: 3 })
    expect(replay(hotPotato, setup, live.records)).toEqual(live.match)
    expect(refusedWith(live.match, tick(3))).toBe('game_over')
  })

  it('places the winner, then the exploded (later is better), then the leavers (later is better)', () => {
    const p = (playerId: string, out: 'exploded' | 'absent' | null) => ({
      playerId,
      team: 0,
      ready: true,
      out,
    })
    const state: PotatoState = {
      ...HOT_POTATO_DEFAULTS,
      players: [
        p('a', 'exploded'),
        p('b', 'absent'),
        p('c', null),
        p('d', 'exploded'),
        p('e', 'absent'),
        p('f', 'exploded'),
      ],
      holder: null,
      explodesAt: null,
      round: 4,
      passes: 9,
      outOrder: ['d', 'b', 'a', 'e', 'f'],
      winner: 'c',
      ended: 'finished',
    }
    expect(hotPotato.result(state)?.placements.map((x) => [x.playerId, x.place])).toEqual([
      ['c', 1],
      ['f', 2],
      ['a', 3],
      ['d', 4],
      ['e', 5],
      ['b', 6],
    ])
    // Two whose graces ended at one tick share a place (a draw for the ratings); a match from
    // before outTicks keeps the order they went out in.
    const together: PotatoState = {
      ...state,
      outOrder: ['d', 'a', 'b', 'e', 'f'],
      outTicks: { d: 40, a: 90, b: 120, e: 120, f: 150 },
    }
    expect(hotPotato.result(together)?.placements.map((x) => [x.playerId, x.place])).toEqual([
      ['c', 1],
      ['f', 2],
      ['a', 3],
      ['d', 4],
      ['e', 5],
      ['b', 5],
    ])
    const older = hotPotato.result({ ...together, outTicks: undefined })
    expect(older?.placements.map((x) => x.place)).toEqual([1, 2, 3, 4, 5, 6])
  })
})

// ---------------------------------------------------------------------------------------------
// Model-based property test: an independent, imperative simulation predicts every outcome
// (accepted or which refusal, each event, silent ticks) for random inputs over random time.

type Op =
  | { kind: 'ready'; who: number; dt: number }
  /** `who` -1: whoever the model says holds the potato. `to` may be a stranger or out. */
  | { kind: 'pass'; who: number; to: number; dt: number }
  | { kind: 'tick'; dt: number }
  | { kind: 'absent'; who: number; dt: number }
  | { kind: 'junk'; who: number; payload: number; dt: number }

const JUNK: unknown[] = [
  null,
  'pass',
  { action: 'pass' },
  { action: 'hold' },
  { type: 'x', action: 'ready' },
  { action: 'ready', to: 'p0' },
]

interface Expected {
  code?: string
  /** undefined with no code: a tick that changes nothing. */
  event?: PotatoEvent
}

interface Options {
  minFuse: number
  maxFuse: number
  startAfter: number
}

function simulate(
  ids: string[],
  seed: string,
  opts: Options,
  ops: Op[],
): { inputs: Input[]; expected: Expected[] } {
  const rng = createRng(seedRng(seed))
  const isReady = ids.map(() => false)
  const out: (null | 'exploded' | 'absent')[] = ids.map(() => null)
  let holder: number | null = null
  let explodesAt: number | null = null
  let over = false
  let now = 0
  const liveIdx = () => ids.map((_, i) => i).filter((i) => out[i] === null)
  const light = (t: number) => {
    const live = liveIdx()
    holder = live[rng.int(0, live.length - 1)]!
    explodesAt = t + rng.int(opts.minFuse, opts.maxFuse)
  }
  const name = (i: number | null) => (i === null ? null : (ids[i] ?? 'stranger'))
  /** Player `who` goes out; returns the event. */
  const knock = (who: number, cause: 'exploded' | 'absent', t: number): PotatoEvent => {
    out[who] = cause
    const live = liveIdx()
    let winner: string | null = null
    let ended: PotatoState['ended'] = null
    if (live.length === 1) {
      over = true
      winner = name(live[0]!)
      ended = cause === 'exploded' ? 'finished' : 'forfeit'
      holder = null
      explodesAt = null
    } else if (explodesAt === null) {
      if (live.every((i) => isReady[i])) light(t)
    } else if (holder === who) {
      light(t)
    }
    return {
      kind: cause === 'exploded' ? 'exploded' : 'forfeit',
      player: name(who)!,
      tick: t,
      holder: name(holder),
      explodesAt,
      winner,
      ended,
    }
  }
  const inputs: Input[] = []
  // Everyone connects at tick 0, so `startAfter` counts from the start.
  const joins = ids.map((id, i): Expected => {
    inputs.push(connect(id, 0))
    const awaiting = ids.slice(i + 1)
    const startAt = awaiting.length === 0 ? opts.startAfter : null
    return { event: { kind: 'joined', player: id, tick: 0, awaiting, startAt } }
  })
  const played = ops.map((op): Expected => {
    now += op.dt
    const t = now
    const who =
      op.kind === 'tick' ? -2 : op.kind === 'pass' && op.who === -1 ? (holder ?? 0) : op.who
    const player = who >= 0 && who < ids.length ? ids[who]! : 'stranger'
    switch (op.kind) {
      case 'tick':
        inputs.push(tick(t))
        break
      case 'ready':
        inputs.push(ready(player, t))
        break
      case 'pass':
        inputs.push(pass(player, op.to < ids.length ? ids[op.to]! : 'stranger', t))
        break
      case 'absent':
        inputs.push(absent(player, t))
        break
      case 'junk':
        inputs.push({ kind: 'action', player, tick: t, action: JUNK[op.payload] })
    }
    if (over) return { code: 'game_over' }
    if (op.kind === 'tick') {
      if (explodesAt === null) {
        if (t < opts.startAfter) return {}
        const live = liveIdx()
        if (!live.some((i) => isReady[i])) {
          over = true
          for (const i of live) out[i] = 'absent'
          return {
            event: {
              kind: 'abandoned',
              players: live.map((i) => ids[i]!),
              tick: t,
              holder: null,
              explodesAt: null,
              ended: 'abandoned',
            },
          }
        }
        light(t)
        return { event: { kind: 'lit', tick: t, holder: name(holder)!, explodesAt: explodesAt! } }
      }
      if (t < explodesAt) return {}
      return { event: knock(holder!, 'exploded', t) }
    }
    if (op.kind === 'junk') return { code: 'invalid_action' }
    const stranger = who < 0 || who >= ids.length
    if (op.kind === 'absent') {
      if (stranger) return { code: 'not_a_player' }
      if (out[who] === 'absent') return { code: 'already_absent' }
      if (out[who] !== null) return { code: 'already_out' }
      return { event: knock(who, 'absent', t) }
    }
    if (stranger) return { code: 'not_a_player' }
    if (out[who] !== null) return { code: 'out' }
    if (op.kind === 'ready') {
      if (explodesAt !== null) return { code: 'already_started' }
      if (isReady[who]) return { code: 'already_ready' }
      isReady[who] = true
      if (liveIdx().every((i) => isReady[i])) light(t)
      return {
        event: { kind: 'ready', player, tick: t, holder: name(holder), explodesAt },
      }
    }
    if (explodesAt === null) return { code: 'not_started' }
    if (holder !== who) return { code: 'not_holder' }
    if (t >= explodesAt) return { code: 'too_late' }
    if (op.to >= ids.length || op.to === who || out[op.to] !== null) {
      return { code: 'invalid_target' }
    }
    holder = op.to
    return { event: { kind: 'pass', from: player, to: ids[op.to]!, tick: t, explodesAt } }
  })
  return { inputs, expected: [...joins, ...played] }
}

const gameArb = fc
  .record({
    players: fc.integer({ min: 2, max: 5 }),
    seed: fc.string({ minLength: 1, maxLength: 20 }),
    minFuse: fc.integer({ min: 1, max: 8 }),
    spread: fc.integer({ min: 0, max: 8 }),
    startAfter: fc.integer({ min: 1, max: 30 }),
  })
  .chain(({ players, seed, minFuse, spread, startAfter }) => {
    const dt = fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, fc.integer({ min: 1, max: 3 }))
    const who = fc.nat(players) // `players` itself is a stranger
    return fc.record({
      ids: fc.constant(Array.from({ length: players }, (_, i) => `p${i}`)),
      seed: fc.constant(seed),
      opts: fc.constant({ minFuse, maxFuse: minFuse + spread, startAfter }),
      ops: fc.array(
        fc.oneof(
          { weight: 4, arbitrary: fc.record({ kind: fc.constant('ready' as const), who, dt }) },
          {
            weight: 8,
            arbitrary: fc.record({
              kind: fc.constant('pass' as const),
              who: fc.oneof({ weight: 4, arbitrary: fc.constant(-1) }, who),
              to: who,
              dt,
            }),
          },
          { weight: 6, arbitrary: fc.record({ kind: fc.constant('tick' as const), dt }) },
          { weight: 1, arbitrary: fc.record({ kind: fc.constant('absent' as const), who, dt }) },
          {
            weight: 1,
            arbitrary: fc.record({
              kind: fc.constant('junk' as const),
              who,
              payload: fc.nat(JUNK.length - 1),
              dt,
            }),
          },
        ),
        { maxLength: 150, size: 'max' },
      ),
    })
  })

describe('hot-potato properties', () => {
  it('agrees with an independent simulation on every input, silent ticks included', () => {
    fc.assert(
      fc.property(gameArb, ({ ids, seed, opts, ops }) => {
        const start = mustCreate(hotPotato, { roster: roster(...ids), seed, options: opts })
        const { inputs, expected } = simulate(ids, seed, opts, ops)
        const live = runLive(hotPotato, start, inputs)
        live.results.forEach((got, i) => {
          const want = expected[i]!
          if (want.code !== undefined) expect(isRuleError(got) && got.error.code).toBe(want.code)
          else if (want.event === undefined) expect(got).toBeNull()
          else expect((got as LogRecord<PotatoEvent>).event).toEqual(want.event)
        })
      }),
      { numRuns: 300 },
    )
  })

  it('keeps its invariants: a live holder, fuses within bounds, one winner, nothing after the end', () => {
    fc.assert(
      fc.property(gameArb, ({ ids, seed, opts, ops }) => {
        let match = mustCreate(hotPotato, { roster: roster(...ids), seed, options: opts })
        for (const input of simulate(ids, seed, opts, ops).inputs) {
          const before = match.game
          const out = step(hotPotato, match, input)
          if (before.ended !== null) {
            expect(isRuleError(out) && out.error.code).toBe('game_over')
            continue
          }
          if (isRuleError(out)) continue
          const after = out.match.game
          // Nobody comes back, and the order of leaving only grows.
          after.players.forEach((p, i) => {
            if (before.players[i]?.out) expect(p.out).toBe(before.players[i]?.out)
          })
          expect(after.outOrder.slice(0, before.outOrder.length)).toEqual(before.outOrder)
          if (after.round > before.round) {
            // A new fuse: within bounds from the input's tick.
            const fuse = after.explodesAt! - input.tick
            expect(fuse >= opts.minFuse && fuse <= opts.maxFuse).toBe(true)
          } else if (before.explodesAt !== null && after.explodesAt !== null) {
            expect(after.explodesAt).toBe(before.explodesAt) // passing never resets the fuse
          }
          const result = hotPotato.result(after)
          if (result === null) {
            const live = after.players.filter((p) => p.out === null)
            expect(live.length).toBeGreaterThanOrEqual(2)
            if (after.holder !== null) expect(live.map((p) => p.playerId)).toContain(after.holder)
            expect(after.holder === null).toBe(after.explodesAt === null)
          } else {
            // Places go 1, 2, 2, 4…: shared only by players out for one cause at one tick.
            result.placements.forEach((p, k) => {
              const prev = result.placements[k - 1]
              const outOf = (id: string) => after.players.find((x) => x.playerId === id)!.out
              const tied =
                prev !== undefined &&
                outOf(prev.playerId) !== null &&
                outOf(prev.playerId) === outOf(p.playerId) &&
                after.outTicks![p.playerId] !== undefined &&
                after.outTicks![prev.playerId] === after.outTicks![p.playerId]
              expect(p.place).toBe(tied ? prev.place : k + 1)
            })
            expect(new Set(result.placements.map((p) => p.playerId)).size).toBe(ids.length)
            const stillIn = after.players.filter((p) => p.out === null).map((p) => p.playerId)
            if (result.reason === 'abandoned') {
              // Only ever when nobody was ready at startAfter: nobody wins, nobody is left in.
              expect(result.winner).toBeNull()
              expect(before.players.some((p) => p.out === null && p.ready)).toBe(false)
              expect(stillIn).toEqual([])
            } else {
              expect(result.placements[0]?.playerId).toBe(result.winner)
              expect(stillIn).toEqual([result.winner])
            }
          }
          match = out.match
        }
      }),
      { numRuns: 300 },
    )
  })

  it('replays its log into the live state, and the same seed gives the same game', () => {
    fc.assert(
      fc.property(gameArb, ({ ids, seed, opts, ops }) => {
        const setup = { roster: roster(...ids), seed, options: opts }
        const { inputs } = simulate(ids, seed, opts, ops)
        expectDeterministic(hotPotato, setup, inputs)
      }),
      { numRuns: 200 },
    )
  })

  it('plays every game to an end when the clock runs long enough', () => {
    fc.assert(
      fc.property(gameArb, ({ ids, seed, opts, ops }) => {
        const setup = { roster: roster(...ids), seed, options: opts }
        const { inputs } = simulate(ids, seed, opts, ops)
        let { match } = runLive(hotPotato, mustCreate(hotPotato, setup), inputs)
        // Nobody does anything any more: the fuse alone finishes the game.
        const bound = match.tick + opts.startAfter + ids.length * opts.maxFuse + 1
        for (let t = match.tick; t <= bound && hotPotato.result(match.game) === null; t++) {
          const out = step(hotPotato, match, tick(t))
          if (isRuleError(out)) throw new Error(out.error.code)
          match = out.match
        }
        expect(hotPotato.result(match.game)).not.toBeNull()
      }),
      { numRuns: 200 },
    )
  })

  it('names the next tick that can matter (quietUntil): ticks before it change nothing, the tick at it does, and a game woken only then ends as one fed every tick', () => {
    fc.assert(
      fc.property(gameArb, ({ ids, seed, opts, ops }) => {
        const setup = { roster: roster(...ids), seed, options: opts }
        const { inputs } = simulate(ids, seed, opts, ops)
        const { match: from } = runLive(hotPotato, mustCreate(hotPotato, setup), inputs)
        const bound = from.tick + opts.startAfter + ids.length * opts.maxFuse + 1
        let everyTick = from
        for (let t = from.tick; t <= bound && hotPotato.result(everyTick.game) === null; t++) {
          const out = step(hotPotato, everyTick, tick(t))
          if (isRuleError(out)) throw new Error(out.error.code)
          everyTick = out.match
        }
        let woken = from
        for (let wakes = 0; wakes <= ids.length + 1; wakes++) {
          const due = hotPotato.quietUntil!(woken.game)
          if (due === null) break
          for (let t = woken.tick; t < due; t++) {
            const silent = step(hotPotato, woken, tick(t))
            expect(!isRuleError(silent) && silent.record).toBeNull()
          }
          const out = step(hotPotato, woken, tick(Math.max(due, woken.tick)))
          if (isRuleError(out)) throw new Error(out.error.code)
          expect(out.record).not.toBeNull()
          woken = out.match
        }
        expect(hotPotato.quietUntil!(woken.game)).toBeNull()
        expect(woken).toEqual(everyTick)
      }),
      { numRuns: 200 },
    )
  })
})

import { describe, expect, it } from 'vitest'
import type { Input, MatchState } from '../../../workers/core/rules/index.ts'
import { createMatch, isRuleError, step } from '../../../workers/core/rules/index.ts'
import type { RelayState } from '../../../workers/core/rules/relay.ts'
import { RELAY_LIMITS, RELAY_MAX_MESSAGES, relay } from '../../../workers/core/rules/relay.ts'
import { accepted, mustCreate, refusalCode } from './helpers.ts'

type Match = MatchState<RelayState>
const setup = {
  roster: [
    { playerId: 'a', team: 0 },
    { playerId: 'b', team: 1 },
  ],
  seed: 'relay',
}
const say = (player: string, data: unknown, tick = 0): Input => ({
  kind: 'action',
  player,
  tick,
  action: { type: 'action', action: 'message', data },
})
const absent = (player: string): Input => ({ kind: 'absent', player, tick: 0 })
const back = (player: string): Input => ({ kind: 'return', player, tick: 0 })

const ok = (match: Match, input: Input) => accepted(relay, match, input)
const refusedWith = (match: Match, input: Input) => refusalCode(relay, match, input)

describe('relay', () => {
  it('relays any JSON message to everyone with the sender stamped by the server', () => {
    let match = mustCreate(relay, setup)
    for (const data of [
      { x: 1, y: [2, 3] },
      'hi',
      0,
      null,
      true,
      [],
      { nested: { deep: ['ok'] } },
    ]) {
      const out = ok(match, say('b', data))
      expect(out.event).toEqual({ kind: 'message', from: 'b', data })
      match = out.match
    }
    expect(match.game.messages).toBe(7)
    expect(relay.result(match.game)).toBeNull()
    // A client cannot pretend to be someone else: `from` is not a field it may send.
    const spoof = {
      kind: 'action',
      player: 'b',
      tick: 0,
      action: { action: 'message', data: 1, from: 'a' },
    } as const
    expect(refusedWith(match, spoof)).toBe('invalid_action')
  })

  it('refuses malformed, unknown and oversize actions without any change', () => {
    const match = mustCreate(relay, setup)
    const bad: [unknown, string][] = [
      [null, 'invalid_action'],
      ['message', 'invalid_action'],
      [{ action: 'message' }, 'invalid_action'],
      [{ action: 'shout', data: 1 }, 'invalid_action'],
      [{ type: 'join', action: 'message', data: 1 }, 'invalid_action'],
      [{ action: 'message', data: undefined }, 'invalid_action'],
      [{ action: 'message', data: Number.NaN }, 'invalid_action'],
      [{ action: 'message', data: { when: new Date(0) } }, 'invalid_action'],
      [
        { action: 'message', data: JSON.parse('['.repeat(17) + ']'.repeat(17)) as unknown },
        'invalid_action',
      ],
      [{ action: 'message', data: 'x'.repeat(4095) }, 'too_large'],
      [{ action: 'message', data: Array.from({ length: 2100 }, () => 1) }, 'too_large'],
    ]
    for (const [action, code] of bad) {
      expect(refusedWith(match, { kind: 'action', player: 'a', tick: 0, action })).toBe(code)
    }
    expect(refusedWith(match, say('stranger', 1))).toBe('not_a_player')
    // Just inside the bounds.
    ok(match, say('a', 'x'.repeat(4094)))
    ok(match, say('a', JSON.parse('['.repeat(16) + ']'.repeat(16)) as unknown))
  })

  it('takes only maxMessages as an option, from 1 to 500,000', () => {
    expect(mustCreate(relay, setup).game.maxMessages).toBe(500_000)
    expect(mustCreate(relay, { ...setup, options: { maxMessages: 1 } }).game.maxMessages).toBe(1)
    expect(mustCreate(relay, { ...setup, options: null }).game.maxMessages).toBe(500_000)
    for (const options of [
      { anything: true },
      { maxMessages: 0 },
      { maxMessages: 500_001 },
      { maxMessages: 2.5 },
      { maxMessages: '10' },
      { maxMessages: Number.POSITIVE_INFINITY },
      [],
      7,
    ]) {
      const out = createMatch(relay, { ...setup, options })
      expect(isRuleError(out) && out.error.code, JSON.stringify(options)).toBe('invalid_options')
    }
  })

  it('refuses messages past maxMessages, and still ends when everyone leaves', () => {
    let match = mustCreate(relay, { ...setup, options: { maxMessages: 2 } })
    match = ok(match, say('a', 1)).match
    match = ok(match, say('b', 2)).match
    expect(refusedWith(match, say('a', 3))).toBe('log_full')
    expect(match.game.messages).toBe(2)
    // Presence still works, and the last absence ends it as usual.
    match = ok(match, absent('a')).match
    expect(refusedWith(match, say('a', 'back?'))).toBe('log_full')
    const last = ok(match, absent('b'))
    expect(relay.result(last.match.game)).toMatchObject({ reason: 'abandoned', winner: null })

    // A relay created before the bound has no maxMessages in its state: unbounded, as recorded.
    const { maxMessages: _, ...before } = mustCreate(relay, setup).game
    const older: Match = { ...mustCreate(relay, setup), game: { ...before, messages: 5_000_000 } }
    expect(ok(older, say('a', 'still')).match.game.messages).toBe(5_000_001)
  })

  it('counts absences and returns against maxMessages: a player leaving and coming back cannot grow a full log', () => {
    let match = mustCreate(relay, { ...setup, options: { maxMessages: 4 } })
    match = ok(match, say('a', 1)).match
    match = ok(match, absent('b')).match
    match = ok(match, back('b')).match
    expect(match.game).toMatchObject({ messages: 1, presence: 2 })
    match = ok(match, say('b', 2)).match
    // Four records: the next message, and the next return, are refused.
    expect(refusedWith(match, say('a', 3))).toBe('log_full')
    match = ok(match, absent('b')).match
    const seq = match.seq
    expect(refusedWith(match, back('b'))).toBe('log_full')
    // Refused, b stays absent: no cycle of leaving and coming back adds a record past the bound,
    // and the relay still ends when the other player leaves.
    expect(refusedWith(match, absent('b'))).toBe('already_absent')
    expect(match.seq).toBe(seq)
    const last = ok(match, absent('a'))
    expect(relay.result(last.match.game)).toMatchObject({ reason: 'abandoned', winner: null })

    // A relay from before presence was counted has no `presence`: its returns are taken, as
    // recorded, however full.
    const { presence: _, ...before } = mustCreate(relay, {
      ...setup,
      options: { maxMessages: 1 },
    }).game
    let older: Match = { ...mustCreate(relay, setup), game: { ...before, messages: 1 } }
    older = ok(older, absent('a')).match
    expect(ok(older, back('a')).match.game.players[0]!.absent).toBe(false)
  })

  it("keeps a full log inside a Durable Object's 10 GB, though every record holds its data twice", () => {
    const player = 'p'.repeat(128)
    const full = {
      ...mustCreate(relay, { roster: [{ playerId: player, team: 0 }], seed: 's' }),
      seq: RELAY_MAX_MESSAGES - 1,
    }
    const data = 'x'.repeat(RELAY_LIMITS.maxBytes - 2)
    const out = step(relay, full, { ...say(player, data), tick: Number.MAX_SAFE_INTEGER })
    if (isRuleError(out)) throw new Error(out.error.message)
    const bytes = new TextEncoder().encode(JSON.stringify(out.record)).length
    expect(bytes).toBeGreaterThan(2 * RELAY_LIMITS.maxBytes)
    // What the docs say (about 8.6 KB, about 4.3 GB), with room for SQLite's pages.
    expect(bytes).toBeLessThan(8700)
    expect(bytes * RELAY_MAX_MESSAGES).toBeLessThan(4.5e9)
  })

  it('ends, abandoned, only once every player is absent at the same time', () => {
    let match = mustCreate(relay, setup)
    match = ok(match, absent('a')).match
    expect(refusedWith(match, absent('a'))).toBe('already_absent')
    // a comes back by reconnecting; b by speaking.
    match = ok(match, back('a')).match
    expect(refusedWith(match, back('a'))).toBe('not_absent')
    match = ok(match, absent('b')).match
    match = ok(match, say('b', 'back')).match
    expect(match.game.players.map((p) => p.absent)).toEqual([false, false])
    match = ok(match, absent('a')).match
    expect(relay.result(match.game)).toBeNull()
    const last = ok(match, absent('b'))
    expect(last.event).toEqual({ kind: 'absent', player: 'b', ended: true })
    expect(relay.result(last.match.game)).toEqual({
      reason: 'abandoned',
      winner: null,
      placements: [
        { playerId: 'a', team: 0, place: 1 },
        { playerId: 'b', team: 1, place: 1 },
      ],
    })
    expect(refusedWith(last.match, say('a', 'hello?'))).toBe('game_over')
    expect(refusedWith(last.match, back('a'))).toBe('game_over')
  })

  it('has no abandon input: its last absence already ends a game without a winner', () => {
    const match = mustCreate(relay, setup)
    expect(refusedWith(match, { kind: 'abandon', tick: 0 })).toBe('invalid_input')
  })

  it('keeps relayed data private from later mutation by the caller', () => {
    const data = { n: 1 }
    const out = step(relay, mustCreate(relay, setup), say('a', data))
    if (isRuleError(out)) throw new Error('refused')
    data.n = 2
    expect(out.record?.event).toEqual({ kind: 'message', from: 'a', data: { n: 1 } })
  })
})

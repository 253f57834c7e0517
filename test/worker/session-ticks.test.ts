import { env } from 'cloudflare:workers'
import { evictDurableObject, runDurableObjectAlarm } from 'cloudflare:test'
import { describe, expect, it } from 'vitest'
import type { PotatoEvent, PotatoState } from '../../workers/core/rules/hot-potato.ts'
import {
  getRules,
  replay,
  type GameResult,
  type LogRecord,
} from '../../workers/core/rules/index.ts'
import { NeonSessionStore } from '../../workers/sessions/store.ts'
import { UNLOADABLE_RETRY_MAX_MS, UNLOADABLE_RETRY_MS } from '../../durable-objects/game-session.ts'
import { ADMIN_KEY, bearer, call } from './helpers/http.ts'
import {
  connect,
  createSession,
  type Frame,
  inObject,
  playerIds,
  renameRules,
  sessionObject,
  type TestSocket,
  upgrade,
  seenBy,
} from './helpers/session-sockets.ts'
import { until } from './helpers/sockets.ts'

/**
 * hot-potato is real-time: its fuse only burns through the session's tick loop (the object's
 * alarm, 5 ticks per second). These tests run on the real clock and real alarms, with short
 * fuses, and wait for frames with bounded deadlines.
 */

/** Upper bound for anything the tick loop must do in these games (fuses are at most 3 s). */
const TICK_WAIT_MS = 15_000

const eventOf = (f: Frame) => f.event as PotatoEvent

/** The next event of a kind on a socket. */
function nextKind(s: TestSocket, kind: PotatoEvent['kind']): Promise<Frame> {
  return s.next((f) => f.type === 'event' && eventOf(f).kind === kind, TICK_WAIT_MS)
}

/** The whole log, a page at a time, as a player reads it. */
async function readLog(sessionId: string, token: string): Promise<LogRecord<PotatoEvent>[]> {
  const records: LogRecord<PotatoEvent>[] = []
  let from: number | null = 1
  for (let pages = 0; from !== null && pages < 20; pages++) {
    const res = await call(`/v1/sessions/${sessionId}/events?from=${from}&limit=500`, bearer(token))
    expect(res.status).toBe(200)
    const page = (await res.json()) as { events: LogRecord<PotatoEvent>[]; nextFrom: number | null }
    records.push(...page.events)
    from = page.nextFrom
  }
  return records
}

/** The live match equals a replay of the log served over HTTP. */
async function expectReplayIsLive(
  sessionId: string,
  token: string,
): Promise<LogRecord<PotatoEvent>[]> {
  const records = await readLog(sessionId, token)
  const { match, setup } = await inObject(sessionId, (inst) => inst.current()!)
  const replayed = replay(
    getRules('hot-potato')!,
    { roster: setup.roster, seed: setup.seed, options: setup.options },
    records,
  )
  expect(replayed).toEqual(match)
  return records
}

describe('a real-time game on the tick loop', () => {
  it('lights, burns and ends by ticks alone; the log replays to the live state; then ticking stops', async () => {
    const players = playerIds(2)
    const { sessionId, tokens } = await createSession({
      rules: 'hot-potato',
      roster: players.map((playerId) => ({ playerId })),
      options: { startAfter: 3, minFuse: 3, maxFuse: 6 },
    })
    const [a, b] = await Promise.all(players.map((p) => connect(sessionId, tokens[p]!)))
    const welcome = await a!.nextOf('welcome')
    expect(welcome.state as PotatoState).toMatchObject({ holder: null, explodesAt: null })
    await b!.nextOf('welcome')

    // One player is ready, the other never says so: startAfter after both connected, the alarm's
    // ticks light the fuse all the same, then the potato explodes.
    a!.send({ type: 'action', action: 'ready' })
    expect(eventOf(await nextKind(b!, 'ready'))).toMatchObject({ player: players[0], holder: null })
    const lit = eventOf(await nextKind(a!, 'lit'))
    const joins = a!.frames
      .filter((f) => f.type === 'event' && eventOf(f).kind === 'joined')
      .map((f) => eventOf(f) as Extract<PotatoEvent, { kind: 'joined' }>)
    const startAt = joins.find((j) => j.startAt !== null)?.startAt
    expect(startAt).toBeGreaterThanOrEqual(3)
    expect(lit.tick).toBeGreaterThanOrEqual(startAt!)
    if (lit.kind !== 'lit') throw new Error('not lit')
    expect(players).toContain(lit.holder)
    expect(lit.explodesAt - lit.tick).toBeGreaterThanOrEqual(3)
    expect(lit.explodesAt - lit.tick).toBeLessThanOrEqual(6)
    const boom = eventOf(await nextKind(a!, 'exploded'))
    const winner = players.find((p) => p !== lit.holder)!
    expect(boom).toMatchObject({ player: lit.holder, winner, ended: 'finished', holder: null })
    expect(boom.tick).toBeGreaterThanOrEqual(lit.explodesAt)

    for (const s of [a!, b!]) {
      const ended = await s.nextOf('ended', TICK_WAIT_MS)
      expect(ended.seq).toBe(5)
      expect(ended.result as GameResult).toEqual({
        reason: 'finished',
        winner,
        placements: [
          { playerId: winner, team: players.indexOf(winner), place: 1 },
          { playerId: lit.holder, team: players.indexOf(lit.holder), place: 2 },
        ],
      })
      expect((await s.whenClosed()).code).toBe(1000)
    }

    // The two first connections, the ready and only the two ticks that changed something were
    // logged; the socket saw exactly those events from its welcome on.
    // The admin's log replays (a player's leaves the other's actions out).
    const records = await expectReplayIsLive(sessionId, ADMIN_KEY)
    expect(await readLog(sessionId, tokens[winner]!)).toEqual(seenBy(records, winner))
    expect(records.map((r) => [r.seq, r.input.kind, r.event?.kind])).toEqual([
      [1, 'connect', 'joined'],
      [2, 'connect', 'joined'],
      [3, 'action', 'ready'],
      [4, 'tick', 'lit'],
      [5, 'tick', 'exploded'],
    ])
    expect(a!.frames.filter((f) => f.type === 'event').map((f) => f.event)).toEqual(
      records.filter((r) => r.seq > welcome.seq!).map((r) => r.event),
    )

    // Over: the end work runs to its retention wait and the alarm is set for that, not for a tick.
    const end = await inObject(sessionId, (inst) => inst.runEndWork({ force: true }))
    expect(end?.stage).toBe('retain')
    // The alarm that ended the game may still be finishing (it reschedules last).
    const after = await until(
      () =>
        inObject(sessionId, async (inst, state) => {
          const alarm = await state.storage.getAlarm()
          return alarm === end!.nextAttemptAt
            ? { alarm, now: inst.now(), retentionMs: inst.retentionMs }
            : undefined
        }),
      5000,
      'the retention alarm',
    )
    expect(after.alarm! - after.now).toBeGreaterThan(after.retentionMs - 60_000)
    // Firing it early changes nothing and sets it back to the retention deadline.
    expect(await runDurableObjectAlarm(sessionObject(sessionId))).toBe(true)
    const again = await inObject(sessionId, async (inst, state) => ({
      alarm: await state.storage.getAlarm(),
      seq: inst.current()!.match.seq,
      status: inst.current()!.status,
    }))
    expect(again).toEqual({ alarm: end!.nextAttemptAt, seq: 5, status: 'finished' })
  })

  it('sleeps until the next moment a tick can change something: nothing while players load, then the start, then the fuse', async () => {
    const players = playerIds(2)
    const { sessionId, tokens } = await createSession({
      rules: 'hot-potato',
      roster: players.map((playerId) => ({ playerId })),
      options: { startAfter: 100, minFuse: 50, maxFuse: 50 },
    })
    const alarmAndClock = () =>
      inObject(sessionId, async (inst, state) => {
        const info = inst.info()
        if (!info.ok) throw new Error('no session')
        return { alarm: await state.storage.getAlarm(), createdAt: info.createdAt, now: inst.now() }
      })
    /** When tick `tick` (5 a second since creation) comes. */
    const timeOfTick = (createdAt: number, tick: number) => createdAt + tick * 200

    // Nobody has connected: no tick can change anything, so the alarm is the watchdog's or the
    // join grace's, seconds away, not the next tick's 200 ms.
    const loading = await alarmAndClock()
    expect(loading.alarm! - loading.now).toBeGreaterThan(5_000)

    const [a, b] = await Promise.all(players.map((p) => connect(sessionId, tokens[p]!)))
    for (const s of [a!, b!]) await s.nextOf('welcome')
    const startAt = await until(async () => {
      const joins = a!.frames
        .filter((f) => f.type === 'event' && eventOf(f).kind === 'joined')
        .map((f) => eventOf(f) as Extract<PotatoEvent, { kind: 'joined' }>)
      return joins.find((j) => j.startAt !== null)?.startAt ?? undefined
    })
    const connected = await alarmAndClock()
    expect(connected.alarm).toBe(timeOfTick(connected.createdAt, startAt))

    for (const s of [a!, b!]) s.send({ type: 'action', action: 'ready' })
    let explodesAt: number | null = null
    for (let i = 0; i < 2; i++) {
      const e = eventOf(await nextKind(a!, 'ready'))
      if (e.kind === 'ready' && e.explodesAt !== null) explodesAt = e.explodesAt
    }
    if (explodesAt === null) throw new Error('the fuse was not lit')
    // The alarm moves to the fuse's end when the last ready lights it (after that frame's answer).
    const lit = await until(() =>
      inObject(sessionId, async (_inst, state) => {
        const alarm = await state.storage.getAlarm()
        return alarm === timeOfTick(connected.createdAt, explodesAt!) ? alarm : undefined
      }),
    )
    expect(lit - Date.now()).toBeGreaterThan(5_000)
    for (const s of [a!, b!]) s.close()
  })

  it('takes ready and pass over the socket, refuses bad ones, and plays rounds to the last one standing', async () => {
    const players = playerIds(3)
    const { sessionId, tokens } = await createSession({
      rules: 'hot-potato',
      roster: players.map((playerId) => ({ playerId })),
      // At least 4 s: three round trips come before the holder's pass, which must beat the fuse.
      options: { minFuse: 20, maxFuse: 24 },
    })
    const sockets = await Promise.all(players.map((p) => connect(sessionId, tokens[p]!)))
    for (const s of sockets) await s.nextOf('welcome')
    const watcher = sockets[0]!
    const bySocket = (p: string) => sockets[players.indexOf(p)]!

    sockets[0]!.send({ type: 'action', action: 'pass', to: players[1] })
    expect(await sockets[0]!.nextOf('error')).toMatchObject({ code: 'not_started' })
    for (const s of sockets) s.send({ type: 'action', action: 'ready' })
    let lit: PotatoEvent | undefined
    for (let i = 0; i < 3; i++) {
      const e = eventOf(await nextKind(watcher, 'ready'))
      if (e.kind === 'ready' && e.explodesAt !== null) lit = e
    }
    if (lit?.kind !== 'ready' || lit.holder === null) throw new Error('the fuse was not lit')
    const holder = lit.holder
    const others = players.filter((p) => p !== holder)
    bySocket(others[0]!).send({ type: 'action', action: 'pass', to: others[1] })
    expect(await bySocket(others[0]!).nextOf('error')).toMatchObject({ code: 'not_holder' })
    bySocket(holder).send({ type: 'action', action: 'pass', to: holder })
    expect(await bySocket(holder).nextOf('error')).toMatchObject({ code: 'invalid_target' })
    bySocket(holder).send({ type: 'action', action: 'pass', to: others[0] })
    const passed = eventOf(await nextKind(watcher, 'pass'))
    expect(passed).toMatchObject({ from: holder, to: others[0], explodesAt: lit.explodesAt })

    // Two explosions by the clock end a three-player game.
    const first = eventOf(await nextKind(watcher, 'exploded'))
    expect(first).toMatchObject({ player: others[0], winner: null, ended: null })
    const second = eventOf(await nextKind(watcher, 'exploded'))
    if (first.kind !== 'exploded' || second.kind !== 'exploded') throw new Error('unexpected')
    expect(second.player).toBe(first.holder)
    const winner = players.find((p) => p !== first.player && p !== second.player)!
    expect(second).toMatchObject({ winner, ended: 'finished' })
    const ended = await watcher.nextOf('ended', TICK_WAIT_MS)
    expect((ended.result as GameResult).placements.map((p) => p.playerId)).toEqual([
      winner,
      second.player,
      first.player,
    ])
    const records = await expectReplayIsLive(sessionId, ADMIN_KEY)
    expect(records.map((r) => r.input.kind)).toEqual([
      'connect',
      'connect',
      'connect',
      'action',
      'action',
      'action',
      'action',
      'tick',
      'tick',
    ])
  })

  it('keeps ticking after the object is evicted mid-game, with hibernated and with new sockets', async () => {
    const players = playerIds(3)
    const { sessionId, tokens } = await createSession({
      rules: 'hot-potato',
      roster: players.map((playerId) => ({ playerId })),
      options: { minFuse: 6, maxFuse: 10 },
    })
    const sockets = await Promise.all(players.map((p) => connect(sessionId, tokens[p]!)))
    for (const s of sockets) await s.nextOf('welcome')
    for (const s of sockets) s.send({ type: 'action', action: 'ready' })
    for (let i = 0; i < 3; i++) await nextKind(sockets[0]!, 'ready')
    const lit = await inObject(sessionId, (inst) => inst.current()!.match)
    expect(lit.seq).toBe(6)
    expect((lit.game as PotatoState).explodesAt).not.toBeNull()

    // Evicted while the fuse burns: only the stored alarm can bring the object back to tick.
    await evictDurableObject(sessionObject(sessionId), { webSockets: 'hibernate' })
    const first = await nextKind(sockets[1]!, 'exploded')
    expect(first.seq).toBe(7)
    expect(eventOf(first)).toMatchObject({ winner: null, ended: null })

    // Woken first: between two ticks far apart (the next counts only at the fuse's end) the
    // object may already sleep, and only a running object can be evicted.
    await inObject(sessionId, (inst) => inst.current()!.match.seq)
    await evictDurableObject(sessionObject(sessionId), { webSockets: 'close' })
    await sockets[0]!.whenClosed()
    const live = players.filter((p) => p !== (eventOf(first) as { player: string }).player)
    // Connections again: not first ones, so nothing is logged for them.
    const back = await Promise.all(live.map((p) => connect(sessionId, tokens[p]!, { since: 7 })))
    for (const s of back) expect(await s.nextOf('resumed')).toMatchObject({ since: 7 })
    const second = await nextKind(back[0]!, 'exploded')
    expect(second.seq).toBe(8)
    expect(eventOf(second)).toMatchObject({ ended: 'finished' })
    for (const s of back) {
      expect(await s.nextOf('ended', TICK_WAIT_MS)).toMatchObject({ seq: 8 })
      // Exactly the events after `since`, no gap, no duplicate.
      expect(s.frames.filter((f) => f.type === 'event').map((f) => f.seq)).toEqual([8])
    }
    await expectReplayIsLive(sessionId, ADMIN_KEY)
  })
  it('keeps ticking while the session waits on Neon (its listing hangs)', async () => {
    const players = playerIds(2)
    const { sessionId, tokens } = await createSession({
      rules: 'hot-potato',
      roster: players.map((playerId) => ({ playerId })),
      options: { minFuse: 3, maxFuse: 6 },
    })
    let release!: () => void
    const neonAnswers = new Promise<void>((resolve) => (release = resolve))
    await inObject(sessionId, (inst, state) => {
      const real = new NeonSessionStore(env)
      inst.store = {
        register: async (s, t) => {
          await neonAnswers
          return real.register(s, t)
        },
        recordResult: (input) => real.recordResult(input),
        archiveLog: (id, records) => real.archiveLog(id, records),
        erasedAmong: (ids, since) => real.erasedAmong(ids, since),
        keepSetup: (id, hash, r, n) => real.keepSetup(id, hash, r, n),
        archivedSetupHash: (id) => real.archivedSetupHash(id),
      }
      // The listing is still to do (as after a failed first attempt), and Neon does not answer.
      state.storage.sql.exec(
        `UPDATE work SET stage = 'pending', next_attempt_at = 0 WHERE job = 'register'`,
      )
    })
    const [a, b] = await Promise.all(players.map((p) => connect(sessionId, tokens[p]!)))
    await a!.nextOf('welcome')
    await b!.nextOf('welcome')
    for (const s of [a!, b!]) s.send({ type: 'action', action: 'ready' })
    // The fuse burns by ticks alone: they must not wait for Neon.
    expect(eventOf(await nextKind(a!, 'exploded'))).toMatchObject({ ended: 'finished' })
    release()
    await a!.nextOf('ended', TICK_WAIT_MS)
    const end = await inObject(sessionId, (inst) => inst.runEndWork({ force: true }))
    // Once Neon answers, the listing and the end go through.
    expect(end).toMatchObject({ stage: 'retain' })
  })
})

describe('deadlines the game clock passed before a late alarm or frame', () => {
  /** Moves the object's clock `ms` ahead of real time from now on. */
  const clockAhead = (inst: { now: () => number }, ms: number) => {
    inst.now = () => Date.now() + ms
  }

  /**
   * Two players ready a hot-potato game with a fixed 10 s fuse; then the one without the potato
   * leaves, with a grace of `graceMs`. Resolves once the object has started that grace.
   */
  async function litFuseThenLeave(graceMs: number) {
    const players = playerIds(2)
    const { sessionId, tokens } = await createSession({
      rules: 'hot-potato',
      roster: players.map((playerId) => ({ playerId })),
      // A fixed fuse, so the order of the deadlines is known.
      options: { minFuse: 50, maxFuse: 50 },
    })
    await inObject(sessionId, (inst) => {
      inst.graceMs = graceMs
    })
    const sockets = await Promise.all(players.map((p) => connect(sessionId, tokens[p]!)))
    for (const s of sockets) await s.nextOf('welcome')
    for (const s of sockets) s.send({ type: 'action', action: 'ready' })
    let holder: string | null = null
    for (let i = 0; i < 2; i++) {
      const e = eventOf(await nextKind(sockets[0]!, 'ready'))
      if (e.kind === 'ready' && e.holder !== null) holder = e.holder
    }
    if (holder === null) throw new Error('the fuse was not lit')
    const other = players.find((p) => p !== holder)!
    sockets[players.indexOf(other)]!.close()
    await until(() =>
      inObject(
        sessionId,
        (_inst, state) =>
          state.storage.sql.exec(`SELECT 1 FROM timers WHERE player_id = ?`, other).toArray()
            .length === 1 || undefined,
      ),
    )
    return { sessionId, tokens, sockets, players, holder, other }
  }

  it('a fuse that burnt out before a grace ended wins over that grace, whichever the alarm sees first', async () => {
    // The one without the potato leaves: its grace ends 20 s on, 10 s after the fuse.
    const { sessionId, other } = await litFuseThenLeave(20_000)
    // One alarm, 30 s late, sees both deadlines passed.
    const result = await inObject(sessionId, async (inst) => {
      clockAhead(inst, 30_000)
      await inst.alarm()
      return inst.info()
    })
    // The potato burnt out in the holder's hands first: the one who left had already won.
    expect(result).toMatchObject({
      ok: true,
      status: 'finished',
      result: { winner: other, reason: 'finished' },
    })
    await expectReplayIsLive(sessionId, ADMIN_KEY)
  })

  it('a frame arriving before a late alarm runs the graces that ended first, then the fuse', async () => {
    // The other player leaves: its grace ends 5 s on, 5 s before the fuse burns out.
    const { sessionId, sockets, players, holder, other } = await litFuseThenLeave(5_000)
    // 30 s on, the alarm has not run; the holder's frame comes first.
    await inObject(sessionId, async (inst, state) => {
      await state.storage.deleteAlarm()
      clockAhead(inst, 30_000)
    })
    const mine = sockets[players.indexOf(holder)]!
    mine.send({ type: 'action', action: 'pass', to: other })
    const ended = await mine.nextOf('ended', TICK_WAIT_MS)
    // The other player was gone before the potato burnt: the holder won by forfeit.
    expect(ended.result).toMatchObject({ winner: holder, reason: 'forfeit' })
    await expectReplayIsLive(sessionId, ADMIN_KEY)
  })

  it('a reconnect arriving before a late alarm runs the graces that ended first: one gone past its grace cannot come back to win', async () => {
    // The other player leaves: its grace ends 5 s on, 5 s before the fuse burns out.
    const { sessionId, tokens, sockets, players, holder, other } = await litFuseThenLeave(5_000)
    await inObject(sessionId, async (inst, state) => {
      await state.storage.deleteAlarm()
      clockAhead(inst, 30_000)
    })
    // 30 s on, before the alarm, the one who left reconnects: it was gone before the potato
    // burnt, so the holder has won by forfeit, and the one back finds the game over.
    const back = await connect(sessionId, tokens[other]!)
    for (const s of [back, sockets[players.indexOf(holder)]!]) {
      const ended = await s.nextOf('ended', TICK_WAIT_MS)
      expect(ended.result).toMatchObject({ winner: holder, reason: 'forfeit' })
    }
    await expectReplayIsLive(sessionId, ADMIN_KEY)
  })

  it('a frame arriving before a late alarm runs the graces that ended first while a player is still awaited (nothing else due on the game clock)', async () => {
    const players = playerIds(3)
    const [a, b] = players as [string, string, string]
    const { sessionId, tokens } = await createSession({
      rules: 'hot-potato',
      roster: players.map((playerId) => ({ playerId })),
    })
    await inObject(sessionId, (inst) => {
      inst.graceMs = 5_000
    })
    // The third player never connects (still awaited: no start, no fuse, nothing due on the
    // clock); the second leaves, and its grace starts.
    const sa = await connect(sessionId, tokens[a]!)
    const sb = await connect(sessionId, tokens[b]!)
    for (const s of [sa, sb]) await s.nextOf('welcome')
    sb.close()
    await until(() =>
      inObject(sessionId, (_inst, state) =>
        state.storage.sql.exec(`SELECT 1 FROM timers WHERE player_id = ?`, b).toArray().length === 1
          ? true
          : undefined,
      ),
    )
    // 10 s on, the alarm has not run; the first player's frame comes first.
    await inObject(sessionId, async (inst, state) => {
      await state.storage.deleteAlarm()
      clockAhead(inst, 10_000)
    })
    sa.send({ type: 'action', action: 'ready' })
    await nextKind(sa, 'ready')
    // The grace that ended 5 s before the frame comes before it in the log, at its own tick.
    const records = await expectReplayIsLive(sessionId, ADMIN_KEY)
    const kinds = records.map((r) => [
      r.input.kind,
      r.input.kind === 'action' ? null : r.input.tick,
    ])
    const absent = records.find((r) => r.input.kind === 'absent')!
    const ready = records.find((r) => r.input.kind === 'action')!
    expect(absent.seq).toBeLessThan(ready.seq)
    expect(absent.input.tick, JSON.stringify(kinds)).toBeLessThan(ready.input.tick)
    sa.close()
  })

  it('a "ready" arriving after startAfter (counted from both connections), before the alarm: nobody was ready in time, so the game is abandoned', async () => {
    const players = playerIds(2)
    const { sessionId, tokens } = await createSession({
      rules: 'hot-potato',
      roster: players.map((playerId) => ({ playerId })),
      options: { startAfter: 25 },
    })
    const [a, b] = await Promise.all(players.map((p) => connect(sessionId, tokens[p]!)))
    await a!.nextOf('welcome')
    await b!.nextOf('welcome')
    // 10 s pass (startAfter is 5 s) and the alarm has not run yet.
    await inObject(sessionId, async (inst, state) => {
      await state.storage.deleteAlarm()
      clockAhead(inst, 10_000)
    })
    a!.send({ type: 'action', action: 'ready' })
    for (const s of [a!, b!]) {
      expect(eventOf(await nextKind(s, 'abandoned'))).toMatchObject({ tick: 50 })
      const ended = await s.nextOf('ended', TICK_WAIT_MS)
      expect(ended.result).toMatchObject({ winner: null, reason: 'abandoned' })
    }
    const seen = a!.frames.filter(
      (f) => f.type === 'error' || (f.type === 'event' && eventOf(f).kind !== 'joined'),
    )
    expect(seen).toHaveLength(1)
    const records = await expectReplayIsLive(sessionId, ADMIN_KEY)
    expect(records.map((r) => r.input.kind)).toEqual(['connect', 'connect', 'tick'])
  })
})

describe('a session that does not load in the running version', () => {
  it('keeps its alarm armed (its rules gone, as after a rollback), refuses what it is asked meanwhile, and goes on once it loads again', async () => {
    const players = playerIds(2)
    const { sessionId, tokens } = await createSession({
      rules: 'dice-race',
      roster: players.map((playerId) => ({ playerId })),
    })
    const rename = (rules: string) => renameRules(sessionId, rules)
    await rename('rules-this-version-lacks')
    await evictDurableObject(sessionObject(sessionId))
    // Woken by its alarm: it does not throw (thrown, the runtime would retry it a few times and
    // drop it), and it stays armed to look again.
    const before = Date.now()
    expect(await runDurableObjectAlarm(sessionObject(sessionId))).toBe(true)
    const armed = await inObject(sessionId, (_inst, state) => state.storage.getAlarm())
    expect(armed).toBeGreaterThanOrEqual(before + UNLOADABLE_RETRY_MS)
    // Failing for long, it looks again less often: half the time it has failed, 6 hours at most.
    const failingFor = 4 * 60 * 60 * 1000
    await inObject(sessionId, (_inst, state) =>
      state.storage.put('unloadableSince', Date.now() - failingFor),
    )
    const later = Date.now()
    expect(await runDurableObjectAlarm(sessionObject(sessionId))).toBe(true)
    const next = await inObject(sessionId, (_inst, state) => state.storage.getAlarm())
    expect(next).toBeGreaterThanOrEqual(later + failingFor / 2)
    expect(next).toBeLessThan(later + UNLOADABLE_RETRY_MAX_MS)
    // Meanwhile its socket and its reads are refused as unavailable (a client retries).
    const refused = await upgrade(sessionId, tokens[players[0]!]!)
    expect(refused.status).toBe(503)
    const read = await call(`/v1/sessions/${sessionId}`, bearer(ADMIN_KEY))
    expect(read.status).toBe(503)
    expect(read.headers.get('retry-after')).toBe('60')
    expect(((await read.json()) as { type: string }).type).toBe('urn:nexus:problem:unavailable')

    // A version with its rules again (rolled forward): it loads, and its clock is armed anew.
    await rename('dice-race')
    await evictDurableObject(sessionObject(sessionId))
    expect(await inObject(sessionId, (inst) => inst.info())).toMatchObject({
      ok: true,
      status: 'live',
    })
    const a = await connect(sessionId, tokens[players[0]!]!)
    expect(await a.nextOf('welcome')).toMatchObject({ seq: 0, status: 'live' })
    a.close()
    // Its count of failing starts over.
    expect(
      await inObject(sessionId, (_inst, state) => state.storage.get('unloadableSince')),
    ).toBeUndefined()
  })
})

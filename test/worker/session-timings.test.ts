import { AlarmFailures } from '../../workers/lib/alarm-backoff.ts'
import { env } from 'cloudflare:workers'
import { evictDurableObject, runDurableObjectAlarm } from 'cloudflare:test'
import { describe, expect, it } from 'vitest'
import {
  GRACE_MS,
  JOIN_GRACE_MS,
  RETENTION_MS,
  SILENT_CHECK_EVERY_MS,
  sessionTimings,
} from '../../durable-objects/game-session.ts'
import {
  connect,
  createSession,
  inObject,
  playerIds,
  sessionObject,
  type TestSocket,
} from './helpers/session-sockets.ts'
import { ADMIN_KEY, bearer, call } from './helpers/http.ts'
import { until } from './helpers/sockets.ts'
import { SILENT_SOCKET_MS } from '../../workers/lib/socket-close.ts'
import { ruleError, type AnyRules } from '../../workers/core/rules/index.ts'
import type { DiceState } from '../../workers/core/rules/dice-race.ts'

/**
 * The worker test project sets SESSION_GRACE_SECONDS=30, SESSION_JOIN_GRACE_SECONDS=90 and
 * SESSION_RETENTION_HOURS=12 (vitest.config.ts): shorter than the defaults, so a forfeit or a
 * retention deadline at the configured time shows the configuration took effect.
 */
const GRACE = Number(env.SESSION_GRACE_SECONDS) * 1000
const JOIN_GRACE = Number(env.SESSION_JOIN_GRACE_SECONDS) * 1000
const RETENTION = Number(env.SESSION_RETENTION_HOURS) * 3_600_000

/** Sets the object's clock to `at` and fires its alarm now. */
async function alarmAt(sessionId: string, at: number): Promise<void> {
  await inObject(sessionId, (inst) => {
    inst.now = () => at
  })
  expect(await runDurableObjectAlarm(sessionObject(sessionId))).toBe(true)
}

const seqOf = (sessionId: string) => inObject(sessionId, (inst) => inst.current()!.match.seq)

/**
 * A dice-race too long to finish by rolling during a test, with the `connected` players' sockets
 * open and welcomed, and its creation time by the object's clock.
 */
async function liveDiceGame(players: string[], connected: string[] = players) {
  const { sessionId, tokens } = await createSession({
    rules: 'dice-race',
    roster: players.map((playerId) => ({ playerId })),
    options: { target: 1000 },
  })
  const sockets = []
  for (const p of connected) {
    const socket = await connect(sessionId, tokens[p]!)
    await socket.nextOf('welcome')
    sockets.push(socket)
  }
  const createdAt = await inObject(sessionId, (inst) => {
    const info = inst.info()
    if (!info.ok) throw new Error('no session')
    return info.createdAt
  })
  return { sessionId, tokens, sockets, createdAt }
}

/** `player` closes `socket` at `at` by the session's clock; resolves once their grace runs. */
async function leaveAt(sessionId: string, socket: TestSocket, player: string, at: number) {
  await inObject(sessionId, (inst) => {
    inst.now = () => at
  })
  socket.close()
  await until(
    () =>
      inObject(sessionId, (_inst, state) =>
        state.storage.sql
          .exec<{ n: number }>('SELECT count(*) AS n FROM timers WHERE player_id = ?', player)
          .one().n === 1
          ? true
          : undefined,
      ),
    5000,
    `${player}'s grace timer`,
  )
}

describe('session timings', () => {
  it('come from the environment, bounded, with the defaults for missing or bad values', () => {
    expect(sessionTimings({})).toEqual({
      graceMs: GRACE_MS,
      joinGraceMs: JOIN_GRACE_MS,
      retentionMs: RETENTION_MS,
    })
    expect(
      sessionTimings({
        SESSION_GRACE_SECONDS: '5',
        SESSION_JOIN_GRACE_SECONDS: '3600',
        SESSION_RETENTION_HOURS: '720',
      }),
    ).toEqual({ graceMs: 5000, joinGraceMs: 3_600_000, retentionMs: 720 * 3_600_000 })
    for (const bad of ['', '0', '4', '3601', '1.5', '-30', '30s', 'NaN']) {
      expect(sessionTimings({ SESSION_GRACE_SECONDS: bad }).graceMs).toBe(GRACE_MS)
      expect(sessionTimings({ SESSION_JOIN_GRACE_SECONDS: bad }).joinGraceMs).toBe(JOIN_GRACE_MS)
    }
    for (const bad of ['', '0', '721', '2.5', 'day']) {
      expect(sessionTimings({ SESSION_RETENTION_HOURS: bad }).retentionMs).toBe(RETENTION_MS)
    }
  })

  it('the configured grace, join grace and retention govern a live session', async () => {
    expect([GRACE, JOIN_GRACE, RETENTION]).toEqual([30_000, 90_000, 12 * 3_600_000])
    expect(GRACE).toBeLessThan(GRACE_MS)
    expect(JOIN_GRACE).toBeLessThan(JOIN_GRACE_MS)
    expect(RETENTION).toBeLessThan(RETENTION_MS)

    const players = playerIds(3)
    const [pa, pb, pc] = players as [string, string, string]
    const { sessionId, sockets, createdAt } = await liveDiceGame(players, [pa, pb])
    const [a, b] = sockets as [TestSocket, TestSocket]

    // C never connects: still in just before the configured join grace, out at it.
    await alarmAt(sessionId, createdAt + JOIN_GRACE - 1)
    expect(await seqOf(sessionId)).toBe(0)
    await alarmAt(sessionId, createdAt + JOIN_GRACE)
    const noShow = await a.nextOf('event')
    expect(noShow).toMatchObject({ seq: 1, event: { kind: 'forfeit', player: pc } })

    // B leaves at a known time: the grace timer is exactly the configured grace.
    const left = createdAt + JOIN_GRACE
    b.close()
    const due = await until(
      () =>
        inObject(sessionId, (_inst, state) => {
          const row = state.storage.sql
            .exec<{ due: number }>('SELECT due FROM timers WHERE player_id = ?', pb)
            .toArray()[0]
          return row?.due
        }),
      5000,
      'the grace timer',
    )
    expect(due).toBe(left + GRACE)
    await alarmAt(sessionId, left + GRACE - 1)
    expect(await seqOf(sessionId)).toBe(1)
    await alarmAt(sessionId, left + GRACE)
    const ended = await a.nextOf('ended')
    expect(ended.result).toMatchObject({ reason: 'forfeit', winner: pa })

    // The end work archives the game and waits the configured retention before clearing it.
    const end = await inObject(sessionId, (inst) => inst.runEndWork({ force: true }))
    expect(end).toMatchObject({ stage: 'retain', nextAttemptAt: left + GRACE + RETENTION })
  })

  it('sockets lost with the object (a restart) still count as gone: waking it arms an alarm for their grace', async () => {
    const { sessionId, sockets, createdAt } = await liveDiceGame(playerIds(2))
    // Both joined: the join grace's alarm fires with nothing left to do.
    await alarmAt(sessionId, createdAt + JOIN_GRACE)
    // The object goes away with its sockets, and no close is ever reported; a read wakes it.
    await evictDurableObject(sessionObject(sessionId), { webSockets: 'close' })
    await sockets[0]!.whenClosed()
    expect((await call(`/v1/sessions/${sessionId}`, bearer(ADMIN_KEY))).status).toBe(200)
    const woke = await inObject(sessionId, async (_inst, state) => ({
      alarm: await state.storage.getAlarm(),
      due: state.storage.sql.exec<{ due: number }>('SELECT min(due) AS due FROM timers').one().due,
    }))
    expect(woke.alarm).toBe(woke.due)
    await alarmAt(sessionId, woke.due)
    const info = await inObject(sessionId, (inst) => inst.info())
    // Both went at once: neither wins by the other's forfeit.
    expect(info).toMatchObject({ ok: true, status: 'finished', result: { reason: 'abandoned' } })
  })

  it('a socket that pinged and then fell silent (a connection that died without a close) is closed by the watchdog, and its player forfeits after the grace', async () => {
    const [pa, pb] = playerIds(2) as [string, string]
    const { sessionId, sockets } = await liveDiceGame([pa, pb])
    const [a, b] = sockets as [TestSocket, TestSocket]
    // Both ping now (the runtime answers; the object is not woken); after that A keeps sending
    // frames, B sends nothing more: its connection died without a close.
    for (const s of [a, b]) {
      s.send({ type: 'ping' })
      await s.nextOf('pong')
    }
    const pinged = Date.now()
    await inObject(sessionId, (inst) => {
      inst.now = () => pinged + SILENT_SOCKET_MS - 10_000
    })
    a.send('not json')
    expect(await a.nextOf('error')).toMatchObject({ code: 'malformed' })
    // Not yet silent at SILENT_SOCKET_MS: nothing closes.
    await alarmAt(sessionId, pinged + SILENT_SOCKET_MS - 1_000)
    expect(b.closed).toBeNull()
    // Past it (and the alarm's next look, at most SILENT_CHECK_EVERY_MS after its last), B's
    // socket is closed and B's grace starts; A, heard from 10 s after its ping, stays.
    const silentAt = pinged + SILENT_SOCKET_MS - 1_000 + SILENT_CHECK_EVERY_MS
    await alarmAt(sessionId, silentAt)
    expect((await b.whenClosed()).code).toBe(1001)
    expect(a.closed).toBeNull()
    await alarmAt(sessionId, silentAt + GRACE)
    expect(await a.nextOf('ended')).toMatchObject({ result: { reason: 'forfeit', winner: pa } })
  })

  it('a socket heard from is not taken as silent after the object slept: its last frame outlives the wake', async () => {
    const [pa, pb] = playerIds(2) as [string, string]
    const { sessionId, sockets } = await liveDiceGame([pa, pb])
    const [a, b] = sockets as [TestSocket, TestSocket]
    // A client that pings only when it has sent nothing else: it pinged once, then sent frames.
    a.send({ type: 'ping' })
    await a.nextOf('pong')
    b.send({ type: 'ping' })
    await b.nextOf('pong')
    const pinged = Date.now()
    await inObject(sessionId, (inst) => {
      inst.now = () => pinged + SILENT_SOCKET_MS - 10_000
    })
    a.send('not json')
    expect(await a.nextOf('error')).toMatchObject({ code: 'malformed' })
    // Kept where a wake finds it: in the socket's stored attachment.
    const stored = await inObject(sessionId, (_inst, state) =>
      state
        .getWebSockets()
        .map((ws) => ws.deserializeAttachment() as { playerId: string; heardAt?: number })
        .find((att) => att.playerId === pa),
    )
    expect(stored?.heardAt).toBe(pinged + SILENT_SOCKET_MS - 10_000)
    // The object sleeps between turns: what it kept in memory alone is gone when it wakes.
    await inObject(sessionId, (inst) => {
      ;(inst as unknown as { lastFrameAt: WeakMap<WebSocket, number> }).lastFrameAt = new WeakMap()
    })
    const silentAt = pinged + SILENT_SOCKET_MS - 1_000 + SILENT_CHECK_EVERY_MS
    await alarmAt(sessionId, silentAt)
    // B, silent since its ping, is closed; A, heard from 80 s after it, is not.
    expect((await b.whenClosed()).code).toBe(1001)
    expect(a.closed).toBeNull()
  })

  it('after the object slept, a socket is judged by the latest its last frame can have come: frames within 30 s of the stored one are not lost', async () => {
    const [pa, pb] = playerIds(2) as [string, string]
    const { sessionId, sockets } = await liveDiceGame([pa, pb])
    const [a] = sockets as [TestSocket, TestSocket]
    a.send({ type: 'ping' })
    await a.nextOf('pong')
    const pinged = Date.now()
    // Frames 1 s and 29 s after the ping: the second is within 30 s of the stored one, so only
    // the first is written to the attachment.
    for (const after of [1_000, 29_000]) {
      await inObject(sessionId, (inst) => {
        inst.now = () => pinged + after
      })
      a.send('not json')
      expect(await a.nextOf('error')).toMatchObject({ code: 'malformed' })
    }
    await inObject(sessionId, (inst) => {
      ;(inst as unknown as { lastFrameAt: WeakMap<WebSocket, number> }).lastFrameAt = new WeakMap()
    })
    // 95 s after the ping, 66 s after its last frame: not silent.
    await alarmAt(sessionId, pinged + 95_000)
    expect(a.closed).toBeNull()
  })

  it("a player's silent sockets do not hold their connections: a new one past the limit closes them as gone (1001), replacing none of them", async () => {
    const [pa, pb] = playerIds(2) as [string, string]
    const { sessionId, tokens, sockets, createdAt } = await liveDiceGame([pa, pb])
    await alarmAt(sessionId, createdAt + JOIN_GRACE)
    const all = [sockets[1]!]
    for (let i = 0; i < 3; i++) {
      const s = await connect(sessionId, tokens[pb]!)
      await s.nextOf('welcome')
      all.push(s)
    }
    // Four open sockets, alive for now.
    for (const s of all) {
      s.send({ type: 'ping' })
      await s.nextOf('pong')
    }
    const pinged = Date.now()
    await inObject(sessionId, (inst) => {
      inst.now = () => pinged + SILENT_SOCKET_MS + 1_000
    })
    const back = await connect(sessionId, tokens[pb]!)
    await back.nextOf('welcome')
    for (const s of all) expect((await s.whenClosed()).code).toBe(1001)
    back.close()
  })

  it('an action that brings the rules’ next deadline (nextTick) nearer than the alarm moves the alarm to it', async () => {
    const { sessionId, sockets, createdAt } = await liveDiceGame(playerIds(2))
    const [a, b] = sockets as [TestSocket, TestSocket]
    // Rules of a studio's with a move clock that the first move starts: deadlines in ticks of
    // 1 ms since creation (dice-race's rate), the next one 5 s away once someone has rolled.
    const deadline = Date.now() + 5_000
    const original = await inObject(sessionId, (inst) => {
      const self = inst as unknown as { rules: AnyRules }
      const rules = self.rules
      self.rules = {
        ...rules,
        nextTick: (state: DiceState) => (state.rolls === 0 ? null : deadline - createdAt),
      } as AnyRules
      return rules
    })
    const alarm = () => inObject(sessionId, (_inst, state) => state.storage.getAlarm())
    // Before it, only the watchdog (the grace, 30 s here) is due.
    expect(await alarm()).toBeGreaterThan(deadline)
    a.roll()
    for (const s of [a, b]) await s.nextOf('event')
    expect(await alarm()).toBeLessThanOrEqual(deadline)
    await inObject(sessionId, (inst) => {
      ;(inst as unknown as { rules: AnyRules }).rules = original
    })
  })

  it('rules whose deadline stays due once the clock reached it (their onTick changed nothing) are not woken for it again and again; a quietUntil that has come wakes once a tick', async () => {
    const { sessionId, createdAt } = await liveDiceGame(playerIds(2))
    const alarm = () => inObject(sessionId, (_inst, state) => state.storage.getAlarm())
    const original = await inObject(sessionId, (inst) => {
      const self = inst as unknown as { rules: AnyRules }
      const rules = self.rules
      // A studio's rules whose deadline stays where it was after it passed (a bug, docs/rules.md).
      self.rules = {
        ...rules,
        nextTick: () => 0,
        onTick: (state: unknown) => ({ state }),
      } as AnyRules
      return rules
    })
    const at = createdAt + 10_500
    await alarmAt(sessionId, at)
    // Not the deadline again, at once: the watchdog's grace away.
    expect(await alarm()).toBeGreaterThanOrEqual(at + GRACE)
    await inObject(sessionId, (inst) => {
      ;(inst as unknown as { rules: AnyRules }).rules = original
    })
    // Another game, whose rules' quietUntil has long come, at one tick a second: woken at the
    // next tick, not at once.
    const other = await liveDiceGame(playerIds(2))
    await inObject(other.sessionId, (inst) => {
      const self = inst as unknown as { rules: AnyRules }
      self.rules = {
        ...self.rules,
        tickRate: 1,
        nextTick: undefined,
        quietUntil: () => 0,
        onTick: (state: unknown) => ({ state }),
      } as AnyRules
    })
    await alarmAt(other.sessionId, other.createdAt + 10_500)
    expect(await inObject(other.sessionId, (_inst, state) => state.storage.getAlarm())).toBe(
      other.createdAt + 11_000,
    )
  })

  it('a deadline the rules name as a fraction of a tick comes at the whole tick after it (it was refused and never came); one that is no number is no deadline, and no alarm of NaN', async () => {
    const { sessionId, createdAt } = await liveDiceGame(playerIds(2))
    const alarm = () => inObject(sessionId, (_inst, state) => state.storage.getAlarm())
    const before = await seqOf(sessionId)
    // A studio's timer of `seconds * tickRate` with fractional seconds, at dice-race's 1,000
    // ticks a second: due at tick 10,500.4, which fires once.
    await inObject(sessionId, (inst) => {
      const self = inst as unknown as { rules: AnyRules }
      self.rules = {
        ...self.rules,
        nextTick: (state: DiceState & { fired?: boolean }) => (state.fired ? null : 10_500.4),
        onTick: (state: DiceState & { fired?: boolean }, ctx: { tick: number }) =>
          ctx.tick >= 10_500.4 ? { state: { ...state, fired: true } } : { state },
      } as AnyRules
    })
    // A wake at 10,500 plays nothing yet; its alarm is set for the whole tick after the deadline.
    await alarmAt(sessionId, createdAt + 10_500)
    expect(await seqOf(sessionId)).toBe(before)
    expect(await alarm()).toBe(createdAt + 10_501)
    await alarmAt(sessionId, createdAt + 10_501)
    expect(await seqOf(sessionId)).toBe(before + 1)
    expect(
      await inObject(
        sessionId,
        (inst) => (inst.current()!.match.game as { fired?: boolean }).fired,
      ),
    ).toBe(true)
    // NaN (a field an older state lacks): no deadline; the watchdog alone is due.
    await inObject(sessionId, (inst) => {
      const self = inst as unknown as { rules: AnyRules }
      self.rules = { ...self.rules, nextTick: () => Number.NaN } as AnyRules
    })
    await alarmAt(sessionId, createdAt + 11_000)
    const next = await alarm()
    expect(Number.isFinite(next)).toBe(true)
    expect(next).toBeGreaterThanOrEqual(createdAt + 11_000 + GRACE)
  })

  it('an alarm run that fails again and again backs off (1 s, 2 s, …) instead of coming back at once, a hibernation between included; a run that succeeds ends the backoff', async () => {
    const [pa, pb] = playerIds(2) as [string, string]
    const { sessionId, sockets, createdAt } = await liveDiceGame([pa, pb])
    await alarmAt(sessionId, createdAt + JOIN_GRACE)
    const left = createdAt + JOIN_GRACE + 1000
    await inObject(sessionId, (inst) => {
      inst.now = () => left
    })
    sockets[1]!.close()
    await until(
      () =>
        inObject(sessionId, (_i, state) =>
          state.storage.sql.exec<{ n: number }>('SELECT count(*) AS n FROM timers').one().n > 0
            ? true
            : undefined,
        ),
      5000,
      "B's grace timer",
    )
    const due = left + GRACE
    // B's grace is due, and every run fails (a storage fault in the clock, say).
    const runs = await inObject(sessionId, async (inst, state) => {
      const faulty = inst as unknown as { runClock?: () => void }
      const fail = () => {
        faulty.runClock = () => {
          throw new Error('injected: storage fault')
        }
      }
      const run = async (at: number) => {
        inst.now = () => at
        await inst.alarm()
        return state.storage.getAlarm()
      }
      fail()
      const failing = [await run(due), await run(due), await run(due)]
      // The object hibernates: a new instance counts from what storage holds, not from 0.
      Reflect.set(inst, 'alarmFailures', new AlarmFailures(state.storage.sql))
      failing.push(await run(due))
      // A run that succeeds (before the grace's end: nothing to do) ...
      delete faulty.runClock
      const ok = await run(due - 5000)
      // ... and the next failure starts the backoff over.
      fail()
      const again = await run(due)
      delete faulty.runClock
      // A count stored long ago (an alarm left unset after it, an older release that never
      // cleared it) is not taken up by a new instance.
      state.storage.sql.exec(
        `INSERT OR REPLACE INTO meta (key, value) VALUES ('alarm_failures', ?)`,
        `7:${Date.now() - 10 * 60_000}`,
      )
      const stale = new AlarmFailures(state.storage.sql).value
      return { failing, ok, again, stale }
    })
    expect(runs.failing).toEqual([due + 1000, due + 2000, due + 4000, due + 8000])
    expect(runs.ok).toBe(due)
    expect(runs.again).toBe(due + 1000)
    expect(runs.stale).toBe(0)
  })

  it('a game whose players all vanished with the object (a restart) ends even if nobody comes back', async () => {
    const { sessionId, sockets, createdAt } = await liveDiceGame(playerIds(2))
    await alarmAt(sessionId, createdAt + JOIN_GRACE)
    // Everyone is connected and nothing is due, yet an alarm stays armed: it is what wakes the
    // object if its sockets go with it and no request ever comes again.
    const armed = await inObject(sessionId, (_inst, state) => state.storage.getAlarm())
    expect(armed).not.toBeNull()
    expect(armed!).toBeLessThanOrEqual(createdAt + JOIN_GRACE + GRACE)
    await evictDurableObject(sessionObject(sessionId), { webSockets: 'close' })
    await sockets[0]!.whenClosed()
    // That alarm wakes it, which starts the lost players' grace (from the real clock, so already
    // past at the alarm's time): everyone left together, so the game ends without a winner.
    await alarmAt(sessionId, armed!)
    expect(await inObject(sessionId, (inst) => inst.info())).toMatchObject({
      ok: true,
      status: 'finished',
      result: { reason: 'abandoned', winner: null },
    })
  })

  it('a player who leaves while the others never came ends it abandoned at their grace: no win by forfeit for a no-show; with one who played left, the leaver forfeits', async () => {
    for (const othersCame of [false, true]) {
      // A connects and leaves before the join grace ends. First: B never comes (B would win by
      // A's forfeit). Then: B plays and C never comes (A forfeits; B and C go on).
      const players = playerIds(othersCame ? 3 : 2)
      const [pa, pb] = players as [string, string]
      const { sessionId, sockets, createdAt } = await liveDiceGame(
        players,
        othersCame ? [pa, pb] : [pa],
      )
      const left = createdAt + 1000
      await inObject(sessionId, (inst) => {
        inst.now = () => left
      })
      sockets[0]!.close()
      const watcher = othersCame ? sockets[1]! : null
      await until(
        () =>
          inObject(sessionId, (_inst, state) =>
            state.storage.sql
              .exec<{ due: number }>('SELECT due FROM timers WHERE player_id = ?', pa)
              .toArray()[0]?.due ===
            left + GRACE
              ? true
              : undefined,
          ),
        5000,
        "the leaver's grace timer",
      )
      expect(left + GRACE).toBeLessThan(createdAt + JOIN_GRACE)
      await alarmAt(sessionId, left + GRACE)
      const info = await inObject(sessionId, (inst) => inst.info())
      if (!othersCame) {
        expect(info).toMatchObject({
          status: 'finished',
          result: { reason: 'abandoned', winner: null },
        })
      } else {
        expect(info).toMatchObject({ status: 'live' })
        expect(await watcher!.nextOf('event')).toMatchObject({
          event: { kind: 'forfeit', player: pa },
        })
      }
    }
  })

  it('a player who came and left in the very millisecond whose grace ends with the join grace still counts as having come', async () => {
    const players = playerIds(3)
    const [pa, pb] = players as [string, string, string]
    const { sessionId, sockets, createdAt } = await liveDiceGame(players, [pa, pb])
    const [a, b] = sockets as [TestSocket, TestSocket]
    // A leaves; then B, so that B's grace ends when C's join grace does.
    await leaveAt(sessionId, a, pa, createdAt + 45_000)
    await leaveAt(sessionId, b, pb, createdAt + JOIN_GRACE - GRACE)
    await alarmAt(sessionId, createdAt + 45_000 + GRACE)
    // A forfeits; B (who came) and C (who never did) are still in: the game goes on.
    expect(await inObject(sessionId, (inst) => inst.info())).toMatchObject({ status: 'live' })
  })

  /** A two-player dice game whose players A and B left, A at `left` and B a millisecond later. */
  async function leftAMomentApart() {
    const players = playerIds(2)
    const [pa, pb] = players as [string, string]
    const { sessionId, tokens, sockets, createdAt } = await liveDiceGame(players)
    const [a, b] = sockets as [TestSocket, TestSocket]
    const left = createdAt + JOIN_GRACE + 1000
    await leaveAt(sessionId, a, pa, left)
    await leaveAt(sessionId, b, pb, left + 1)
    return { sessionId, tokens, pa, pb, left }
  }

  it("two players who leave a moment apart: the later leaver does not win by the first one's forfeit; the game ends abandoned, unless the later one comes back, who then wins", async () => {
    for (const comesBack of [false, true]) {
      const { sessionId, tokens, pb, left } = await leftAMomentApart()
      // A's grace ends; B is away too: nothing is decided yet.
      await alarmAt(sessionId, left + GRACE)
      expect(await inObject(sessionId, (inst) => inst.info())).toMatchObject({ status: 'live' })
      if (comesBack) {
        const back = await connect(sessionId, tokens[pb]!)
        await back.nextOf('welcome')
        await alarmAt(sessionId, left + 1 + GRACE)
        expect((await back.nextOf('ended')).result).toMatchObject({
          reason: 'forfeit',
          winner: pb,
        })
      } else {
        await alarmAt(sessionId, left + 1 + GRACE)
        expect(await inObject(sessionId, (inst) => inst.info())).toMatchObject({
          status: 'finished',
          result: { reason: 'abandoned', winner: null },
        })
      }
    }
  })

  it('two players who left apart, the later one back and away again before the first grace (put off) ends: the one who came back wins then, the grace is not put off again', async () => {
    const { sessionId, tokens, pb, left } = await leftAMomentApart()
    await alarmAt(sessionId, left + GRACE)
    const back = await connect(sessionId, tokens[pb]!)
    await back.nextOf('welcome')
    // B's app goes to the background again: a new grace of their own, ending after A's.
    await leaveAt(sessionId, back, pb, left + GRACE + 500)
    await alarmAt(sessionId, left + 1 + GRACE)
    expect(await inObject(sessionId, (inst) => inst.info())).toMatchObject({
      status: 'finished',
      result: { reason: 'forfeit', winner: pb },
    })
  })

  it('two players who left apart, the first one (their grace put off) back and away again before the later grace ends: the one who came back wins when it ends, it is not put off to theirs', async () => {
    const { sessionId, tokens, pa, left } = await leftAMomentApart()
    // A's grace ends; B is away too: A's is put off to B's, and A comes back within it.
    await alarmAt(sessionId, left + GRACE)
    const back = await connect(sessionId, tokens[pa]!)
    await back.nextOf('welcome')
    // A's app goes to the background again: a new grace, ending after B's.
    await leaveAt(sessionId, back, pa, left + GRACE)
    await alarmAt(sessionId, left + 1 + GRACE)
    expect(await inObject(sessionId, (inst) => inst.info())).toMatchObject({
      status: 'finished',
      result: { reason: 'forfeit', winner: pa },
    })
  })

  it("two players taking turns to leave and come back (each within their own grace): the later leaver does not win by the first one's forfeit; the game ends abandoned when the last grace ends", async () => {
    const { sessionId, tokens, pa, pb, left } = await leftAMomentApart()
    // A's grace ends; B is away too: A's is put off to B's end. A comes back within it, and
    // goes again; then B comes back within their own grace (never put off), and goes again.
    await alarmAt(sessionId, left + GRACE)
    const a = await connect(sessionId, tokens[pa]!)
    await a.nextOf('welcome')
    await leaveAt(sessionId, a, pa, left + GRACE)
    const b = await connect(sessionId, tokens[pb]!)
    await b.nextOf('welcome')
    await leaveAt(sessionId, b, pb, left + GRACE + 100)
    // A's new grace ends while B's runs on: put off to it, not a forfeit handing B the win.
    await alarmAt(sessionId, left + 2 * GRACE)
    expect(await inObject(sessionId, (inst) => inst.info())).toMatchObject({ status: 'live' })
    await alarmAt(sessionId, left + 2 * GRACE + 100)
    expect(await inObject(sessionId, (inst) => inst.info())).toMatchObject({
      status: 'finished',
      result: { reason: 'abandoned', winner: null },
    })
  })

  it('a no-show whose join grace ends while the player who came has left (their grace running) is not waited for: they forfeit at the join grace', async () => {
    const players = playerIds(2)
    const [pa] = players as [string, string]
    const { sessionId, tokens, sockets, createdAt } = await liveDiceGame(players, [pa])
    // A leaves just before B's join grace ends: A's grace runs past it.
    await leaveAt(sessionId, sockets[0]!, pa, createdAt + JOIN_GRACE - 1000)
    await alarmAt(sessionId, createdAt + JOIN_GRACE)
    // B forfeited for never coming: A, back within their own grace, has won.
    const back = await connect(sessionId, tokens[pa]!)
    const ended = await back.nextOf('ended')
    expect(ended.result).toMatchObject({ reason: 'forfeit', winner: pa })
  })

  it('two players who left a moment apart, the later one back after their own grace ended (no alarm between): the game is abandoned, not won by them', async () => {
    const { sessionId, tokens, pb, left } = await leftAMomentApart()
    // B comes back past both graces, before any alarm: the clock the connect runs first ends it.
    await inObject(sessionId, (inst) => {
      inst.now = () => left + 1 + GRACE + 500
    })
    const back = await connect(sessionId, tokens[pb]!)
    const ended = await back.nextOf('ended')
    expect(ended.result).toMatchObject({ reason: 'abandoned', winner: null })
  })

  /**
   * A dice-race of three: C forfeits at the join grace and connects again to watch (out of the
   * game, yet not absent), then A and B, everyone still in, leave at the same moment and their
   * graces end; `rules` may change the session's rules first. Returns C's `ended`.
   */
  async function everyoneStillInLeaves(rules?: (rules: AnyRules) => AnyRules) {
    const players = playerIds(3)
    const [pa, pb, pc] = players as [string, string, string]
    const { sessionId, tokens, sockets, createdAt } = await liveDiceGame(players, [pa, pb])
    const [a, b] = sockets as [TestSocket, TestSocket]
    if (rules) {
      await inObject(sessionId, (inst) => {
        const self = inst as unknown as { rules: AnyRules }
        self.rules = rules(self.rules)
      })
    }
    await alarmAt(sessionId, createdAt + JOIN_GRACE)
    expect(await a.nextOf('event')).toMatchObject({ event: { kind: 'forfeit', player: pc } })
    const c = await connect(sessionId, tokens[pc]!)
    await c.nextOf('welcome')
    const left = createdAt + JOIN_GRACE + 1000
    await inObject(sessionId, (inst) => {
      inst.now = () => left
    })
    a.close()
    b.close()
    await until(
      () =>
        inObject(sessionId, (_inst, state) => {
          const { n } = state.storage.sql
            .exec<{ n: number }>('SELECT count(*) AS n FROM timers')
            .one()
          return n === 2 ? n : undefined
        }),
      5000,
      'both grace timers',
    )
    await alarmAt(sessionId, left + GRACE)
    return c.nextOf('ended')
  }

  it('rules that refuse an abandon (a module in plain JavaScript may) hear the absences one at a time: the game ends, it does not hang with its players out to the session and in to the rules', async () => {
    const ended = await everyoneStillInLeaves(
      (rules) =>
        ({
          ...rules,
          onAbandon: () => ruleError('not_abandoned', 'this module does not abandon'),
        }) as unknown as AnyRules,
    )
    // Told one at a time, the first forfeit leaves one player in: the game is over.
    expect(ended.result).toMatchObject({ reason: 'forfeit' })
  })

  it('players who leave together end it abandoned even if one who forfeited earlier came back to watch', async () => {
    const ended = await everyoneStillInLeaves()
    expect(ended.result).toMatchObject({ reason: 'abandoned', winner: null })
  })
})

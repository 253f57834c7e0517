import { describe, expect, it } from 'vitest'
import {
  LOCATION_HINTS,
  REGION_ALIASES,
  locationHintFor,
  type LocationHint,
} from '../../workers/core/location.ts'
import { gameSessionCreator, type SessionSetup } from '../../workers/matchmaking/session.ts'
import { poolFetcher, poolStub } from '../../workers/matchmaking/stub.ts'

describe('locationHintFor', () => {
  it('names the hint a region is, or stands for, and none for other names', () => {
    expect(locationHintFor('weur')).toBe('weur')
    expect(locationHintFor('apac-se')).toBe('apac-se')
    expect(locationHintFor('eu')).toBe('weur')
    expect(locationHintFor('us-west')).toBe('wnam')
    expect(locationHintFor('na')).toBe('enam')
    expect(locationHintFor('asia')).toBe('apac')
    for (const other of ['shard-7', 'moon', 'constructor', 'toString', '__proto__', 'EU']) {
      expect(locationHintFor(other)).toBeNull()
    }
  })

  it('every alias is a valid region name and stands for a real hint', () => {
    const regionName = /^[a-z0-9][a-z0-9-]{0,31}$/
    for (const [alias, hint] of Object.entries(REGION_ALIASES)) {
      expect(alias).toMatch(regionName)
      expect(LOCATION_HINTS).toContain(hint)
    }
  })
})

/** A Durable Object namespace that records what it was asked for. */
function recordingNamespace() {
  const calls: { name: string; options: unknown }[] = []
  const ns = {
    getByName(name: string, options?: { locationHint?: LocationHint }) {
      calls.push({ name, options })
      return {
        create: async () => ({ ok: true as const, created: true }),
      }
    },
  }
  return { calls, ns: ns as unknown as DurableObjectNamespace }
}

describe('objects created with their region’s hint', () => {
  it("a pool's stub names its region's hint on every call, and nothing for an unhinted region", () => {
    const { calls, ns } = recordingNamespace()
    poolStub({ MATCH_POOL: ns as never }, 'duel', 'eu')
    poolFetcher({ MATCH_POOL: ns as never }, 'duel', 'enam')
    poolStub({ MATCH_POOL: ns as never }, 'duel', 'shard-7')
    expect(calls).toEqual([
      { name: 'duel:eu', options: { locationHint: 'weur' } },
      { name: 'duel:enam', options: { locationHint: 'enam' } },
      { name: 'duel:shard-7', options: undefined },
    ])
  })

  it("a match's session is created with its pool region's hint", async () => {
    const { calls, ns } = recordingNamespace()
    const setup: SessionSetup = {
      sessionId: 's-1',
      rules: 'dice-race',
      roster: [],
      seed: '00',
      region: 'asia',
    }
    await gameSessionCreator({ GAME_SESSION: ns as never })(setup)
    await gameSessionCreator({ GAME_SESSION: ns as never })({
      ...setup,
      sessionId: 's-2',
      region: null,
    })
    expect(calls).toEqual([
      { name: 's-1', options: { locationHint: 'apac' } },
      { name: 's-2', options: undefined },
    ])
  })
})

import { describe, expect, it } from 'vitest'
import { DUEL, queueId } from './helpers/matchmaking.ts'
import { ADMIN_KEY, call, clearOfMinuteTurn, clientAddress, json, problem } from './helpers/http.ts'

/** The parts of a JSON Schema this file reads. */
interface Schema {
  type?: string | string[]
  enum?: unknown[]
  description?: string
  default?: unknown
  minimum?: number
  pattern?: string
  properties?: Record<string, Schema>
  propertyNames?: { maxLength?: number }
  $ref?: string
}
interface Parameter {
  name: string
  in: string
  schema: Schema
  description?: string
}
interface Doc {
  components: { schemas: Record<string, Schema> }
  paths: Record<string, Record<string, { parameters?: Parameter[] }>>
}

async function openapi(): Promise<Doc> {
  const res = await call('/openapi.json')
  expect(res.status).toBe(200)
  return (await res.json()) as Doc
}

const props = (s: Schema | undefined): Record<string, Schema> => s?.properties ?? {}

describe('the OpenAPI document states what the code enforces', () => {
  it('queue rules: the enum is exactly the rules PUT /v1/admin/queues accepts', async () => {
    const doc = await openapi()
    const rules = props(doc.components.schemas.QueueConfig).rules!
    expect([...(rules.enum ?? [])].sort()).toEqual([
      'dice-race',
      'hot-potato',
      'relay',
      'rock-paper-scissors',
    ])
    for (const name of rules.enum as string[]) {
      const res = await call(
        `/v1/admin/queues/${queueId()}`,
        json('PUT', { ...DUEL, rules: name }, ADMIN_KEY),
      )
      expect(res.status, name).toBe(201)
    }
    const refused = await call(
      `/v1/admin/queues/${queueId()}`,
      json('PUT', { ...DUEL, rules: 'chess' }, ADMIN_KEY),
    )
    const p = await problem(refused)
    expect(p.status).toBe(422)
    expect(p.body.errors).toEqual([expect.objectContaining({ path: 'rules' })])
  })

  it('Problem lists the extension members the code sends, and its type is a nexus URN', async () => {
    const problemSchema = (await openapi()).components.schemas.Problem
    const members = props(problemSchema)
    for (const name of [
      'retryAfter',
      'players',
      'region',
      'ticketId',
      'ticketStatus',
      'partyId',
      'cycle',
      'limit',
      'boards',
      'pools',
      'sessions',
      'archivedRowsCleared',
    ]) {
      expect(members[name]?.description, name).toBeTruthy()
    }
    expect(members.retryAfter!.type).toBe('integer')
    // Every state a 409 names: a cancel refused, and a join refused for another region's ticket.
    expect((members.ticketStatus as { enum?: string[] }).enum).toEqual(
      expect.arrayContaining(['waiting', 'matching', 'matched', 'expired']),
    )
    expect(members.type!.description).toContain('urn:nexus:problem:')
    expect(members.type!.description).toContain('rate-limited')
    expect(
      new RegExp(members.type!.pattern!).test('urn:nexus:problem:idempotency-key-reused'),
    ).toBe(true)
  })

  it('score metadata states its byte, depth and key limits; a reward its 1 KiB', async () => {
    const doc = await openapi()
    const metadata = props(doc.components.schemas.ScoreSubmission).metadata!
    expect(metadata.description).toContain('4096')
    expect(metadata.description).toContain('metadataMaxBytes')
    expect(metadata.description).toContain('512')
    expect(metadata.description).toContain('8 levels')
    expect(metadata.description).toContain('64')
    expect(metadata.propertyNames?.maxLength).toBe(64)
    const tier = JSON.stringify(doc.components.schemas.LeaderboardConfig)
    expect(tier).toContain('1024 bytes')
  })

  it('session events state their defaults; the socket’s since is a non-negative integer', async () => {
    const doc = await openapi()
    const events = doc.paths['/v1/sessions/{id}/events']!.get!.parameters!
    const param = (name: string) => events.find((p) => p.in === 'query' && p.name === name)!
    expect(param('from').schema.default).toBe(1)
    expect(param('limit').schema.default).toBe(100)
    const socket = doc.paths['/v1/sessions/{id}']!.get!.parameters!
    const since = socket.find((p) => p.in === 'query' && p.name === 'since')!
    expect(since.schema.type).toBe('integer')
    expect(since.schema.minimum).toBe(0)
    expect(since.schema.description ?? since.description).toMatch(/current seq/)
  })

  it("a closed cycle's cursor is described as the rank it is; the live top's stays opaque", async () => {
    const doc = await openapi()
    const cursorOf = (path: string) =>
      doc.paths[path]?.get?.parameters?.find((p) => p.name === 'cursor')?.schema
    const archived = cursorOf('/v1/leaderboards/{id}/cycles/{cycle}/top')
    expect(archived?.pattern).toBe('^(0|[1-9][0-9]{0,9})$')
    expect(new RegExp(archived!.pattern!).test('2147483647')).toBe(true)
    expect(cursorOf('/v1/leaderboards/{id}/top')?.pattern).toBeUndefined()
    // As described: leading zeros or a sign are refused.
    for (const cursor of ['007', '-1', '1e3']) {
      const res = await call(`/v1/leaderboards/any-board/cycles/1/top?cursor=${cursor}`)
      expect((await problem(res)).status, cursor).toBe(422)
    }
  })

  it('the operational routes are in the document, with the statuses they answer', async () => {
    const doc = await openapi()
    const statuses = (path: string) =>
      Object.keys((doc.paths[path]?.get as { responses?: object } | undefined)?.responses ?? {})
    expect(statuses('/health')).toContain('200')
    expect(statuses('/ready')).toEqual(expect.arrayContaining(['200', '503']))
    expect(statuses('/metrics')).toEqual(expect.arrayContaining(['200', '401', '403', '503']))
    // And they answer as documented.
    expect((await call('/health')).status).toBe(200)
    expect((await call('/metrics')).status).toBe(401)
  })

  it('every operation that may carry a body lists 400, 413 and 415, which the body checks give before any route runs (a DELETE too)', async () => {
    const doc = await openapi()
    const missing: string[] = []
    let withBody = 0
    for (const [path, methods] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(methods)) {
        if (!['post', 'put', 'patch', 'delete'].includes(method)) continue
        withBody++
        const codes = Object.keys((op as { responses?: object }).responses ?? {})
        for (const code of ['400', '413', '415'])
          if (!codes.includes(code)) missing.push(`${method.toUpperCase()} ${path} ${code}`)
      }
    }
    expect(withBody).toBeGreaterThan(20)
    expect(missing).toEqual([])
  })

  it('every operation that reads a credential lists 429, which an address past its wrong admin keys gets on any of them', async () => {
    const doc = await openapi()
    const missing: string[] = []
    let credentialed = 0
    for (const [path, methods] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(methods)) {
        const codes = Object.keys((op as { responses?: object }).responses ?? {})
        if (!codes.includes('401')) continue
        credentialed++
        if (!codes.includes('429')) missing.push(`${method.toUpperCase()} ${path}`)
      }
    }
    expect(credentialed).toBeGreaterThan(30)
    expect(missing).toEqual([])
    // A player's own route, from an address that used up its wrong admin keys: 429.
    await clearOfMinuteTurn()
    const ip = clientAddress()
    const rewards = (credential: string) =>
      call('/v1/players/me/rewards', {
        headers: { authorization: `Bearer ${credential}`, 'cf-connecting-ip': ip },
      })
    let status = 0
    for (let i = 0; i < 30 && status !== 429; i++) status = (await rewards(`guess-${i}`)).status
    expect(status).toBe(429)
  })
})

import { createServer, type IncomingMessage, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { getRedis } from '../../workers/lib/redis.ts'

/**
 * How Nexus's Upstash client (workers/lib/redis.ts) behaves against an endpoint that misbehaves:
 * one that never answers, and one that asks for read-your-writes. The real `@upstash/redis`
 * client, as the Worker configures it, against a plain HTTP server standing in for an Upstash
 * endpoint in trouble (Redis's own behaviour is tested against redis-server elsewhere).
 */

interface Endpoint {
  url: string
  requests: IncomingMessage[]
  /** Resolves when the client has closed the connection of the `n`th request (from 0). */
  closed(n: number): Promise<void>
  server: Server
}

let endpoint: Endpoint | undefined

async function startEndpoint(
  answer: ((req: IncomingMessage) => string) | 'never' | 'reset',
): Promise<Endpoint> {
  const requests: IncomingMessage[] = []
  const closings: Promise<void>[] = []
  const server = createServer((req, res) => {
    requests.push(req)
    closings.push(new Promise((resolve) => res.on('close', () => resolve())))
    if (answer === 'never') return
    if (answer === 'reset') return req.socket.destroy()
    req.resume()
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json', 'upstash-sync-token': 'sync-1' })
      res.end(answer(req))
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    // A URL of its own per endpoint: getRedis keeps one client per URL per isolate.
    url: `http://127.0.0.1:${port}`,
    requests,
    async closed(n) {
      await expect.poll(() => closings.length > n, { timeout: 5_000 }).toBe(true)
      await closings[n]
    },
    server,
  }
}

afterEach(async () => {
  endpoint?.server.closeAllConnections()
  await new Promise((resolve) => endpoint?.server.close(resolve))
  endpoint = undefined
})

describe("the Worker's Upstash client", () => {
  it('tries a call once and ends its connection after a second when no answer comes', async () => {
    endpoint = await startEndpoint('never')
    const accel = getRedis({ UPSTASH_REDIS_REST_URL: endpoint.url, UPSTASH_REDIS_REST_TOKEN: 't' })!

    const started = Date.now()
    const outcome = await accel.redis.get('k').then(
      () => 'answered',
      (err: unknown) => (err instanceof Error ? err.name : String(err)),
    )
    const took = Date.now() - started

    expect(outcome).toMatch(/Timeout|Abort/)
    // The fetch is ended by its own signal at 1 s: not the client's default (no end at all),
    // and not after a retry's second wait.
    expect(took).toBeGreaterThanOrEqual(900)
    expect(took).toBeLessThan(3_000)
    await endpoint.closed(0)
    expect(endpoint.requests).toHaveLength(1)
  })

  it('a call the accelerator abandons at its deadline still ends its connection, with no retry', async () => {
    endpoint = await startEndpoint('never')
    const accel = getRedis({ UPSTASH_REDIS_REST_URL: endpoint.url, UPSTASH_REDIS_REST_TOKEN: 't' })!

    // The accelerator's own deadline (250 ms) answers "go the slow way"; the fetch behind it
    // must not hold its connection open for as long as the endpoint stays silent.
    expect(await accel.run('test.get', (r) => r.get('k'))).toBeUndefined()
    await endpoint.closed(0)
    expect(endpoint.requests).toHaveLength(1)
  })

  it('tries a call once when the connection fails', async () => {
    endpoint = await startEndpoint('reset')
    const accel = getRedis({ UPSTASH_REDIS_REST_URL: endpoint.url, UPSTASH_REDIS_REST_TOKEN: 't' })!

    // The accelerator's breaker and the caller's fallback deal with failure; a retry inside the
    // client would only spend the call's deadline (`retry: false` still tries twice).
    expect(await accel.run('test.get', (r) => r.get('k'))).toBeUndefined()
    expect(endpoint.requests).toHaveLength(1)
  })

  it('does not ask the endpoint for read-your-writes', async () => {
    endpoint = await startEndpoint(() => JSON.stringify({ result: 'OK' }))
    const accel = getRedis({ UPSTASH_REDIS_REST_URL: endpoint.url, UPSTASH_REDIS_REST_TOKEN: 't' })!

    await accel.redis.set('k', 'v')
    await accel.redis.set('k', 'w')

    // With read-your-writes, the second call would carry the sync token the first answer set,
    // and the endpoint would hold the read until a replica had caught up with the write.
    expect(endpoint.requests).toHaveLength(2)
    expect(endpoint.requests[1]!.headers['upstash-sync-token']).toBeUndefined()
  })
})

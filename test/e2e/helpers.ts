import { inject } from 'vitest'
import { createClient, type ClientOptions, type NexusClient } from '../../client/src/index.ts'

export const stack = () => inject('stack')

/** A fresh resource id per test, so tests never share boards or queues. */
export function uid(prefix: string): string {
  return `${prefix}-${crypto.randomUUID().slice(0, 8)}`
}

/** A client of the e2e stack, signed in as a new guest. */
export async function guestClient(opts: Partial<ClientOptions> = {}): Promise<NexusClient> {
  const nexus = createClient({ baseUrl: stack().url, ...opts })
  await nexus.auth.guest(`e2e-${crypto.randomUUID()}`)
  return nexus
}

/** An admin call to the stack (setting up boards and queues the way an operator does). */
export async function admin(method: string, path: string, body?: unknown): Promise<unknown> {
  const res = await fetch(stack().url + path, {
    method,
    headers: {
      authorization: `Bearer ${stack().adminKey}`,
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
    },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  })
  const text = await res.text()
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`)
  return text ? (JSON.parse(text) as unknown) : null
}

/**
 * Waits for a condition that the system makes true asynchronously (an archive completing),
 * polling at a fixed interval; fails after `timeoutMs`, never passes on timeout.
 */
export async function eventually<T>(
  what: string,
  check: () => Promise<T | null | undefined | false>,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const v = await check()
    if (v) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 200))
  }
}

/** `promise`, or a failure naming `what` after `timeoutMs`: waits never pass silently. */
export function within<T>(promise: Promise<T>, what: string, timeoutMs = 10_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs)
    }),
  ])
}

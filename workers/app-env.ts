import type { Env } from './env.ts'
import type { Principal } from './lib/auth.ts'

/** Hono's environment for every route: bindings plus what middleware attaches. */
export interface AppEnv {
  Bindings: Env
  Variables: {
    requestId: string
    /** The caller's own `x-request-id`, when it sent a well-formed one; logged, never trusted. */
    clientRequestId?: string
    principal?: Principal
    /** Set by `jsonBody`: the request has a body of at least one byte. */
    bodyPresent?: boolean
    /**
     * Set by a handler that held the request open on purpose (a ticket's long-poll): its time
     * is observed under a route label of its own, not among the route's ordinary answers.
     */
    heldOpen?: boolean
    /** The problem an error answer carried (its type's last part, and detail): logged with it. */
    problem?: { type: string; detail: string }
  }
}

import type { Context } from 'hono'
import type { AppEnv } from '../app-env.ts'

/**
 * Sets a header on the answer a middleware finds after the route ran. Most answers are the
 * Worker's own, whose headers change in place; one from elsewhere (a Durable Object's, the
 * cache's) has immutable headers, and Hono copies it with the header set.
 */
export function setResponseHeader(
  c: Context<AppEnv>,
  name: string,
  value: string,
  append = false,
): void {
  try {
    if (append) c.res.headers.append(name, value)
    else c.res.headers.set(name, value)
  } catch {
    c.header(name, value, { append })
  }
}

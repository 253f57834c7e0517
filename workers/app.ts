import { OpenAPIHono } from '@hono/zod-openapi'
import type { Context } from 'hono'
import { bodyLimit } from 'hono/body-limit'
import { HTTPException } from 'hono/http-exception'
import { methodNotAllowed } from 'hono/method-not-allowed'
import type { AppEnv } from './app-env.ts'
import { isDatabaseUnreachable, isTransientDatabaseError } from './db/client.ts'
import { clippedPath, errorFields, log, configureLog } from './lib/log.ts'
import {
  ApiError,
  databaseRetryAfter,
  isLoadToShed,
  overloadedRetryAfter,
  problemBody,
  type ProblemType,
  unavailableAcrossRpcDetail,
} from './lib/problem.ts'
import { setResponseHeader } from './lib/response-header.ts'
import { NoAnswerInTime } from './lib/within.ts'
import { cors } from './middleware/cors.ts'
import { observe } from './middleware/observe.ts'
import { jsonBody, routed } from './middleware/json-body.ts'
import { adminLeaderboards } from './routes/admin-leaderboards.ts'
import { adminPlayers } from './routes/admin-players.ts'
import { adminQueues } from './routes/admin-queues.ts'
import { adminSessions } from './routes/admin-sessions.ts'
import { auth } from './routes/auth.ts'
import { dashboard } from './routes/dashboard.ts'
import { leaderboardRoutes } from './routes/leaderboards.ts'
import { matchmakingRoutes } from './routes/matchmaking.ts'
import { documentOps, ops } from './routes/ops.ts'
import { partyRoutes } from './routes/parties.ts'
import { playerRoutes } from './routes/players.ts'
import { sessionRoutes } from './routes/sessions.ts'

/** No request body Nexus accepts is larger; routes bound their fields far below this. */
export const MAX_BODY_BYTES = 64 * 1024

/** RFC 9110 §15.5.2: every 401 carries a challenge, whatever was wrong with the credential. */
const BEARER_CHALLENGE = 'Bearer realm="nexus"'

function renderProblem(c: Context<AppEnv>, err: ApiError): Response {
  c.set('problem', { type: err.problem, detail: err.message.slice(0, 300) })
  const body = {
    ...problemBody(err.problem, err.message, err.extensions),
    requestId: c.get('requestId'),
  }
  const headers = new Headers({
    'content-type': 'application/problem+json',
    'x-request-id': c.get('requestId') ?? '',
  })
  for (const [name, value] of Object.entries(err.headers)) headers.set(name, value)
  if (err.status === 401 && !headers.has('www-authenticate')) {
    headers.set('www-authenticate', BEARER_CHALLENGE)
  }
  return new Response(JSON.stringify(body), { status: err.status, headers })
}

/** What the runtime sets on an error from a Durable Object call (its error-handling reference). */
interface DurableObjectError {
  /** The call may be sent again: the object was restarting, moving, or the connection dropped. */
  retryable?: boolean
  /** The object cannot keep up: sending again adds to its load. */
  overloaded?: boolean
  /** The object's own code threw it (a bug of ours unless it also says it is retryable). */
  remote?: boolean
}

/**
 * Whether an error from a Durable Object call is the runtime's "not now" rather than a fault in
 * the object's code: a deploy resetting the object, the object moving, or its queue overflowing.
 */
function isDurableObjectUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false
  const e = err as DurableObjectError
  return e.overloaded === true || e.retryable === true
}

const httpExceptionProblems: Partial<Record<number, ProblemType>> = {
  400: 'bad-request',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not-found',
  413: 'payload-too-large',
  415: 'unsupported-media-type',
}

/**
 * The Hono application: middleware, every resource router, the one error funnel.
 *
 * @example
 * export default { fetch: createApp().fetch } satisfies ExportedHandler<Env>
 */
export function createApp(): OpenAPIHono<AppEnv> {
  const app = new OpenAPIHono<AppEnv>()

  app.use(async function configure(c, next) {
    configureLog(c.env)
    await next()
  })
  app.use(async function requestId(c, next) {
    // Always ours: a 500's requestId must find exactly one request in the logs, and a client
    // could send any id, another's included. Theirs is logged beside it, to join their traces.
    const id = crypto.randomUUID()
    c.set('requestId', id)
    c.header('x-request-id', id)
    const theirs = c.req.header('x-request-id')
    if (theirs && theirs.length <= 128 && /^[\w.:=-]+$/.test(theirs))
      c.set('clientRequestId', theirs)
    await next()
    // An answer the route built itself (a cached read, a socket's upgrade) does not carry the
    // header set above, which Hono adds only to the answers it makes.
    if (!c.res.headers.has('x-request-id')) setResponseHeader(c, 'x-request-id', id)
  })
  app.use(async function noStoreByDefault(c, next) {
    await next()
    // An answer that says nothing of caching is stored by no cache: most such answers carry a
    // player's own data or tokens (a ticket, a session, an admin-made session's tokens). Cached
    // reads say what they allow themselves. A socket's 101 is left as the runtime made it.
    if (c.res.status !== 101 && !c.res.headers.has('cache-control')) {
      setResponseHeader(c, 'cache-control', 'no-store')
    }
  })
  app.use(observe())
  // Before the method check: a browser's preflight is an OPTIONS no route declares.
  app.use(cors())
  app.use(
    methodNotAllowed({
      app,
      onMethodNotAllowed: (c, methods) =>
        // OPTIONS asks what a path takes (RFC 9110 §9.3.7): told, not refused (nor logged as the
        // not-found problem the routes answered first).
        c.req.method === 'OPTIONS'
          ? (c.set('problem', undefined),
            // A new answer: c.body would keep the not-found problem's headers (its type).
            new Response(null, {
              status: 204,
              headers: { allow: [...methods, 'OPTIONS'].join(', ') },
            }))
          : renderProblem(
              c as Context<AppEnv>,
              new ApiError(
                'method-not-allowed',
                `${c.req.method} is not allowed here; use ${methods.join(', ')}`,
                {},
                {
                  allow: [...methods, 'OPTIONS'].join(', '),
                },
              ),
            ),
    }),
  )
  const limitBody = bodyLimit({
    maxSize: MAX_BODY_BYTES,
    onError: () => {
      throw new ApiError(
        'payload-too-large',
        `Request bodies are limited to ${MAX_BODY_BYTES} bytes`,
      )
    },
  })
  // Only where a route answers: a path or method none takes is 404 or 405 whatever its body.
  app.use(async function limitRoutedBody(c, next) {
    return routed(c) ? limitBody(c, next) : next()
  })
  app.use(jsonBody())

  app.route('/', ops)
  app.route('/v1/auth', auth)
  app.route('/v1/admin/players', adminPlayers)
  app.route('/v1/admin/leaderboards', adminLeaderboards)
  app.route('/v1/leaderboards', leaderboardRoutes)
  app.route('/v1/players', playerRoutes)
  app.route('/v1/admin/queues', adminQueues)
  app.route('/v1/matchmaking', matchmakingRoutes)
  app.route('/v1/parties', partyRoutes)
  app.route('/v1/admin/sessions', adminSessions)
  app.route('/v1/sessions', sessionRoutes)
  app.route('/dashboard', dashboard)

  // Built once per app (an isolate's): the routes do not change while it lives, and building it
  // walks every route's schemas, on a route anyone may call. Cached at the edge for 5 minutes.
  let openApiText: string | null = null
  app.get('/openapi.json', (c) => {
    openApiText ??= JSON.stringify(
      app.getOpenAPI31Document({
        openapi: '3.1.0',
        info: {
          title: 'Nexus',
          version: '1',
          description:
            'Leaderboards with timed cycles, matchmaking and authoritative game sessions. ' +
            'Errors are RFC 9457 problem+json with a stable `type` (urn:nexus:problem:…).',
        },
      }),
    )
    return c.body(openApiText, 200, {
      'content-type': 'application/json; charset=utf-8',
      'cache-control': 'public, max-age=300',
    })
  })
  documentOps(app)
  app.openAPIRegistry.registerComponent('securitySchemes', 'bearer', {
    type: 'http',
    scheme: 'bearer',
    bearerFormat: 'JWT or admin key',
  })
  app.openAPIRegistry.registerComponent('securitySchemes', 'token', {
    type: 'apiKey',
    in: 'query',
    name: 'token',
    description:
      'WebSocket upgrades only: browsers cannot set a header on a socket. Logs keep URLs: a browser ' +
      'should rather offer the subprotocols `nexus.v1` and `nexus.token.<token>` (the answer names `nexus.v1`)',
  })

  app.notFound((c) =>
    renderProblem(
      c,
      new ApiError('not-found', `No route for ${c.req.method} ${clippedPath(c.req.path)}`),
    ),
  )

  app.onError((err, c) => {
    if (err instanceof ApiError) return renderProblem(c, err)
    const unavailableDetail = unavailableAcrossRpcDetail(err)
    if (unavailableDetail !== null) {
      return renderProblem(
        c,
        new ApiError('unavailable', unavailableDetail, {}, { 'retry-after': '60' }),
      )
    }
    if (err instanceof HTTPException) {
      // Hono's validator reading an empty or broken body that carries a JSON content type.
      if (err.status === 400 && /malformed json/i.test(err.message)) {
        return renderProblem(
          c,
          new ApiError('malformed-json', 'The request body is not valid JSON'),
        )
      }
      const problem = httpExceptionProblems[err.status]
      if (problem) return renderProblem(c, new ApiError(problem, err.message || undefined))
    }
    // The database could not serve the request now (not that the request was wrong): 503.
    const unavailable = isDatabaseUnreachable(err)
      ? { what: 'database unreachable', detail: 'The database is unreachable; retry shortly' }
      : isTransientDatabaseError(err)
        ? {
            what: 'database query lost a race or timed out',
            detail: 'The database could not finish the request now; retry',
          }
        : isDurableObjectUnavailable(err)
          ? {
              what: 'durable object unavailable',
              detail: (err as DurableObjectError).overloaded
                ? 'This object is overloaded; retry after the time Retry-After says'
                : 'This object was restarting or moving; retry',
            }
          : err instanceof NoAnswerInTime
            ? {
                // A call given a deadline (a board, a pool, Neon) was still out at it: slow, not
                // wrong. A 500 logged as a fault would send an operator looking for a bug.
                what: 'call unanswered in time',
                detail: 'A service this request needs did not answer in time; retry later',
              }
            : null
    if (unavailable) {
      log('warn', unavailable.what, {
        requestId: c.get('requestId'),
        method: c.req.method,
        path: clippedPath(c.req.path),
        ...errorFields(err),
      })
      // An overloaded object sheds load, and an unreachable database is not back in a second:
      // their callers back off rather than retry at once.
      const wait: Record<string, string> = isLoadToShed(err)
        ? overloadedRetryAfter()
        : isDatabaseUnreachable(err)
          ? databaseRetryAfter()
          : {}
      return renderProblem(c, new ApiError('unavailable', unavailable.detail, {}, wait))
    }
    log('error', 'unhandled error', {
      requestId: c.get('requestId'),
      method: c.req.method,
      path: clippedPath(c.req.path),
      ...errorFields(err),
    })
    return renderProblem(
      c,
      new ApiError('internal', 'Something went wrong; the request id identifies it in the logs'),
    )
  })

  return app
}

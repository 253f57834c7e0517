import { Client, NeonDbError, Pool, neon, neonConfig } from '@neondatabase/serverless'
import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { WebSocket } from 'ws'
import { neonLocalSettings, startNeonRelay } from '../../local/neon-relay/index.ts'
import type { NeonRelay } from '../../local/neon-relay/index.ts'
import { startPostgres } from '../../local/postgres.ts'
import type { LocalPostgres } from '../../local/postgres.ts'

let server: LocalPostgres
let relay: NeonRelay
let direct: pg.Client

beforeAll(async () => {
  server = await startPostgres()
  relay = await startNeonRelay({ postgresPort: server.port })
  Object.assign(neonConfig, neonLocalSettings(relay.address))
  neonConfig.webSocketConstructor = WebSocket as unknown as typeof neonConfig.webSocketConstructor
  direct = new pg.Client(server.url)
  await direct.connect()
})

afterAll(async () => {
  await direct?.end()
  await relay?.close()
  await server?.stop()
})

/** Same credentials and database, but a host the relay must never try to reach. */
function remoteLookingUrl(): string {
  const url = new URL(server.url)
  url.hostname = 'ep-nowhere-123456.eu-central-1.aws.neon.tech'
  return url.toString()
}

function clientBackends(): Promise<number> {
  return direct
    .query<{ n: string }>(
      "SELECT count(*) AS n FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
    )
    .then((r) => Number(r.rows[0]?.n))
}

describe('WebSocket mode (Pool / Client)', () => {
  it('runs queries through the relay, whatever host the connection string names', async () => {
    const pool = new Pool({ connectionString: remoteLookingUrl() })
    try {
      const { rows } = await pool.query(
        'SELECT $1::int + $2::int AS sum, current_user AS who',
        [40, 2],
      )
      expect(rows).toEqual([{ sum: 42, who: 'nexus' }])
    } finally {
      await pool.end()
    }
  })

  it('commits and rolls back interactive transactions', async () => {
    await direct.query('CREATE TABLE ws_tx (id int PRIMARY KEY, note text)')
    const client = new Client(server.url)
    await client.connect()
    try {
      await client.query('BEGIN')
      await client.query("INSERT INTO ws_tx VALUES (1, 'rolled back')")
      await client.query('ROLLBACK')
      await client.query('BEGIN')
      await client.query("INSERT INTO ws_tx VALUES (2, 'kept')")
      await client.query('COMMIT')
    } finally {
      await client.end()
    }
    const { rows } = await direct.query('SELECT id, note FROM ws_tx ORDER BY id')
    expect(rows).toEqual([{ id: 2, note: 'kept' }])
  })

  it('surfaces Postgres errors with their code and constraint', async () => {
    await direct.query('CREATE TABLE ws_err (id int CONSTRAINT ws_err_pk PRIMARY KEY)')
    const pool = new Pool({ connectionString: server.url })
    try {
      await pool.query('INSERT INTO ws_err VALUES (1)')
      const error = await pool.query('INSERT INTO ws_err VALUES (1)').catch((e: unknown) => e)
      expect(error).toMatchObject({ code: '23505', constraint: 'ws_err_pk' })
      // The session is still usable after an error.
      expect((await pool.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }])
    } finally {
      await pool.end()
    }
  })

  it('carries a row of several hundred KB intact across many frames', async () => {
    const bytes = randomBytes(700 * 1024)
    const text = bytes.toString('base64')
    const pool = new Pool({ connectionString: server.url })
    try {
      const { rows } = await pool.query<{ t: string; b: Buffer }>(
        'SELECT $1::text AS t, decode($1::text, $2) AS b',
        [text, 'base64'],
      )
      expect(rows[0]?.t).toBe(text)
      expect(Buffer.compare(rows[0]?.b ?? Buffer.alloc(0), bytes)).toBe(0)
    } finally {
      await pool.end()
    }
  })

  it('serves many concurrent queries over several tunnels, and leaks none of them', async () => {
    // Earlier tests' sessions may still be ending; start from a quiet relay.
    await vi.waitFor(() => expect(relay.openTunnels()).toBe(0), { timeout: 5_000, interval: 20 })
    const before = await clientBackends()
    const pool = new Pool({ connectionString: server.url, max: 8 })
    const n = 300
    const results = await Promise.all(
      Array.from({ length: n }, (_, i) =>
        pool.query<{ v: number; s: string }>('SELECT $1::int * 2 AS v, repeat($2, $1) AS s', [
          i,
          'ab',
        ]),
      ),
    )
    results.forEach((r, i) => expect(r.rows).toEqual([{ v: i * 2, s: 'ab'.repeat(i) }]))
    expect(relay.openTunnels()).toBeGreaterThan(0)
    await pool.end()
    await vi.waitFor(
      async () => {
        expect(relay.openTunnels()).toBe(0)
        expect(await clientBackends()).toBe(before)
      },
      { timeout: 5_000, interval: 20 },
    )
  })

  it('is a plain byte stream: Postgres messages split and merged across odd-sized frames', async () => {
    // A minimal protocol-3 client over a raw WebSocket, so frame boundaries are ours to choose.
    const ws = new WebSocket(`ws://${relay.address}/v1?address=localhost:${server.port}`)
    ws.binaryType = 'nodebuffer'
    await new Promise((resolve, reject) => {
      ws.once('open', resolve)
      ws.once('error', reject)
    })
    let received = Buffer.alloc(0)
    const waiters: (() => void)[] = []
    ws.on('message', (data: Buffer) => {
      received = Buffer.concat([received, data])
      for (const wake of waiters.splice(0)) wake()
    })
    const readMessage = async (): Promise<{ type: string; body: Buffer }> => {
      while (received.length < 5 || received.length < 1 + received.readInt32BE(1)) {
        await new Promise<void>((resolve) => waiters.push(resolve))
      }
      const length = received.readInt32BE(1)
      const message = {
        type: String.fromCharCode(received[0] ?? 0),
        body: received.subarray(5, 1 + length),
      }
      received = received.subarray(1 + length)
      return message
    }
    const message = (type: string, body: Buffer) => {
      const header = Buffer.alloc(5)
      header.write(type, 0)
      header.writeInt32BE(body.length + 4, 1)
      return Buffer.concat([header, body])
    }
    const cstr = (s: string) => Buffer.from(`${s}\0`)
    // Send everything as 1..7-byte frames.
    const sendChopped = (bytes: Buffer) => {
      for (let i = 0, size = 1; i < bytes.length; i += size, size = (size % 7) + 1) {
        ws.send(bytes.subarray(i, i + size))
      }
    }

    const params = Buffer.concat([
      cstr('user'),
      cstr(server.user),
      cstr('database'),
      cstr(server.database),
      cstr(''),
    ])
    const startup = Buffer.alloc(8)
    startup.writeInt32BE(8 + params.length, 0)
    startup.writeInt32BE(196608, 4)
    sendChopped(Buffer.concat([startup, params]))
    const auth = await readMessage()
    expect(auth.type).toBe('R')
    expect(auth.body.readInt32BE(0)).toBe(3) // cleartext password, as pg_hba says
    sendChopped(message('p', cstr(server.password)))
    for (let m = await readMessage(); m.type !== 'Z'; m = await readMessage()) {
      expect(m.type).not.toBe('E')
    }

    // 50 queries in one burst, chopped into tiny frames; answers must come back in order.
    const n = 50
    sendChopped(
      Buffer.concat(Array.from({ length: n }, (_, i) => message('Q', cstr(`SELECT ${i} * ${i}`)))),
    )
    const values: string[] = []
    let ready = 0
    while (ready < n) {
      const m = await readMessage()
      if (m.type === 'D') values.push(m.body.subarray(6, 6 + m.body.readInt32BE(2)).toString())
      if (m.type === 'Z') ready += 1
      expect(m.type).not.toBe('E')
    }
    expect(values).toEqual(Array.from({ length: n }, (_, i) => String(i * i)))
    ws.send(message('X', Buffer.alloc(0)))
    ws.close()
    await vi.waitFor(() => expect(relay.openTunnels()).toBe(0), { timeout: 5_000, interval: 20 })
  })

  it('refuses to relay to any port but the local Postgres', async () => {
    const status = await new Promise<number>((resolve, reject) => {
      const ws = new WebSocket(`ws://${relay.address}/v1?address=127.0.0.1:${server.port + 1}`)
      ws.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0))
      ws.once('open', () => reject(new Error('the relay accepted a foreign port')))
      ws.once('error', () => undefined)
    })
    expect(status).toBe(403)
    const missing = await new Promise<number>((resolve) => {
      const ws = new WebSocket(`ws://${relay.address}/v1`)
      ws.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0))
      ws.once('error', () => undefined)
    })
    expect(missing).toBe(403)
  })
})

describe('HTTP mode (neon())', () => {
  it('runs a parameterised query', async () => {
    const sql = neon(remoteLookingUrl())
    const who = 'world'
    expect(await sql`SELECT ${'hello'} || ' ' || ${who} AS greeting, ${41}::int + 1 AS n`).toEqual([
      { greeting: 'hello world', n: 42 },
    ])
  })

  it('returns types exactly as the driver gives them on Neon', async () => {
    const sql = neon(server.url)
    const query = `SELECT 9007199254740993::int8 AS big, 12.50::numeric(6,2) AS num,
      '2024-02-29 13:14:15.678+00'::timestamptz AS ts, '{"a":[1,{"b":null}],"c":"é"}'::jsonb AS doc,
      true AS yes, false AS no, NULL::int AS nothing, ARRAY[1,2,3]::int4[] AS ints,
      ARRAY['a','b,c',NULL]::text[] AS texts, 3.5::float8 AS f, '\\x00ff'::bytea AS raw,
      '2024-02-29'::date AS day, 7::int2 AS small`
    const [row] = await sql.query(query)
    expect(row).toEqual({
      big: '9007199254740993',
      num: '12.50',
      ts: new Date(Date.UTC(2024, 1, 29, 13, 14, 15, 678)),
      doc: { a: [1, { b: null }], c: 'é' },
      yes: true,
      no: false,
      nothing: null,
      ints: [1, 2, 3],
      texts: ['a', 'b,c', null],
      f: 3.5,
      raw: Buffer.from([0x00, 0xff]),
      day: new Date(2024, 1, 29),
      small: 7,
    })
    // And identical to what node-postgres parses from a direct connection.
    expect(row).toEqual((await direct.query(query)).rows[0])
  })

  it('gives full results and array mode in the driver shape', async () => {
    const sql = neon(server.url, { fullResults: true, arrayMode: true })
    const result = await sql.query('SELECT 1::int AS one, $1::text AS two', ['2'])
    expect(result.rows).toEqual([[1, '2']])
    expect(result.command).toBe('SELECT')
    expect(result.rowCount).toBe(1)
    expect(result.fields.map((f) => [f.name, f.dataTypeID])).toEqual([
      ['one', 23],
      ['two', 25],
    ])
  })

  it('sends the documented request and gets the documented response', async () => {
    const res = await fetch(`${relay.url}/sql`, {
      method: 'POST',
      headers: {
        'Neon-Connection-String': server.url,
        'Neon-Raw-Text-Output': 'true',
        'Neon-Array-Mode': 'true',
      },
      body: JSON.stringify({ query: 'SELECT $1::int8 AS n, NULL::text AS z', params: ['5'] }),
    })
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({
      command: 'SELECT',
      rowCount: 1,
      rows: [['5', null]],
      fields: [
        {
          name: 'n',
          dataTypeID: 20,
          tableID: 0,
          columnID: 0,
          dataTypeSize: 8,
          dataTypeModifier: -1,
          format: 'text',
        },
        {
          name: 'z',
          dataTypeID: 25,
          tableID: 0,
          columnID: 0,
          dataTypeSize: -1,
          dataTypeModifier: -1,
          format: 'text',
        },
      ],
      rowAsArray: true,
    })
  })

  it('runs transaction([...]) atomically: a failing statement rolls back the earlier ones', async () => {
    const sql = neon(server.url)
    await sql`CREATE TABLE http_tx (id int CONSTRAINT http_tx_pk PRIMARY KEY, note text)`
    const results = await sql.transaction([
      sql`INSERT INTO http_tx VALUES (1, 'a') RETURNING id`,
      sql`SELECT count(*)::int AS n FROM http_tx`,
    ])
    expect(results).toEqual([[{ id: 1 }], [{ n: 1 }]])

    const error = (await sql
      .transaction([
        sql`INSERT INTO http_tx VALUES (2, 'b')`,
        sql`INSERT INTO http_tx VALUES (1, 'dup')`,
      ])
      .catch((e: unknown) => e)) as NeonDbError
    expect(error).toMatchObject({ code: '23505', constraint: 'http_tx_pk', table: 'http_tx' })
    expect(error.detail).toContain('(id)=(1)')
    const { rows } = await direct.query('SELECT id FROM http_tx ORDER BY id')
    expect(rows).toEqual([{ id: 1 }])
  })

  it('applies batch options: read-only transactions refuse writes', async () => {
    const sql = neon(server.url)
    await sql`CREATE TABLE http_ro (id int)`
    const error = await sql
      .transaction([sql`INSERT INTO http_ro VALUES (1)`], {
        readOnly: true,
        isolationLevel: 'Serializable',
      })
      .catch((e: unknown) => e)
    expect(error).toMatchObject({ code: '25006' })
    const [level] = await sql.transaction([sql`SHOW transaction_isolation`], {
      isolationLevel: 'RepeatableRead',
    })
    expect(level).toEqual([{ transaction_isolation: 'repeatable read' }])
  })

  it('surfaces a single-query error with code, constraint and position', async () => {
    const sql = neon(server.url)
    await sql`CREATE TABLE http_err (id int CONSTRAINT http_err_pk PRIMARY KEY)`
    await sql`INSERT INTO http_err VALUES (1)`
    await expect(sql`INSERT INTO http_err VALUES (1)`).rejects.toMatchObject({
      code: '23505',
      constraint: 'http_err_pk',
      severity: 'ERROR',
    })
    await expect(sql`SELECT nope FROM http_err`).rejects.toMatchObject({
      code: '42703',
      position: '8',
    })
  })

  it('refuses an answer over 10 MiB with 507, as Neon does', async () => {
    const sql = neon(server.url)
    const big = 10 * 1024 * 1024 + 1
    await expect(sql.query('SELECT repeat($1, $2::int) AS s', ['x', big])).rejects.toMatchObject({
      message: expect.stringContaining('HTTP status 507'),
    })
    await expect(
      sql.transaction([sql.query('SELECT repeat($1, $2::int)', ['x', big])]),
    ).rejects.toMatchObject({
      message: expect.stringContaining('HTTP status 507'),
    })
    const [row] = await sql.query('SELECT length(repeat($1, $2::int)) AS n', ['x', big])
    expect(Number(row!.n)).toBe(big)
  })

  it('rolls back a transaction whose answer is over 10 MiB, as Neon does before it commits', async () => {
    const sql = neon(server.url)
    await direct.query('CREATE TABLE http_too_large (id int PRIMARY KEY)')
    const big = 10 * 1024 * 1024 + 1
    await expect(
      sql.transaction([
        sql.query('INSERT INTO http_too_large (id) VALUES (1)'),
        sql.query('SELECT repeat($1, $2::int)', ['x', big]),
      ]),
    ).rejects.toMatchObject({ message: expect.stringContaining('HTTP status 507') })
    // Told 507, the client finds nothing written; the relay's connection still serves.
    const { rows } = await direct.query('SELECT count(*)::int AS n FROM http_too_large')
    expect(rows[0].n).toBe(0)
    await expect(sql.transaction([sql.query('SELECT 1 AS one')])).resolves.toEqual([[{ one: 1 }]])
  })

  it('enforces one statement per query, as Neon does', async () => {
    const sql = neon(server.url)
    await expect(sql.query('SELECT 1; SELECT 2')).rejects.toMatchObject({ code: '42601' })
  })

  it('rejects wrong credentials and requests without a connection string', async () => {
    const url = new URL(server.url)
    url.password = 'wrong'
    // As Neon's proxy, which checks the password itself: 400 without Postgres's SQLSTATE.
    const refused: unknown = await neon(url.toString())`SELECT 1`.catch((e: unknown) => e)
    expect(refused).toBeInstanceOf(NeonDbError)
    expect(refused).toMatchObject({ message: expect.stringContaining('password') })
    expect((refused as NeonDbError).code ?? '').toBe('')
    const batch = neon(url.toString())
    await expect(batch.transaction([batch`SELECT 1`])).rejects.toMatchObject({
      message: expect.stringContaining('password'),
    })
    const res = await fetch(`${relay.url}/sql`, {
      method: 'POST',
      body: '{"query":"SELECT 1","params":[]}',
    })
    expect(res.status).toBe(400)
  })
})

import { describe, expect, it, onTestFinished, vi } from 'vitest'
import { configureLog, errorFields, errorMessage, log } from '../../workers/lib/log.ts'

describe('errorFields', () => {
  it('blanks the credentials of a connection string an error quotes, in its message and its stack, and leaves other text alone', () => {
    const err = new Error(
      'Received: "rediss://default:S3cret@host.upstash.io:6379"; also postgres://nexus:pa55@db/nexus',
    )
    const fields = errorFields(err)
    expect(fields.error).toBe(
      'Received: "rediss://***@host.upstash.io:6379"; also postgres://***@db/nexus',
    )
    expect(String(fields.stack)).not.toMatch(/S3cret|pa55/)
    expect(errorFields(new Error('see https://example.com/a and a@b.com')).error).toBe(
      'see https://example.com/a and a@b.com',
    )
    expect(errorFields('redis://:only-password@h').error).toBe('redis://***@h')
    // A password that made the string fail to parse may hold a slash or an at sign.
    expect(
      errorFields(new Error('not a valid URL (postgresql://app:ab/cd+e@f@host/db)')).error,
    ).toBe('not a valid URL (postgresql://***@host/db)')
    expect(errorMessage(new Error('mongodb://u:x@y@h'))).toBe('mongodb://***@h')
  })

  it("renders what an error wraps (drizzle's query error wraps the driver's), a few levels down, blanked the same way", () => {
    const driver = new Error('connection string: postgres://app:pw@db/x is not valid')
    const wrapped = new Error('Failed query: select 1', { cause: driver })
    const outer = new Error('load failed', { cause: wrapped })
    expect(errorFields(outer).cause).toBe(
      'Error: Failed query: select 1 <- Error: connection string: postgres://***@db/x is not valid',
    )
    expect(errorFields(new Error('plain'))).not.toHaveProperty('cause')
  })

  it("leaves out the command an Upstash error repeats after its message (rate limit keys hold clients' addresses)", () => {
    const err = new Error(
      'EXECABORT NOPERM no permissions to run the \'incr\' command, command was: [["incr","nexus:rl:guest-auth:198.51.100.7:1"]]',
    )
    const fields = errorFields(err)
    expect(fields.error).toBe(
      "EXECABORT NOPERM no permissions to run the 'incr' command, command left out",
    )
    expect(String(fields.stack)).not.toContain('198.51.100.7')
  })
})

describe('log', () => {
  it("blanks the deployment's secrets wherever a line quotes them, a password the URL pattern cannot find the end of included", () => {
    const lines = captureWarnings()
    configureLog({
      LOG_LEVEL: 'info',
      DATABASE_URL: 'postgres://app:it\'s a "pass"@ep-x.neon.tech/db',
      ADMIN_KEY: 'admin-key-0123456789',
      AUTH_SECRET: 'short',
    })
    log('warn', 'failed', {
      error: 'not a valid URL (connection string: postgres://app:it\'s a "pass"@ep-x.neon.tech/db)',
      password: 'it\'s a "pass"',
      header: 'Bearer admin-key-0123456789',
      other: 'short words stay',
    })
    expect(lines).toHaveLength(1)
    const line = JSON.parse(lines[0]!) as Record<string, string>
    expect(line.error).toBe('not a valid URL (connection string: ***)')
    expect(line.password).toBe('***')
    expect(line.header).toBe('Bearer ***')
    // Values under 8 characters are not taken for secrets: they would blank ordinary words.
    expect(line.other).toBe('short words stay')
  })

  it('blanks a secret only where a string holds it: a line stays JSON, and text that merely runs into an escape is left alone', () => {
    const lines = captureWarnings()
    configureLog({ ADMIN_KEY: 'nimda-key-123' })
    log('warn', 'x', { text: 'first line\nimda-key-123 second', exact: 'key nimda-key-123' })
    const line = JSON.parse(lines[0]!) as Record<string, string>
    expect(line.text).toBe('first line\nimda-key-123 second')
    expect(line.exact).toBe('key ***')
  })

  it("a connection string's password is blanked as written and percent-decoded, unless it is the user's or the database's name (postgres:postgres@…: no secret, and blanking it would blank every mention of PostgreSQL)", () => {
    const lines = captureWarnings()
    configureLog({ DATABASE_URL: 'postgres://app:p%40ss%23word1@ep-x.neon.tech/db' })
    log('warn', 'x', { a: 'decoded p@ss#word1 here', b: 'encoded p%40ss%23word1 here' })
    configureLog({ DATABASE_URL: 'postgres://postgres:postgres@127.0.0.1:5432/postgres' })
    log('warn', 'y', { a: 'postgres refused the query' })
    const [first, second] = lines.map((l) => JSON.parse(l) as Record<string, string>)
    expect([first!.a, first!.b]).toEqual(['decoded *** here', 'encoded *** here'])
    expect(second!.a).toBe('postgres refused the query')
  })

  it('errorMessage, which what is stored and answered goes through, blanks secrets and leaves out an Upstash command too', () => {
    configureLog({ ADMIN_KEY: 'admin-key-0123456789' })
    onTestFinished(() => configureLog({}))
    expect(
      errorMessage(
        new Error('bad admin-key-0123456789, command was: [["incr","nexus:rl:x:203.0.113.9:1"]]'),
      ),
    ).toBe('bad ***, command left out')
  })
})

/** Every console.warn line until the test ends; the registered secrets forgotten then. */
function captureWarnings(): string[] {
  const lines: string[] = []
  const spy = vi
    .spyOn(console, 'warn')
    .mockImplementation((l: unknown) => void lines.push(String(l)))
  onTestFinished(() => {
    spy.mockRestore()
    configureLog({})
  })
  return lines
}

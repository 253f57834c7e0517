import { describe, expect, it } from 'vitest'
import { errorFields, errorMessage } from '../../workers/lib/log.ts'

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
})

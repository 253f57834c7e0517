import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { RespError, RespParser, encodeCommand } from '../../local/upstash-rest/resp.ts'
import type { RespValue } from '../../local/upstash-rest/resp.ts'
import { rewriteScript } from '../../local/upstash-rest/scripts.ts'

// An independent RESP2 writer, straight from the protocol description.
function write(value: RespValue): string {
  if (value === null) return '$-1\r\n'
  if (typeof value === 'number') return `:${value}\r\n`
  if (typeof value === 'string') return `+${value}\r\n`
  if (value instanceof RespError) return `-${value.message}\r\n`
  if (Array.isArray(value)) return `*${value.length}\r\n${value.map(write).join('')}`
  return `$${value.length}\r\n${value.toString('latin1')}\r\n`
}

const line = fc.string({ unit: fc.constantFrom('a', 'Z', ' ', '0', '-', ':') })
const leaf: fc.Arbitrary<RespValue> = fc.oneof(
  line,
  line.map((m) => new RespError(`ERR ${m}`)),
  fc.integer({ min: -1e12, max: 1e12 }),
  fc.constant(null),
  fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b)),
)
const value = fc.letrec<{ v: RespValue }>((tie) => ({
  v: fc.oneof({ depthSize: 'small' }, leaf, fc.array(tie('v'), { maxLength: 5 })),
})).v

describe('RespParser', () => {
  it('parses any sequence of replies, however the bytes are chunked', () => {
    fc.assert(
      fc.property(
        fc.array(value, { maxLength: 6 }),
        fc.array(fc.integer({ min: 1, max: 9 })),
        (replies, cuts) => {
          const bytes = Buffer.from(replies.map(write).join(''), 'latin1')
          const parser = new RespParser()
          const parsed: RespValue[] = []
          let offset = 0
          for (let i = 0; offset < bytes.length; i++) {
            const size = cuts.length > 0 ? (cuts[i % cuts.length] ?? 1) : bytes.length
            parsed.push(...parser.push(bytes.subarray(offset, offset + size)))
            offset += size
          }
          expect(parsed).toEqual(replies)
        },
      ),
      { numRuns: 300 },
    )
  })

  it('encodes commands as arrays of bulk strings', () => {
    expect(encodeCommand(['SET', 'k', Buffer.from('é')]).toString()).toBe(
      '*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\né\r\n',
    )
  })
})

describe('rewriteScript', () => {
  it('drops flags Redis does not know and keeps those it does', () => {
    expect(rewriteScript('#!lua flags=allow-key-locking\nreturn 1')).toBe('#!lua\nreturn 1')
    expect(rewriteScript('#!lua flags=allow-key-locking,no-writes\nreturn 1')).toBe(
      '#!lua flags=no-writes\nreturn 1',
    )
    expect(rewriteScript('#!lua flags=no-writes,allow-oom\r\nreturn 1')).toBe(
      '#!lua flags=no-writes,allow-oom\r\nreturn 1',
    )
  })

  it('leaves scripts without a shebang, or with only known flags, untouched', () => {
    const plain = "return redis.call('GET', KEYS[1])"
    expect(rewriteScript(plain)).toBe(plain)
    const known = '#!lua flags=no-writes\nreturn 1'
    expect(rewriteScript(known)).toBe(known)
  })
})

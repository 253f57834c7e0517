import { describe, expect, it } from 'vitest'
import { rateLimitAddress, rateLimitNetwork } from '../../workers/core/client-address.ts'

describe('rateLimitNetwork', () => {
  it('is the /48 of an IPv6 client, and nothing for IPv4 ones', () => {
    expect(rateLimitNetwork('2001:db8:1:2:aaaa::1')).toBe('2001:db8:1::/48')
    expect(rateLimitNetwork('2001:0db8:0001:ffff::')).toBe('2001:db8:1::/48')
    expect(rateLimitNetwork('192.0.2.7')).toBeNull()
    expect(rateLimitNetwork('::ffff:192.0.2.7')).toBeNull()
  })
})

describe('rateLimitAddress', () => {
  it('counts an IPv4 address as itself, also when IPv4-mapped', () => {
    expect(rateLimitAddress('192.0.2.7')).toBe('192.0.2.7')
    expect(rateLimitAddress('::ffff:192.0.2.7')).toBe('192.0.2.7')
    // Other spellings of the same mapped address: not one shared 0:0:0:0::/64 counter.
    for (const s of ['0:0:0:0:0:ffff:192.0.2.7', '::FFFF:c000:207', '0000::ffff:c000:0207']) {
      expect(rateLimitAddress(s)).toBe('192.0.2.7')
    }
    expect(rateLimitAddress('::ffff:c633:6401')).toBe('198.51.100.1')
  })

  it('counts every address of one IPv6 /64 as one client, whatever its spelling', () => {
    const one = [
      '2001:db8:1:2::1',
      '2001:0db8:0001:0002:aaaa:bbbb:cccc:dddd',
      '2001:DB8:1:2:ffff::',
      '2001:db8:1:2:0:0:0:1',
      '2001:db8:1:2::192.0.2.1',
    ].map(rateLimitAddress)
    expect(new Set(one)).toEqual(new Set(['2001:db8:1:2::/64']))
    expect(rateLimitAddress('2001:db8:1:3::1')).toBe('2001:db8:1:3::/64')
    expect(rateLimitAddress('::1')).toBe('0:0:0:0::/64')
    expect(rateLimitAddress('fe80::1%eth0')).toBe('fe80:0:0:0::/64')
  })

  it('leaves what is not an address as it is', () => {
    for (const s of ['unknown', '1:2:3', '1::2::3', 'g::1', '1:2:3:4:5:6:7:8:9']) {
      expect(rateLimitAddress(s)).toBe(s)
    }
  })
})

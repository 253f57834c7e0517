/**
 * The part of a client's address that rate limits count by. An IPv4 address is one client. An
 * IPv6 address is counted by its /64: one subscriber usually holds a whole /64 and can rotate
 * through it freely, so counting single addresses would bound nothing.
 * @example rateLimitAddress('2001:db8:1:2:aaaa::1') // '2001:db8:1:2::/64'
 * @example rateLimitAddress('::ffff:192.0.2.7') // '192.0.2.7'
 */
export function rateLimitAddress(ip: string): string {
  if (!ip.includes(':')) return ip
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(ip)
  if (mapped) return mapped[1]!
  const groups = expandIpv6(ip)
  if (!groups) return ip
  // An IPv4-mapped address however spelled (0:0:0:0:0:ffff:192.0.2.7, ::ffff:c000:207) is that
  // IPv4 client; by its /64 every such client would share one counter.
  if (groups.slice(0, 5).every((g) => /^0+$/.test(g)) && groups[5] === 'ffff') {
    const [hi, lo] = [parseInt(groups[6]!, 16), parseInt(groups[7]!, 16)]
    return `${hi >>> 8}.${hi & 255}.${lo >>> 8}.${lo & 255}`
  }
  return `${groups
    .slice(0, 4)
    .map((g) => g.replace(/^0+(?=.)/, ''))
    .join(':')}::/64`
}

/**
 * The network an IPv6 client's /64 belongs to, its /48, for a second, wider count: a /48 (65,536
 * /64s) is handed out free by tunnel brokers, so a limit counted by /64 alone bounds nothing for
 * whoever holds one. Null for IPv4 (and IPv4-mapped) clients, which the address counts already.
 * @example rateLimitNetwork('2001:db8:1:2:aaaa::1') // '2001:db8:1::/48'
 */
export function rateLimitNetwork(ip: string): string | null {
  const narrow = rateLimitAddress(ip)
  if (!narrow.endsWith('::/64')) return null
  return `${narrow.split(':').slice(0, 3).join(':')}::/48`
}

/** The eight 16-bit groups of an IPv6 address (lowercase hex), or null if it is not one. */
function expandIpv6(ip: string): string[] | null {
  const address = ip.toLowerCase().split('%')[0]!
  const halves = address.split('::')
  if (halves.length > 2) return null
  const parse = (part: string) => (part === '' ? [] : part.split(':'))
  const head = parse(halves[0]!)
  const tail = halves.length === 2 ? parse(halves[1]!) : []
  // An embedded IPv4 tail (e.g. 64:ff9b::192.0.2.1) fills the last two groups.
  const last = tail.length > 0 ? tail : head
  const v4 =
    last.length > 0 ? /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(last.at(-1)!) : null
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number]
    last.splice(-1, 1, ((a << 8) | b).toString(16), ((c << 8) | d).toString(16))
  }
  const missing = 8 - head.length - tail.length
  if (halves.length === 1 ? missing !== 0 : missing < 1) return null
  const groups = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill('0'), ...tail]
  if (groups.some((g) => !/^[0-9a-f]{1,4}$/.test(g))) return null
  return groups
}

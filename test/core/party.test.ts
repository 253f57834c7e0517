import { describe, expect, it } from 'vitest'
import { partyJoinRefusal, type PartyRoster } from '../../workers/core/party.ts'

const party: PartyRoster = { id: 'p1', leader: 'a', members: ['a', 'b', 'c'] }

describe('partyJoinRefusal', () => {
  it('lets the leader name exactly the members, in any order', () => {
    expect(partyJoinRefusal(party, 'a', ['a', 'b', 'c'])).toBeNull()
    expect(partyJoinRefusal(party, 'a', ['c', 'a', 'b'])).toBeNull()
  })

  it('refuses players in no party, members who do not lead, strangers and missing members', () => {
    expect(partyJoinRefusal(null, 'a', ['a', 'b'])).toMatch(/in no party/)
    expect(partyJoinRefusal(party, 'b', ['a', 'b', 'c'])).toMatch(/Only the party's leader \('a'\)/)
    expect(partyJoinRefusal(party, 'a', ['a', 'b', 'c', 'x'])).toMatch(/Not members.*'x'/)
    expect(partyJoinRefusal(party, 'a', ['a', 'b'])).toMatch(/missing: 'c'/)
    expect(partyJoinRefusal(party, 'a', ['b', 'c'])).toMatch(/missing: 'a'/)
  })
})

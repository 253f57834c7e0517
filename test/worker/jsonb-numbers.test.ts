import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { compactNumber } from '../../workers/core/rules/json.ts'
import { pg } from './helpers/boards.ts'

/** How PostgreSQL's jsonb writes each number back, JSON text in, text out. */
async function jsonbText(texts: string[]): Promise<string[]> {
  const rows = (await pg().query(
    'select (t::jsonb)::text as back from unnest($1::text[]) with ordinality u(t, i) order by i',
    [texts],
  )) as { back: string }[]
  return rows.map((r) => r.back)
}

describe("numbers through PostgreSQL's jsonb (what metadata, rules options and a session's log are archived as)", () => {
  it('a number the checks take comes back as JSON wrote it; one they refuse comes back longer (a 1e308, 309 digits)', async () => {
    const taken = fc.sample(
      fc.double({ noNaN: true, noDefaultInfinity: true }).filter(compactNumber),
      { numRuns: 400, seed: 20261206 },
    )
    const texts = [...taken, 1e-6, 999999999999999900000, 0.1].map((n) => JSON.stringify(n))
    expect(await jsonbText(texts)).toEqual(texts)
    const refused = ['1e308', '5e-324', '1e21', '1e-7']
    const back = await jsonbText(refused)
    for (const [i, text] of refused.entries()) {
      expect(Number(back[i]), text).toBe(Number(text))
      expect(back[i]!.length, text).toBeGreaterThan(text.length)
    }
    expect(back[0]!.length).toBeGreaterThan(300)
  })
})

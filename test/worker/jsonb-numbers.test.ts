import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { jsonbExtraBytes } from '../../workers/core/rules/json.ts'
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
  it('each comes back as many characters longer as jsonbExtraBytes counts: none for those JSON writes without an exponent, 303 for -1e308', async () => {
    const numbers = [
      ...fc.sample(fc.double({ noNaN: true, noDefaultInfinity: true }), {
        numRuns: 400,
        seed: 20261206,
      }),
      1e-6,
      1e-7,
      1.2e-16,
      999999999999999900000,
      1e21,
      -1e308,
      5e-324,
      0.1,
    ]
    const texts = numbers.map((n) => JSON.stringify(n))
    const back = await jsonbText(texts)
    numbers.forEach((n, i) => {
      expect(Number(back[i]), texts[i]).toBe(n === 0 ? 0 : n)
      expect(back[i]!.length - texts[i]!.length, texts[i]).toBe(jsonbExtraBytes(n))
    })
    expect(jsonbExtraBytes(-1e308)).toBe(303)
  })
})

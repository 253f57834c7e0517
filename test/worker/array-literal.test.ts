import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { numberArrayLiteral, textArrayLiteral } from '../../workers/db/array-literal.ts'
import { pg } from './helpers/boards.ts'

/** What PostgreSQL reads back from the literals, through the Neon driver as the archive sends them. */
async function readBack(
  texts: (string | null)[],
  numbers: number[],
): Promise<{ texts: (string | null)[]; numbers: number[] }> {
  const [row] = (await pg().query(
    `select coalesce($1::text[], '{}') as texts, coalesce($2::float8[], '{}') as numbers`,
    [textArrayLiteral(texts), numberArrayLiteral(numbers)],
  )) as { texts: (string | null)[]; numbers: number[] }[]
  return row!
}

describe('Postgres array literals of the archive', () => {
  it('carry quotes, backslashes, braces, commas, "NULL", empty strings and nulls exactly', async () => {
    const texts = [
      'plain',
      '{"lap":1,"note":"a \\"quoted\\" \\\\ path"}',
      'back\\slash',
      '"',
      '\\',
      '{,}',
      'NULL',
      'null',
      '',
      ' spaced ',
      'é€😀',
      null,
    ]
    const numbers = [0, -0, 1, -1.5, 1e21, -1e-7, 2 ** 53 - 1, Number.MAX_VALUE, Number.MIN_VALUE]
    const back = await readBack(texts, numbers)
    expect(back.texts).toEqual(texts)
    expect(back.numbers).toEqual(numbers.map((n) => n + 0))
  })

  it('round-trip arbitrary text and finite numbers', async () => {
    await fc.assert(
      fc.asyncProperty(
        // PostgreSQL text holds no NUL; everything else goes. Half the strings are made of what
        // an array literal must escape or quote (any Unicode string rarely holds a `\` or `"`).
        fc.array(
          fc.option(
            fc.oneof(
              fc.string({ unit: 'grapheme' }).filter((s) => !s.includes('\0')),
              fc.string({
                unit: fc.constantFrom('"', '\\', '{', '}', ',', ' ', 'N', 'U', 'L', 'a', 'é', '\n'),
              }),
            ),
          ),
          { maxLength: 20 },
        ),
        fc.array(fc.double({ noNaN: true, noDefaultInfinity: true }), { maxLength: 20 }),
        async (texts, numbers) => {
          const back = await readBack(texts, numbers)
          expect(back.texts).toEqual(texts)
          expect(back.numbers).toEqual(numbers.map((n) => n + 0))
        },
      ),
      { numRuns: 40 },
    )
  })
})

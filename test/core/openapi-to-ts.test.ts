import { describe, expect, it } from 'vitest'
import { schemaType } from '../../client/scripts/openapi-to-ts.ts'

describe("the SDK's types from the OpenAPI document", () => {
  it('an object with named fields and others beside them (zod looseObject) keeps the others: a log record’s input is read by its kind’s own fields', () => {
    const loose = schemaType({
      type: 'object',
      properties: { kind: { type: 'string' }, tick: { type: 'integer' } },
      required: ['kind', 'tick'],
      additionalProperties: {},
    })
    expect(loose).toBe('{\n  kind: string\n  tick: number\n  [key: string]: unknown\n}')
    const closed = schemaType({
      type: 'object',
      properties: { kind: { type: 'string' } },
      required: ['kind'],
      additionalProperties: false,
    })
    expect(closed).toBe('{\n  kind: string\n}')
  })
})

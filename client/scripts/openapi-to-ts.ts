/**
 * Turns the server's OpenAPI 3.1 document into TypeScript types for the SDK. It covers the
 * subset of JSON Schema that zod-openapi emits for Nexus (objects, arrays, records, unions,
 * enums, nullable types, `$ref`s); anything else becomes `unknown`, never `any`.
 */

type Json = null | boolean | number | string | Json[] | { [key: string]: Json }
type JsonObject = { [key: string]: Json }

const isObject = (v: Json | undefined): v is JsonObject =>
  typeof v === 'object' && v !== null && !Array.isArray(v)

const IDENTIFIER = /^[A-Za-z_$][A-Za-z0-9_$]*$/

function key(name: string): string {
  return IDENTIFIER.test(name) ? name : JSON.stringify(name)
}

function indent(text: string, by: string): string {
  return text.replace(/\n/g, `\n${by}`)
}

/** Just `{ type: [..., 'null'] }` (how zod-openapi marks a `$ref` nullable inside `allOf`). */
function isBareNullable(s: JsonObject): boolean {
  const t = s.type
  return Array.isArray(t) && t.includes('null') && Object.keys(s).every((k) => k === 'type')
}

function scalar(t: string, s: JsonObject, pad: string): string {
  switch (t) {
    case 'string':
      return 'string'
    case 'number':
    case 'integer':
      return 'number'
    case 'boolean':
      return 'boolean'
    case 'null':
      return 'null'
    case 'array':
      return `Array<${schemaType(isObject(s.items) ? s.items : {}, pad)}>`
    case 'object':
      return objectType(s, pad)
    default:
      return 'unknown'
  }
}

function objectType(s: JsonObject, pad: string): string {
  const props = isObject(s.properties) ? s.properties : null
  const extra = s.additionalProperties
  if (!props || Object.keys(props).length === 0) {
    if (isObject(extra) && Object.keys(extra).length > 0) {
      return `Record<string, ${schemaType(extra, pad)}>`
    }
    return extra === false ? 'Record<string, never>' : 'Record<string, unknown>'
  }
  const required = new Set(Array.isArray(s.required) ? s.required.map(String) : [])
  const inner = pad + '  '
  const lines = Object.entries(props).map(([name, p]) => {
    const doc =
      isObject(p) && typeof p.description === 'string'
        ? `/** ${p.description.replace(/\*\//g, '*\\/').replace(/\n+/g, ' ')} */\n${inner}`
        : ''
    const optional = required.has(name) ? '' : '?'
    return `${inner}${doc}${key(name)}${optional}: ${schemaType(isObject(p) ? p : {}, inner)}`
  })
  // Named fields and others beside them (zod's looseObject: `additionalProperties: {}`).
  if (extra === true || isObject(extra)) {
    const rest =
      isObject(extra) && Object.keys(extra).length > 0 ? schemaType(extra, inner) : 'unknown'
    lines.push(`${inner}[key: string]: ${rest}`)
  }
  return `{\n${lines.join('\n')}\n${pad}}`
}

/** The TypeScript type of one JSON Schema; `$ref`s become `Schemas['Name']`. */
export function schemaType(s: JsonObject, pad = ''): string {
  if (typeof s.$ref === 'string') {
    const name = s.$ref.replace('#/components/schemas/', '')
    return `Schemas[${JSON.stringify(name)}]`
  }
  if (Array.isArray(s.enum)) return s.enum.map((v) => JSON.stringify(v)).join(' | ')
  if (s.const !== undefined) return JSON.stringify(s.const)
  if (Array.isArray(s.allOf)) {
    const parts = s.allOf.filter(isObject)
    const nullable = parts.some(isBareNullable)
    const rest = parts.filter((p) => !isBareNullable(p)).map((p) => schemaType(p, pad))
    const joined = rest.length === 0 ? 'unknown' : rest.join(' & ')
    return nullable ? `(${joined}) | null` : joined
  }
  const union = Array.isArray(s.anyOf) ? s.anyOf : Array.isArray(s.oneOf) ? s.oneOf : null
  if (union) {
    return union
      .filter(isObject)
      .map((p) => schemaType(p, pad))
      .join(' | ')
  }
  if (Array.isArray(s.type)) return s.type.map((t) => scalar(String(t), s, pad)).join(' | ')
  if (typeof s.type === 'string') return scalar(s.type, s, pad)
  return 'unknown'
}

const METHODS = ['get', 'put', 'post', 'delete', 'patch'] as const

function parametersType(params: JsonObject[], where: string, pad: string): string {
  const mine = params.filter((p) => p.in === where)
  if (mine.length === 0) return 'Record<string, never>'
  const inner = pad + '  '
  const lines = mine.map((p) => {
    const optional = p.required === true ? '' : '?'
    return `${inner}${key(String(p.name))}${optional}: ${schemaType(isObject(p.schema) ? p.schema : {}, inner)}`
  })
  return `{\n${lines.join('\n')}\n${pad}}`
}

function contentSchema(container: Json | undefined): JsonObject | null {
  if (!isObject(container) || !isObject(container.content)) return null
  for (const media of Object.values(container.content)) {
    if (isObject(media) && isObject(media.schema)) return media.schema
  }
  return null
}

/**
 * The module text: `Schemas` (the named components) and `Paths` (per path and method: path,
 * query and header parameters, the body and every documented response by status).
 *
 * @example
 * writeFileSync('client/src/api.gen.ts', openApiToTs(await (await fetch(url + '/openapi.json')).json()))
 */
export function openApiToTs(doc: Json): string {
  if (!isObject(doc)) throw new Error('not an OpenAPI document')
  const out: string[] = [
    '// Generated by client/scripts/generate.ts from the server’s OpenAPI document',
    '// (GET /openapi.json). Do not edit: run `npx node client/scripts/generate.ts`.',
    '',
    '/** Every named schema of the API. */',
    'export interface Schemas {',
  ]
  const schemas =
    isObject(doc.components) && isObject(doc.components.schemas) ? doc.components.schemas : {}
  for (const [name, s] of Object.entries(schemas)) {
    out.push(`  ${key(name)}: ${schemaType(isObject(s) ? s : {}, '  ')}`)
  }
  out.push(
    '}',
    '',
    '/** Every operation of the API, by path and method. */',
    'export interface Paths {',
  )
  const paths = isObject(doc.paths) ? doc.paths : {}
  for (const [path, item] of Object.entries(paths)) {
    if (!isObject(item)) continue
    out.push(`  ${JSON.stringify(path)}: {`)
    for (const method of METHODS) {
      const op = item[method]
      if (!isObject(op)) continue
      const params = Array.isArray(op.parameters) ? op.parameters.filter(isObject) : []
      const pad = '      '
      const body = contentSchema(op.requestBody)
      const bodyRequired = isObject(op.requestBody) && op.requestBody.required === true
      if (typeof op.summary === 'string') out.push(`    /** ${op.summary.replace(/\*\//g, '')} */`)
      out.push(`    ${method}: {`)
      out.push(`${pad}path: ${parametersType(params, 'path', pad)}`)
      out.push(`${pad}query: ${parametersType(params, 'query', pad)}`)
      out.push(`${pad}headers: ${parametersType(params, 'header', pad)}`)
      out.push(
        `${pad}body: ${body ? indent(schemaType(body, pad), '') + (bodyRequired ? '' : ' | undefined') : 'undefined'}`,
      )
      out.push(`${pad}responses: {`)
      const responses = isObject(op.responses) ? op.responses : {}
      for (const [status, r] of Object.entries(responses)) {
        const schema = contentSchema(r)
        out.push(`${pad}  ${status}: ${schema ? schemaType(schema, pad + '  ') : 'undefined'}`)
      }
      out.push(`${pad}}`, '    }')
    }
    out.push('  }')
  }
  out.push('}', '')
  return out.join('\n')
}

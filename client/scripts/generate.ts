/**
 * Regenerates `client/src/api.gen.ts` from the server's OpenAPI document.
 *
 *   npx node client/scripts/generate.ts                       # starts a local stack for it (~20 s)
 *   npx node client/scripts/generate.ts --url http://127.0.0.1:8787   # or reads a running server
 *   npx node client/scripts/generate.ts --check               # exits 1 when the file is stale
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { format } from 'prettier'
import { openApiToTs } from './openapi-to-ts.ts'

export const GENERATED_PATH = fileURLToPath(new URL('../src/api.gen.ts', import.meta.url))

/** The generated module for a document, formatted as the repository formats TypeScript. */
export async function renderClientTypes(doc: unknown): Promise<string> {
  return format(openApiToTs(doc as Parameters<typeof openApiToTs>[0]), {
    parser: 'typescript',
    semi: false,
    singleQuote: true,
    printWidth: 100,
  })
}

async function fetchDocument(url: string): Promise<unknown> {
  const res = await fetch(`${url}/openapi.json`)
  if (!res.ok) throw new Error(`GET ${url}/openapi.json: ${res.status}`)
  return res.json()
}

async function main(): Promise<void> {
  const i = process.argv.indexOf('--url')
  let doc: unknown
  if (i > 0 && process.argv[i + 1]) {
    doc = await fetchDocument(process.argv[i + 1]!)
  } else {
    const { startStack } = await import('../../bench/lib/stack.ts')
    const stack = await startStack()
    try {
      doc = await fetchDocument(stack.url)
    } finally {
      await stack.stop()
    }
  }
  const text = await renderClientTypes(doc)
  if (process.argv.includes('--check')) {
    const current = readFileSync(GENERATED_PATH, 'utf8')
    if (current !== text) {
      console.error('client/src/api.gen.ts is stale: run npx node client/scripts/generate.ts')
      process.exit(1)
    }
    console.log('client/src/api.gen.ts is up to date')
    return
  }
  writeFileSync(GENERATED_PATH, text)
  console.log(`wrote ${GENERATED_PATH}`)
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main()

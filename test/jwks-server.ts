/**
 * A studio's identity provider, for tests: an RS256 key pair whose public half is served as a
 * JWKS document on 127.0.0.1, the way Auth0, Cognito or Firebase publish theirs.
 */
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { exportJWK, generateKeyPair } from 'jose'

export async function startJwksServer(): Promise<{
  url: string
  privateJwk: string
  /** The key a rotation adds (`kid` test-idp-key-2), served by `/growing/` from its second fetch. */
  nextPrivateJwk: string
  close(): Promise<void>
}> {
  const { publicKey, privateKey } = await generateKeyPair('RS256', { extractable: true })
  const pub = { ...(await exportJWK(publicKey)), kid: 'test-idp-key', alg: 'RS256', use: 'sig' }
  const priv = { ...(await exportJWK(privateKey)), kid: 'test-idp-key', alg: 'RS256' }
  // A provider mid-rotation whose keys have no ids: the test key and another, both without `kid`.
  const { kid: _kid, ...unnamed } = pub
  const next = await exportJWK((await generateKeyPair('RS256', { extractable: true })).publicKey)
  const rotating = { keys: [{ ...next, alg: 'RS256', use: 'sig' }, unnamed] }
  // A provider rotating in a second key: `/growing/<name>/jwks.json` serves the test key on its
  // first fetch and both keys on later ones, each after 300 ms, counting the fetches.
  const added = await generateKeyPair('RS256', { extractable: true })
  const pub2 = {
    ...(await exportJWK(added.publicKey)),
    kid: 'test-idp-key-2',
    alg: 'RS256',
    use: 'sig',
  }
  const priv2 = { ...(await exportJWK(added.privateKey)), kid: 'test-idp-key-2', alg: 'RS256' }
  const growingHits = new Map<string, number>()
  // Providers that are down: `/failing/<name>/jwks.json` answers 503 and counts the fetches,
  // which `/failing/<name>/hits` tells.
  const failingHits = new Map<string, number>()
  // Providers that answer slowly: `/slow/<name>/jwks.json` serves the keys after 300 ms and
  // counts the fetches, which `/slow/<name>/hits` tells.
  const slowHits = new Map<string, number>()
  const server = createServer((req, res) => {
    const growing = /^\/growing\/([\w-]+)\/(jwks\.json|hits)$/.exec(req.url ?? '')
    if (growing) {
      const [, name, what] = growing as unknown as [string, string, string]
      const hits = growingHits.get(name) ?? 0
      if (what === 'hits') {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ hits }))
        return
      }
      growingHits.set(name, hits + 1)
      setTimeout(() => {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ keys: hits === 0 ? [pub] : [pub, pub2] }))
      }, 300)
      return
    }
    const slow = /^\/slow\/([\w-]+)\/(jwks\.json|hits)$/.exec(req.url ?? '')
    if (slow) {
      const [, name, what] = slow as unknown as [string, string, string]
      if (what === 'hits') {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ hits: slowHits.get(name) ?? 0 }))
        return
      }
      slowHits.set(name, (slowHits.get(name) ?? 0) + 1)
      setTimeout(() => {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ keys: [pub] }))
      }, 300)
      return
    }
    const failing = /^\/failing\/([\w-]+)\/(jwks\.json|hits)$/.exec(req.url ?? '')
    if (failing) {
      const [, name, what] = failing as unknown as [string, string, string]
      if (what === 'hits') {
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ hits: failingHits.get(name) ?? 0 }))
      } else {
        failingHits.set(name, (failingHits.get(name) ?? 0) + 1)
        res.writeHead(503).end()
      }
    } else if (req.url === '/.well-known/jwks.json') {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ keys: [pub] }))
    } else if (req.url === '/rotating/jwks.json') {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify(rotating))
    } else {
      res.writeHead(404).end()
    }
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}/.well-known/jwks.json`,
    privateJwk: JSON.stringify(priv),
    nextPrivateJwk: JSON.stringify(priv2),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  }
}

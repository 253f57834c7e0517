import { runInDurableObject } from 'cloudflare:test'
import { onTestFinished } from 'vitest'

/**
 * Replaces the method `name` of the class of the object behind `stub` (so of every instance in
 * this isolate: the failure injected reaches whichever instance a call wakes) until the test
 * ends. `make` gets the original, to call on. Returns a function that puts it back early, as a
 * service coming back mid-test does.
 *
 * @example
 * const poolBack = await replaceMethod(poolOf(queue), 'removePlayer', () => () =>
 *   Promise.reject(new Error('pool down')))
 */
export async function replaceMethod<T extends object, K extends keyof T>(
  stub: DurableObjectStub,
  name: K,
  make: (original: T[K]) => T[K],
): Promise<() => void> {
  const proto = (await runInDurableObject(stub, (inst: object) => Object.getPrototypeOf(inst))) as T
  const original = proto[name]
  proto[name] = make(original)
  const restore = () => {
    proto[name] = original
  }
  onTestFinished(restore)
  return restore
}

/**
 * The live standings of one leaderboard cycle: an in-memory order-statistic index over the
 * cycle's keys, rebuilt from the Durable Object's SQLite table when the object wakes.
 *
 * The index holds keys only: (score, subscore, seq). A board numbers every accepted submission
 * (seq), so no two standings share a key, and the key alone orders them. Who holds a key, and the
 * key a player holds, are SQLite's to answer (the entries table has both), so player ids, a map
 * from them and one object per entry stay out of memory. That is what lets a million-player
 * cycle fit in a Durable Object's 128 MB: about 43 bytes per entry here against about 250 with
 * ids and objects in memory (bench/rank-index-memory.bench.ts).
 *
 * Why a counted B+tree (and not a skip list or a treap): at a million entries every operation is
 * bound by memory latency, so the structure that touches the fewest cache lines wins.
 * - Depth. Nodes hold up to 64 keys or children, so 1M entries sit under three inner levels whose
 *   top two (about ten nodes) stay in cache.
 * - Keys inline. Each node keeps its keys in one Float64Array, three numbers per key, so a
 *   search compares numbers in one contiguous block and follows no pointer per key.
 * - Counts. Every inner node keeps the number of entries under each child, so the rank of a key
 *   is the sum of the counts left of the path to it.
 * - Leaves are chained, so pages and windows walk keys in order without a stack, and a bulk load
 *   builds the tree bottom-up (sorting first only when its input is out of order).
 * Costs: an insert shifts up to 64 keys of a leaf; splits and merges move up to 64 keys or
 * pointers (amortised O(1)).
 *
 * Order: score (ascending or descending per the board), then subscore in the same direction, then
 * the earlier submission (smaller seq). -0 is stored as 0.
 */

/** The board's direction: 'desc' puts the highest score at rank 1. */
export type SortOrder = 'asc' | 'desc'

/**
 * A standing's position in the order, and its identity in the index. A cursor carries the key of
 * the last entry of a page, which stays meaningful after that entry changes or leaves the board.
 */
export interface RankKey {
  readonly score: number
  readonly subscore: number
  /** Submission sequence, unique on a board: earlier submissions rank first on ties. */
  readonly seq: number
}

const LEAF_MAX = 64
const LEAF_MIN = LEAF_MAX >>> 2
const INNER_MAX = 64
const INNER_MIN = INNER_MAX >>> 2
/** Bulk load fills nodes to 3/4 so the first inserts after a wake do not split every leaf. */
const LEAF_FILL = (LEAF_MAX * 3) >>> 2
const INNER_FILL = (INNER_MAX * 3) >>> 2
/** Numbers per key in a node's array: score, subscore, seq. */
const K = 3

/** `dir` is 1 for ascending, -1 for descending; one function keeps call sites monomorphic. */
function compareKeys(dir: number, a: RankKey, b: RankKey): number {
  let x = a.score
  let y = b.score
  if (x !== y) return x < y ? -dir : dir
  x = a.subscore
  y = b.subscore
  if (x !== y) return x < y ? -dir : dir
  x = a.seq
  y = b.seq
  return x === y ? 0 : x < y ? -1 : 1
}

/**
 * Total order of two keys on a board: negative when `a` ranks before `b`, 0 only for equal keys.
 *
 * @example
 * const a = { score: 10, subscore: 0, seq: 2 }
 * const b = { score: 10, subscore: 0, seq: 1 }
 * compareEntries('desc', a, b) > 0 // equal scores: the earlier submission (b) ranks first
 */
export function compareEntries(order: SortOrder, a: RankKey, b: RankKey): number {
  return compareKeys(order === 'asc' ? 1 : -1, a, b)
}

/**
 * Key slot `i` of `keys` against (s, u, q): negative when the slot ranks before it. The key is
 * passed as three numbers so that searches allocate nothing.
 */
function compareSlot(
  dir: number,
  keys: Float64Array,
  i: number,
  s: number,
  u: number,
  q: number,
): number {
  const o = i * K
  let x = keys[o] as number
  if (x !== s) return x < s ? -dir : dir
  x = keys[o + 1] as number
  if (x !== u) return x < u ? -dir : dir
  x = keys[o + 2] as number
  return x === q ? 0 : x < q ? -1 : 1
}

/** Key (s1, u1, q1) against key (s2, u2, q2), as compareKeys. */
function compareTriples(
  dir: number,
  s1: number,
  u1: number,
  q1: number,
  s2: number,
  u2: number,
  q2: number,
): number {
  if (s1 !== s2) return s1 < s2 ? -dir : dir
  if (u1 !== u2) return u1 < u2 ? -dir : dir
  return q1 === q2 ? 0 : q1 < q2 ? -1 : 1
}

/** The keys of `leaves` (n in all) in one growable column. */
function gather(leaves: Node[], n: number): Float64Array {
  const column = new Float64Array(Math.max(2 * n, 1024) * K)
  let at = 0
  for (const leaf of leaves) {
    column.set(leaf.keys.subarray(0, leaf.n * K), at * K)
    at += leaf.n
  }
  return column
}

function keyAt(keys: Float64Array, i: number): RankKey {
  const o = i * K
  return { score: keys[o] as number, subscore: keys[o + 1] as number, seq: keys[o + 2] as number }
}

const NO_CHILDREN: Node[] = []
const NO_COUNTS: number[] = []

/**
 * One class for leaves and inner nodes keeps property access monomorphic.
 * Leaf: `keys` holds `n` keys in order. Inner: `n` children; key i (i ≥ 1) separates child i-1
 * (all keys smaller) from child i (all keys greater or equal); key 0 is never used to route.
 * Arrays have room for one more than the maximum, so a node overflows first and splits after.
 */
class Node {
  readonly isLeaf: boolean
  readonly keys: Float64Array
  n = 0
  /** Inner nodes only (leaves share an empty array they never change). */
  children: Node[]
  /** counts[i] = number of entries under children[i]. */
  counts: number[]
  size = 0
  parent: Node | null = null
  next: Node | null = null
  prev: Node | null = null

  constructor(isLeaf: boolean) {
    this.isLeaf = isLeaf
    this.keys = new Float64Array(((isLeaf ? LEAF_MAX : INNER_MAX) + 1) * K)
    this.children = isLeaf ? NO_CHILDREN : []
    this.counts = isLeaf ? NO_COUNTS : []
  }
}

/** Opens a gap at slot `i` of a node holding `n` keys. */
function openSlot(node: Node, i: number, n: number): void {
  if (i < n) node.keys.copyWithin((i + 1) * K, i * K, n * K)
}

/** Closes slot `i` of a node holding `n` keys. */
function closeSlot(node: Node, i: number, n: number): void {
  if (i < n - 1) node.keys.copyWithin(i * K, (i + 1) * K, n * K)
}

function writeSlot(keys: Float64Array, i: number, s: number, u: number, q: number): void {
  const o = i * K
  keys[o] = s
  keys[o + 1] = u
  keys[o + 2] = q
}

function copySlot(from: Float64Array, i: number, to: Float64Array, j: number): void {
  to.set(from.subarray(i * K, i * K + K), j * K)
}

/** For the child/count shifts of inner nodes; `splice` would allocate its result every call. */
function insertAt<T>(arr: T[], index: number, value: T): void {
  let j = arr.length
  arr.push(value)
  while (j > index) {
    arr[j] = arr[j - 1] as T
    j--
  }
  arr[index] = value
}

function removeAt<T>(arr: T[], index: number): void {
  const last = arr.length - 1
  for (let j = index; j < last; j++) arr[j] = arr[j + 1] as T
  arr.pop()
}

function checkKey(key: RankKey): void {
  if (key === null || typeof key !== 'object') throw new TypeError('key must be an object')
  if (!Number.isFinite(key.score)) throw new RangeError('score must be a finite number')
  if (!Number.isFinite(key.subscore)) throw new RangeError('subscore must be a finite number')
  if (!Number.isSafeInteger(key.seq)) throw new RangeError('seq must be a safe integer')
}

function checkLimit(limit: number): void {
  if (!Number.isSafeInteger(limit) || limit < 0) {
    throw new RangeError('limit must be a non-negative integer')
  }
}

/** Child of an inner node to descend into: the last one whose separator is ≤ the key. */
function route(dir: number, node: Node, s: number, u: number, q: number): number {
  const keys = node.keys
  let lo = 1
  let hi = node.n
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (compareSlot(dir, keys, mid, s, u, q) <= 0) lo = mid + 1
    else hi = mid
  }
  return lo - 1
}

/** First slot of a leaf whose key is ≥ the key (or > it when `after`). */
function bound(dir: number, node: Node, s: number, u: number, q: number, after: boolean): number {
  const keys = node.keys
  let lo = 0
  let hi = node.n
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    const c = compareSlot(dir, keys, mid, s, u, q)
    if (c < 0 || (after && c === 0)) lo = mid + 1
    else hi = mid
  }
  return lo
}

function collect(leaf: Node | null, i: number, limit: number, out: RankKey[]): RankKey[] {
  while (leaf !== null) {
    const keys = leaf.keys
    for (; i < leaf.n; i++) {
      out.push(keyAt(keys, i))
      if (out.length === limit) return out
    }
    leaf = leaf.next
    i = 0
  }
  return out
}

/**
 * Order-statistic index of a leaderboard's live cycle: a set of keys. Every operation is
 * O(log n).
 *
 * @example
 * const index = new RankIndex('desc')
 * index.insert({ score: 120, subscore: 0, seq: 1 })
 * index.insert({ score: 90, subscore: 0, seq: 2 })
 * index.rankOf({ score: 90, subscore: 0, seq: 2 }) // 2
 * const first = index.page(null, 1) // [the 120]
 * index.page(first[0]!, 10) // [the 90]: the cursor is a key, not an offset
 */
export class RankIndex {
  readonly order: SortOrder
  readonly #dir: number
  #root: Node = new Node(true)
  /** The leftmost leaf never changes identity: merges always keep the left node. */
  #first: Node = this.#root
  /** Bumped by every mutation so iterators can refuse to continue over a changed tree. */
  #version = 0
  /** Out-parameters of #locate, #seek and rankOfKey, to avoid allocating a pair per call. */
  #foundLeaf: Node = this.#root
  #foundIndex = 0
  /** The path of the last descent: inner nodes and the child taken in each. */
  #pathNodes: Node[] = []
  #pathChild: number[] = []

  constructor(order: SortOrder) {
    if (order !== 'asc' && order !== 'desc') throw new TypeError("order must be 'asc' or 'desc'")
    this.order = order
    this.#dir = order === 'asc' ? 1 : -1
  }

  /** Number of entries. */
  get size(): number {
    return this.#root.size
  }

  /** Whether the key is in the index. */
  has(key: RankKey): boolean {
    return this.rankOf(key) !== undefined
  }

  /**
   * Adds a key; false (and no change) if it is already there. -0 is stored as 0; throws on a
   * non-finite score or subscore, or a seq that is not a safe integer.
   */
  insert(key: RankKey): boolean {
    if (this.#seek(key)) return false
    const leaf = this.#foundLeaf
    const i = this.#foundIndex
    this.#version++
    openSlot(leaf, i, leaf.n)
    // x + 0 turns -0 into 0 so equal scores compare, serialise and round-trip as equal.
    writeSlot(leaf.keys, i, key.score + 0, key.subscore + 0, key.seq)
    leaf.n++
    leaf.size++
    this.#adjustPath(1)
    if (leaf.n > LEAF_MAX) this.#splitLeaf(leaf)
    return true
  }

  /** Removes a key; false if it was not there. */
  remove(key: RankKey): boolean {
    if (!this.#seek(key)) return false
    const leaf = this.#foundLeaf
    const i = this.#foundIndex
    this.#version++
    closeSlot(leaf, i, leaf.n)
    leaf.n--
    leaf.size--
    this.#adjustPath(-1)
    let node = leaf
    for (let d = this.#pathNodes.length - 1; d >= 0; d--) {
      const parent = this.#pathNodes[d] as Node
      if (node.n < (node.isLeaf ? LEAF_MIN : INNER_MIN)) {
        this.#rebalance(parent, this.#pathChild[d] as number)
      }
      node = parent
    }
    let root = this.#root
    while (!root.isLeaf && root.n === 1) {
      root = root.children[0] as Node
      root.parent = null
    }
    this.#root = root
    return true
  }

  /** Replaces `old` (if present) by `next`: a player's standing moving. */
  replace(old: RankKey | undefined, next: RankKey): void {
    checkKey(next)
    if (old !== undefined) this.remove(old)
    this.insert(next)
  }

  /** 1-based rank of the key, or undefined if it is not in the index. */
  rankOf(key: RankKey): number | undefined {
    const before = this.rankOfKey(key)
    const leaf = this.#foundLeaf
    const i = this.#foundIndex
    if (i >= leaf.n) return undefined
    if (compareSlot(this.#dir, leaf.keys, i, key.score + 0, key.subscore + 0, key.seq) !== 0) {
      return undefined
    }
    return before + 1
  }

  /** How many entries sort strictly before `key` (so an entry with that key has rank result+1). */
  rankOfKey(key: RankKey): number {
    const s = key.score + 0
    const u = key.subscore + 0
    const q = key.seq
    const dir = this.#dir
    let node = this.#root
    let rank = 0
    while (!node.isLeaf) {
      const ci = route(dir, node, s, u, q)
      const counts = node.counts
      for (let j = 0; j < ci; j++) rank += counts[j] as number
      node = node.children[ci] as Node
    }
    const i = bound(dir, node, s, u, q, false)
    // Where the key is or would be, for rankOf.
    this.#foundLeaf = node
    this.#foundIndex = i
    return rank + i
  }

  /** The key at a 1-based rank, or undefined outside 1..size. */
  at(rank: number): RankKey | undefined {
    if (!Number.isSafeInteger(rank) || rank < 1 || rank > this.#root.size) return undefined
    this.#locate(rank - 1)
    return keyAt(this.#foundLeaf.keys, this.#foundIndex)
  }

  /**
   * Up to `limit` keys strictly after `after` (from the top when null). Pass the last key of a
   * page as the next `after`: entries that move while a client pages are neither repeated (keys
   * only grow along a walk) nor skipped unless they move from after the cursor to before it. The
   * rank of the first key is `rankOfKey(keys[0]) + 1`.
   */
  page(after: RankKey | null, limit: number): RankKey[] {
    checkLimit(limit)
    const out: RankKey[] = []
    if (limit === 0) return out
    if (after === null) return collect(this.#first, 0, limit, out)
    const s = after.score + 0
    const u = after.subscore + 0
    const q = after.seq
    const leaf = this.#descend(s, u, q)
    return collect(leaf, bound(this.#dir, leaf, s, u, q, true), limit, out)
  }

  /**
   * Up to `limit` keys starting at a 1-based rank, in order.
   *
   * @example
   * index.range(11, 10) // ranks 11..20
   */
  range(fromRank: number, limit: number): RankKey[] {
    checkLimit(limit)
    if (!Number.isSafeInteger(fromRank) || fromRank < 1) {
      throw new RangeError('fromRank must be a positive integer')
    }
    const out: RankKey[] = []
    if (limit === 0 || fromRank > this.#root.size) return out
    this.#locate(fromRank - 1)
    return collect(this.#foundLeaf, this.#foundIndex, limit, out)
  }

  /**
   * A window of `min(limit, size)` keys containing `key`: ⌊(limit-1)/2⌋ above and the rest below,
   * shifted down at the top of the board and up at the bottom. Empty if the key is absent. The
   * first key's rank is `rankOf(keys[0])`.
   */
  around(key: RankKey, limit: number): RankKey[] {
    checkLimit(limit)
    const rank = this.rankOf(key)
    if (rank === undefined || limit === 0) return []
    const size = this.#root.size
    const count = limit < size ? limit : size
    let start = rank - ((count - 1) >>> 1)
    if (start > size - count + 1) start = size - count + 1
    if (start < 1) start = 1
    return this.range(start, count)
  }

  /**
   * Keys in order from a 1-based rank. The iterator throws if the index is modified while it is
   * in use (page with cursors instead when writes continue).
   */
  *entries(fromRank = 1): Generator<RankKey, void, undefined> {
    if (!Number.isSafeInteger(fromRank) || fromRank < 1) {
      throw new RangeError('fromRank must be a positive integer')
    }
    if (fromRank > this.#root.size) return
    const version = this.#version
    this.#locate(fromRank - 1)
    let leaf: Node | null = this.#foundLeaf
    let i = this.#foundIndex
    while (leaf !== null) {
      for (; i < leaf.n; i++) {
        yield keyAt(leaf.keys, i)
        if (this.#version !== version) throw new Error('RankIndex was modified during iteration')
      }
      leaf = leaf.next
      i = 0
    }
  }

  /** Removes every entry. */
  clear(): void {
    this.#version++
    this.#root = new Node(true)
    this.#first = this.#root
    this.#foundLeaf = this.#root
  }

  /**
   * Replaces the contents with `keys` (any order; repeated keys count once). Keys already in
   * order, as SQLite hands them over, go straight into leaves, so a wake holds no copy of the
   * board besides the tree; anything else is sorted once. Builds the tree bottom-up: much faster
   * than inserting one by one. Validates everything before touching the index, so a bad key
   * leaves it unchanged.
   */
  load(keys: Iterable<RankKey>): void {
    const dir = this.#dir
    const leaves: Node[] = []
    /** Set once the input proves unsorted: every key so far and after, to sort. */
    let column: Float64Array | null = null
    let n = 0
    let ps = 0
    let pu = 0
    let pq = 0
    for (const key of keys) {
      checkKey(key)
      const s = key.score + 0
      const u = key.subscore + 0
      const q = key.seq
      if (column === null) {
        const c = n === 0 ? -1 : compareTriples(dir, ps, pu, pq, s, u, q)
        if (c === 0) continue
        if (c < 0) {
          let leaf = leaves[leaves.length - 1]
          if (leaf === undefined || leaf.n === LEAF_FILL) {
            leaf = new Node(true)
            leaves.push(leaf)
          }
          writeSlot(leaf.keys, leaf.n++, s, u, q)
          n++
          ps = s
          pu = u
          pq = q
          continue
        }
        column = gather(leaves, n)
        leaves.length = 0
      }
      let all: Float64Array = column
      if (n * K === all.length) {
        all = new Float64Array(all.length * 2)
        all.set(column)
        column = all
      }
      writeSlot(all, n++, s, u, q)
    }
    if (column !== null) {
      n = sortKeys(dir, column, n)
      for (const [from, to] of chunks(n, LEAF_FILL)) {
        const leaf = new Node(true)
        leaf.keys.set(column.subarray(from * K, to * K))
        leaf.n = to - from
        leaves.push(leaf)
      }
    } else if (leaves.length > 1 && (leaves[leaves.length - 1] as Node).n < LEAF_MIN) {
      // A short last leaf joins the one before (48 + under 16 fits in 64).
      const last = leaves.pop() as Node
      const before = leaves[leaves.length - 1] as Node
      before.keys.set(last.keys.subarray(0, last.n * K), before.n * K)
      before.n += last.n
    }
    this.#build(leaves)
  }

  /** Verifies every structural invariant and throws on the first violation. For tests; O(n). */
  checkInvariants(): void {
    const dir = this.#dir
    const fail = (msg: string): never => {
      throw new Error(`RankIndex invariant: ${msg}`)
    }
    const leaves: Node[] = []
    const visit = (
      node: Node,
      lower: RankKey | null,
      upper: RankKey | null,
      isRoot: boolean,
    ): number => {
      if (node.isLeaf) {
        if (!isRoot && node.n < LEAF_MIN) fail('leaf underfull')
        if (node.n > LEAF_MAX) fail('leaf overfull')
        if (node.size !== node.n) fail('leaf size')
        if (node.children.length !== 0 || node.counts.length !== 0) fail('leaf with children')
        for (let i = 0; i < node.n; i++) {
          const key = keyAt(node.keys, i)
          if (lower !== null && compareKeys(dir, key, lower) < 0) fail('key below separator')
          if (upper !== null && compareKeys(dir, key, upper) >= 0) fail('key above separator')
        }
        leaves.push(node)
        return node.size
      }
      const n = node.n
      if (n < (isRoot ? 2 : INNER_MIN) || n > INNER_MAX) fail('inner fan-out')
      if (node.children.length !== n || node.counts.length !== n) fail('inner arrays')
      let total = 0
      for (let i = 0; i < n; i++) {
        const child = node.children[i] as Node
        if (child.parent !== node) fail('parent pointer')
        if (i >= 2 && compareKeys(dir, keyAt(node.keys, i - 1), keyAt(node.keys, i)) >= 0) {
          fail('separators out of order')
        }
        const lo = i === 0 ? lower : keyAt(node.keys, i)
        const hi = i === n - 1 ? upper : keyAt(node.keys, i + 1)
        const size = visit(child, lo, hi, false)
        if (node.counts[i] !== size) fail('count')
        total += size
      }
      if (node.size !== total) fail('inner size')
      return total
    }
    if (this.#root.parent !== null) fail('root parent')
    visit(this.#root, null, null, true)
    if (leaves[0] !== this.#first) fail('first leaf')
    let previous: RankKey | null = null
    for (let i = 0; i < leaves.length; i++) {
      const leaf = leaves[i] as Node
      if (leaf.prev !== (leaves[i - 1] ?? null) || leaf.next !== (leaves[i + 1] ?? null)) {
        fail('leaf chain')
      }
      for (let j = 0; j < leaf.n; j++) {
        const key = keyAt(leaf.keys, j)
        if (Object.is(key.score, -0) || Object.is(key.subscore, -0)) fail('negative zero')
        if (previous !== null && compareKeys(dir, previous, key) >= 0) fail('leaf order')
        previous = key
      }
    }
  }

  /**
   * Checks a key and finds its slot: whether it is there, with #foundLeaf/#foundIndex where it is
   * or would go, and the path to that leaf recorded for insert and remove.
   */
  #seek(key: RankKey): boolean {
    checkKey(key)
    const s = key.score + 0
    const u = key.subscore + 0
    const q = key.seq
    const leaf = this.#descend(s, u, q)
    const i = bound(this.#dir, leaf, s, u, q, false)
    this.#foundLeaf = leaf
    this.#foundIndex = i
    return i < leaf.n && compareSlot(this.#dir, leaf.keys, i, s, u, q) === 0
  }

  /** Finds the leaf for a key, recording the path of inner nodes and children taken. */
  #descend(s: number, u: number, q: number): Node {
    const dir = this.#dir
    const nodes = this.#pathNodes
    const child = this.#pathChild
    nodes.length = 0
    child.length = 0
    let node = this.#root
    while (!node.isLeaf) {
      const ci = route(dir, node, s, u, q)
      nodes.push(node)
      child.push(ci)
      node = node.children[ci] as Node
    }
    return node
  }

  /** Adds `delta` to the counts along the last descent's path. */
  #adjustPath(delta: number): void {
    const nodes = this.#pathNodes
    const child = this.#pathChild
    for (let d = 0; d < nodes.length; d++) {
      const node = nodes[d] as Node
      const ci = child[d] as number
      node.counts[ci] = (node.counts[ci] as number) + delta
      node.size += delta
    }
  }

  /** Sets #foundLeaf/#foundIndex to the key at 0-based position `pos` (< size). */
  #locate(pos: number): void {
    let node = this.#root
    while (!node.isLeaf) {
      const counts = node.counts
      let ci = 0
      while (pos >= (counts[ci] as number)) {
        pos -= counts[ci] as number
        ci++
      }
      node = node.children[ci] as Node
    }
    this.#foundLeaf = node
    this.#foundIndex = pos
  }

  /** Builds the tree bottom-up over filled leaves holding sorted, distinct keys. */
  #build(leaves: Node[]): void {
    this.clear()
    if (leaves.length === 0) return
    let prev: Node | null = null
    for (const leaf of leaves) {
      leaf.size = leaf.n
      leaf.prev = prev
      if (prev !== null) prev.next = leaf
      prev = leaf
    }
    let level = leaves
    while (level.length > 1) {
      const up: Node[] = []
      for (const [from, to] of chunks(level.length, INNER_FILL)) {
        const inner = new Node(false)
        inner.children = level.slice(from, to)
        for (const child of inner.children) {
          child.parent = inner
          copySlot(child.keys, 0, inner.keys, inner.n++)
          inner.counts.push(child.size)
          inner.size += child.size
        }
        up.push(inner)
      }
      level = up
    }
    this.#root = level[0] as Node
    this.#first = leaves[0] as Node
    this.#foundLeaf = this.#first
  }

  #splitLeaf(leaf: Node): void {
    const right = new Node(true)
    const mid = leaf.n >>> 1
    right.keys.set(leaf.keys.subarray(mid * K, leaf.n * K))
    right.n = leaf.n - mid
    leaf.n = mid
    right.size = right.n
    leaf.size = leaf.n
    right.next = leaf.next
    if (right.next !== null) right.next.prev = right
    right.prev = leaf
    leaf.next = right
    this.#insertRight(leaf, right)
  }

  #splitInner(node: Node): void {
    const mid = node.n >>> 1
    const right = new Node(false)
    right.children = node.children.splice(mid)
    right.counts = node.counts.splice(mid)
    right.keys.set(node.keys.subarray(mid * K, node.n * K))
    right.n = node.n - mid
    node.n = mid
    for (let i = 0; i < right.n; i++) {
      ;(right.children[i] as Node).parent = right
      right.size += right.counts[i] as number
    }
    node.size -= right.size
    this.#insertRight(node, right)
  }

  /**
   * Links a freshly split-off `right` after `left` in left's parent (growing the root if needed);
   * right's first key is the separator.
   */
  #insertRight(left: Node, right: Node): void {
    const parent = left.parent
    if (parent === null) {
      const root = new Node(false)
      root.children = [left, right]
      root.counts = [left.size, right.size]
      copySlot(left.keys, 0, root.keys, 0)
      copySlot(right.keys, 0, root.keys, 1)
      root.n = 2
      root.size = left.size + right.size
      left.parent = root
      right.parent = root
      this.#root = root
      return
    }
    const ci = parent.children.indexOf(left)
    parent.counts[ci] = left.size
    insertAt(parent.children, ci + 1, right)
    insertAt(parent.counts, ci + 1, right.size)
    openSlot(parent, ci + 1, parent.n)
    copySlot(right.keys, 0, parent.keys, ci + 1)
    parent.n++
    right.parent = parent
    if (parent.n > INNER_MAX) this.#splitInner(parent)
  }

  /** children[ci] of `parent` is underfull: merge it with a sibling, or borrow one from it. */
  #rebalance(parent: Node, ci: number): void {
    const node = parent.children[ci] as Node
    const max = node.isLeaf ? LEAF_MAX : INNER_MAX
    if (ci > 0) {
      const left = parent.children[ci - 1] as Node
      if (left.n + node.n <= max) this.#merge(parent, ci - 1)
      else this.#borrowFromLeft(parent, ci)
    } else {
      const right = parent.children[1] as Node
      if (node.n + right.n <= max) this.#merge(parent, 0)
      else this.#borrowFromRight(parent, 0)
    }
  }

  /** Moves children[k+1] of `parent` into children[k] and drops it. */
  #merge(parent: Node, k: number): void {
    const left = parent.children[k] as Node
    const right = parent.children[k + 1] as Node
    left.keys.set(right.keys.subarray(0, right.n * K), left.n * K)
    if (left.isLeaf) {
      left.next = right.next
      if (left.next !== null) left.next.prev = left
    } else {
      // right's key 0 is only a placeholder; the parent's separator is the real bound.
      copySlot(parent.keys, k + 1, left.keys, left.n)
      for (let j = 0; j < right.n; j++) {
        const child = right.children[j] as Node
        child.parent = left
        left.children.push(child)
        left.counts.push(right.counts[j] as number)
      }
    }
    left.n += right.n
    left.size += right.size
    parent.counts[k] = left.size
    removeAt(parent.children, k + 1)
    removeAt(parent.counts, k + 1)
    closeSlot(parent, k + 1, parent.n)
    parent.n--
    right.parent = null
  }

  #borrowFromLeft(parent: Node, ci: number): void {
    const node = parent.children[ci] as Node
    const left = parent.children[ci - 1] as Node
    let moved: number
    openSlot(node, 0, node.n)
    if (node.isLeaf) {
      copySlot(left.keys, left.n - 1, node.keys, 0)
      moved = 1
    } else {
      // The old separator becomes the bound of node's former first child (slot 1); the moved
      // child's own bound comes up from the left sibling.
      copySlot(parent.keys, ci, node.keys, 1)
      copySlot(left.keys, left.n - 1, node.keys, 0)
      const child = left.children.pop() as Node
      moved = left.counts.pop() as number
      insertAt(node.children, 0, child)
      insertAt(node.counts, 0, moved)
      child.parent = node
    }
    left.n--
    node.n++
    left.size -= moved
    node.size += moved
    parent.counts[ci - 1] = left.size
    parent.counts[ci] = node.size
    copySlot(node.keys, 0, parent.keys, ci)
  }

  #borrowFromRight(parent: Node, ci: number): void {
    const node = parent.children[ci] as Node
    const right = parent.children[ci + 1] as Node
    let moved: number
    if (node.isLeaf) {
      copySlot(right.keys, 0, node.keys, node.n)
      moved = 1
    } else {
      const child = right.children[0] as Node
      moved = right.counts[0] as number
      removeAt(right.children, 0)
      removeAt(right.counts, 0)
      node.children.push(child)
      node.counts.push(moved)
      copySlot(parent.keys, ci + 1, node.keys, node.n)
      child.parent = node
    }
    closeSlot(right, 0, right.n)
    right.n--
    node.n++
    right.size -= moved
    node.size += moved
    parent.counts[ci] = node.size
    parent.counts[ci + 1] = right.size
    copySlot(right.keys, 0, parent.keys, ci + 1)
  }
}

/**
 * Sorts `n` keys of `column` into board order, dropping repeats; returns how many remain. A
 * comparator sort of a million keys is slow (tens of millions of JS calls); instead the scores
 * are sorted natively as a Float64Array, each key is placed into its score's bucket, and only
 * runs of equal scores are sorted with the full comparator.
 */
function sortKeys(dir: number, column: Float64Array, n: number): number {
  const values = new Float64Array(n)
  // dir * score + 0: descending boards sort negated scores; + 0 keeps every zero as +0.
  for (let i = 0; i < n; i++) values[i] = dir * (column[i * K] as number) + 0
  const sorted = values.slice().sort()
  const filled = new Int32Array(n)
  const order = new Int32Array(n)
  for (let i = 0; i < n; i++) {
    const v = values[i] as number
    let lo = 0
    let hi = n
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if ((sorted[mid] as number) < v) lo = mid + 1
      else hi = mid
    }
    order[lo + (filled[lo] as number)++] = i
  }
  for (let start = 0; start < n;) {
    let end = start + 1
    while (end < n && sorted[end] === sorted[start]) end++
    if (end - start > 1) {
      const run = Array.from(order.subarray(start, end)).sort((a, b) =>
        compareKeys(dir, keyAt(column, a), keyAt(column, b)),
      )
      order.set(run, start)
    }
    start = end
  }
  const copy = column.slice(0, n * K)
  let m = 0
  for (let i = 0; i < n; i++) {
    const from = order[i] as number
    if (m > 0 && compareKeys(dir, keyAt(copy, from), keyAt(column, m - 1)) === 0) continue
    copySlot(copy, from, column, m++)
  }
  return m
}

/** Splits n items into ⌈n/fill⌉ runs of near-equal length (each ≥ fill/2 when there are several). */
function* chunks(n: number, fill: number): Generator<[number, number]> {
  const count = Math.ceil(n / fill)
  const base = Math.floor(n / count)
  const extra = n % count
  let from = 0
  for (let i = 0; i < count; i++) {
    const to = from + base + (i < extra ? 1 : 0)
    yield [from, to]
    from = to
  }
}

const MAX_CURSOR_LENGTH = 1024
const CURSOR_CHARS = /^[A-Za-z0-9_-]+$/

function toBase64Url(json: string): string {
  const bytes = new TextEncoder().encode(json)
  let binary = ''
  for (let i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i] as number)
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
}

/**
 * Opaque base64url cursor for a key (the last entry of a page).
 *
 * @example
 * const next = encodeCursor(page[page.length - 1]!)
 * index.page(decodeCursor(next), 50)
 */
export function encodeCursor(key: RankKey): string {
  return toBase64Url(JSON.stringify([key.score + 0, key.subscore + 0, key.seq]))
}

/**
 * The key inside a cursor, or null for anything that encodeCursor could not have produced
 * (wrong alphabet or length, bad UTF-8 or JSON, wrong shape, non-finite numbers, non-canonical
 * form). Cursors from before keys lost their player id (a fourth element) are still read, so
 * walks in flight across that upgrade go on. Never throws.
 */
export function decodeCursor(cursor: unknown): RankKey | null {
  if (typeof cursor !== 'string' || cursor.length > MAX_CURSOR_LENGTH) return null
  if (!CURSOR_CHARS.test(cursor) || cursor.length % 4 === 1) return null
  let value: unknown
  try {
    const binary = atob(cursor.replace(/-/g, '+').replace(/_/g, '/'))
    const bytes = new Uint8Array(binary.length)
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i)
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes))
  } catch {
    return null
  }
  if (!Array.isArray(value) || (value.length !== 3 && value.length !== 4)) return null
  const [score, subscore, seq, legacyId] = value as unknown[]
  if (typeof score !== 'number' || !Number.isFinite(score)) return null
  if (typeof subscore !== 'number' || !Number.isFinite(subscore)) return null
  if (typeof seq !== 'number' || !Number.isSafeInteger(seq)) return null
  const key: RankKey = { score, subscore, seq }
  // Only the canonical spelling is accepted, so one key has exactly one cursor.
  if (value.length === 3) return encodeCursor(key) === cursor ? key : null
  if (typeof legacyId !== 'string' || legacyId.length === 0) return null
  const legacy = toBase64Url(JSON.stringify([score + 0, subscore + 0, seq, legacyId]))
  return legacy === cursor ? key : null
}

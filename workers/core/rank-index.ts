/**
 * The live standings of one leaderboard cycle: an in-memory order-statistic index, rebuilt from the
 * Durable Object's SQLite table when the object wakes.
 *
 * Why a counted B+tree (and not a skip list or a treap): at a million entries every operation is
 * bound by memory latency, so the structure that touches the fewest cache lines wins.
 * - Depth. Nodes hold up to 64 entries or children, so 1M entries sit under three inner levels
 *   whose top two (about ten nodes) stay in cache: a lookup touches the leaf and one inner node in
 *   cold memory. A skip list or treap hops ~20 pointers at 1M, each a likely miss.
 * - Scores live inline. Every node keeps its keys' scores in a parallel array of numbers, so
 *   descending the tree compares numbers in one contiguous array and dereferences an entry only
 *   when scores tie.
 * - rankOf and remove need no comparisons: each entry points at its leaf (a private field) and
 *   every node at its parent, so the rank is "position in the leaf + counts of left siblings on the
 *   way up", found by identity scans of short arrays.
 * - Leaves are chained, so pages, windows and archiving walk entries in order without a stack, and
 *   a bulk load builds the tree bottom-up after one sort (numeric, on a Float64Array).
 * - One object per entry: the returned entries are the stored ones.
 * Costs: an insert shifts up to 64 slots of two arrays inside a leaf (measured: 64 beats 32 and
 * 128 here across 1K–1M entries); splits and merges move up to 64 pointers (amortised O(1)).
 *
 * Order: score (ascending or descending per the board), then subscore in the same direction, then
 * the earlier submission (smaller seq), then playerId compared by code point, which is the same
 * as comparing the UTF-8 bytes (SQLite's BINARY collation). -0 is stored as 0.
 */

/** The board's direction: 'desc' puts the highest score at rank 1. */
export type SortOrder = 'asc' | 'desc'

/**
 * A position in the order. Every entry is its own key; a cursor carries the key of the last entry
 * of a page, which stays meaningful after that entry changes or leaves the board.
 */
export interface RankKey {
  readonly playerId: string
  readonly score: number
  readonly subscore: number
  /** Submission sequence: earlier submissions have smaller values and rank first on ties. */
  readonly seq: number
}

/**
 * One player's standing in the live cycle. Entries returned by the index are its own immutable
 * objects: plain data for JSON, spread and structured clone (the link to the tree is a private
 * field, invisible to all three).
 */
export type RankEntry = RankKey

const LEAF_MAX = 64
const LEAF_MIN = LEAF_MAX >>> 2
const INNER_MAX = 64
const INNER_MIN = INNER_MAX >>> 2
/** Bulk load fills nodes to 3/4 so the first inserts after a wake do not split every leaf. */
const LEAF_FILL = (LEAF_MAX * 3) >>> 2
const INNER_FILL = (INNER_MAX * 3) >>> 2

/** Compares player ids by code point, i.e. like their UTF-8 bytes; JS `<` compares UTF-16 units. */
function compareIds(a: string, b: string): number {
  if (a === b) return 0
  const n = a.length < b.length ? a.length : b.length
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i)
    const y = b.charCodeAt(i)
    if (x !== y) {
      // UTF-16 order disagrees with code point order only when a surrogate (part of a code point
      // above U+FFFF) meets a unit in U+E000..U+FFFF.
      if (x >= 0xd800 && y >= 0xd800) {
        const xs = x <= 0xdfff
        const ys = y <= 0xdfff
        if (xs !== ys) return xs ? 1 : -1
      }
      return x < y ? -1 : 1
    }
  }
  return a.length < b.length ? -1 : 1
}

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
  if (x !== y) return x < y ? -1 : 1
  return compareIds(a.playerId, b.playerId)
}

/**
 * Total order of two keys on a board: negative when `a` ranks before `b`, 0 only for equal keys.
 *
 * @example
 * const a = { playerId: 'a', score: 10, subscore: 0, seq: 2 }
 * const b = { playerId: 'b', score: 10, subscore: 0, seq: 1 }
 * compareEntries('desc', a, b) > 0 // equal scores: the earlier submission (b) ranks first
 */
export function compareEntries(order: SortOrder, a: RankKey, b: RankKey): number {
  return compareKeys(order === 'asc' ? 1 : -1, a, b)
}

/**
 * A stored entry. Key fields are immutable (inner nodes keep entries as separators, even after
 * they leave the board); the leaf holding it is private so the object stays plain data outside.
 */
class Standing implements RankEntry {
  readonly playerId: string
  readonly score: number
  readonly subscore: number
  readonly seq: number
  #leaf: Node | null = null

  constructor(playerId: string, score: number, subscore: number, seq: number) {
    this.playerId = playerId
    this.score = score
    this.subscore = subscore
    this.seq = seq
  }

  static leafOf(s: Standing): Node {
    return s.#leaf as Node
  }

  static setLeaf(s: Standing, leaf: Node | null): void {
    s.#leaf = leaf
  }
}

const leafOf = Standing.leafOf
const setLeaf = Standing.setLeaf

/**
 * One class for leaves and inner nodes keeps property access monomorphic.
 * Leaf: `keys` are the entries in order. Inner: `keys[i]` (i ≥ 1) separates child i-1 (all keys
 * smaller) from child i (all keys greater or equal); `keys[0]` is a placeholder never used to route.
 * `scores[i]` is always `keys[i].score`.
 */
class Node {
  readonly isLeaf: boolean
  keys: Standing[] = []
  scores: number[] = []
  children: Node[] = []
  /** counts[i] = number of entries under children[i]. */
  counts: number[] = []
  size = 0
  parent: Node | null = null
  next: Node | null = null
  prev: Node | null = null

  constructor(isLeaf: boolean) {
    this.isLeaf = isLeaf
  }
}

/** For the rarer child/count shifts; `splice` would allocate its result array on every call. */
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

// The hot shifts get their own loops over the two arrays: a generic helper shared by object and
// number arrays went polymorphic and was the most expensive part of upsert.
function insertKey(node: Node, index: number, key: Standing): void {
  const keys = node.keys
  const scores = node.scores
  let j = keys.length
  keys.push(key)
  scores.push(key.score)
  while (j > index) {
    keys[j] = keys[j - 1] as Standing
    scores[j] = scores[j - 1] as number
    j--
  }
  keys[index] = key
  scores[index] = key.score
}

function removeKey(node: Node, index: number): void {
  const keys = node.keys
  const scores = node.scores
  const last = keys.length - 1
  for (let j = index; j < last; j++) {
    keys[j] = keys[j + 1] as Standing
    scores[j] = scores[j + 1] as number
  }
  keys.pop()
  scores.pop()
}

function setKey(node: Node, index: number, key: Standing): void {
  node.keys[index] = key
  node.scores[index] = key.score
}

function pushKey(node: Node, key: Standing): void {
  node.keys.push(key)
  node.scores.push(key.score)
}

function fanout(node: Node): number {
  return node.isLeaf ? node.keys.length : node.children.length
}

function toStanding(input: RankEntry): Standing {
  if (input === null || typeof input !== 'object') throw new TypeError('entry must be an object')
  const { playerId, score, subscore, seq } = input
  if (typeof playerId !== 'string' || playerId.length === 0) {
    throw new TypeError('playerId must be a non-empty string')
  }
  if (!Number.isFinite(score)) throw new RangeError('score must be a finite number')
  if (!Number.isFinite(subscore)) throw new RangeError('subscore must be a finite number')
  if (!Number.isSafeInteger(seq)) throw new RangeError('seq must be a safe integer')
  // x + 0 turns -0 into 0 so equal scores compare, serialise and round-trip as equal.
  return new Standing(playerId, score + 0, subscore + 0, seq)
}

function checkLimit(limit: number): void {
  if (!Number.isSafeInteger(limit) || limit < 0) {
    throw new RangeError('limit must be a non-negative integer')
  }
}

/**
 * Order-statistic index of a leaderboard's live cycle. Every operation is O(log n); rankOf and
 * remove find their leaf through the entry rather than by comparison.
 *
 * @example
 * const index = new RankIndex('desc')
 * index.upsert({ playerId: 'ann', score: 120, subscore: 0, seq: 1 })
 * index.upsert({ playerId: 'bob', score: 90, subscore: 0, seq: 2 })
 * index.rankOf('bob') // 2
 * const first = index.page(null, 1) // [ann]
 * index.page(first[0]!, 10) // [bob]: the cursor is a key, not an offset
 */
export class RankIndex {
  readonly order: SortOrder
  readonly #dir: number
  #root: Node = new Node(true)
  /** The leftmost leaf never changes identity: merges always keep the left node. */
  #first: Node = this.#root
  #byId = new Map<string, Standing>()
  /** Bumped by every mutation so iterators can refuse to continue over a changed tree. */
  #version = 0
  /** Out-parameters of #locate, to avoid allocating a pair per call. */
  #foundLeaf: Node = this.#root
  #foundIndex = 0

  constructor(order: SortOrder) {
    if (order !== 'asc' && order !== 'desc') throw new TypeError("order must be 'asc' or 'desc'")
    this.order = order
    this.#dir = order === 'asc' ? 1 : -1
  }

  /** Number of entries. */
  get size(): number {
    return this.#byId.size
  }

  /** Whether the player has an entry. */
  has(playerId: string): boolean {
    return this.#byId.has(playerId)
  }

  /** The player's entry, or undefined. */
  get(playerId: string): RankEntry | undefined {
    return this.#byId.get(playerId)
  }

  /**
   * Sets the player's entry, replacing any previous one, and returns the previous one. The entry
   * is copied (and -0 normalised to 0); throws on a non-finite score/subscore or non-integer seq.
   */
  upsert(input: RankEntry): RankEntry | undefined {
    const entry = toStanding(input)
    const old = this.#byId.get(entry.playerId)
    this.#version++
    this.#byId.set(entry.playerId, entry)
    if (old !== undefined) {
      if (this.#replaceInPlace(old, entry)) return old
      this.#detach(old)
    }
    this.#attach(entry)
    return old
  }

  /** Removes the player's entry and returns it, or undefined if there was none. */
  remove(playerId: string): RankEntry | undefined {
    const entry = this.#byId.get(playerId)
    if (entry === undefined) return undefined
    this.#version++
    this.#byId.delete(playerId)
    this.#detach(entry)
    return entry
  }

  /** 1-based rank of the player, or undefined if absent. */
  rankOf(playerId: string): number | undefined {
    const entry = this.#byId.get(playerId)
    if (entry === undefined) return undefined
    let node = leafOf(entry)
    let rank = node.keys.indexOf(entry) + 1
    let parent = node.parent
    while (parent !== null) {
      const counts = parent.counts
      const ci = parent.children.indexOf(node)
      for (let j = 0; j < ci; j++) rank += counts[j] as number
      node = parent
      parent = node.parent
    }
    return rank
  }

  /** The entry at a 1-based rank, or undefined outside 1..size. */
  at(rank: number): RankEntry | undefined {
    if (!Number.isSafeInteger(rank) || rank < 1 || rank > this.#root.size) return undefined
    this.#locate(rank - 1)
    return this.#foundLeaf.keys[this.#foundIndex]
  }

  /** How many entries sort strictly before `key` (so an entry with that key has rank result+1). */
  rankOfKey(key: RankKey): number {
    const dir = this.#dir
    let node = this.#root
    let rank = 0
    while (!node.isLeaf) {
      const ci = route(dir, node, key)
      const counts = node.counts
      for (let j = 0; j < ci; j++) rank += counts[j] as number
      node = node.children[ci] as Node
    }
    return rank + bound(dir, node, key, false)
  }

  /**
   * Up to `limit` entries strictly after `after` (from the top when null). Pass the last entry of a
   * page as the next `after`: entries that move while a client pages are neither repeated (keys
   * only grow along a walk) nor skipped unless they move from after the cursor to before it. The
   * rank of the first entry is `rankOfKey(entries[0]) + 1`.
   */
  page(after: RankKey | null, limit: number): RankEntry[] {
    checkLimit(limit)
    const out: RankEntry[] = []
    if (limit === 0) return out
    if (after === null) return collect(this.#first, 0, limit, out)
    const dir = this.#dir
    let node = this.#root
    while (!node.isLeaf) node = node.children[route(dir, node, after)] as Node
    return collect(node, bound(dir, node, after, true), limit, out)
  }

  /**
   * Up to `limit` entries starting at a 1-based rank, in order.
   *
   * @example
   * index.range(11, 10) // ranks 11..20
   */
  range(fromRank: number, limit: number): RankEntry[] {
    checkLimit(limit)
    if (!Number.isSafeInteger(fromRank) || fromRank < 1) {
      throw new RangeError('fromRank must be a positive integer')
    }
    const out: RankEntry[] = []
    if (limit === 0 || fromRank > this.#root.size) return out
    this.#locate(fromRank - 1)
    return collect(this.#foundLeaf, this.#foundIndex, limit, out)
  }

  /**
   * A window of `min(limit, size)` entries containing the player: ⌊(limit-1)/2⌋ above and the rest
   * below, shifted down at the top of the board and up at the bottom. Empty if the player is absent.
   * The first entry's rank is `rankOf(entries[0].playerId)`.
   */
  around(playerId: string, limit: number): RankEntry[] {
    checkLimit(limit)
    const rank = this.rankOf(playerId)
    if (rank === undefined || limit === 0) return []
    const size = this.#root.size
    const count = limit < size ? limit : size
    let start = rank - ((count - 1) >>> 1)
    if (start > size - count + 1) start = size - count + 1
    if (start < 1) start = 1
    return this.range(start, count)
  }

  /**
   * Entries in order from a 1-based rank. For archiving a snapshot: the iterator throws if the
   * index is modified while it is in use (page with cursors instead when writes continue).
   */
  *entries(fromRank = 1): Generator<RankEntry, void, undefined> {
    if (!Number.isSafeInteger(fromRank) || fromRank < 1) {
      throw new RangeError('fromRank must be a positive integer')
    }
    if (fromRank > this.#root.size) return
    const version = this.#version
    this.#locate(fromRank - 1)
    let leaf: Node | null = this.#foundLeaf
    let i = this.#foundIndex
    while (leaf !== null) {
      for (; i < leaf.keys.length; i++) {
        yield leaf.keys[i] as Standing
        if (this.#version !== version) throw new Error('RankIndex was modified during iteration')
      }
      leaf = leaf.next
      i = 0
    }
  }

  /** Removes every entry. */
  clear(): void {
    this.#version++
    this.#byId.clear()
    this.#root = new Node(true)
    this.#first = this.#root
    this.#foundLeaf = this.#root
  }

  /**
   * Replaces the contents with `entries` (any order; a later entry for the same player wins).
   * Sorts once and builds the tree bottom-up: much faster than upserting one by one. Validates
   * everything before touching the index, so a bad entry leaves it unchanged.
   */
  load(entries: Iterable<RankEntry>): void {
    const byId = new Map<string, Standing>()
    for (const e of entries) {
      const entry = toStanding(e)
      byId.set(entry.playerId, entry)
    }
    const sorted = sortStandings(this.#dir, Array.from(byId.values()))
    this.clear()
    // The de-duplicating map becomes the index's map: building a second one costs ~1 s at 1M here.
    this.#byId = byId
    if (sorted.length === 0) return

    let level: Node[] = []
    let prev: Node | null = null
    for (const [from, to] of chunks(sorted.length, LEAF_FILL)) {
      const leaf = new Node(true)
      leaf.keys = sorted.slice(from, to)
      for (let i = from; i < to; i++) {
        const entry = sorted[i] as Standing
        leaf.scores.push(entry.score)
        setLeaf(entry, leaf)
      }
      leaf.size = to - from
      leaf.prev = prev
      if (prev !== null) prev.next = leaf
      prev = leaf
      level.push(leaf)
    }
    while (level.length > 1) {
      const up: Node[] = []
      for (const [from, to] of chunks(level.length, INNER_FILL)) {
        const inner = new Node(false)
        inner.children = level.slice(from, to)
        for (const child of inner.children) {
          child.parent = inner
          pushKey(inner, child.keys[0] as Standing)
          inner.counts.push(child.size)
          inner.size += child.size
        }
        up.push(inner)
      }
      level = up
    }
    this.#root = level[0] as Node
    this.#first = this.#root
    while (!this.#first.isLeaf) this.#first = this.#first.children[0] as Node
    this.#foundLeaf = this.#first
  }

  /**
   * Verifies every structural invariant and throws on the first violation. For tests; O(n).
   */
  checkInvariants(): void {
    const dir = this.#dir
    const fail = (msg: string): never => {
      throw new Error(`RankIndex invariant: ${msg}`)
    }
    const leaves: Node[] = []
    const visit = (
      node: Node,
      lower: Standing | null,
      upper: Standing | null,
      isRoot: boolean,
    ): number => {
      if (node.keys.length !== node.scores.length) fail('scores length')
      node.keys.forEach((key, i) => {
        if (!Object.is(node.scores[i], key.score)) fail('scores out of sync')
      })
      if (node.isLeaf) {
        if (!isRoot && node.keys.length < LEAF_MIN) fail('leaf underfull')
        if (node.keys.length > LEAF_MAX) fail('leaf overfull')
        if (node.size !== node.keys.length) fail('leaf size')
        for (const entry of node.keys) {
          if (leafOf(entry) !== node) fail('entry leaf')
          if (this.#byId.get(entry.playerId) !== entry) fail('entry not in map')
          if (lower !== null && compareKeys(dir, entry, lower) < 0) fail('key below separator')
          if (upper !== null && compareKeys(dir, entry, upper) >= 0) fail('key above separator')
        }
        leaves.push(node)
        return node.size
      }
      const n = node.children.length
      if (n < (isRoot ? 2 : INNER_MIN) || n > INNER_MAX) fail('inner fan-out')
      if (node.keys.length !== n || node.counts.length !== n) fail('inner arrays')
      let total = 0
      for (let i = 0; i < n; i++) {
        const child = node.children[i] as Node
        if (child.parent !== node) fail('parent pointer')
        if (
          i >= 2 &&
          compareKeys(dir, node.keys[i - 1] as Standing, node.keys[i] as Standing) >= 0
        ) {
          fail('separators out of order')
        }
        const lo = i === 0 ? lower : (node.keys[i] as Standing)
        const hi = i === n - 1 ? upper : (node.keys[i + 1] as Standing)
        const size = visit(child, lo, hi, false)
        if (node.counts[i] !== size) fail('count')
        total += size
      }
      if (node.size !== total) fail('inner size')
      return total
    }
    if (this.#root.parent !== null) fail('root parent')
    if (visit(this.#root, null, null, true) !== this.#byId.size) fail('size')
    if (leaves[0] !== this.#first) fail('first leaf')
    let previous: Standing | null = null
    for (let i = 0; i < leaves.length; i++) {
      const leaf = leaves[i] as Node
      if (leaf.prev !== (leaves[i - 1] ?? null) || leaf.next !== (leaves[i + 1] ?? null)) {
        fail('leaf chain')
      }
      for (const entry of leaf.keys) {
        if (previous !== null && compareKeys(dir, previous, entry) >= 0) fail('leaf order')
        previous = entry
      }
    }
  }

  /** Sets #foundLeaf/#foundIndex to the entry at 0-based position `pos` (< size). */
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

  /** A score change that keeps the entry between its two neighbours in the same leaf. */
  #replaceInPlace(old: Standing, entry: Standing): boolean {
    const leaf = leafOf(old)
    const keys = leaf.keys
    const i = keys.indexOf(old)
    if (i <= 0 || i >= keys.length - 1) return false
    const dir = this.#dir
    if (compareKeys(dir, keys[i - 1] as Standing, entry) >= 0) return false
    if (compareKeys(dir, entry, keys[i + 1] as Standing) >= 0) return false
    setKey(leaf, i, entry)
    setLeaf(entry, leaf)
    setLeaf(old, null)
    return true
  }

  #attach(entry: Standing): void {
    const dir = this.#dir
    let node = this.#root
    while (!node.isLeaf) {
      const ci = route(dir, node, entry)
      ;(node.counts[ci] as number)++
      node.size++
      node = node.children[ci] as Node
    }
    insertKey(node, bound(dir, node, entry, false), entry)
    node.size++
    setLeaf(entry, node)
    if (node.keys.length > LEAF_MAX) this.#splitLeaf(node)
  }

  #detach(entry: Standing): void {
    const leaf = leafOf(entry)
    removeKey(leaf, leaf.keys.indexOf(entry))
    leaf.size--
    setLeaf(entry, null)
    let node = leaf
    let parent = node.parent
    while (parent !== null) {
      const ci = parent.children.indexOf(node)
      ;(parent.counts[ci] as number)--
      parent.size--
      if (fanout(node) < (node.isLeaf ? LEAF_MIN : INNER_MIN)) this.#rebalance(parent, ci)
      node = parent
      parent = node.parent
    }
    let root = this.#root
    while (!root.isLeaf && root.children.length === 1) {
      root = root.children[0] as Node
      root.parent = null
    }
    this.#root = root
  }

  #splitLeaf(leaf: Node): void {
    const right = new Node(true)
    const mid = leaf.keys.length >>> 1
    right.keys = leaf.keys.splice(mid)
    right.scores = leaf.scores.splice(mid)
    for (const entry of right.keys) setLeaf(entry, right)
    right.size = right.keys.length
    leaf.size = leaf.keys.length
    right.next = leaf.next
    if (right.next !== null) right.next.prev = right
    right.prev = leaf
    leaf.next = right
    this.#insertRight(leaf, right, right.keys[0] as Standing)
  }

  #splitInner(node: Node): void {
    const mid = node.children.length >>> 1
    const right = new Node(false)
    right.children = node.children.splice(mid)
    right.counts = node.counts.splice(mid)
    right.keys = node.keys.splice(mid)
    right.scores = node.scores.splice(mid)
    for (let i = 0; i < right.children.length; i++) {
      ;(right.children[i] as Node).parent = right
      right.size += right.counts[i] as number
    }
    node.size -= right.size
    this.#insertRight(node, right, right.keys[0] as Standing)
  }

  /** Links a freshly split-off `right` after `left` in left's parent (growing the root if needed). */
  #insertRight(left: Node, right: Node, separator: Standing): void {
    const parent = left.parent
    if (parent === null) {
      const root = new Node(false)
      root.children = [left, right]
      root.counts = [left.size, right.size]
      pushKey(root, left.keys[0] as Standing)
      pushKey(root, separator)
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
    insertKey(parent, ci + 1, separator)
    right.parent = parent
    if (parent.children.length > INNER_MAX) this.#splitInner(parent)
  }

  /** children[ci] of `parent` is underfull: merge it with a sibling, or borrow one from it. */
  #rebalance(parent: Node, ci: number): void {
    const node = parent.children[ci] as Node
    const max = node.isLeaf ? LEAF_MAX : INNER_MAX
    if (ci > 0) {
      const left = parent.children[ci - 1] as Node
      if (fanout(left) + fanout(node) <= max) this.#merge(parent, ci - 1)
      else this.#borrowFromLeft(parent, ci)
    } else {
      const right = parent.children[1] as Node
      if (fanout(node) + fanout(right) <= max) this.#merge(parent, 0)
      else this.#borrowFromRight(parent, 0)
    }
  }

  /** Moves children[k+1] of `parent` into children[k] and drops it. */
  #merge(parent: Node, k: number): void {
    const left = parent.children[k] as Node
    const right = parent.children[k + 1] as Node
    if (left.isLeaf) {
      for (const entry of right.keys) {
        setLeaf(entry, left)
        pushKey(left, entry)
      }
      left.next = right.next
      if (left.next !== null) left.next.prev = left
    } else {
      for (let j = 0; j < right.children.length; j++) {
        const child = right.children[j] as Node
        child.parent = left
        left.children.push(child)
        left.counts.push(right.counts[j] as number)
        // right.keys[0] is only a placeholder; the parent's separator is the real bound.
        pushKey(left, j === 0 ? (parent.keys[k + 1] as Standing) : (right.keys[j] as Standing))
      }
    }
    left.size += right.size
    parent.counts[k] = left.size
    removeAt(parent.children, k + 1)
    removeAt(parent.counts, k + 1)
    removeKey(parent, k + 1)
    right.parent = null
  }

  #borrowFromLeft(parent: Node, ci: number): void {
    const node = parent.children[ci] as Node
    const left = parent.children[ci - 1] as Node
    let moved: number
    let separator: Standing
    if (node.isLeaf) {
      separator = left.keys.pop() as Standing
      left.scores.pop()
      insertKey(node, 0, separator)
      setLeaf(separator, node)
      moved = 1
    } else {
      const child = left.children.pop() as Node
      moved = left.counts.pop() as number
      separator = left.keys.pop() as Standing
      left.scores.pop()
      setKey(node, 0, parent.keys[ci] as Standing)
      insertKey(node, 0, separator)
      insertAt(node.children, 0, child)
      insertAt(node.counts, 0, moved)
      child.parent = node
    }
    left.size -= moved
    node.size += moved
    parent.counts[ci - 1] = left.size
    parent.counts[ci] = node.size
    setKey(parent, ci, separator)
  }

  #borrowFromRight(parent: Node, ci: number): void {
    const node = parent.children[ci] as Node
    const right = parent.children[ci + 1] as Node
    let moved: number
    if (node.isLeaf) {
      const entry = right.keys[0] as Standing
      removeKey(right, 0)
      pushKey(node, entry)
      setLeaf(entry, node)
      moved = 1
    } else {
      const child = right.children[0] as Node
      moved = right.counts[0] as number
      removeAt(right.children, 0)
      removeAt(right.counts, 0)
      removeKey(right, 0)
      node.children.push(child)
      node.counts.push(moved)
      pushKey(node, parent.keys[ci + 1] as Standing)
      child.parent = node
    }
    right.size -= moved
    node.size += moved
    parent.counts[ci] = node.size
    parent.counts[ci + 1] = right.size
    setKey(parent, ci + 1, right.keys[0] as Standing)
  }
}

/**
 * Whether `keys[i]` sorts before `key` (or at-or-before when `orEqual`), reading the inline score
 * first and the entry itself only on a tie.
 */
function before(dir: number, node: Node, i: number, key: RankKey, orEqual: boolean): boolean {
  const s = node.scores[i] as number
  const t = key.score
  if (s !== t) return dir > 0 ? s < t : s > t
  const c = compareKeys(dir, node.keys[i] as Standing, key)
  return orEqual ? c <= 0 : c < 0
}

/** Child of an inner node to descend into for `key`: the last one whose separator is ≤ key. */
function route(dir: number, node: Node, key: RankKey): number {
  let lo = 1
  let hi = node.keys.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (before(dir, node, mid, key, true)) lo = mid + 1
    else hi = mid
  }
  return lo - 1
}

/** First index in a leaf whose key is ≥ `key` (or > `key` when `after`). */
function bound(dir: number, node: Node, key: RankKey, after: boolean): number {
  let lo = 0
  let hi = node.keys.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (before(dir, node, mid, key, after)) lo = mid + 1
    else hi = mid
  }
  return lo
}

function collect(leaf: Node | null, i: number, limit: number, out: RankEntry[]): RankEntry[] {
  while (leaf !== null) {
    const keys = leaf.keys
    for (; i < keys.length; i++) {
      out.push(keys[i] as Standing)
      if (out.length === limit) return out
    }
    leaf = leaf.next
    i = 0
  }
  return out
}

/**
 * Sorts entries into board order. A comparator sort of a million objects is slow (tens of millions
 * of JS calls, each chasing two pointers); instead the scores are sorted natively as a
 * Float64Array, each entry is placed into its score's bucket, and only runs of equal scores are
 * sorted with the full comparator.
 */
function sortStandings(dir: number, items: Standing[]): Standing[] {
  const n = items.length
  const values = new Float64Array(n)
  // dir * score + 0: descending boards sort negated scores; + 0 keeps every zero as +0.
  for (let i = 0; i < n; i++) values[i] = dir * (items[i] as Standing).score + 0
  const sorted = values.slice().sort()
  const filled = new Int32Array(n)
  const out = new Array<Standing>(n)
  for (let i = 0; i < n; i++) {
    const v = values[i] as number
    let lo = 0
    let hi = n
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if ((sorted[mid] as number) < v) lo = mid + 1
      else hi = mid
    }
    out[lo + (filled[lo] as number)++] = items[i] as Standing
  }
  for (let start = 0; start < n;) {
    let end = start + 1
    while (end < n && sorted[end] === sorted[start]) end++
    if (end - start > 1) {
      const run = out.slice(start, end).sort((a, b) => compareKeys(dir, a, b))
      for (let j = 0; j < run.length; j++) out[start + j] = run[j] as Standing
    }
    start = end
  }
  return out
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

/**
 * Opaque base64url cursor for a key (the last entry of a page).
 *
 * @example
 * const next = encodeCursor(page[page.length - 1]!)
 * index.page(decodeCursor(next), 50)
 */
export function encodeCursor(key: RankKey): string {
  const json = JSON.stringify([key.score + 0, key.subscore + 0, key.seq, key.playerId])
  const bytes = new TextEncoder().encode(json)
  let binary = ''
  for (let i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i] as number)
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
}

/**
 * The key inside a cursor, or null for anything that encodeCursor could not have produced
 * (wrong alphabet or length, bad UTF-8 or JSON, wrong shape, non-finite numbers, non-canonical
 * form). Never throws.
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
  if (!Array.isArray(value) || value.length !== 4) return null
  const [score, subscore, seq, playerId] = value as unknown[]
  if (typeof score !== 'number' || !Number.isFinite(score)) return null
  if (typeof subscore !== 'number' || !Number.isFinite(subscore)) return null
  if (typeof seq !== 'number' || !Number.isSafeInteger(seq)) return null
  if (typeof playerId !== 'string' || playerId.length === 0) return null
  const key: RankKey = { playerId, score, subscore, seq }
  // Only the canonical spelling is accepted, so one key has exactly one cursor.
  return encodeCursor(key) === cursor ? key : null
}

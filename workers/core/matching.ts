/**
 * Matchmaking for one queue: waiting tickets, and the search that turns them into matches.
 *
 * Rules. A ticket's allowed rating gap grows while it waits:
 * `gap(t) = min(maxWidenedGap, maxRatingGap + widenPerSecond * (t - enqueuedAt) / 1000)`.
 * Two tickets accept each other when `|rating_a - rating_b| <= min(gap_a, gap_b)`, and a match is a
 * set of whole tickets in which every pair accepts each other, packed into `teams` teams of exactly
 * `teamSize` players with every party on one team. The oldest waiting ticket is tried first.
 *
 * Why this is cheap with 100,000 waiting tickets:
 * - Tickets sit in a rating-ordered block list, so the candidates of a ticket are found by walking
 *   outward from its rating, nearest first, and the walk stops at the edge of the window shared by
 *   the members chosen so far (a member must lie inside every member's window).
 * - A ticket whose search failed is "clean": it cannot match until some ticket newly accepts it,
 *   because the search only depends on which pairs accept each other. Each clean ticket keeps the
 *   exact time at which its next acceptance appears (windows widen, so an acceptance, once there,
 *   stays), held in a min-heap; `findMatches` re-checks only tickets that are due, new, or whose
 *   neighbour gained an acceptance (a new acceptance between u and v can change the outcome for u,
 *   v and anyone who accepts both, and all of those accept u). So a call after one join touches
 *   the new ticket's neighbourhood, not the pool.
 * - A ticket whose party size cannot make the teams with the sizes waiting (ratings aside) is not
 *   searched, and has no due time for its acceptances with others like it: thousands of parties
 *   that can never fill a team would otherwise be searched on every join and woken at every
 *   acceptance. It still sits in other tickets' walks and can turn tickets away there, so a
 *   failed search also keeps the first time one of its own steps could go otherwise (`revisit`),
 *   and such a ticket is still due when it comes to accept a ticket that can fill teams.
 * - Likewise a ticket whose own window is short of those sizes (trios for 4-a-side, the solos
 *   that complete them waiting far away) is set aside with the sizes it counted (`shortSizes`,
 *   each up to its cap). Only a size it could count more of can change its answer: a newcomer it
 *   accepts is counted there (`staysShort`), its due time looks only at those sizes (each size
 *   has its own list), and a ticket of such a size that comes later keeps its own due time no
 *   later than the moment it comes to accept the short one (`shortOf`). So a crowd of trios is
 *   neither searched again at each join nor at each acceptance among themselves.
 * - "Accepts" is decided by one function of the pair (`acceptTime`, the instant from which both
 *   windows cover the distance), so due times and checks can never disagree through rounding.
 *
 * The search from a ticket is greedy (nearest compatible tickets first, equal distances oldest
 * first), which is exact for two solo tickets (1v1): if a 1v1 ticket stays unmatched, no waiting
 * ticket accepts it both ways. For larger matches a ticket it took can shut out the rest of a
 * match (its window narrows the one all must share), so a failed walk is retried a few times
 * leaving out the tickets that turned others away. Against brute force on small random pools no
 * match is left waiting, but in about one run in 2,000 the retries run out before the match that
 * holds the oldest ticket (a younger match is made first; in pools crowded with one party size,
 * about one 120-step run in 20); past the bound a search can miss a
 * set that a full clique search would find, and such a ticket is searched again whenever its neighbourhood gains an acceptance or loses a
 * ticket it accepted (a nearer ticket may have been what blocked it). Either way the incremental
 * index finds exactly what a freshly built index over the same tickets would.
 */

/** A queue's matching rules. */
export interface QueueRules {
  /** Number of teams in a match, 1..16 (1 is a co-operative lobby, 2 a versus match). */
  teams: number
  /** Players per team, 1..16. */
  teamSize: number
  /** Allowed rating gap when a ticket is enqueued. */
  maxRatingGap: number
  /** How fast the allowed gap grows while a ticket waits, in rating points per second. */
  widenPerSecond: number
  /** Upper bound of the widened gap; unbounded when absent. */
  maxWidenedGap?: number
}

/** One player inside a ticket. */
export interface TicketPlayer {
  playerId: string
  rating: number
}

/** A solo player or a party that must play on one team. */
export interface Ticket {
  id: string
  players: TicketPlayer[]
  /** When the ticket entered the queue, in epoch milliseconds. */
  enqueuedAt: number
}

/** One team of a match. */
export interface MatchTeam {
  playerIds: string[]
  ticketIds: string[]
  /** Sum of the team's player ratings. */
  totalRating: number
}

/** A match: its tickets (the one that was searched from first) and its balanced teams. */
export interface Match {
  tickets: Ticket[]
  teams: MatchTeam[]
}

/** Tuning knobs; the defaults suit every queue shape the rules allow. */
export interface MatchIndexOptions {
  /**
   * Most tickets one search, wake-up or due-time computation walks through before it settles for
   * a conservative answer. Bounds the worst case; reached only by pathological pools.
   */
  maxScan?: number
  /** Retry delay for a ticket whose search stopped at `maxScan` without an answer. */
  retryMs?: number
  /**
   * Most extra walks a search makes after its greedy walk fails, each leaving out tickets that
   * turned others away (8 by default; 0: the greedy walk alone).
   */
  retries?: number
  /**
   * Granularity of the checks `nextUsefulCheck` asks for when nothing is pending: a due time is
   * rounded up to a multiple of it (0 by default: the exact instant). In a crowded pool the
   * instants at which some pair newly accepts each other are a few milliseconds apart, and a
   * check at each is a search that almost never matches; at 250 ms a pool checks at most four
   * times a second, and a match that widening allows waits at most that much longer.
   */
  checkGranularityMs?: number
}

/** Mean rating of a ticket's players: the rating the matcher compares. */
export function ticketRating(ticket: Ticket): number {
  let sum = 0
  for (const p of ticket.players) sum += p.rating
  return sum / ticket.players.length
}

/**
 * The rating gap a ticket accepts at time `now`.
 * @example allowedGap({ teams: 2, teamSize: 1, maxRatingGap: 100, widenPerSecond: 10 }, t, t.enqueuedAt + 5000) // 150
 */
export function allowedGap(rules: QueueRules, ticket: Ticket, now: number): number {
  const cap = Math.max(rules.maxWidenedGap ?? Infinity, rules.maxRatingGap)
  const waited = Math.max(0, now - ticket.enqueuedAt)
  return Math.min(cap, rules.maxRatingGap + (rules.widenPerSecond * waited) / 1000)
}

interface Key {
  rating: number
  enqueuedAt: number
  seq: number
}

interface Entry extends Key {
  ticket: Ticket
  id: string
  size: number
  /** Sum of the players' ratings. */
  weight: number
  /** Value of the add counter when the ticket was added. */
  addEpoch: number
  /** Waiting to be searched from (in the ready heap) rather than clean. */
  ready: boolean
  /** Its neighbours must be told about acceptances it gained (it is new or its due time came). */
  needsWake: boolean
  /** Time its neighbours were last told; a ready ticket carried into a later call tells again. */
  wokeAt: number
  /** Time and add counter of its last failed search. */
  checkedAt: number
  checkEpoch: number
  /** Earliest time a new acceptance can appear, for clean tickets. */
  due: number
  /**
   * For a clean ticket whose last search found that the party sizes in its window (itself and the
   * tickets it accepted, each size counted up to its cap) cannot make the teams: those counts, to
   * which `wake` adds each newcomer it accepts. While they cannot, no ticket joining or leaving
   * changes its search's answer (leaving only takes sizes away), so it is not searched again until
   * a newcomer's size lets them or its due time (a new acceptance by widening) comes. Null otherwise.
   */
  shortSizes: number[] | null
  readyPos: number
  duePos: number
}

function compareKey(a: Key, b: Key): number {
  if (a.rating !== b.rating) return a.rating < b.rating ? -1 : 1
  return compareAge(a, b)
}

function compareAge(a: Key, b: Key): number {
  if (a.enqueuedAt !== b.enqueuedAt) return a.enqueuedAt < b.enqueuedAt ? -1 : 1
  return a.seq - b.seq
}

const BLOCK_MAX = 512

/** A mutable position in a BlockList: entry `i` of block `b`; `b === -1` is past either end. */
class Cursor {
  b = -1
  i = 0

  set(other: Cursor): void {
    this.b = other.b
    this.i = other.i
  }

  equals(other: Cursor): boolean {
    return this.b === other.b && this.i === other.i
  }
}

/**
 * Entries in key order, as a list of sorted blocks: inserts and removals move at most one block
 * (a short memmove), lookups are two binary searches, and walking is array indexing.
 */
class BlockList {
  blocks: Entry[][] = []
  size = 0
  private readonly scratch = new Cursor()

  /** Moves `c` to the first entry not less than `key`; false, and `c` nowhere, past the end. */
  seek(key: Key, c: Cursor): boolean {
    const blocks = this.blocks
    let lo = 0
    let hi = blocks.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      const block = blocks[mid]!
      if (compareKey(block[block.length - 1]!, key) < 0) lo = mid + 1
      else hi = mid
    }
    if (lo === blocks.length) {
      c.b = -1
      return false
    }
    const block = blocks[lo]!
    let a = 0
    let z = block.length
    while (a < z) {
      const mid = (a + z) >>> 1
      if (compareKey(block[mid]!, key) < 0) a = mid + 1
      else z = mid
    }
    c.b = lo
    c.i = a
    return true
  }

  /** Moves `c` onto `entry`, which must be in the list. */
  locate(entry: Entry, c: Cursor): void {
    if (!this.seek(entry, c) || this.at(c) !== entry) throw new Error('entry not in list')
  }

  insert(entry: Entry): void {
    this.size++
    const blocks = this.blocks
    if (blocks.length === 0) {
      blocks.push([entry])
      return
    }
    const c = this.scratch
    if (!this.seek(entry, c)) {
      c.b = blocks.length - 1
      c.i = blocks[c.b]!.length
    }
    const block = blocks[c.b]!
    block.splice(c.i, 0, entry)
    if (block.length > BLOCK_MAX) blocks.splice(c.b + 1, 0, block.splice(BLOCK_MAX >>> 1))
  }

  remove(entry: Entry): void {
    const c = this.scratch
    this.locate(entry, c)
    this.size--
    const block = this.blocks[c.b]!
    block.splice(c.i, 1)
    if (block.length === 0) this.blocks.splice(c.b, 1)
  }

  at(c: Cursor): Entry {
    return this.blocks[c.b]![c.i]!
  }

  /** Moves `c` to the last entry; nowhere when the list is empty. */
  last(c: Cursor): void {
    c.b = this.blocks.length - 1
    c.i = c.b < 0 ? 0 : this.blocks[c.b]!.length - 1
  }

  /** Moves `c` to the next entry; false, and `c` nowhere, at the end. */
  advance(c: Cursor): boolean {
    if (c.b < 0) return false
    if (++c.i < this.blocks[c.b]!.length) return true
    c.i = 0
    if (++c.b < this.blocks.length) return true
    c.b = -1
    return false
  }

  /** Moves `c` to the previous entry; false, and `c` nowhere, at the start. */
  retreat(c: Cursor): boolean {
    if (c.b < 0) return false
    if (--c.i >= 0) return true
    if (--c.b >= 0) {
      c.i = this.blocks[c.b]!.length - 1
      return true
    }
    return false
  }
}

/**
 * Walks a list outward from an anchor in order of rating distance; equal distances come oldest
 * first, on either side, so the choice among equally good partners is by age. Below the anchor,
 * each run of equal ratings is entered at its oldest entry (found by binary search) and read
 * forward, since the list holds equal ratings oldest first.
 */
class Outward {
  readonly list: BlockList
  readonly rating: number
  private readonly up = new Cursor()
  /** Next unread entry below the anchor, outside the current run. */
  private readonly below = new Cursor()
  private readonly run = new Cursor()
  private readonly runEnd = new Cursor()
  private inRun = false
  private upOpen = true
  private downOpen = true
  /** The entry, distance and side of the last `next()`. */
  entry: Entry | undefined
  distance = 0
  isUp = false

  /** From `anchor`, which is in `list` unless `outside` (then from where it would be). */
  constructor(list: BlockList, anchor: Entry, outside = false) {
    this.list = list
    this.rating = anchor.rating
    if (!outside) {
      list.locate(anchor, this.up)
      this.below.set(this.up)
      list.advance(this.up)
      list.retreat(this.below)
    } else if (list.seek(anchor, this.up)) {
      this.below.set(this.up)
      list.retreat(this.below)
    } else {
      list.last(this.below)
    }
  }

  private downHead(): Entry | undefined {
    if (this.inRun) return this.list.at(this.run)
    if (this.below.b < 0) return undefined
    const list = this.list
    const rating = list.at(this.below).rating
    this.runEnd.set(this.below)
    list.seek({ rating, enqueuedAt: -Infinity, seq: -Infinity }, this.run)
    this.below.set(this.run)
    list.retreat(this.below)
    this.inRun = true
    return list.at(this.run)
  }

  /** Stops the walk on one side (the caller saw an entry beyond its bound there). */
  close(up: boolean): void {
    if (up) this.upOpen = false
    else this.downOpen = false
  }

  /** Steps to the nearest unread entry; false when both sides are done. */
  next(): boolean {
    const u = this.upOpen && this.up.b >= 0 ? this.list.at(this.up) : undefined
    const d = this.downOpen ? this.downHead() : undefined
    if (d === undefined) {
      if (u === undefined) return false
    } else if (u === undefined || this.rating - d.rating < u.rating - this.rating) {
      return this.stepDown(d)
    } else if (this.rating - d.rating === u.rating - this.rating && compareAge(d, u) < 0) {
      return this.stepDown(d)
    }
    this.entry = u
    this.distance = u!.rating - this.rating
    this.isUp = true
    this.list.advance(this.up)
    return true
  }

  private stepDown(d: Entry): boolean {
    this.entry = d
    this.distance = this.rating - d.rating
    this.isUp = false
    if (this.run.equals(this.runEnd)) this.inRun = false
    else this.list.advance(this.run)
    return true
  }
}

/** Binary min-heap that records each entry's slot, so entries can leave from the middle. */
class Heap {
  items: Entry[] = []
  less: (a: Entry, b: Entry) => boolean
  setPos: (e: Entry, pos: number) => void
  getPos: (e: Entry) => number

  constructor(
    less: (a: Entry, b: Entry) => boolean,
    getPos: (e: Entry) => number,
    setPos: (e: Entry, pos: number) => void,
  ) {
    this.less = less
    this.getPos = getPos
    this.setPos = setPos
  }

  get size(): number {
    return this.items.length
  }

  peek(): Entry | undefined {
    return this.items[0]
  }

  push(e: Entry): void {
    this.items.push(e)
    this.setPos(e, this.items.length - 1)
    this.up(this.items.length - 1)
  }

  pop(): Entry | undefined {
    const top = this.items[0]
    if (top !== undefined) this.delete(top)
    return top
  }

  delete(e: Entry): void {
    const i = this.getPos(e)
    if (i < 0) return
    const last = this.items.pop()!
    this.setPos(e, -1)
    if (last === e) return
    this.items[i] = last
    this.setPos(last, i)
    this.up(i)
    this.down(this.getPos(last))
  }

  private up(i: number): void {
    const items = this.items
    const e = items[i]!
    while (i > 0) {
      const p = (i - 1) >>> 1
      const parent = items[p]!
      if (!this.less(e, parent)) break
      items[i] = parent
      this.setPos(parent, i)
      i = p
    }
    items[i] = e
    this.setPos(e, i)
  }

  private down(i: number): void {
    const items = this.items
    const n = items.length
    const e = items[i]!
    for (;;) {
      let c = 2 * i + 1
      if (c >= n) break
      if (c + 1 < n && this.less(items[c + 1]!, items[c]!)) c++
      const child = items[c]!
      if (!this.less(child, e)) break
      items[i] = child
      this.setPos(child, i)
      i = c
    }
    items[i] = e
    this.setPos(e, i)
  }
}

/**
 * `none`: no match now; `inconclusive`: the search stopped at `maxScan`; `unfillable`: the waiting
 * tickets' party sizes cannot make the teams whatever their ratings (nothing changes that until a
 * ticket joins or leaves).
 */
type SearchResult = { members: Entry[]; bins: Entry[][] } | 'none' | 'inconclusive' | 'unfillable'

/**
 * A search's first walk, and then its retries together, pass over this many tickets
 * of a size already at its cap for each one a walk may check (`maxScan`): passing one is an array
 * lookup, checking one weighs it against every ticket taken.
 */
const PASSED_PER_SCANNED = 16

function checkInt(name: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`${name} must be an integer in ${min}..${max}`)
  }
}

function checkNonNegative(name: string, value: number): void {
  if (!Number.isFinite(value) || value < 0) {
    throw new RangeError(`${name} must be a finite number >= 0`)
  }
}

/**
 * Default `retries`: extra walks a search makes after its greedy walk fails. Against brute force
 * on random pools of up to 6 to 12 tickets (2v2 to 3v4, parties of 1 to 5, with and without
 * widening), the greedy walk alone missed a match that existed in 0.2 to 0.7 % of them, one
 * retry in up to 0.02 %, two and more in none of 110,000; 8 leaves room, and bounds what a
 * failing search costs (9 walks). Longer random runs (40 steps, up to 12 tickets) find about one
 * in 2,000 where 8 are not enough for the match that holds the oldest ticket.
 */
const MAX_RETRIES = 8

const NO_SKIP: readonly Entry[] = []

/** Taken tickets that turned one away, and the oldest of them. */
interface Blocked {
  by: Entry[]
  oldest: Entry
}

function sameSet(a: readonly Entry[], b: readonly Entry[]): boolean {
  return a.length === b.length && a.every((e) => b.includes(e))
}

/** The oldest of some tickets. */
function oldest(entries: Entry[]): Entry {
  let o = entries[0]!
  for (const e of entries) if (compareAge(e, o) < 0) o = e
  return o
}

/**
 * The waiting tickets of one queue and the matcher over them. Pure and synchronous: the MatchPool
 * Durable Object owns one, calls `add` on each join, `remove` on cancel, and `findMatches` after
 * each join and on its alarm, scheduled at `nextUsefulCheck`.
 *
 * @example
 * const index = new MatchIndex({ teams: 2, teamSize: 1, maxRatingGap: 100, widenPerSecond: 10 })
 * index.add({ id: 't1', players: [{ playerId: 'a', rating: 1500 }], enqueuedAt: 0 })
 * index.add({ id: 't2', players: [{ playerId: 'b', rating: 1550 }], enqueuedAt: 1000 })
 * index.findMatches(1000) // one match, teams [['a'], ['b']]
 */
export class MatchIndex {
  readonly rules: Readonly<QueueRules>
  private readonly players: number
  private readonly base: number
  private readonly widen: number
  private readonly cap: number
  private readonly maxScan: number
  /** Most tickets of a size at its cap one search passes over (see walk). */
  private readonly maxPassed: number
  /** What is left of the search under way's allowance of passes (maxPassed). */
  private passesLeft = 0
  private readonly retryMs: number
  private readonly retries: number
  /** `checkGranularityMs`. */
  private readonly granularity: number
  private readonly partitions: number[][]
  private readonly entries = new Map<string, Entry>()
  private readonly all = new BlockList()
  /** The waiting tickets again, by party size (index = size): a short window's due time asks by size. */
  private readonly bySize: BlockList[]
  /**
   * `shortOf[s]`: the clean tickets whose window is short of the sizes to make teams and could
   * still count more tickets of size s. A ticket of size s keeps its due time no later than the
   * first moment one of them comes to accept it: their own due times know only the tickets that
   * waited when they were searched.
   */
  private readonly shortOf: BlockList[]
  private readonly clean = new BlockList()
  private readonly ready = new Heap(
    (a, b) => compareAge(a, b) < 0,
    (e) => e.readyPos,
    (e, p) => {
      e.readyPos = p
    },
  )
  private readonly dueHeap = new Heap(
    (a, b) => a.due < b.due,
    (e) => e.duePos,
    (e, p) => {
      e.duePos = p
    },
  )
  private pendingWake: Entry[] = []
  /** Waiting tickets by party size (index = size). */
  private readonly sizeCounts: number[]
  /** Most tickets of each size (index = size) the teams could ever hold; more change nothing. */
  private readonly sizeCaps: number[]
  /** `fillable[s]`: whether the waiting sizes can make the teams with a party of s; filled lazily. */
  private fillable: (boolean | undefined)[] = []
  /**
   * Set by a search that found nothing: the earliest time a ticket it turned away (or could not
   * reach) becomes acceptable to the tickets it had taken at that point, when its walk may go
   * differently.
   */
  private revisit = Infinity
  /** Set by `walk`: for each ticket it turned away that `u` accepts, the taken ones that did. */
  private blocked: Blocked[] = []
  /** Set by a search that found nothing: its window's capped party sizes, when they cannot make teams. */
  private short: number[] | null = null
  /** Tickets that left since their neighbours were last told. */
  private departed: Entry[] = []
  private seq = 0
  private epoch = 0
  private clock = -Infinity

  constructor(rules: QueueRules, options: MatchIndexOptions = {}) {
    checkInt('teams', rules.teams, 1, 16)
    checkInt('teamSize', rules.teamSize, 1, 16)
    checkNonNegative('maxRatingGap', rules.maxRatingGap)
    checkNonNegative('widenPerSecond', rules.widenPerSecond)
    if (rules.maxWidenedGap !== undefined && !(rules.maxWidenedGap >= 0)) {
      throw new RangeError('maxWidenedGap must be >= 0')
    }
    this.rules = { ...rules }
    this.players = rules.teams * rules.teamSize
    this.base = rules.maxRatingGap
    this.widen = rules.widenPerSecond
    this.cap = Math.max(rules.maxWidenedGap ?? Infinity, rules.maxRatingGap)
    this.maxScan = options.maxScan ?? 4096
    this.maxPassed = this.maxScan * PASSED_PER_SCANNED
    this.retryMs = options.retryMs ?? 1000
    this.retries = options.retries ?? MAX_RETRIES
    this.granularity = options.checkGranularityMs ?? 0
    checkNonNegative('checkGranularityMs', this.granularity)
    this.partitions = partitionsOf(rules.teamSize)
    this.sizeCounts = new Array<number>(rules.teamSize + 1).fill(0)
    this.bySize = this.sizeCounts.map(() => new BlockList())
    this.shortOf = this.sizeCounts.map(() => new BlockList())
    this.sizeCaps = this.sizeCounts.map((_, s) =>
      s === 0 ? 0 : rules.teams * Math.floor(rules.teamSize / s),
    )
  }

  /** Number of waiting tickets. */
  get size(): number {
    return this.entries.size
  }

  has(ticketId: string): boolean {
    return this.entries.has(ticketId)
  }

  get(ticketId: string): Ticket | undefined {
    return this.entries.get(ticketId)?.ticket
  }

  /** Waiting tickets, in no particular order. */
  *tickets(): IterableIterator<Ticket> {
    for (const e of this.entries.values()) yield e.ticket
  }

  /**
   * Adds a waiting ticket. Throws on a duplicate id, an empty ticket, a party larger than a team,
   * or a non-finite rating or time.
   */
  add(ticket: Ticket): void {
    if (this.entries.has(ticket.id)) throw new Error(`ticket ${ticket.id} is already waiting`)
    const size = ticket.players.length
    if (size < 1 || size > this.rules.teamSize) {
      throw new RangeError(`a ticket holds 1..${this.rules.teamSize} players`)
    }
    let weight = 0
    for (const p of ticket.players) weight += p.rating
    const rating = weight / size
    if (!Number.isFinite(rating) || !Number.isFinite(ticket.enqueuedAt)) {
      throw new RangeError('ticket ratings and enqueuedAt must be finite')
    }
    const entry: Entry = {
      ticket,
      id: ticket.id,
      size,
      weight,
      rating: rating === 0 ? 0 : rating,
      enqueuedAt: ticket.enqueuedAt,
      seq: this.seq++,
      addEpoch: ++this.epoch,
      ready: false,
      needsWake: false,
      wokeAt: -Infinity,
      checkedAt: -Infinity,
      checkEpoch: -1,
      due: Infinity,
      shortSizes: null,
      readyPos: -1,
      duePos: -1,
    }
    this.entries.set(ticket.id, entry)
    this.all.insert(entry)
    this.bySize[size]!.insert(entry)
    this.countSize(size, 1)
    this.makeReady(entry, true)
  }

  /** Removes a waiting ticket (cancelled or gone); false when it was not waiting. */
  remove(ticketId: string): boolean {
    const entry = this.entries.get(ticketId)
    if (entry === undefined) return false
    this.detach(entry)
    return true
  }

  /**
   * Finds matches among the waiting tickets at time `now`, oldest ticket first, removes the
   * matched tickets and returns the matches. `max` bounds the work of one call; the rest carries
   * over to the next. Time never runs backwards here: an earlier `now` than a previous call's is
   * treated as that call's.
   */
  findMatches(now: number, opts: { max?: number } = {}): Match[] {
    if (Number.isNaN(now)) throw new RangeError('now must be a number')
    now = Math.max(now, this.clock)
    this.clock = now
    const max = opts.max ?? Infinity
    const matches: Match[] = []

    for (let top = this.dueHeap.peek(); top !== undefined && top.due <= now;) {
      this.unclean(top)
      this.makeReady(top, true)
      top = this.dueHeap.peek()
    }
    // Every acceptance that appeared since the last call is announced before any search, so the
    // tickets it concerns are all ready and searched oldest first.
    const pending = this.pendingWake
    this.pendingWake = []
    for (const e of pending) {
      if (!e.needsWake || this.entries.get(e.id) !== e) continue
      e.needsWake = false
      e.wokeAt = now
      this.wake(e, now)
    }
    this.wakeDeparted(now)
    // Tickets left ready by an earlier call that hit `max` are told again when they come up; but
    // one that has since come to accept a ticket set aside for its size must tell it before any
    // search, or a younger ticket's search takes it first (the set-aside one learns of it only
    // from its wake). Only those: the others keep their wake for when they come up.
    if (this.ready.size > 0 && this.shortOf.some((list) => list.size > 0)) {
      for (const u of this.ready.items.slice()) {
        if (u.wokeAt >= now || this.shortOf[u.size]!.size === 0) continue
        u.wokeAt = now
        this.wake(u, now)
      }
    }

    while (matches.length < max) {
      const u = this.ready.peek()
      if (u === undefined) break
      if (u.wokeAt < now) {
        // Left ready by an earlier call that hit `max`: acceptances may have appeared since.
        u.wokeAt = now
        if (this.wake(u, now)) continue
      }
      this.ready.delete(u)
      u.ready = false
      const found = this.search(u, now)
      if (typeof found === 'string') {
        this.makeClean(u, now, found)
        continue
      }
      for (const m of found.members) {
        if (m !== u) this.detach(m)
        else {
          this.entries.delete(u.id)
          this.all.remove(u)
          this.bySize[u.size]!.remove(u)
          this.countSize(u.size, -1)
          this.departed.push(u)
        }
      }
      this.wakeDeparted(now)
      matches.push(this.buildMatch(found.members, found.bins))
    }
    return matches
  }

  /**
   * When `findMatches` next has something to do: `now` if work is pending, else the earliest time
   * a waiting ticket gains a partner that accepts it (rounded up to a whole millisecond, or to the
   * next multiple of `checkGranularityMs`), or null when nothing can happen until a ticket joins.
   * The DO sets its alarm to this.
   */
  nextUsefulCheck(now: number): number | null {
    if (this.ready.size > 0 || this.pendingWake.length > 0) return now
    if (this.departed.length > 0 && this.clean.size > 0) return now
    const top = this.dueHeap.peek()
    if (top === undefined) return null
    const step = this.granularity
    const due = step > 0 ? Math.ceil(top.due / step) * step : Math.ceil(top.due)
    return Math.max(now, due)
  }

  private makeReady(e: Entry, needsWake: boolean): void {
    e.ready = true
    this.ready.push(e)
    if (needsWake) {
      e.needsWake = true
      this.pendingWake.push(e)
    }
  }

  private makeClean(e: Entry, now: number, why: 'none' | 'inconclusive' | 'unfillable'): void {
    e.ready = false
    e.needsWake = false
    e.checkedAt = now
    e.checkEpoch = this.epoch
    e.shortSizes = why === 'none' ? this.short : null
    // Unfillable: no window's growth helps this ticket's own search until the sizes change. A
    // match the sizes allow only once a ticket has joined must contain that ticket, whose arrival
    // and due times wake every ticket that accepts it. But this ticket still sits in the walks of
    // tickets that can fill teams, where it can turn others away: it must wake them when it comes
    // to accept them (they did not know it when they last searched). How the tickets in a walk
    // come to accept each other is that search's own `revisit`, so acceptances between tickets
    // that cannot fill teams need no due time.
    const due =
      why === 'inconclusive'
        ? now + this.retryMs
        : why === 'unfillable'
          ? this.nextDue(e, now, true)
          : e.shortSizes !== null
            ? this.nextShortDue(e, now)
            : Math.min(this.nextDue(e, now), this.revisit)
    e.due = Math.min(due, this.nextNeeded(e, now))
    this.clean.insert(e)
    if (e.due !== Infinity) this.dueHeap.push(e)
    const sizes = e.shortSizes
    if (sizes !== null) {
      for (let size = 1; size < sizes.length; size++) {
        if (sizes[size]! < this.sizeCaps[size]!) this.shortOf[size]!.insert(e)
      }
    }
  }

  /** Moves a clean ticket to the ready ones, its neighbours told as of `now`. */
  private rewake(w: Entry, now: number): void {
    this.unclean(w)
    w.ready = true
    w.wokeAt = now
    this.ready.push(w)
  }

  /** Takes a clean ticket out of the clean tickets (to be searched, or gone). */
  private unclean(e: Entry): void {
    this.clean.remove(e)
    this.dueHeap.delete(e)
    const sizes = e.shortSizes
    if (sizes !== null) {
      for (let size = 1; size < sizes.length; size++) {
        if (sizes[size]! < this.sizeCaps[size]!) this.shortOf[size]!.remove(e)
      }
      e.shortSizes = null
    }
  }

  private detach(e: Entry): void {
    this.entries.delete(e.id)
    this.all.remove(e)
    this.bySize[e.size]!.remove(e)
    this.countSize(e.size, -1)
    if (e.ready) this.ready.delete(e)
    else this.unclean(e)
    e.needsWake = false
    this.departed.push(e)
  }

  /**
   * A greedy search that failed may succeed once a nearer ticket that blocked it is gone, so clean
   * tickets that accepted a departed ticket are searched again.
   */
  private wakeDeparted(now: number): void {
    const departed = this.departed
    this.departed = []
    if (this.clean.size === 0) return
    for (const d of departed) {
      const g = this.reachAt(d, now)
      const woken: Entry[] = []
      const c = new Cursor()
      const key = { rating: d.rating - g, enqueuedAt: -Infinity, seq: -Infinity }
      for (let ok = this.clean.seek(key, c); ok; ok = this.clean.advance(c)) {
        const w = this.clean.at(c)
        if (w.rating > d.rating + g) break
        // A window short of the sizes to make teams is no less short for a departure.
        if (w.shortSizes === null && this.acceptTime(d, w) <= now && this.canFill(w.size)) {
          woken.push(w)
        }
      }
      for (const w of woken) {
        this.rewake(w, now)
      }
    }
  }

  /** Time from which ticket `e`'s window covers distance `d`. */
  private reach(e: Entry, d: number): number {
    if (d <= this.base) return -Infinity
    if (this.widen <= 0 || d > this.cap) return Infinity
    return e.enqueuedAt + (1000 * (d - this.base)) / this.widen
  }

  /** Time from which `a` and `b` accept each other. */
  private acceptTime(a: Entry, b: Entry): number {
    const d = Math.abs(a.rating - b.rating)
    return Math.max(this.reach(a, d), this.reach(b, d))
  }

  /** Window half-width for walking; a hair wide so rounding never hides a partner. */
  private reachAt(e: Entry, now: number): number {
    const waited = Math.max(0, now - e.enqueuedAt)
    const gap = Math.min(this.cap, this.base + (this.widen * waited) / 1000)
    return gap + 1e-9 * (Math.abs(e.rating) + gap + 1)
  }

  /**
   * Tells clean tickets that accept `u` that their neighbourhood changed, if it did since their
   * last search. Returns whether one of them is older than `u` (it must be searched first).
   */
  private wake(u: Entry, now: number): boolean {
    if (this.clean.size === 0) return false
    const g = this.reachAt(u, now)
    const hi = u.rating + g
    const woken: Entry[] = []
    /** Short windows that u's size lets make teams: searched again, whatever else they knew. */
    const reopened: Entry[] = []
    const c = new Cursor()
    const key = { rating: u.rating - g, enqueuedAt: -Infinity, seq: -Infinity }
    for (let ok = this.clean.seek(key, c); ok; ok = this.clean.advance(c)) {
      const w = this.clean.at(c)
      if (w.rating > hi) break
      if (this.acceptTime(u, w) > now) continue
      // A window whose sizes cannot make teams even with u's would only be searched to say so
      // again: thousands of trios in a 4-a-side queue with two solos far away were each searched
      // on every join, a walk of the window apiece. It counts u whatever else holds it back, so
      // that its count misses no newcomer.
      if (w.shortSizes !== null) {
        if (!this.staysShort(w, u.size)) reopened.push(w)
      } else if (this.canFill(w.size)) {
        // A ticket whose size cannot fill teams now would only be searched to say so again.
        woken.push(w)
      }
    }
    let older = false
    for (const w of reopened) {
      this.rewake(w, now)
      if (compareAge(w, u) < 0) older = true
    }
    if (woken.length === 0) return older

    // An acceptance (u, v) that is new to w may change w's search when w accepts u, so find the
    // newest acceptance of u: by arrival of a ticket, and by time.
    let newestAdd = u.addEpoch
    let newestTime = -Infinity
    let exact = true
    let scanned = 0
    for (let ok = this.all.seek(key, c); ok; ok = this.all.advance(c)) {
      const v = this.all.at(c)
      if (v.rating > hi) break
      if (++scanned > this.maxScan) {
        exact = false
        break
      }
      if (v === u) continue
      const t = this.acceptTime(u, v)
      if (t > now) continue
      if (v.addEpoch > newestAdd) newestAdd = v.addEpoch
      if (t > newestTime) newestTime = t
    }
    for (const w of woken) {
      if (exact && w.checkEpoch >= newestAdd && w.checkedAt >= newestTime) continue
      this.rewake(w, now)
      if (compareAge(w, u) < 0) older = true
    }
    return older
  }

  /**
   * Earliest time after `now` at which some waiting ticket newly accepts `u` both ways; with
   * `fillers`, only tickets whose party size can fill teams count.
   */
  private nextDue(u: Entry, now: number, fillers = false): number {
    if (fillers && !this.anyFillable()) return Infinity
    const counts = fillers ? (e: Entry) => this.canFill(e.size) : undefined
    return this.firstAcceptance(u, now, new Outward(this.all, u), Infinity, { scanned: 0 }, counts)
  }

  /**
   * Walks `walk` (outward from `u`) for the earliest time after `now` at which one of its tickets
   * (those `counts` takes, all without it) newly accepts `u` both ways, starting from `best`.
   * `scan` is shared by the walks of one question; past `maxScan` tickets it is marked `cut` and
   * the answer is a conservative one (when the window reaches the last ticket looked at, or a
   * retry).
   */
  private firstAcceptance(
    u: Entry,
    now: number,
    walk: Outward,
    best: number,
    scan: { scanned: number; cut?: boolean },
    counts?: (e: Entry) => boolean,
  ): number {
    while (walk.next()) {
      const lower = this.reach(u, walk.distance)
      // Farther tickets on this side need u's window to grow at least this much.
      if (lower >= best) {
        walk.close(walk.isUp)
        continue
      }
      if (++scan.scanned > this.maxScan) {
        scan.cut = true
        return Math.min(best, lower > now ? lower : now + this.retryMs)
      }
      if (counts !== undefined && !counts(walk.entry!)) continue
      const t = Math.max(lower, this.reach(walk.entry!, walk.distance))
      if (t > now && t < best) best = t
    }
    return best
  }

  /**
   * For a clean ticket whose window is short of the sizes to make teams (`shortSizes`): the
   * earliest time after `now` at which a ticket of a size it could still count more of newly
   * accepts it both ways. Only those can change its answer (no walk succeeds while the sizes
   * fall short, whoever accepts whom), so a pool crowded with one size at its cap does not search
   * each of them again at every acceptance among the crowd; asked of each size's own list, so
   * the crowd is not walked either.
   */
  private nextShortDue(u: Entry, now: number): number {
    const sizes = u.shortSizes!
    let best = Infinity
    const scan = { scanned: 0, cut: false }
    for (let size = 1; size < this.bySize.length && !scan.cut; size++) {
      const list = this.bySize[size]!
      if (sizes[size]! >= this.sizeCaps[size]! || list.size === 0) continue
      best = this.firstAcceptance(u, now, new Outward(list, u, size !== u.size), best, scan)
    }
    return best
  }

  /**
   * Earliest time after `now` at which a short window that could count `u`'s size (`shortOf`)
   * comes to accept `u` both ways: then `u` is due, and its wake counts it there.
   */
  private nextNeeded(u: Entry, now: number): number {
    const list = this.shortOf[u.size]!
    if (list.size === 0) return Infinity
    return this.firstAcceptance(u, now, new Outward(list, u, true), Infinity, { scanned: 0 })
  }

  private countSize(size: number, delta: number): void {
    const before = this.sizeCounts[size]!
    this.sizeCounts[size] = before + delta
    // Only counts up to what the teams could hold change what can fill them.
    const cap = this.sizeCaps[size]!
    if (Math.min(before, cap) !== Math.min(before + delta, cap)) this.fillable = []
  }

  /** Whether some waiting ticket's party size can fill teams. */
  private anyFillable(): boolean {
    for (let s = 1; s < this.sizeCounts.length; s++) {
      if (this.sizeCounts[s]! > 0 && this.canFill(s)) return true
    }
    return false
  }

  /**
   * Whether the waiting tickets' party sizes, ratings aside, can make the teams with a party of
   * `size` in them. Without this, parties that can never add up to a team (parties of 9 to 15 for
   * teams of 16) had every ticket walk its whole window on each join: quadratic in the queue.
   */
  private canFill(size: number): boolean {
    let known = this.fillable[size]
    if (known === undefined) {
      const { teams, teamSize } = this.rules
      const counts = this.sizeCounts.map((c, s) => Math.min(c, this.sizeCaps[s]!))
      // A search cut short by its budget proves nothing, so only a finished one blocks.
      known = packSizes(counts, size, teams, teamSize, this.partitions) !== 'impossible'
      this.fillable[size] = known
    }
    return known
  }

  /**
   * Search for a match containing `u`: a greedy walk (`walk`), then, when it fails, up to
   * `retries` more walks. A taken ticket narrows the window every later one must lie in, even one
   * that cannot complete a match with `u` (a solo next to a duo in 2v2 can shut out the other
   * duo), so the greedy walk alone missed matches for good. Each retry leaves out, on top of what
   * the walk it comes from left out, the taken tickets that turned away one ticket `u` accepts
   * (so that walk would take it), breadth first; among those sets, the ones whose oldest ticket is
   * youngest come first, so the first match found keeps the older tickets. When it finds none,
   * `revisit` is the first time one step of any of its walks could go otherwise. Every walk takes
   * only tickets that accept `u` and depends only on which pairs accept each other, so waking `u`
   * when its neighbourhood changes stays exact. A retry stopped by `maxScan` makes the search
   * inconclusive, as the first walk would.
   */
  private search(u: Entry, now: number): SearchResult {
    this.revisit = Infinity
    this.short = null
    if (!this.canFill(u.size)) return 'unfillable'
    // Most failed walks have no match to miss: not enough players accept `u`, whoever is left
    // out. A ticket searched before in vain is asked that first (a walk of its window would pass
    // over a crowd of sizes at their caps), a new one after its first walk (which most often
    // finds a match). Kept for wake: the tickets it accepts then change that only by a size.
    let sizes: number[] | null | undefined
    if (u.checkEpoch >= 0) {
      sizes = this.windowSizes(u, now)
      if (sizes !== null && this.cannotPack(sizes, u.size)) {
        this.short = this.crowded(sizes) ? sizes : null
        return 'none'
      }
    }
    this.passesLeft = this.maxPassed
    const first = this.walk(u, now, NO_SKIP)
    if (first !== 'none') return first
    // A walk that passed no ticket for its size saw no crowd to set `u` aside from, and one that
    // turned none away has nothing to retry: most failed walks, which this spares a second scan.
    const crowd = this.passesLeft < this.maxPassed
    if (!crowd && (this.blocked.length === 0 || this.retries <= 0)) return first
    sizes ??= this.windowSizes(u, now)
    if (sizes !== null && this.cannotPack(sizes, u.size)) {
      this.short = this.crowded(sizes) ? sizes : null
      return first
    }
    if (this.blocked.length === 0 || this.retries <= 0) return first
    // The retries share one more allowance of passes (a crowd passed over once a walk would cost
    // a search ten passes over it); past it, the first walk's answer stands.
    this.passesLeft = this.maxPassed
    const queue: Entry[][] = []
    const more = (skip: readonly Entry[]): void => {
      const sets = this.blocked
      sets.sort((x, y) => compareAge(y.oldest, x.oldest) || x.by.length - y.by.length)
      for (const { by } of sets) {
        if (queue.length >= this.retries) return
        let next = skip as Entry[]
        for (const e of by) if (!skip.includes(e)) next = next.concat(e)
        if (!queue.some((q) => sameSet(q, next))) queue.push(next)
      }
    }
    more(NO_SKIP)
    for (let k = 0; k < queue.length; k++) {
      const found = this.walk(u, now, queue[k]!)
      if (found === 'inconclusive' && this.passesLeft < 0) return first
      if (found !== 'none') return found
      if (queue.length < this.retries) more(queue[k]!)
    }
    return 'none'
  }

  /**
   * One greedy walk for a match containing `u`, leaving out `skip`: nearest compatible tickets
   * first. When it finds none, it lowers `revisit` to the first time one of its steps could go
   * otherwise: a ticket it turned away is accepted by all it had taken, or the window it stopped
   * at reaches farther. Those tickets may have no due time of their own (a party that cannot fill
   * teams), so `u` keeps this one. `blocked` gets, for each ticket it turned away that `u`
   * accepts, the tickets it had taken (not `u`) that do not accept it, and where it stopped on a
   * side within `u`'s window, those whose windows stop short.
   */
  private walk(u: Entry, now: number, skip: readonly Entry[]): SearchResult {
    const blocked: Blocked[] = []
    this.blocked = blocked
    const n = this.players
    const teamSize = this.rules.teamSize
    const pool: Entry[] = [u]
    const counts = new Array<number>(teamSize + 1).fill(0)
    counts[u.size] = 1
    let total = u.size
    if (total >= n) {
      const bins = this.pack(pool, counts, u.size)
      if (bins !== null) return bins
    }
    const ur0 = this.reachAt(u, now)
    let lo = u.rating - ur0
    let hi = u.rating + ur0
    let scanned = 0
    const walk = new Outward(this.all, u)
    while (walk.next()) {
      const c = walk.entry!
      if (c.rating > hi || c.rating < lo) {
        walk.close(walk.isUp)
        // Tickets past this one on this side, there now, need every window taken so far to
        // cover at least this far (`u` alone: its due time covers them).
        if (pool.length > 1) {
          let t = -Infinity
          for (const m of pool) t = Math.max(t, this.reach(m, Math.abs(m.rating - c.rating)))
          this.revisit = Math.min(this.revisit, t > now ? t : now + 1)
          // Past c may lie tickets u accepts: the windows taken that stop short of c shut them out.
          if (Math.abs(c.rating - u.rating) <= ur0) this.noteBlocked(blocked, pool, c, now, true)
        }
        continue
      }
      if (skip.length > 0 && skip.includes(c)) continue
      // More tickets of a size than could ever fit add nothing a nearer one does not. Passing one
      // is a lookup, not a check against every ticket taken, so it draws on an allowance of its
      // own: a crowd of one party size (new players, all at the default rating) must not use up
      // the search before the tickets that would complete a match behind it.
      if (counts[c.size]! >= this.sizeCaps[c.size]!) {
        if (--this.passesLeft < 0) return 'inconclusive'
        continue
      }
      if (++scanned > this.maxScan) return 'inconclusive'
      let t = -Infinity
      for (const m of pool) t = Math.max(t, this.acceptTime(m, c))
      if (t > now) {
        if (t < this.revisit) this.revisit = t
        if (this.acceptTime(u, c) <= now) this.noteBlocked(blocked, pool, c, now, false)
        continue
      }
      pool.push(c)
      counts[c.size]!++
      total += c.size
      const ur = this.reachAt(c, now)
      if (c.rating - ur > lo) lo = c.rating - ur
      if (c.rating + ur < hi) hi = c.rating + ur
      if (total >= n) {
        const found = this.pack(pool, counts, u.size)
        if (found !== null) return found
      }
    }
    return 'none'
  }

  /**
   * The party sizes of `u` and the tickets it accepts now, each counted up to its cap (more change
   * nothing), or null when more than `maxScan` tickets had to be looked at (not known). Asked of
   * each size's own list, which stops at the cap: a crowd of one size costs its first few. If they
   * cannot make the teams, no walk from `u` can find a match, whatever it leaves out.
   */
  private windowSizes(u: Entry, now: number): number[] | null {
    const counts = new Array<number>(this.rules.teamSize + 1).fill(0)
    counts[u.size] = 1
    const g = this.reachAt(u, now)
    const c = new Cursor()
    const key = { rating: u.rating - g, enqueuedAt: -Infinity, seq: -Infinity }
    let scanned = 0
    for (let size = 1; size < this.bySize.length; size++) {
      const list = this.bySize[size]!
      const cap = this.sizeCaps[size]!
      for (let ok = list.seek(key, c); ok && counts[size]! < cap; ok = list.advance(c)) {
        const v = list.at(c)
        if (v.rating > u.rating + g) break
        if (++scanned > this.maxScan) return null
        if (v !== u && this.acceptTime(u, v) <= now) counts[size]!++
      }
    }
    return counts
  }

  /**
   * Whether a window's sizes hold one at its cap: a crowd of that size, whose acceptances among
   * themselves would otherwise bring the short ticket due again and again. A window short only of
   * tickets (a lone 1v1 player) is left to the due times every failed search keeps: setting it
   * aside would cost each of them a second due time (`shortOf`) and save nothing.
   */
  private crowded(counts: number[]): boolean {
    for (let size = 1; size < counts.length; size++) {
      if (counts[size]! >= this.sizeCaps[size]!) return true
    }
    return false
  }

  /** Whether party sizes `counts` (capped) certainly cannot make the teams with one of `anchorSize`. */
  private cannotPack(counts: number[], anchorSize: number): boolean {
    const { teams, teamSize } = this.rules
    return packSizes(counts, anchorSize, teams, teamSize, this.partitions) === 'impossible'
  }

  /**
   * Whether a newcomer of party size `size`, accepted by clean ticket `w`, leaves `w`'s window
   * short of the sizes to make teams (then `w` keeps its answer and counts the newcomer).
   */
  private staysShort(w: Entry, size: number): boolean {
    const sizes = w.shortSizes!
    if (sizes[size]! < this.sizeCaps[size]!) {
      const more = sizes.slice()
      more[size]!++
      if (!this.cannotPack(more, w.size)) return false
      if (more[size]! >= this.sizeCaps[size]!) this.shortOf[size]!.remove(w)
      w.shortSizes = more
    }
    return true
  }

  /**
   * Notes the tickets taken (`pool` but its first, `u`) that do not accept `c` or, with `window`,
   * whose windows do not reach its rating; each set once.
   */
  private noteBlocked(
    blocked: Blocked[],
    pool: Entry[],
    c: Entry,
    now: number,
    window: boolean,
  ): void {
    let by: Entry[] | undefined
    for (let k = 1; k < pool.length; k++) {
      const m = pool[k]!
      const shut = window
        ? Math.abs(m.rating - c.rating) > this.reachAt(m, now)
        : this.acceptTime(m, c) > now
      if (shut) (by ??= []).push(m)
    }
    if (by === undefined) return
    // Sets come in pool order: equal ones are equal arrays.
    for (const b of blocked) {
      if (b.by.length === by.length && b.by.every((e, k) => e === by[k])) return
    }
    blocked.push({ by, oldest: oldest(by) })
  }

  /** Chooses which pool tickets form the match and how they split into teams, or null. */
  private pack(
    pool: Entry[],
    counts: number[],
    anchorSize: number,
  ): { members: Entry[]; bins: Entry[][] } | null {
    const { teams, teamSize } = this.rules
    const sizeBins = packSizes(counts, anchorSize, teams, teamSize, this.partitions)
    if (typeof sizeBins === 'string') return null
    // Nearer tickets first within each size; the anchor is the first of its size.
    const bySize = new Map<number, Entry[]>()
    for (const e of pool) {
      const list = bySize.get(e.size)
      if (list === undefined) bySize.set(e.size, [e])
      else list.push(e)
    }
    const taken = new Map<number, number>()
    const bins: Entry[][] = sizeBins.map((sizes) =>
      sizes.map((s) => {
        const k = taken.get(s) ?? 0
        taken.set(s, k + 1)
        return bySize.get(s)![k]!
      }),
    )
    const members = pool.filter((e) => {
      const k = taken.get(e.size) ?? 0
      return bySize.get(e.size)!.indexOf(e) < k
    })
    return { members, bins: balance(bins, teams, teamSize) }
  }

  private buildMatch(members: Entry[], bins: Entry[][]): Match {
    return {
      tickets: members.map((m) => m.ticket),
      teams: bins.map((bin) => {
        const playerIds: string[] = []
        let totalRating = 0
        for (const e of bin) {
          for (const p of e.ticket.players) {
            playerIds.push(p.playerId)
            totalRating += p.rating
          }
        }
        return { playerIds, ticketIds: bin.map((e) => e.id), totalRating }
      }),
    }
  }
}

/** Partitions of `n` into parts (largest part first), in descending lexicographic order. */
function partitionsOf(n: number): number[][] {
  const out: number[][] = []
  const parts: number[] = []
  const go = (left: number, maxPart: number): void => {
    if (left === 0) {
      out.push(parts.slice())
      return
    }
    for (let p = Math.min(left, maxPart); p >= 1; p--) {
      parts.push(p)
      go(left - p, p)
      parts.pop()
    }
  }
  go(n, n)
  return out
}

const PACK_BUDGET = 20_000

/**
 * Splits party sizes into `teams` bins of exactly `teamSize`, using at most `counts[s]` parties of
 * size s and at least one of `anchorSize`. Bins are interchangeable, so each bin's partition is at
 * or after the previous bin's in the list; the search is bounded by a node budget. `impossible`
 * when no split exists, `gave-up` when the budget ran out first.
 */
function packSizes(
  counts: number[],
  anchorSize: number,
  teams: number,
  teamSize: number,
  partitions: number[][],
): number[][] | 'impossible' | 'gave-up' {
  let solo = true
  let total = 0
  for (let s = 1; s < counts.length; s++) {
    total += s * counts[s]!
    if (s > 1 && counts[s]! > 0) solo = false
  }
  if (total < teams * teamSize || !(counts[anchorSize]! > 0)) return 'impossible'
  if (solo) return Array.from({ length: teams }, () => new Array<number>(teamSize).fill(1))

  const left = counts.slice()
  const chosen: number[][] = []
  let budget = PACK_BUDGET
  const fits = (parts: number[]): boolean => {
    for (let i = 0; i < parts.length;) {
      const s = parts[i]!
      let k = 0
      while (i < parts.length && parts[i] === s) {
        k++
        i++
      }
      if (left[s]! < k) return false
    }
    return true
  }
  // Only the team shapes these sizes can make at all; each level of the search checks them again
  // against what the teams before it took.
  const shapes = partitions.filter(fits)
  if (!shapes.some((parts) => parts.includes(anchorSize))) return 'impossible'
  const go = (bin: number, from: number): boolean => {
    if (bin === teams) return left[anchorSize]! < counts[anchorSize]!
    for (let p = from; p < shapes.length && budget >= 0; p++) {
      if (--budget < 0) return false
      const parts = shapes[p]!
      if (!fits(parts)) continue
      for (const s of parts) left[s]!--
      chosen.push(parts)
      if (go(bin + 1, p)) return true
      chosen.pop()
      for (const s of parts) left[s]!++
    }
    return false
  }
  if (go(0, 0)) return chosen.map((parts) => parts.slice())
  return budget < 0 ? 'gave-up' : 'impossible'
}

const BALANCE_BUDGET = 4_000

/**
 * Rearranges whole tickets among teams (keeping every team at exactly `teamSize`) to make the
 * team rating totals as even as possible: a budgeted exact search (largest tickets first, into
 * the weakest team first, so its first answer is the classic greedy one). When it finishes (up to
 * about 15 tickets), pairwise swaps of equal-size tickets then lower the sum of squared deviations
 * without widening its spread. When its budget runs out first, `exchange` searches on from its
 * answer and from the split it was given.
 */
function balance(bins: Entry[][], teams: number, teamSize: number): Entry[][] {
  // One ticket per team: swapping whole teams changes nothing.
  if (teams === 1 || bins.every((bin) => bin.length === 1)) return bins
  const items = bins.flat()
  // The bound in cannotBeat needs totals that only grow: ratings are shifted to be non-negative.
  // Every team holds teamSize players, so each total moves by the same amount and the spreads
  // compared are unchanged.
  const shift = Math.max(0, ...items.map((e) => -e.weight / e.size))
  const weights = items.map((e) => e.weight + shift * e.size)
  const order = items
    .map((_, i) => i)
    .sort((a, b) => items[b]!.size - items[a]!.size || weights[b]! - weights[a]!)
  const given = bins.map((bin) => bin.map((e) => items.indexOf(e)))
  let best = given
  let bestSpread = spreadOf(best, weights)

  const totals = new Array<number>(teams).fill(0)
  const room = new Array<number>(teams).fill(teamSize)
  const assign: number[][] = Array.from({ length: teams }, () => [])
  // The weight still to place after the first k tickets of `order`.
  const rest = new Array<number>(order.length + 1).fill(0)
  for (let k = order.length - 1; k >= 0; k--) rest[k] = rest[k + 1]! + weights[order[k]!]!
  let budget = BALANCE_BUDGET
  const go = (k: number): void => {
    if (budget-- < 0 || bestSpread <= 1e-9) return
    if (k < order.length && cannotBeat(k)) return
    if (k === order.length) {
      let hi = -Infinity
      let lo = Infinity
      for (const t of totals) {
        if (t > hi) hi = t
        if (t < lo) lo = t
      }
      if (hi - lo < bestSpread - 1e-9) {
        bestSpread = hi - lo
        best = assign.map((a) => a.slice())
      }
      return
    }
    const i = order[k]!
    const size = items[i]!.size
    const teamOrder = totals.map((_, t) => t).sort((a, b) => totals[a]! - totals[b]! || a - b)
    let emptyTried = false
    for (const t of teamOrder) {
      if (room[t]! < size) continue
      if (room[t] === teamSize) {
        // Empty teams are interchangeable.
        if (emptyTried) continue
        emptyTried = true
      }
      room[t]! -= size
      totals[t]! += weights[i]!
      assign[t]!.push(i)
      go(k + 1)
      assign[t]!.pop()
      totals[t]! -= weights[i]!
      room[t]! += size
    }
  }
  /**
   * Whether no completion of the first k placements can beat the best spread (branch and bound;
   * ratings are positive, so totals only grow): the final highest total is at least today's
   * highest and at least the final mean, and the final lowest at most a full team's total and at
   * most the mean. Without it the budget ran out on searches of 3 teams and more.
   */
  function cannotBeat(k: number): boolean {
    let hi = -Infinity
    let lowestFull = Infinity
    let sum = 0
    for (let t = 0; t < teams; t++) {
      const total = totals[t]!
      sum += total
      if (total > hi) hi = total
      if (room[t] === 0 && total < lowestFull) lowestFull = total
    }
    const mean = (sum + rest[k]!) / teams
    return Math.max(hi, mean) - Math.min(lowestFull, mean) >= bestSpread - 1e-9
  }
  go(0)
  if (budget < 0 && bestSpread > 1e-9) {
    // Cut short (16 tickets in 4 teams are enough), the exact search can be far from the best
    // split, and swaps of equal-size tickets cannot trade a trio for a duo and a solo.
    const sizes = items.map((e) => e.size)
    return exchange([best, given], weights, sizes).map((a) => a.map((i) => items[i]!))
  }

  // The search finished: `best` has the least spread. Equal swaps that keep it lower the sum of
  // squares (the middle teams come closer).
  const team = best.map((a) => a.slice())
  const sums = team.map((a) => a.reduce((s, i) => s + weights[i]!, 0))
  for (let pass = 0; pass < 32; pass++) {
    let improved = false
    for (let a = 0; a < teams; a++) {
      for (let b = a + 1; b < teams; b++) {
        for (let x = 0; x < team[a]!.length; x++) {
          for (let y = 0; y < team[b]!.length; y++) {
            const i = team[a]![x]!
            const j = team[b]![y]!
            if (items[i]!.size !== items[j]!.size) continue
            const delta = weights[j]! - weights[i]!
            const sa = sums[a]!
            const sb = sums[b]!
            // (sa + δ)² + (sb − δ)² < sa² + sb²  ⇔  δ (δ + sa − sb) < 0
            if (delta * (delta + sa - sb) < -1e-9) {
              team[a]![x] = j
              team[b]![y] = i
              sums[a] = sa + delta
              sums[b] = sb - delta
              improved = true
            }
          }
        }
      }
    }
    if (!improved) break
  }
  // With three or more teams a smaller sum of squares can still widen the spread.
  const final = spreadOf(team, weights) <= bestSpread ? team : best
  return final.map((a) => a.map((i) => items[i]!))
}

/** Most group comparisons (binary searches) one `exchange` makes. */
const EXCHANGE_BUDGET = 20_000
/** Restarts in a row that find nothing better before `exchange` settles. */
const EXCHANGE_STALL = 8

/** Tickets of one team that may move together: 1 to 3 of them, their players and rating sum. */
interface Group {
  members: number[]
  size: number
  weight: number
}

/**
 * A team's groups of up to `most` tickets, at `size * 4 + count of tickets`, each list by rating
 * sum; `keys` gets the slots that hold any.
 */
function groupsOf(
  team: number[],
  weights: number[],
  sizes: number[],
  most: number,
  keys: number[],
): Group[][] {
  const out: Group[][] = []
  const add = (members: number[]): void => {
    let size = 0
    let weight = 0
    for (const i of members) {
      size += sizes[i]!
      weight += weights[i]!
    }
    const key = size * 4 + members.length
    const list = out[key]
    if (list === undefined) {
      out[key] = [{ members, size, weight }]
      keys.push(key)
    } else list.push({ members, size, weight })
  }
  const n = team.length
  for (let x = 0; x < n; x++) {
    add([team[x]!])
    for (let y = x + 1; y < n && most >= 2; y++) {
      add([team[x]!, team[y]!])
      for (let z = y + 1; z < n && most >= 3; z++) add([team[x]!, team[y]!, team[z]!])
    }
  }
  for (const key of keys) out[key]!.sort((p, q) => p.weight - q.weight)
  return out
}

/** Ticket counts a group of `count` tickets may trade against: 1 for up to 3, 2 for 2. */
const PARTNERS: number[][] = [[], [1, 2, 3], [1, 2], [1]]

/**
 * Local search over whole-ticket exchanges between two teams: one ticket against a group of up
 * to three tickets with as many players on the other team (a trio for a duo and a solo), or two
 * against two (groups of two at most in teams of more than 12 tickets, whose triples are many).
 * Each step makes the exchange that lowers the sum of squared team totals most, found by binary
 * search for the ideal group (half the two teams' gap above the group it replaces), pairs of
 * teams by falling gap until a gap cannot beat the best found. The sum of squares, not the
 * spread, is what it descends: an exchange changes two totals and lowers it exactly when they end
 * closer, so any exchange that lowers the spread lowers it too, while the spread does not move
 * when two middle teams come closer (with 3 teams and more a descent on the spread stops at such
 * plateaus). It descends from each of `starts` (the first is the best of them) in turn; then,
 * where no exchange helps, it starts again from the best arrangement so far after three random
 * exchanges of the highest or lowest team (iterated local search; the random sequence is fixed,
 * so the same tickets always make the same teams), until `EXCHANGE_STALL` restarts in a row find
 * nothing better, the spread cannot get lower, or `EXCHANGE_BUDGET` comparisons are spent (a few
 * milliseconds at most). Returns the arrangement with the least spread seen, the first start
 * included. On 300 random 8 teams of 8 (parties of 1 to 4, ratings 1000 to 2500) the median
 * spread went from 297 (equal swaps) to 44, against 39 for the best of 40 random restarts of a
 * plain descent, for about 1.5 ms more per match.
 */
function exchange(starts: number[][][], weights: number[], sizes: number[]): number[][] {
  const start = starts[0]!
  const teams = start.length
  const team: number[][] = []
  const sums: number[] = []
  const groups: Group[][][] = []
  const keys: number[][] = []
  let best = start
  let bestSpread = spreadOf(start, weights)
  // Integer totals that do not divide evenly cannot come closer than 1: no use searching on.
  let total = 0
  for (const w of weights) total += w
  const floor = weights.every(Number.isInteger) && total % teams !== 0 ? 1 : 0
  let budget = EXCHANGE_BUDGET
  const regroup = (t: number): void => {
    const k: number[] = []
    const most = team[t]!.length > 12 ? 2 : 3
    const g = groupsOf(team[t]!, weights, sizes, most, k)
    groups[t] = g
    keys[t] = k
    for (const key of k) budget -= g[key]!.length
  }
  // Teams that differ from `best`.
  const changed = new Array<boolean>(teams).fill(true)
  /** Back to `best`: only the teams that changed since are regrouped. */
  const reset = (): void => {
    for (let t = 0; t < teams; t++) {
      if (!changed[t]) continue
      team[t] = best[t]!.slice()
      sums[t] = team[t]!.reduce((s, i) => s + weights[i]!, 0)
      regroup(t)
      changed[t] = false
    }
  }
  reset()
  let seed = 0x2545f491
  const random = (n: number): number => {
    // mulberry32
    seed = (seed + 0x6d2b79f5) | 0
    let t = Math.imul(seed ^ (seed >>> 15), seed | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n)
  }
  let improved = false
  /** Keeps the arrangement as `best` when its spread is lower; whether it did. */
  const keepIfBest = (): boolean => {
    const spread = Math.max(...sums) - Math.min(...sums)
    if (!(spread < bestSpread - 1e-9)) return false
    bestSpread = spread
    best = team.map((a) => a.slice())
    changed.fill(false)
    return true
  }
  const apply = (lo: number, hi: number, give: Group, take: Group): void => {
    team[lo] = team[lo]!.filter((i) => !give.members.includes(i)).concat(take.members)
    team[hi] = team[hi]!.filter((i) => !take.members.includes(i)).concat(give.members)
    const delta = take.weight - give.weight
    sums[lo] = sums[lo]! + delta
    sums[hi] = sums[hi]! - delta
    regroup(lo)
    regroup(hi)
    changed[lo] = true
    changed[hi] = true
    if (keepIfBest()) improved = true
  }
  const pairs: number[] = []
  for (let a = 0; a < teams; a++) for (let b = a + 1; b < teams; b++) pairs.push(a * teams + b)
  const gapOf = (p: number): number => Math.abs(sums[(p / teams) | 0]! - sums[p % teams]!)
  const descend = (): void => {
    while (budget > 0) {
      pairs.sort((p, q) => gapOf(q) - gapOf(p))
      // The best exchange: `give` leaves team `lo` (the lower total) for `take` from team `hi`.
      let gain = 1e-9
      let lo = -1
      let hi = -1
      let give: Group | undefined
      let take: Group | undefined
      for (const p of pairs) {
        let a = (p / teams) | 0
        let b = p % teams
        if (sums[a]! > sums[b]!) [a, b] = [b, a]
        const gap = sums[b]! - sums[a]!
        // Moving δ into a changes the sum of squares by −2δ(gap − δ): δ(gap − δ) ≤ gap² / 4.
        if ((gap * gap) / 4 <= gain || budget <= 0) break
        const mine = groups[a]!
        const other = groups[b]!
        for (const key of keys[a]!) {
          for (const count of PARTNERS[key & 3]!) {
            const theirs = other[(key & ~3) + count]
            if (theirs === undefined) continue
            for (const g of mine[key]!) {
              budget--
              // The nearest to δ = gap / 2 on either side is the best of this list.
              const target = g.weight + gap / 2
              let l = 0
              let r = theirs.length
              while (l < r) {
                const m = (l + r) >>> 1
                if (theirs[m]!.weight < target) l = m + 1
                else r = m
              }
              for (let k = Math.max(0, l - 1); k <= l && k < theirs.length; k++) {
                const delta = theirs[k]!.weight - g.weight
                const got = delta * (gap - delta)
                if (got > gain) {
                  gain = got
                  lo = a
                  hi = b
                  give = g
                  take = theirs[k]
                }
              }
            }
          }
        }
      }
      if (give === undefined || take === undefined) return
      apply(lo, hi, give, take)
    }
  }
  /** Exchanges a random group of the highest or lowest team with one of another team. */
  const kick = (): void => {
    let hi = 0
    let lo = 0
    for (let t = 1; t < teams; t++) {
      if (sums[t]! > sums[hi]!) hi = t
      if (sums[t]! < sums[lo]!) lo = t
    }
    for (let tries = 0; tries < 8; tries++) {
      budget--
      const a = random(2) === 0 ? hi : lo
      const b = (a + 1 + random(teams - 1)) % teams
      const key = keys[a]![random(keys[a]!.length)]!
      const list = groups[a]![key]!
      const g = list[random(list.length)]!
      const counts = PARTNERS[key & 3]!
      const theirs = groups[b]![(key & ~3) + counts[random(counts.length)]!]
      if (theirs === undefined) continue
      apply(a, b, g, theirs[random(theirs.length)]!)
      return
    }
  }
  descend()
  for (const from of starts.slice(1)) {
    for (let t = 0; t < teams; t++) {
      team[t] = from[t]!.slice()
      sums[t] = team[t]!.reduce((s, i) => s + weights[i]!, 0)
      regroup(t)
      changed[t] = true
    }
    keepIfBest()
    descend()
  }
  for (let stall = 0; stall < EXCHANGE_STALL && budget > 0 && bestSpread > floor + 1e-9; stall++) {
    // Stuck: start again from the best so far, shaken.
    reset()
    for (let k = 0; k < 3; k++) kick()
    improved = false
    descend()
    if (improved) stall = -1
  }
  return best
}

function spreadOf(teams: number[][], weights: number[]): number {
  let hi = -Infinity
  let lo = Infinity
  for (const team of teams) {
    let s = 0
    for (const i of team) s += weights[i]!
    if (s > hi) hi = s
    if (s < lo) lo = s
  }
  return hi - lo
}

/**
 * The operator dashboard in a real browser: Debian's Chromium, headless, driven by
 * playwright-core, against the local stack with real boards, queues and sessions behind it.
 * Screenshots go to test-artifacts/dashboard/.
 */
import { mkdirSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium, type BrowserContext, type Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { MatchTicket, NexusClient } from '../../client/src/index.ts'
import { admin, eventually, guestClient, stack, uid, within } from './helpers.ts'

const ARTIFACTS = 'test-artifacts/dashboard'
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'

let context: BrowserContext
let profile: string
let page: Page
const problems: string[] = []

const board = uid('season')
const weeklyBerlin = uid('weekly-berlin')
const queue = uid('arena')
const players: { nexus: NexusClient; name: string; score: number }[] = []
let waiting: MatchTicket
let sessionId: string

beforeAll(async () => {
  mkdirSync(ARTIFACTS, { recursive: true })
  // Real data first, through the public API, as a game and an operator would make it.
  await admin('PUT', `/v1/admin/leaderboards/${board}`, {
    name: 'Season 1',
    cycle: { every: '7d' },
    rewards: [{ fromRank: 1, toRank: 3, reward: { coins: 500 } }],
    submitsPerMinute: 600,
  })
  await admin('PUT', `/v1/admin/leaderboards/${weeklyBerlin}`, {
    cycle: { cron: '0 0 * * mon', timeZone: 'europe/berlin' },
  })
  for (let i = 0; i < 12; i++) {
    const nexus = await guestClient()
    const name = `Player ${String.fromCharCode(65 + i)}`
    await admin('PUT', `/v1/admin/players/${nexus.auth.playerId}`, { name })
    players.push({ nexus, name, score: 1000 + ((i * 7919) % 5000) })
  }
  // Cycle 1: four players, then closed, archived and rewarded.
  for (const p of players.slice(0, 4)) await p.nexus.leaderboards.submit(board, { score: p.score })
  const { cycle } = await players[0]!.nexus.leaderboards.info(board, { fresh: true })
  await admin('POST', `/v1/admin/leaderboards/${board}/close`, { cycle: cycle.cycle })
  await eventually('the archive', async () => {
    const s = (await admin('GET', `/v1/admin/leaderboards/${board}/cycles/${cycle.cycle}`)) as {
      state: string
    }
    return s.state === 'done'
  })
  // Cycle 2, live: everyone.
  for (const p of players) await p.nexus.leaderboards.submit(board, { score: p.score })

  await admin('PUT', `/v1/admin/queues/${queue}`, {
    teams: 2,
    teamSize: 2,
    rules: 'relay',
    maxRatingGap: 50,
    widenPerSecond: 1,
    regions: ['eu', 'us'],
  })
  waiting = players[0]!.nexus.matchmaking.join(queue, { region: 'eu' })
  await within(waiting.once('queued'), 'queued')
  const created = (await admin('POST', '/v1/admin/sessions', {
    rules: 'dice-race',
    roster: [
      { playerId: players[1]!.nexus.auth.playerId },
      { playerId: players[2]!.nexus.auth.playerId },
    ],
  })) as { sessionId: string }
  sessionId = created.sessionId

  profile = await mkdtemp(join(tmpdir(), 'nexus-chromium-'))
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  })
  page = context.pages()[0] ?? (await context.newPage())
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console: ${m.text()}`)
  })
  page.on('pageerror', (e) => problems.push(`page: ${e.message}`))
  // The page may only talk to its own origin.
  page.on('request', (r) => {
    if (!r.url().startsWith(stack().url)) problems.push(`external request: ${r.url()}`)
  })
}, 120_000)

afterAll(async () => {
  await waiting?.cancel().catch(() => {})
  await context?.close()
  if (profile) await rm(profile, { recursive: true, force: true })
})

/** A script that makes the page report itself hidden (or shown), as a background tab does. */
function setHidden(hidden: boolean): string {
  return `Object.defineProperty(document, 'hidden', { configurable: true, get: () => ${hidden} });
    document.dispatchEvent(new Event('visibilitychange'))`
}

describe('dashboard in Chromium', () => {
  it('asks for the admin key and refuses a wrong one', async () => {
    await page.goto(`${stack().url}/dashboard?interval=1000`)
    await page.locator('#admin-key').waitFor()
    expect(await page.locator('#app').isHidden()).toBe(true)
    await page.fill('#admin-key', 'wrong-key')
    await page.click('#login-form button')
    await expect.poll(() => page.textContent('#login-error')).toContain('refused')
    expect(await page.evaluate(() => sessionStorage.length)).toBe(0)
    // The browser logs the refused check itself; that one is expected, nothing else is.
    expect(problems.map((p) => p.replace(/\(.*\)/, ''))).toEqual([
      'console: Failed to load resource: the server responded with a status of 401 ',
    ])
    problems.length = 0
    await page.screenshot({ path: `${ARTIFACTS}/01-login.png` })
  })

  it('shows boards with their cycle, the live top 10, archives and rewards paid', async () => {
    await page.fill('#admin-key', stack().adminKey)
    await page.click('#login-form button')
    const row = page.locator(`#boards tbody tr[data-board="${board}"]`)
    await row.waitFor()
    const cells = await row.locator('td').allTextContents()
    expect(cells[0]).toBe(`Season 1 (${board})`)
    expect(cells[1]).toBe('every 7d')
    expect(cells[2]).toBe('2')
    expect(cells[3]).toBe('12')
    expect(cells[5]).toBe('3')
    const zoned = page.locator(`#boards tbody tr[data-board="${weeklyBerlin}"] td`)
    expect(await zoned.nth(1).textContent()).toBe('cron 0 0 * * mon (Europe/Berlin)')
    await row.click()
    // A board's detail is two object calls and two Neon queries behind the dev proxy.
    await expect
      .poll(() => page.getAttribute('#top10', 'data-entries'), { timeout: 10_000 })
      .toBe('10')
    const expected = [...players].sort((a, b) => b.score - a.score).slice(0, 10)
    const labels = await page.locator('#top10 svg text').allTextContents()
    for (const [i, p] of expected.entries()) expect(labels).toContain(`#${i + 1} ${p.name}`)
    const bars = await page
      .locator('#top10 svg rect')
      .evaluateAll((rs) => rs.map((r) => Number(r.getAttribute('data-value'))))
    expect(bars).toEqual(expected.map((p) => p.score))
    const cycle1 = await page.locator('#cycles tbody tr').first().locator('td').allTextContents()
    expect(cycle1[0]).toBe('1')
    expect(cycle1[2]).toBe('4')
    expect(cycle1[4]).toBe('archived')
    const rewards = await page.locator('#rewards tbody tr').first().locator('td').allTextContents()
    expect(rewards).toEqual(['1', '3', '#1–#3'])
  })

  it('shows queues with waiting players and live sessions', async () => {
    const q = page.locator(`#queues tbody tr[data-queue="${queue}"]`)
    await q.waitFor()
    const cells = await q.locator('td').allTextContents()
    expect(cells.slice(0, 5)).toEqual([queue, 'relay', '2×2', 'eu: 1, us: 0', '1'])
    await page.locator(`#sessions tbody tr[data-session="${sessionId}"]`).waitFor()
    const live = Number(await page.textContent('#live-count'))
    expect(live).toBeGreaterThanOrEqual(1)
  })

  it('charts request rates from /metrics as traffic arrives', async () => {
    // Traffic between two refreshes shows up as a rate and a line.
    const first = Number(await page.getAttribute('body', 'data-refreshed'))
    for (let i = 0; i < 20; i++) await fetch(`${stack().url}/v1/leaderboards/${board}/top`)
    await expect
      .poll(async () => Number(await page.getAttribute('body', 'data-refreshed')), {
        timeout: 10_000,
      })
      .toBeGreaterThan(first)
    await page.locator('#chart-rate svg path').waitFor()
    // The line rises off zero: some point sits above the baseline (y = 128 in the 150-high chart).
    const d = (await page.getAttribute('#chart-rate svg path', 'd')) ?? ''
    const ys = [...d.matchAll(/[ML][\d.]+,([\d.]+)/g)].map((m) => Number(m[1]))
    expect(ys.length).toBeGreaterThanOrEqual(2)
    expect(Math.min(...ys)).toBeLessThan(128)
    const route = page.locator('#routes tbody tr', { hasText: 'GET /v1/leaderboards/:id/top' })
    const requests = Number((await route.locator('td').nth(1).textContent())!.replace(/,/g, ''))
    expect(requests).toBeGreaterThanOrEqual(20)
    await page.screenshot({ path: `${ARTIFACTS}/02-dashboard.png`, fullPage: true })
  })

  it('takes a deleted board out of the detail rather than showing its standings as live', async () => {
    const gone = uid('gone')
    await admin('PUT', `/v1/admin/leaderboards/${gone}`, { name: 'Gone soon' })
    const row = page.locator(`#boards tbody tr[data-board="${gone}"]`)
    await row.waitFor()
    await row.click()
    await expect
      .poll(() => page.textContent('#board-title'), { timeout: 10_000 })
      .toContain('Gone soon')
    // Every status the page shows from here: the next refresh replaces the one about the board.
    await page.evaluate(`window.statuses = []
      new MutationObserver(() => window.statuses.push(document.getElementById('status').textContent))
        .observe(document.getElementById('status'), { childList: true, characterData: true, subtree: true })`)
    await admin('DELETE', `/v1/admin/leaderboards/${gone}`)
    // The next detail request goes out within a refresh (1 s, longer while one is slow), then
    // takes its own time.
    await expect
      .poll(() => page.locator('#board-detail').isHidden(), { timeout: 10_000 })
      .toBe(true)
    await expect
      .poll(() => page.evaluate('window.statuses') as Promise<string[]>, { timeout: 10_000 })
      .toContainEqual(expect.stringContaining(`board ${gone}`))
    // The browser logs the detail's 404 itself; nothing else is expected.
    expect(problems.filter((p) => !p.includes('status of 404'))).toEqual([])
    problems.length = 0
  })

  it("draws a board's live top 10 with every score visible: negative ones on an ascending board, and close ones told apart", async () => {
    const golf = uid('golf')
    await admin('PUT', `/v1/admin/leaderboards/${golf}`, { name: 'Golf', sortOrder: 'asc' })
    const scores = [-3, -8, -5, 52.318, 52.317]
    for (const [i, score] of scores.entries()) {
      await players[i]!.nexus.leaderboards.submit(golf, { score })
    }
    const row = page.locator(`#boards tbody tr[data-board="${golf}"]`)
    await row.waitFor({ timeout: 10_000 })
    await row.click()
    await expect
      .poll(() => page.getAttribute('#top10', 'data-entries'), { timeout: 10_000 })
      .toBe(String(scores.length))
    // The value beside each bar (the names are the texts that start with the rank).
    const values = await page
      .locator('#top10 svg text')
      .evaluateAll((ts) =>
        ts
          .filter((t) => !(t.textContent ?? '').startsWith('#'))
          .map((t) => ({ text: t.textContent, x: Number(t.getAttribute('x')) })),
      )
    expect(values.map((v) => v.text)).toEqual(['-8', '-5', '-3', '52.317', '52.318'])
    // Right of the names' column (which ends at 124 in the 520-wide chart), inside the chart.
    for (const v of values) {
      expect(v.x).toBeGreaterThan(124)
      expect(v.x).toBeLessThan(520)
    }
    const widths = await page
      .locator('#top10 svg rect')
      .evaluateAll((rs) => rs.map((r) => Number(r.getAttribute('width'))))
    // Each bar as long as its score's size: -8 longer than -3.
    expect(widths[0]).toBeGreaterThan(widths[2]! * 2)
  })

  it('asks for nothing while the tab is hidden, and refreshes when it is shown', async () => {
    const overviews: string[] = []
    const count = (r: { url(): string }) => {
      if (r.url().includes('/dashboard/api/overview')) overviews.push(r.url())
    }
    page.on('request', count)
    try {
      await page.evaluate(setHidden(true))
      // Let a refresh that had started finish, then three intervals (1 s each) pass.
      await page.waitForTimeout(500)
      overviews.length = 0
      await page.waitForTimeout(3_000)
      expect(overviews).toEqual([])
      await page.evaluate(setHidden(false))
      await expect.poll(() => overviews.length).toBeGreaterThan(0)
    } finally {
      page.off('request', count)
    }
  })

  it('keeps one board detail request open at a time, however slowly the board answers', async () => {
    const details: string[] = []
    const overviews: string[] = []
    const count = (r: { url(): string }) => {
      if (r.url().includes('/dashboard/api/overview')) overviews.push(r.url())
    }
    page.on('request', count)
    // The board's detail never answers. Counted here, not as requests go out: one sent before
    // the route is in place is answered, and is not one held open.
    await page.route('**/dashboard/api/boards/**', (route) => {
      details.push(route.request().url())
    })
    const other = uid('other')
    await admin('PUT', `/v1/admin/leaderboards/${other}`, { name: 'Another' })
    try {
      await expect.poll(() => overviews.length, { timeout: 15_000 }).toBeGreaterThanOrEqual(4)
      expect(details).toHaveLength(1)
      // Another board chosen meanwhile is asked for at once, in place of the one that hangs.
      const row = page.locator(`#boards tbody tr[data-board="${other}"]`)
      await row.waitFor()
      await row.click()
      await expect.poll(() => details.length, { timeout: 5_000 }).toBe(2)
      expect(details[1]).toContain(`/dashboard/api/boards/${other}`)
    } finally {
      page.off('request', count)
      await page.unrouteAll({ behavior: 'ignoreErrors' })
    }
  })

  it('gives up an overview that never answers (a dead connection) after 25 s, says so, and refreshes again', async () => {
    const overviews: string[] = []
    let hang = true
    await page.route('**/dashboard/api/overview', (route) => {
      overviews.push(route.request().url())
      if (hang) return // never answered
      return route.continue()
    })
    try {
      await expect
        .poll(() => page.textContent('#status'), { timeout: 40_000 })
        .toContain('refresh failed: no answer in 25 s')
      expect(overviews).toHaveLength(1)
      hang = false
      await expect.poll(() => overviews.length, { timeout: 15_000 }).toBeGreaterThan(1)
      await expect.poll(() => page.textContent('#status'), { timeout: 15_000 }).toContain('updated')
    } finally {
      await page.unrouteAll({ behavior: 'ignoreErrors' })
    }
  })

  it('takes request rates over 30 s (isolates report every 10 s), and says when the traffic is one isolate only', async () => {
    // Overviews as the hub gives them: a steady 200 requests a second, counted in steps of
    // 2,000 every 10 s, read every 2 s (the stub's clock). Two readings apart saw 0 or 1,000.
    const real = (await admin('GET', '/dashboard/api/overview')) as {
      now: number
      metricsScope: string
      metrics: { requests: number }
    }
    let k = 0
    let scope = 'cluster'
    let isolates = false
    await page.route('**/dashboard/api/overview', (route) => {
      k++
      const steps = Math.floor(k / 5)
      // Each overview answered by one of two isolates, one counting far more than the other.
      const isolate = isolates ? (k % 2 === 0 ? 'a' : 'b') : null
      const requests = isolates
        ? k % 2 === 0
          ? 40_000
          : 900
        : real.metrics.requests + steps * 2_000
      return route.fulfill({
        json: {
          ...real,
          now: real.now + k * 2_000,
          metricsScope: scope,
          metricsSource: isolate,
          metrics: { ...real.metrics, requests },
        },
      })
    })
    const stat = (label: string) =>
      page
        .locator('#headline .stat', { has: page.locator('span', { hasText: label }) })
        .locator('b')
        .textContent()
    try {
      // Past 15 readings, the rate spans 30 s.
      await expect.poll(() => k, { timeout: 30_000 }).toBeGreaterThan(20)
      const rates: number[] = []
      for (let i = 0; i < 5; i++) {
        const seen = k
        await expect.poll(() => k, { timeout: 5_000 }).toBeGreaterThan(seen)
        rates.push(Number((await stat('requests / s'))!.replace(/,/g, '')))
      }
      for (const r of rates) {
        expect(r).toBeGreaterThanOrEqual(150)
        expect(r).toBeLessThanOrEqual(250)
      }
      expect(await stat('5xx counted (all isolates)')).not.toBeNull()
      scope = 'isolate'
      await expect
        .poll(() => page.textContent('#status'), { timeout: 5_000 })
        .toContain('this isolate only')
      expect(await page.getAttribute('#status', 'class')).toBe('bad')
      expect(await stat('requests / s (this isolate only)')).not.toBeNull()
      // Readings of two isolates in turn make no rate (their totals are not one count), where
      // they swung between 0 and thousands a second.
      isolates = true
      for (let i = 0; i < 4; i++) {
        const seen = k
        await expect.poll(() => k, { timeout: 5_000 }).toBeGreaterThan(seen + 1)
        expect(await stat('requests / s (this isolate only)')).toBe('–')
      }
    } finally {
      await page.unrouteAll({ behavior: 'ignoreErrors' })
    }
  })

  it('marks a board whose archive keeps failing, with its attempts and last error, in the list and the detail', async () => {
    // The board's own record of a close Neon keeps refusing (no page of it in Neon yet), as the
    // board answers it; a real failing archive is the worker tests'.
    const real = (await admin('GET', '/dashboard/api/overview')) as {
      now: number
      boards: { id: string }[]
    }
    const detail = (await admin('GET', `/dashboard/api/boards/${board}`)) as {
      now: number
      cycle: { cycle: number }
      cycles: { cycle: number }[]
    }
    const stuck = detail.cycle.cycle
    const failing = {
      cycle: stuck,
      state: 'archiving',
      entries: 12,
      archived: 0,
      attempts: 4,
      nextAttemptAt: real.now + 90_000,
      lastError: 'Neon query timed out',
      reason: 'scheduled',
    }
    await page.route('**/dashboard/api/overview', (route) =>
      route.fulfill({
        json: {
          ...real,
          boards: real.boards.map((b) => (b.id === board ? { ...b, archiving: failing } : b)),
        },
      }),
    )
    await page.route(`**/dashboard/api/boards/${board}`, (route) =>
      route.fulfill({ json: { ...detail, unfinishedCloses: [failing] } }),
    )
    try {
      const cell = page.locator(`#boards tbody tr[data-board="${board}"] td`).last()
      await expect
        .poll(() => cell.textContent(), { timeout: 10_000 })
        .toContain('4 failed attempts')
      // Short in the list, the last error on hover.
      expect(await cell.textContent()).toContain(`cycle ${stuck}: archiving 0 of 12`)
      expect(await cell.getAttribute('title')).toBe('Neon query timed out')
      expect(await cell.getAttribute('class')).toBe('bad')
      await page.locator(`#boards tbody tr[data-board="${board}"]`).click()
      const row = page.locator(`#cycles tbody tr[data-cycle="${stuck}"] td`)
      await expect
        .poll(() => row.last().textContent(), { timeout: 10_000 })
        .toContain('next in 1 min: Neon query timed out')
      expect(await row.last().getAttribute('class')).toBe('bad')
      // Neon's closed cycles are listed below it as before.
      const listed = await page
        .locator('#cycles tbody tr')
        .evaluateAll((rs) => rs.map((r) => r.getAttribute('data-cycle')))
      expect(listed).toEqual([stuck, ...detail.cycles.map((c) => c.cycle)].map(String))
      await page.screenshot({ path: `${ARTIFACTS}/07-failing-archive.png` })
    } finally {
      await page.unrouteAll({ behavior: 'ignoreErrors' })
    }
  })

  it('keeps the key for the tab only, signs out, and loads nothing from elsewhere', async () => {
    await page.reload()
    await page.locator(`#boards tbody tr[data-board="${board}"]`).waitFor()
    await page.click('#signout')
    expect(await page.evaluate(() => sessionStorage.length)).toBe(0)
    expect(await page.locator('#login').isVisible()).toBe(true)
    expect(problems).toEqual([])
  })
})

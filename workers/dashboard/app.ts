/**
 * The dashboard's script, served as `/dashboard/app.js`: sign-in, polling `/dashboard/api/*`, and
 * charts drawn as inline SVG. Plain ES2020, no library, no template literals (it lives in one).
 */
export const DASHBOARD_JS = String.raw`
'use strict'
;(function () {
  var KEY = 'nexus.adminKey'
  var API = '/dashboard/api'
  var SVG = 'http://www.w3.org/2000/svg'
  var params = new URLSearchParams(location.search)
  // 1 s to 1 minute: past 2^31 ms a browser fires a timer at once, and the page polled back to back.
  var INTERVAL_MS = Math.min(60000, Math.max(1000, Number(params.get('interval')) || 5000))
  var HISTORY = 120
  var COLORS = ['#4cc2ff', '#5fd38d', '#ffb84c', '#ff6b6b', '#c792ea', '#7fdbca']

  // Rates span at least this much: isolates send the metrics hub their counts every 10 s, so a
  // difference of two readings 5 s apart swung between nothing and twice the rate.
  var RATE_WINDOW_MS = 30000

  // A board's detail that has not answered by then is given up (and asked for again later).
  var BOARD_TIMEOUT_MS = 20000
  // An overview not answered by then is given up (the server bounds its own parts to 15 s): one
  // held open for good by a dead connection would stop every refresh after it.
  var OVERVIEW_TIMEOUT_MS = 25000

  var state = { key: null, timer: null, samples: [], readings: [], board: null, busy: false, boardLoad: null }

  function $(id) { return document.getElementById(id) }

  /** Builds an element; text only ever goes in through textContent. */
  function el(tag, attrs, children) {
    var node = document.createElement(tag)
    if (attrs) Object.keys(attrs).forEach(function (k) {
      if (k === 'text') node.textContent = attrs[k]
      else if (k === 'class') node.className = attrs[k]
      else node.setAttribute(k, attrs[k])
    })
    ;(children || []).forEach(function (c) { node.appendChild(c) })
    return node
  }

  function svg(tag, attrs, text) {
    var node = document.createElementNS(SVG, tag)
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, String(attrs[k])) })
    if (text !== undefined) node.textContent = text
    return node
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node }

  function fmt(n, digits) {
    if (n === null || n === undefined || !isFinite(n)) return '–'
    return Number(n).toLocaleString('en-US', { maximumFractionDigits: digits === undefined ? 0 : digits })
  }

  function ago(ms) {
    var s = Math.max(0, Math.round(ms / 1000))
    if (s < 60) return s + ' s'
    if (s < 3600) return Math.floor(s / 60) + ' min'
    return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min'
  }

  function when(t, now) {
    if (t === null || t === undefined) return 'never'
    var d = t - now
    return d >= 0 ? 'in ' + ago(d) : ago(-d) + ' ago'
  }

  function setStatus(text, bad) {
    var s = $('status')
    s.textContent = text
    s.className = bad ? 'bad' : ''
  }

  function api(path, signal) {
    return fetch(API + path, { headers: { authorization: 'Bearer ' + state.key }, cache: 'no-store', signal: signal })
      .then(function (res) {
        if (res.status === 401 || res.status === 403) {
          signOut('The admin key was refused (' + res.status + ').')
          throw new Error('refused')
        }
        // An answer that is not Nexus's JSON (a proxy's error page) says only its status.
        return res.json().catch(function () { return null }).then(function (body) {
          if (res.ok && body !== null) return body
          var err = new Error((body && (body.detail || body.title)) || 'the server answered ' + res.status)
          err.status = res.status
          throw err
        })
      })
  }

  // ------------------------------------------------------------------------------------------
  // Charts: inline SVG, no library.

  /** A line chart of series [{name, color, points: [[t, v]]}] over a shared time axis. */
  function lineChart(container, series, unit) {
    var W = 520, H = 150, L = 44, R = 8, T = 10, B = 22
    var all = []
    series.forEach(function (s) { s.points.forEach(function (p) { all.push(p) }) })
    var root = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': series.map(function (s) { return s.name }).join(', ') })
    if (all.length < 2) {
      root.appendChild(svg('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle' }, 'collecting samples…'))
      clear(container).appendChild(root)
      return
    }
    var t0 = Math.min.apply(null, all.map(function (p) { return p[0] }))
    var t1 = Math.max.apply(null, all.map(function (p) { return p[0] }))
    var vmax = Math.max.apply(null, all.map(function (p) { return p[1] }))
    vmax = niceCeil(vmax)
    var x = function (t) { return L + ((t - t0) / Math.max(1, t1 - t0)) * (W - L - R) }
    var y = function (v) { return T + (1 - v / vmax) * (H - T - B) }
    for (var i = 0; i <= 4; i++) {
      var v = (vmax * i) / 4
      root.appendChild(svg('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: '#263441' }))
      root.appendChild(svg('text', { x: L - 6, y: y(v) + 3, 'text-anchor': 'end' }, fmt(v, vmax < 4 ? 2 : 0)))
    }
    root.appendChild(svg('text', { x: L, y: H - 6 }, '-' + ago(t1 - t0)))
    root.appendChild(svg('text', { x: W - R, y: H - 6, 'text-anchor': 'end' }, 'now' + (unit ? ' · ' + unit : '')))
    series.forEach(function (s, k) {
      if (s.points.length === 0) return
      var d = s.points.map(function (p, j) { return (j ? 'L' : 'M') + x(p[0]).toFixed(1) + ',' + y(p[1]).toFixed(1) }).join(' ')
      root.appendChild(svg('path', { d: d, fill: 'none', stroke: s.color || COLORS[k % COLORS.length], 'stroke-width': 2 }))
      var last = s.points[s.points.length - 1]
      root.appendChild(svg('circle', { cx: x(last[0]), cy: y(last[1]), r: 3, fill: s.color || COLORS[k % COLORS.length] }))
    })
    var lx = L + 6
    series.forEach(function (s, k) {
      var c = s.color || COLORS[k % COLORS.length]
      root.appendChild(svg('rect', { x: lx, y: T, width: 10, height: 3, fill: c }))
      root.appendChild(svg('text', { x: lx + 14, y: T + 4 }, s.name))
      lx += 24 + s.name.length * 6
    })
    clear(container).appendChild(root)
  }

  /** Horizontal bars: items [{label, value, values?: [..]}]; several values draw grouped bars. */
  function barChart(container, items, opts) {
    opts = opts || {}
    var W = 520, rowH = opts.grouped ? 26 : 18, L = 130, R = 60, T = 4
    var H = Math.max(40, T * 2 + items.length * rowH)
    var root = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': opts.label || 'bar chart' })
    if (items.length === 0) {
      root.appendChild(svg('text', { x: W / 2, y: H / 2 + 3, 'text-anchor': 'middle' }, opts.empty || 'nothing yet'))
      clear(container).appendChild(root)
      return
    }
    // Bars are as long as a value's size: an ascending board's best scores may be negative.
    var max = 0
    items.forEach(function (it) { (it.values || [it.value]).forEach(function (v) { if (Math.abs(v) > max) max = Math.abs(v) }) })
    max = max > 0 ? max : 1
    items.forEach(function (it, i) {
      var y0 = T + i * rowH
      var label = it.label.length > 20 ? it.label.slice(0, 19) + '…' : it.label
      root.appendChild(svg('text', { x: L - 6, y: y0 + rowH / 2 + 3, 'text-anchor': 'end' }, label))
      var vals = it.values || [it.value]
      var bh = (rowH - 4) / vals.length
      vals.forEach(function (v, k) {
        var w = v === null ? 0 : Math.max(1, ((W - L - R) * Math.abs(v)) / max)
        root.appendChild(svg('rect', { x: L, y: y0 + 2 + k * bh, width: w, height: bh - 1, rx: 2, fill: COLORS[k % COLORS.length], 'data-value': v }))
      })
      root.appendChild(svg('text', { x: L + ((W - L - R) * Math.max.apply(null, vals.map(function (v) { return Math.abs(v || 0) }))) / max + 4, y: y0 + rowH / 2 + 3 },
        vals.map(function (v) { return fmt(v, opts.digits || 0) }).join(' / ')))
    })
    clear(container).appendChild(root)
  }

  function niceCeil(v) {
    if (!(v > 0)) return 1
    var p = Math.pow(10, Math.floor(Math.log10(v)))
    var m = v / p
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p
  }

  // ------------------------------------------------------------------------------------------
  // Sections

  function rows(tbody, list, make, empty, cols) {
    clear(tbody)
    if (list.length === 0) {
      tbody.appendChild(el('tr', null, [el('td', { class: 'empty', colspan: String(cols), text: empty })]))
      return
    }
    list.forEach(function (item) { tbody.appendChild(make(item)) })
  }

  function td(text, cls) { return el('td', cls ? { class: cls, text: text } : { text: text }) }

  function renderHeadline(o, rate) {
    var h = clear($('headline'))
    var waiting = o.queues.reduce(function (n, q) { return n + q.waitingPlayers }, 0)
    var t = o.totals
    // Players waiting are read from each listed queue's pools: of the latest changed only.
    var waitingOf = t && t.queues > o.queues.length ? 'players waiting (latest ' + o.queues.length + ' of ' + fmt(t.queues) + ' queues)' : 'players waiting'
    var items = [
      [t ? fmt(t.boards) : '–', 'leaderboards'],
      [t ? fmt(waiting) : '–', waitingOf],
      [o.sessions.live === null ? '–' : fmt(o.sessions.live), 'live sessions'],
    ]
    // Without the metrics hub, the traffic figures are one isolate's: said where they are read.
    var scope = o.metricsScope === 'isolate' ? ' (this isolate only)' : ''
    items.push(
      [rate === null ? '–' : fmt(rate, 1), 'requests / s' + scope],
      [fmt(o.metrics.serverErrors), '5xx counted' + (scope || ' (all isolates)')]
    )
    items.forEach(function (it) { h.appendChild(el('div', { class: 'stat' }, [el('b', { text: it[0] }), el('span', { text: it[1] })])) })
  }

  function renderTraffic(o) {
    var now = o.now
    var m = o.metrics
    $('traffic-scope').textContent = o.metricsScope === 'isolate'
      ? 'from /metrics: this isolate only, the metrics hub is unreachable'
      : 'from /metrics, every isolate'
    var sample = { t: now, requests: m.requests, client: m.clientErrors, server: m.serverErrors, routes: {} }
    m.routes.forEach(function (r) { sample.routes[r.method + ' ' + r.route] = r.requests })
    // Rates are differences between two readings of the same totals: a reading of another scope
    // (the whole cluster against one isolate, when the hub comes or goes), or of another isolate
    // (each overview may be answered by any), starts over.
    sample.scope = o.metricsScope + (o.metricsSource ? ' ' + o.metricsSource : '')
    var last = state.readings[state.readings.length - 1]
    if (last && last.scope !== sample.scope) {
      state.readings = []
      state.samples = []
    }
    state.readings.push(sample)
    // The oldest reading kept is the newest one at least RATE_WINDOW_MS old (or the oldest).
    while (state.readings.length > 2 && now - state.readings[1].t >= RATE_WINDOW_MS) state.readings.shift()
    var prev = state.readings.length > 1 ? state.readings[0] : null
    var rate = null
    if (prev && now > prev.t) {
      var dt = (now - prev.t) / 1000
      rate = Math.max(0, (sample.requests - prev.requests) / dt)
      state.samples.push({ t: now, rate: rate, client: Math.max(0, (sample.client - prev.client) / dt), server: Math.max(0, (sample.server - prev.server) / dt) })
      if (state.samples.length > HISTORY) state.samples.shift()
    }
    lineChart($('chart-rate'), [{ name: 'req/s', points: state.samples.map(function (s) { return [s.t, s.rate] }) }], 'req/s')
    lineChart($('chart-errors'), [
      { name: '4xx/s', color: '#ffb84c', points: state.samples.map(function (s) { return [s.t, s.client] }) },
      { name: '5xx/s', color: '#ff6b6b', points: state.samples.map(function (s) { return [s.t, s.server] }) },
    ], 'errors/s')
    rows($('routes').tBodies[0], m.routes.slice(0, 25), function (r) {
      var key = r.method + ' ' + r.route
      var rr = prev && prev.routes[key] !== undefined && now > prev.t ? Math.max(0, (r.requests - prev.routes[key]) / ((now - prev.t) / 1000)) : null
      return el('tr', null, [
        td(key), td(fmt(r.requests), 'num'), td(rr === null ? '–' : fmt(rr, 1), 'num'),
        td(fmt(r.clientErrors), 'num'), td(fmt(r.serverErrors), 'num' + (r.serverErrors ? ' bad' : '')),
        td(fmt(r.p50 === null ? null : r.p50 * 1000, 1), 'num'), td(fmt(r.p95 === null ? null : r.p95 * 1000, 1), 'num'),
        td(fmt(r.p99 === null ? null : r.p99 * 1000, 1), 'num'),
      ])
    }, 'no requests recorded yet', 8)
    return rate
  }

  function schedule(s) {
    if (!s) return 'no cycles'
    if (s.every) return 'every ' + s.every
    return 'cron ' + s.cron + (s.timeZone ? ' (' + s.timeZone + ')' : ' (UTC)')
  }

  // An archive under way, or failing: only the board knows of one that has not yet written a page.
  // The list gives it short, with the last error on hover; the board's detail gives it whole.
  function archiveState(u, now, short) {
    var text = u.state === 'purging' ? 'archived, clearing the board' : 'archiving ' + fmt(u.archived) + ' of ' + fmt(u.entries)
    if (u.attempts > 0) {
      text += ' · ' + u.attempts + (u.attempts === 1 ? ' failed attempt' : ' failed attempts') +
        ', next ' + when(u.nextAttemptAt, now) + (u.lastError && !short ? ': ' + u.lastError : '')
    }
    return text
  }

  function archiveCell(u, now, short, prefix) {
    var cell = td((prefix || '') + archiveState(u, now, short), u.attempts > 0 ? 'bad' : '')
    if (u.lastError) cell.title = u.lastError
    return cell
  }

  function renderBoards(o) {
    rows($('boards').querySelector('tbody'), o.boards, function (b) {
      var tr = el('tr', { class: 'clickable' + (state.board === b.id ? ' selected' : ''), 'data-board': b.id }, [
        td((b.name ? b.name + ' (' + b.id + ')' : b.id) + (b.paused ? ' (paused)' : '')),
        b.error ? el('td', { text: 'unavailable', title: b.error }) : td(schedule(b.schedule)),
        td(b.cycle ? fmt(b.cycle.cycle) : '–', 'num'),
        td(b.cycle ? fmt(b.cycle.entries) : '–', 'num'),
        td(b.cycle ? when(b.cycle.endsAt, o.now) : '–'),
        td(fmt(b.rewardsPaidLastDay) + (b.moreRewardsPaid ? '+' : ''), 'num'),
        b.archiving
          ? archiveCell(b.archiving, o.now, true, 'cycle ' + fmt(b.archiving.cycle) + ': ')
          : td('–'),
      ])
      tr.addEventListener('click', function () { selectBoard(b.id) })
      return tr
    }, o.totals ? 'no leaderboards yet' : 'unavailable: ' + o.listsError, 7)
    moreRow($('boards').querySelector('tbody'), o.boards.length, o.totals && o.totals.boards, 7)
    if (!state.board && o.boards.length > 0) selectBoard(o.boards[0].id)
    else if (state.board) loadBoard(state.board)
  }

  function selectBoard(id) {
    state.board = id
    Array.prototype.forEach.call(document.querySelectorAll('#boards tbody tr'), function (tr) {
      tr.classList.toggle('selected', tr.getAttribute('data-board') === id)
    })
    loadBoard(id)
  }

  function loadBoard(id) {
    // One at a time: a board that answers slowly must not gather a request per refresh. Another
    // board chosen meanwhile takes its place; one that never answers is given up.
    var running = state.boardLoad
    if (running && running.id === id) return
    if (running) running.controller.abort()
    var load = { id: id, controller: new AbortController(), timedOut: false }
    state.boardLoad = load
    var timer = setTimeout(function () { load.timedOut = true; load.controller.abort() }, BOARD_TIMEOUT_MS)
    return api('/boards/' + encodeURIComponent(id), load.controller.signal).then(function (b) {
      if (state.board !== id) return
      $('board-detail').hidden = false
      $('board-title').textContent = (b.config.name || b.id) + ' · cycle ' + b.cycle.cycle + ' · ' + fmt(b.cycle.entries) + ' entries'
      // Scores to six places: race times a thousandth apart are different ranks, shown apart.
      barChart($('top10'), b.top.map(function (e) {
        return { label: '#' + e.rank + ' ' + (e.name || e.playerId), value: e.score }
      }), { label: 'live top 10', empty: 'no scores this cycle', digits: 6 })
      $('top10').setAttribute('data-entries', String(b.top.length))
      var cycles = b.cycles.slice().reverse()
      barChart($('chart-cycles'), cycles.map(function (c) { return { label: 'cycle ' + c.cycle, value: c.entries } }), { label: 'entries per cycle', empty: 'no closed cycles yet' })
      // Neon's record of each close, and the board's own of those it has not finished: one that
      // fails before its first page has no record in Neon yet.
      // A Worker of the version before (a gradual deployment) sends neither field.
      var closing = b.unfinishedCloses || []
      var now = b.now || Date.now()
      var unfinished = {}
      closing.forEach(function (u) { unfinished[u.cycle] = u })
      var listed = closing
        .filter(function (u) { return !b.cycles.some(function (c) { return c.cycle === u.cycle }) })
        .map(function (u) { return { cycle: u.cycle, endsAt: null, entries: u.entries, archived: u.archived, completedAt: null } })
        .concat(b.cycles)
        .sort(function (x, y) { return y.cycle - x.cycle })
      rows($('cycles').tBodies[0], listed, function (c) {
        var u = unfinished[c.cycle]
        return el('tr', { 'data-cycle': String(c.cycle) }, [td(fmt(c.cycle), 'num'),
          td(c.endsAt === null ? '–' : new Date(c.endsAt).toISOString().replace('T', ' ').slice(0, 19)),
          td(fmt(c.entries), 'num'), td(fmt(u ? u.archived : c.archived), 'num'),
          u ? archiveCell(u, now, false) : td(c.completedAt ? 'archived' : 'archiving…')])
      }, 'no closed cycles yet', 5)
      rows($('rewards').tBodies[0], b.rewards, function (r) {
        return el('tr', null, [td(fmt(r.cycle), 'num'), td(fmt(r.players) + (r.morePlayers ? '+' : ''), 'num'), td('#' + r.ranks[0] + '–#' + r.ranks[1])])
      }, 'no rewards paid yet', 3)
    }).catch(function (err) {
      if (err.message === 'refused') return
      // Given up for another board the operator chose.
      if (load.controller.signal.aborted && !load.timedOut) return
      if (load.timedOut) err = new Error('no answer in ' + BOARD_TIMEOUT_MS / 1000 + ' s')
      // Deleted: its standings must not stay on the page as if live.
      if (err.status === 404 && state.board === id) {
        state.board = null
        $('board-detail').hidden = true
      }
      setStatus('board ' + id + ': ' + err.message, true)
    }).then(function () {
      clearTimeout(timer)
      if (state.boardLoad === load) state.boardLoad = null
    })
  }

  function renderQueues(o) {
    barChart($('chart-waiting'), o.queues.map(function (q) { return { label: q.id, value: q.waitingPlayers } }), { label: 'waiting players per queue', empty: 'no queues yet' })
    barChart($('chart-wait'), o.queues.map(function (q) {
      return { label: q.id, values: [q.waitSeconds.p50, q.waitSeconds.p95, q.waitSeconds.p99] }
    }), { label: 'wait percentiles per queue', grouped: true, digits: 1, empty: 'no queues yet' })
    rows($('queues').querySelector('table tbody'), o.queues, function (q) {
      return el('tr', { 'data-queue': q.id }, [
        td(q.paused ? q.id + ' (paused)' : q.id), td(q.rules), td(q.teams + '×' + q.teamSize),
        el('td', {
          text: q.regions.map(function (r) { return r.error ? r.region + ' (unavailable)' : r.region + ': ' + r.waitingPlayers }).join(', '),
          title: q.regions.filter(function (r) { return r.error }).map(function (r) { return r.region + ': ' + r.error }).join('\n'),
        }),
        td(fmt(q.waitingPlayers), 'num'), td(fmt(q.matchesPerMinute), 'num'),
        td(fmt(q.waitSeconds.p50, 1), 'num'), td(fmt(q.waitSeconds.p95, 1), 'num'), td(fmt(q.waitSeconds.p99, 1), 'num'),
      ])
    }, o.totals ? 'no queues yet' : 'unavailable: ' + o.listsError, 9)
    moreRow($('queues').querySelector('table tbody'), o.queues.length, o.totals && o.totals.queues, 9)
  }

  /** Says a table lists the latest changed of more than it shows. */
  function moreRow(tbody, shown, total, cols) {
    if (!total || total <= shown) return
    tbody.appendChild(el('tr', { class: 'more' }, [el('td', { class: 'empty', colspan: String(cols), text: 'the ' + shown + ' latest changed of ' + fmt(total) }) ]))
  }

  function renderSessions(o) {
    $('live-count').textContent = o.sessions.live === null ? '–' : fmt(o.sessions.live)
    rows($('sessions').querySelector('tbody'), o.sessions.recent, function (s) {
      return el('tr', { 'data-session': s.id }, [td(s.id), td(s.queue || '–'), td(s.rules), td(s.players.join(', ')), td(ago(o.now - s.createdAt), 'num')])
    }, o.totals ? 'no live sessions' : 'unavailable: ' + o.listsError, 5)
  }

  function refresh() {
    // A tab in the background reads nothing: each refresh costs the deployment a call to every
    // listed board and pool. It refreshes when shown again.
    if (state.busy || !state.key || document.hidden) return
    state.busy = true
    var controller = new AbortController()
    var timedOut = false
    var timer = setTimeout(function () { timedOut = true; controller.abort() }, OVERVIEW_TIMEOUT_MS)
    api('/overview', controller.signal).then(function (o) {
      var rate = renderTraffic(o)
      renderHeadline(o, rate)
      renderBoards(o)
      renderQueues(o)
      renderSessions(o)
      document.body.setAttribute('data-refreshed', String(o.now))
      if (o.listsError) setStatus('boards, queues and sessions unavailable: ' + o.listsError + ' (traffic is current)', true)
      else if (o.metricsScope === 'isolate') setStatus('the metrics hub is unreachable: traffic is from this isolate only', true)
      else setStatus('updated ' + new Date(o.now).toLocaleTimeString() + ' · every ' + INTERVAL_MS / 1000 + ' s')
    }).catch(function (err) {
      if (timedOut) err = new Error('no answer in ' + OVERVIEW_TIMEOUT_MS / 1000 + ' s')
      if (err.message !== 'refused') setStatus('refresh failed: ' + err.message, true)
    }).then(function () {
      clearTimeout(timer)
      state.busy = false
    })
  }

  // ------------------------------------------------------------------------------------------
  // Session

  function start(key) {
    state.key = key
    $('login').hidden = true
    $('app').hidden = false
    $('signout').hidden = false
    refresh()
    state.timer = setInterval(refresh, INTERVAL_MS)
  }

  function signOut(message) {
    sessionStorage.removeItem(KEY)
    state.key = null
    if (state.timer) clearInterval(state.timer)
    state.timer = null
    state.samples = []
    state.readings = []
    $('app').hidden = true
    $('signout').hidden = true
    $('login').hidden = false
    $('login-error').textContent = message || ''
    setStatus('')
  }

  document.addEventListener('DOMContentLoaded', function () {
    $('login-form').addEventListener('submit', function (e) {
      e.preventDefault()
      var key = $('admin-key').value.trim()
      $('admin-key').value = ''
      if (!key) return
      // Checked before it is kept: a wrong key never lands in storage.
      fetch(API + '/overview', { headers: { authorization: 'Bearer ' + key } }).then(function (res) {
        if (!res.ok) {
          $('login-error').textContent = res.status === 401 || res.status === 403 ? 'That key was refused.' : 'The server answered ' + res.status + '.'
          return
        }
        sessionStorage.setItem(KEY, key)
        $('login-error').textContent = ''
        start(key)
      }).catch(function () { $('login-error').textContent = 'The server could not be reached.' })
    })
    $('signout').addEventListener('click', function () { signOut('Signed out.') })
    document.addEventListener('visibilitychange', function () {
      if (document.hidden) return
      // A rate across the time hidden would be an average over it, shown as now.
      state.readings = []
      refresh()
    })
    var saved = sessionStorage.getItem(KEY)
    if (saved) start(saved)
  })
})()
`

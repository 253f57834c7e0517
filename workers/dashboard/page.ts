/**
 * The dashboard's HTML shell. It holds no data and no inline script (the CSP forbids both):
 * `app.js` asks for the admin key and fills the sections from `/dashboard/api/*`.
 */
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<link rel="icon" href="data:,">
<title>Nexus · operator dashboard</title>
<link rel="stylesheet" href="/dashboard/app.css">
<script src="/dashboard/app.js" defer></script>
</head>
<body>
<header>
  <h1>Nexus <span>operator dashboard</span></h1>
  <div id="status" role="status" aria-live="polite"></div>
  <button id="signout" type="button" hidden>Sign out</button>
</header>

<main>
<section id="login" class="card login">
  <h2>Sign in</h2>
  <p>Enter the admin key. It stays in this tab (sessionStorage) and is sent only to this server's
  <code>/dashboard/api</code> with <code>Authorization: Bearer</code>.</p>
  <form id="login-form" autocomplete="off">
    <label for="admin-key">Admin key</label>
    <input id="admin-key" name="admin-key" type="password" required spellcheck="false">
    <button type="submit">Sign in</button>
  </form>
  <p id="login-error" class="error" role="alert"></p>
</section>

<div id="app" hidden>
  <section class="stats" id="headline"></section>

  <section class="card" id="traffic">
    <h2>Traffic <small id="traffic-scope">from /metrics</small></h2>
    <div class="charts">
      <figure><figcaption>Requests per second</figcaption><div id="chart-rate" class="chart"></div></figure>
      <figure><figcaption>Errors per second (4xx, 5xx)</figcaption><div id="chart-errors" class="chart"></div></figure>
    </div>
    <table id="routes"><caption>Requests, 4xx, 5xx and latency count every request the metrics hub has kept (deploys do not reset them; with the hub out of reach, this isolate's since it started), not the last minutes; req/s and the charts are the change between readings.</caption><thead><tr><th>Route</th><th class="num">Requests</th><th class="num">req/s</th><th class="num">4xx (all)</th><th class="num">5xx (all)</th><th class="num">p50 ms (all)</th><th class="num">p95 ms (all)</th><th class="num">p99 ms (all)</th></tr></thead><tbody></tbody></table>
  </section>

  <section class="card" id="boards">
    <h2>Leaderboards</h2>
    <table><thead><tr><th>Board</th><th>Schedule</th><th class="num">Cycle</th><th class="num">Entries</th><th>Ends</th><th class="num">Rewards paid (24 h)</th><th>Archive</th></tr></thead><tbody></tbody></table>
    <div id="board-detail" hidden>
      <h3 id="board-title"></h3>
      <div class="charts">
        <figure><figcaption>Live top 10</figcaption><div id="top10" class="chart bars"></div></figure>
        <figure><figcaption>Entries per cycle</figcaption><div id="chart-cycles" class="chart"></div></figure>
      </div>
      <div class="split">
        <div><h4>Archives</h4><table id="cycles"><thead><tr><th class="num">Cycle</th><th>Ended</th><th class="num">Entries</th><th class="num">Archived</th><th>State</th></tr></thead><tbody></tbody></table></div>
        <div><h4>Rewards paid</h4><table id="rewards"><thead><tr><th class="num">Cycle</th><th class="num">Players</th><th>Ranks</th></tr></thead><tbody></tbody></table></div>
      </div>
    </div>
  </section>

  <section class="card" id="queues">
    <h2>Matchmaking queues</h2>
    <div class="charts">
      <figure><figcaption>Waiting players</figcaption><div id="chart-waiting" class="chart bars"></div></figure>
      <figure><figcaption>Wait time p50 / p95 / p99 (s)</figcaption><div id="chart-wait" class="chart bars"></div></figure>
    </div>
    <table><thead><tr><th>Queue</th><th>Rules</th><th>Format</th><th>Regions</th><th class="num">Waiting</th><th class="num">Matches/min</th><th class="num">Wait p50</th><th class="num">p95</th><th class="num">p99</th></tr></thead><tbody></tbody></table>
  </section>

  <section class="card" id="sessions">
    <h2>Live sessions <span id="live-count" class="pill"></span></h2>
    <table><thead><tr><th>Session</th><th>Queue</th><th>Rules</th><th>Players</th><th class="num">Age</th></tr></thead><tbody></tbody></table>
  </section>
</div>
</main>
</body>
</html>
`

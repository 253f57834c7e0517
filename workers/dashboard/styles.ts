/** The dashboard's stylesheet, served as `/dashboard/app.css`. */
export const DASHBOARD_CSS = `
:root { --bg: #0f1419; --card: #172029; --line: #263441; --text: #dbe4ec; --muted: #8aa0b3;
  --accent: #4cc2ff; --ok: #5fd38d; --warn: #ffb84c; --bad: #ff6b6b; color-scheme: dark; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  background: var(--bg); color: var(--text); }
header { display: flex; align-items: center; gap: 16px; padding: 12px 24px;
  border-bottom: 1px solid var(--line); background: #121a21; }
h1 { font-size: 18px; margin: 0; flex: 1; } h1 span { color: var(--muted); font-weight: 400; }
h2 { font-size: 15px; margin: 0 0 12px; } h2 small { color: var(--muted); font-weight: 400; }
h3 { font-size: 14px; margin: 16px 0 8px; } h4 { margin: 12px 0 6px; color: var(--muted); font-weight: 500; }
main { padding: 16px 24px; max-width: 1280px; margin: 0 auto; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 16px;
  margin-bottom: 16px; }
.login { max-width: 480px; margin: 48px auto; }
form { display: flex; gap: 8px; align-items: center; flex-wrap: wrap; }
input { flex: 1; min-width: 200px; padding: 8px; border-radius: 6px; border: 1px solid var(--line);
  background: #0b1015; color: var(--text); }
button { padding: 8px 14px; border-radius: 6px; border: 1px solid var(--accent); background: transparent;
  color: var(--accent); cursor: pointer; }
button:hover { background: rgba(76, 194, 255, 0.12); }
.error { color: var(--bad); min-height: 1.2em; }
#status { color: var(--muted); font-size: 12px; }
#status.bad { color: var(--bad); }
table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { color: var(--muted); font-weight: 500; font-size: 12px; }
td.num, th.num { text-align: right; }
tbody tr.clickable { cursor: pointer; } tbody tr.clickable:hover, tbody tr.selected { background: #1d2933; }
td.empty { color: var(--muted); text-align: center; padding: 16px; }
.stats { display: grid; grid-template-columns: repeat(auto-fit, minmax(160px, 1fr)); gap: 12px;
  margin-bottom: 16px; }
.stat { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; }
.stat b { display: block; font-size: 24px; font-variant-numeric: tabular-nums; }
.stat span { color: var(--muted); font-size: 12px; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(360px, 1fr)); gap: 16px;
  margin-bottom: 12px; }
figure { margin: 0; } figcaption, table caption { color: var(--muted); font-size: 12px; margin-bottom: 4px; }
table caption { caption-side: bottom; text-align: left; margin-top: 4px; }
.chart { min-height: 120px; }
.chart svg { width: 100%; height: auto; display: block; }
.chart text { fill: var(--muted); font-size: 10px; }
.split { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
.pill { background: #1d2933; border-radius: 999px; padding: 2px 10px; font-size: 12px; color: var(--accent); }
.bad { color: var(--bad); } .muted { color: var(--muted); }
code { background: #0b1015; padding: 1px 4px; border-radius: 4px; }
`

/**
 * A self-contained API reference rendered from /openapi.json in the browser. No CDN, and no
 * inline script or style: it works offline in development and under the same strict CSP as the
 * dashboard (`PAGE_HEADERS`), whose admin key a script on this origin could otherwise read.
 */
export const DOCS_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Nexus API</title>
<link rel="stylesheet" href="/docs/app.css">
</head>
<body>
<h1>Nexus API</h1>
<p class="sub">Generated from <a href="/openapi.json">/openapi.json</a>. Errors are RFC 9457 problem+json.</p>
<div id="routes">Loading…</div>
<script src="/docs/app.js"></script>
</body>
</html>`

export const DOCS_CSS = `  body { font: 15px/1.5 system-ui, sans-serif; margin: 0 auto; max-width: 960px; padding: 24px; color: #1b1f24; }
  h1 { margin-bottom: 0 } .sub { color: #57606a; margin-top: 4px }
  details { border: 1px solid #d0d7de; border-radius: 6px; margin: 8px 0; }
  summary { cursor: pointer; padding: 8px 12px; font-family: ui-monospace, monospace; }
  .m { display: inline-block; min-width: 64px; font-weight: 700; text-transform: uppercase; }
  .get { color: #0969da } .post { color: #1a7f37 } .put { color: #9a6700 } .delete { color: #cf222e }
  .body { padding: 0 12px 12px; } pre { background: #f6f8fa; padding: 8px; overflow: auto; font-size: 13px; }
`

export const DOCS_JS = `(async () => {
  const doc = await (await fetch('/openapi.json')).json();
  const el = document.getElementById('routes');
  el.textContent = '';
  const resolve = (s) => s && s.$ref ? doc.components.schemas[s.$ref.split('/').pop()] : s;
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const d = document.createElement('details');
      const s = document.createElement('summary');
      const m = document.createElement('span'); m.className = 'm ' + method; m.textContent = method;
      s.append(m, ' ' + path + (op.summary ? '  — ' + op.summary : ''));
      const b = document.createElement('div'); b.className = 'body';
      if (op.description) { const p = document.createElement('p'); p.textContent = op.description; b.append(p); }
      const body = op.requestBody && op.requestBody.content['application/json'];
      if (body) { const h = document.createElement('h4'); h.textContent = 'Request body';
        const pre = document.createElement('pre'); pre.textContent = JSON.stringify(resolve(body.schema), null, 2); b.append(h, pre); }
      for (const [status, r] of Object.entries(op.responses || {})) {
        const h = document.createElement('h4'); h.textContent = status + ' ' + (r.description || ''); b.append(h);
        const c = r.content && Object.values(r.content)[0];
        if (c && c.schema) { const pre = document.createElement('pre'); pre.textContent = JSON.stringify(resolve(c.schema), null, 2); b.append(pre); }
      }
      d.append(s, b); el.append(d);
    }
  }
})().catch((e) => { document.getElementById('routes').textContent = 'Could not load /openapi.json: ' + e; });
`

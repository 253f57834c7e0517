/**
 * The headers of the HTML pages Nexus serves (the dashboard, the API reference) and of their
 * scripts and styles. Both run on the Worker's origin, where the dashboard keeps the admin key in
 * `sessionStorage`: nothing but their own files may run there, no other site may frame them (a
 * click on an admin's behalf), and a page that opened one may not navigate it elsewhere (a copy
 * asking for the key again).
 */
const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self'",
  "img-src 'self' data:",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ')

export const PAGE_HEADERS = {
  'content-security-policy': CSP,
  'cross-origin-opener-policy': 'same-origin',
  'x-frame-options': 'DENY',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
}

/**
 * Browsers that have seen the dashboard over HTTPS never ask its host for plain HTTP again (the
 * key would travel in clear). Not for this machine: it would pin every port of `localhost`.
 */
export const HSTS = { 'strict-transport-security': 'max-age=31536000' }

// Opens index.html in headless Chromium from an origin the proxy allows and from one it
// does not, and checks what the published Refold SDK could do from each. Started by
// tests/browser.rs, which runs the proxy (with [cors] allowing exactly one origin), the
// stand-in Refold API and the two page servers, and afterwards checks the stand-in's
// record. Environment:
//   PROXY_BASE_URL   the SDK's baseUrl (the proxy, on a third origin)
//   ALLOWED_ORIGIN   a page server whose origin is in allowed_origins
//   BLOCKED_ORIGIN   a page server whose origin is not
//   ALLOWED_JWT, BLOCKED_JWT   app JWTs for two different linked accounts, one per origin
//   CHROMIUM         the browser binary (default /usr/bin/chromium)
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  assert.ok(value, `${name} must be set`);
  return value;
};
const baseUrl = env("PROXY_BASE_URL");
const allowedOrigin = env("ALLOWED_ORIGIN");
const blockedOrigin = env("BLOCKED_ORIGIN");
const allowedJwt = env("ALLOWED_JWT");
const blockedJwt = env("BLOCKED_JWT");
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

const STEPS = ["getApp()", "getApp('freshdesk')", "connect('freshdesk')", "config()", "execute", "proxy error"];

let browser;

before(async () => {
  // launch() gives every run a fresh temporary profile (user-data dir) and removes it on close.
  browser = await chromium.launch({
    executablePath,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    timeout: 60_000,
  });
});

after(async () => {
  await browser?.close();
});

// Loads the page from `origin` with the proxy URL and `jwt`, waits for every call to settle,
// and returns the page's results, the console messages and the preflights the browser sent.
async function runPage(origin, jwt) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const console = [];
  page.on("console", (msg) => console.push(`${msg.type()}: ${msg.text()}`));
  page.on("pageerror", (err) => console.push(`pageerror: ${err.message}`));
  // CORS preflights are sent by the network service, outside the page: watch them over CDP.
  const cdp = await context.newCDPSession(page);
  const preflightUrls = new Map();
  const preflights = [];
  const corsBlocked = [];
  cdp.on("Network.requestWillBeSent", (e) => {
    if (e.initiator?.type === "preflight") preflightUrls.set(e.requestId, `${e.request.method} ${e.request.url}`);
  });
  cdp.on("Network.responseReceived", (e) => {
    if (e.type === "Preflight") preflights.push(`${e.response.status} ${preflightUrls.get(e.requestId)}`);
  });
  cdp.on("Network.loadingFailed", (e) => {
    if (e.corsErrorStatus) corsBlocked.push(e.corsErrorStatus.corsError);
  });
  await cdp.send("Network.enable");
  try {
    const fragment = new URLSearchParams({ baseUrl, token: jwt });
    const response = await page.goto(`${origin}/index.html#${fragment}`, { timeout: 30_000 });
    assert.equal(response.status(), 200, "the page server served the page");
    await page.waitForFunction(() => window.__done === true, null, { timeout: 60_000 });
    const results = await page.evaluate(() => window.__results);
    const text = await page.locator("#results").innerText();
    return { results, console, preflights, corsBlocked, text };
  } finally {
    await context.close();
  }
}

function byName(results) {
  assert.deepEqual(
    results.map((r) => r.name),
    STEPS,
    `the page ran every step: ${JSON.stringify(results)}`,
  );
  return Object.fromEntries(results.map((r) => [r.name, r]));
}

test("from an allowed origin, every SDK call succeeds cross-origin", { timeout: 120_000 }, async () => {
  const run = await runPage(allowedOrigin, allowedJwt);
  const detail = `\npage:\n${run.text}\nconsole:\n${run.console.join("\n")}`;
  const r = byName(run.results);
  for (const step of STEPS) {
    assert.ok(r[step].ok, `${step} failed: ${JSON.stringify(r[step].error)}${detail}`);
  }

  const apps = r["getApp()"].value;
  assert.ok(Array.isArray(apps), JSON.stringify(apps));
  assert.ok(apps.some((a) => (a.slug ?? a.type) === "freshdesk"), JSON.stringify(apps));
  assert.equal(r["getApp('freshdesk')"].value.auth_type, "keybased");
  assert.equal(r["connect('freshdesk')"].value, true);
  assert.equal(r["config()"].value.slug, "freshdesk");
  assert.equal(r["config()"].value.config_id, "cfg-browser");
  assert.equal(r.execute.value.status, 200, JSON.stringify(r.execute.value));
  // The proxy's own 401 is readable from the page: it carries CORS headers and is JSON.
  assert.equal(r["proxy error"].value.status, 401, JSON.stringify(r["proxy error"].value));
  assert.equal(r["proxy error"].value.body.error, "APP_TOKEN_MISSING");

  assert.deepEqual(run.corsBlocked, [], `nothing was blocked${detail}`);
  // The SDK's authorization header, and the execute call's slug / sync_execution, make
  // the browser ask first; the proxy answered 204 and the calls went through.
  for (const path of ["/api/v2/f-sdk/application", "/api/v2/public/workflow/echo/execute"]) {
    assert.ok(
      run.preflights.includes(`204 OPTIONS ${baseUrl}${path}`),
      `${path} was preflighted: ${JSON.stringify(run.preflights)}`,
    );
  }
});

test("from a disallowed origin, the browser blocks every call", { timeout: 120_000 }, async () => {
  const run = await runPage(blockedOrigin, blockedJwt);
  const detail = `\npage:\n${run.text}\nconsole:\n${run.console.join("\n")}`;
  const r = byName(run.results);
  for (const step of STEPS) {
    assert.equal(r[step].ok, false, `${step} got through: ${JSON.stringify(r[step].value)}${detail}`);
    // What a page sees when CORS stops a fetch: a TypeError, no status, no body.
    assert.equal(r[step].error.name, "TypeError", `${step}: ${JSON.stringify(r[step].error)}${detail}`);
  }
  assert.ok(run.corsBlocked.length >= STEPS.length, `the browser reported CORS errors: ${JSON.stringify(run.corsBlocked)}`);
  // The proxy refused every preflight the browser sent (403, no CORS headers).
  assert.ok(run.preflights.length > 0, "the browser sent preflights");
  for (const p of run.preflights) assert.ok(p.startsWith("403 OPTIONS "), `preflight answered: ${p}`);
  assert.ok(
    run.console.some((line) => line.includes("blocked by CORS policy")),
    `the browser said why${detail}`,
  );
});

// Drives the published Refold frontend SDK (@cobaltio/cobalt-js 8.0.0) through
// refold-proxy to the stand-in Refold API. Started by tests/sdk.rs, which runs the proxy
// and then checks, on the stand-in's record, that every call carried the session token
// the proxy minted. Environment: PROXY_BASE_URL (the SDK's baseUrl, with the proxy's
// mount path), APP_JWT (the app's own user JWT), SDK_ACCOUNT.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Cobalt } from "@cobaltio/cobalt-js";

const baseUrl = process.env.PROXY_BASE_URL;
const token = process.env.APP_JWT;
assert.ok(baseUrl && token, "PROXY_BASE_URL and APP_JWT must be set");

const cobalt = new Cobalt({ baseUrl, token });
const KEY_APP = "freshdesk";

// Exactly as the newer SDKs (refold-js 10.x) send these calls.
async function sdkFetch(path, { method = "GET", headers = {}, body } = {}) {
  const res = await fetch(`${baseUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...headers },
    body,
  });
  return { status: res.status, body: await res.json() };
}

test("getAccountDetails returns the linked account", async () => {
  const details = await cobalt.getAccountDetails();
  assert.equal(typeof details, "object");
  assert.ok(JSON.stringify(details).includes(process.env.SDK_ACCOUNT));
});

test("getApp() lists the enabled applications", async () => {
  const apps = await cobalt.getApp();
  assert.ok(Array.isArray(apps), JSON.stringify(apps));
  assert.ok(apps.some((a) => (a.slug ?? a.type) === KEY_APP));
});

test("key-based connect, config lifecycle and disconnect", async () => {
  const app = await cobalt.getApp(KEY_APP);
  assert.equal(app.auth_type, "keybased");
  assert.notEqual(app.connected, true);

  const connected = await cobalt.connect(KEY_APP, { api_key: "user-typed-key", subdomain: "acme" });
  assert.equal(connected, true);
  assert.equal((await cobalt.getApp(KEY_APP)).connected, true);

  const created = await cobalt.config({ slug: KEY_APP, config_id: "cfg-sdk", labels: [] });
  assert.equal(created.slug, KEY_APP);
  const fetched = await cobalt.getConfig(KEY_APP, "cfg-sdk");
  assert.equal(fetched.slug, KEY_APP);
  assert.equal(fetched.config_id, "cfg-sdk");

  const updated = await cobalt.updateConfig({
    slug: KEY_APP,
    config_id: "cfg-sdk",
    fields: {},
    workflows: [],
  });
  assert.equal(updated.slug, KEY_APP);

  const deleted = await cobalt.deleteConfig(KEY_APP, "cfg-sdk");
  assert.equal(typeof deleted, "object");
  await assert.rejects(cobalt.getConfig(KEY_APP, "cfg-sdk"));

  await cobalt.disconnect(KEY_APP);
  assert.notEqual((await cobalt.getApp(KEY_APP)).connected, true);
});

test("workflow, execute and execution calls of the newer SDKs", async () => {
  const list = await sdkFetch("/api/v2/public/workflow?page=1&limit=10");
  assert.equal(list.status, 200, JSON.stringify(list.body));

  const run = await sdkFetch("/api/v2/public/workflow/echo/execute", {
    method: "POST",
    headers: { "content-type": "application/json", slug: "", sync_execution: "true" },
    body: JSON.stringify({ hello: "world" }),
  });
  assert.equal(run.status, 200, JSON.stringify(run.body));

  const executions = await sdkFetch("/api/v2/public/execution?page=1");
  assert.equal(executions.status, 200, JSON.stringify(executions.body));
});

test("the proxy's own errors are JSON the SDK can read", async () => {
  const res = await fetch(`${baseUrl}/api/v2/public/workflow`, {
    headers: { authorization: "Bearer " },
  });
  assert.equal(res.status, 401);
  const body = await res.json();
  assert.equal(body.error, "APP_TOKEN_MISSING");

  const leak = await fetch(`${baseUrl}/api/v2/public/session-token`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ linked_account_id: process.env.SDK_ACCOUNT }),
  });
  assert.equal(leak.status, 404);
  assert.equal((await leak.json()).error, "ROUTE_NOT_ALLOWED");
});

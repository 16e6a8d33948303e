// Sign in to Mado through the real OIDC redirect flow in headless Chromium:
// Mado's login page → "Sign in with SSO" → the OpenID Provider's
// (tests/oidc/provider.mjs, npm oidc-provider) dev login and consent forms →
// back to Mado's callback → the worklist. Takes a screenshot of where the
// flow lands.
//
// usage: node oidc_login.mjs '<json>'
//   { "base": "http://127.0.0.1:PORT", "login": "alice", "out": "/abs/shot.png",
//     "executable": "/usr/bin/chromium", "timeoutMs": 60000, "locale": "en-US" }
// Prints one JSON line on stdout:
//   { ok, url, title, steps: [...], text, errors: [...] }
// Exit status 0 when the flow ended on a Mado page (not the login page) and
// the screenshot was written, 1 otherwise.

import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const cfg = JSON.parse(process.argv[2] ?? '{}');
const timeout = cfg.timeoutMs ?? 60000;
const errors = [];
const steps = [];
const profile = mkdtempSync(join(tmpdir(), 'mado-chromium-'));
let context;
const result = { ok: false, url: null, title: null, steps, text: '', errors };

try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: cfg.executable ?? '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
    viewport: { width: 1280, height: 800 },
    locale: cfg.locale ?? 'en-US',
    timeout,
  });
  const page = context.pages()[0] ?? await context.newPage();
  page.setDefaultTimeout(timeout);
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('requestfailed', (r) => errors.push(`requestfailed: ${r.url()} ${r.failure()?.errorText ?? ''}`));
  page.on('response', (r) => { if (r.status() >= 400) errors.push(`http ${r.status()}: ${r.url()}`); });
  const base = cfg.base.replace(/\/$/, '');
  const onMado = (u) => u.origin === new URL(base).origin;

  // 1. Mado's login page, the SSO button.
  await page.goto(base + '/login', { waitUntil: 'load' });
  steps.push(`login page: ${page.url()}`);
  await Promise.all([
    page.waitForURL((u) => !onMado(u), { timeout }),
    page.click('a#sso'),
  ]);
  steps.push(`provider: ${page.url()}`);

  // 2. The provider's dev interactions: login form, then consent (as many
  //    rounds as it asks for), until the browser is back on Mado.
  for (let round = 0; round < 4 && !onMado(new URL(page.url())); round++) {
    await page.waitForSelector('form', { timeout });
    if (await page.locator('input[name="login"]').count()) {
      await page.fill('input[name="login"]', cfg.login);
      await page.fill('input[name="password"]', 'any-password');
      steps.push('provider login form');
    } else {
      steps.push('provider consent form');
    }
    await Promise.all([
      page.waitForNavigation({ waitUntil: 'load', timeout }),
      page.locator('form button[type="submit"]').first().click(),
    ]);
    steps.push(`→ ${page.url()}`);
  }

  // 3. Landed on Mado: the worklist (or whatever the callback redirected to).
  await page.waitForLoadState('load');
  result.url = page.url();
  result.title = await page.title();
  result.text = (await page.locator('body').innerText()).slice(0, 2000);
  await page.screenshot({ path: cfg.out, fullPage: true });
  const landed = new URL(result.url);
  result.ok = onMado(landed) && !landed.pathname.startsWith('/login') && !landed.pathname.startsWith('/auth/');
} catch (e) {
  errors.push(`fatal: ${e && e.stack ? e.stack : e}`);
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(result) + '\n');
process.exit(result.ok ? 0 : 1);

// Drive the study page's share dialog and the admin page in headless
// Chromium, in English and Japanese, and take screenshots.
//
// usage: node ui_forms.mjs '<json>'
//   { "base": "http://127.0.0.1:PORT", "username": "...", "password": "...",
//     "study": "1.2.3", "outDir": "/abs/dir", "executable": "/usr/bin/chromium",
//     "timeoutMs": 60000 }
// Prints one JSON line on stdout:
//   { ok, shareUrl, linksAfterCreate, statusAfterRevoke, adminUsers, adminGrants,
//     grantsAfterRevoke, shots: [...], ja: {...}, errors: [...] }
// Exit status 0 when every step ran, 1 otherwise (the caller judges values).

import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const cfg = JSON.parse(process.argv[2] ?? '{}');
const timeout = cfg.timeoutMs ?? 60000;
const errors = [];
const shots = [];
const result = { ok: false, shots, errors, ja: {} };
const base = cfg.base.replace(/\/$/, '');
const profiles = [];

async function session(locale) {
  const profile = mkdtempSync(join(tmpdir(), 'mado-chromium-'));
  profiles.push(profile);
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: cfg.executable ?? '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
    viewport: { width: 1280, height: 900 },
    locale,
    timeout,
  });
  const page = context.pages()[0] ?? await context.newPage();
  page.setDefaultTimeout(timeout);
  page.on('pageerror', (e) => errors.push(`${locale} pageerror: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error' && !/rendered\.png|Failed to load resource/.test(m.text())) errors.push(`${locale} console: ${m.text()}`); });
  await page.goto(base + '/login', { waitUntil: 'load' });
  await page.fill('input[name="username"]', cfg.username);
  await page.fill('input[name="password"]', cfg.password);
  await Promise.all([
    page.waitForURL((u) => !u.pathname.startsWith('/login'), { timeout }),
    page.click('form button[type="submit"]'),
  ]);
  return { context, page };
}

async function shot(page, name) {
  const path = join(cfg.outDir, name);
  await page.screenshot({ path, fullPage: false });
  shots.push(path);
}

async function waitReload(page, action) {
  await Promise.all([page.waitForEvent('load', { timeout }), action()]);
}

let en;
let ja;
try {
  // ---------------- English: share dialog ----------------
  en = await session('en-US');
  let page = en.page;
  await page.goto(`${base}/studies/${cfg.study}`, { waitUntil: 'load' });
  await page.click('#share-open');
  await page.waitForSelector('#share-dialog[open]');
  await page.selectOption('#share-expires', '168');
  await page.fill('#share-passcode', 'open sesame 42');
  await page.fill('#share-max-uses', '3');
  await page.check('#share-pixels-only');
  await page.click('#share-form button[type="submit"]');
  await page.waitForSelector('#share-result:not([hidden])');
  result.shareUrl = await page.inputValue('#share-url');
  await shot(page, 'share-dialog-created-en.png');
  // Close: the page reloads with the dialog open and the list current.
  await waitReload(page, () => page.click('#share-dialog [data-close-dialog]'));
  await page.waitForSelector('#share-dialog[open]');
  result.linksAfterCreate = await page.$$eval('table.share-links tbody tr', (rows) => rows.map((r) => r.innerText));
  await shot(page, 'share-dialog-list-en.png');
  // Revoke the link.
  await waitReload(page, () => page.click('form.share-revoke button'));
  await page.waitForSelector('#share-dialog[open]');
  result.statusAfterRevoke = await page.$$eval('table.share-links tbody tr td:nth-child(5)', (c) => c.map((x) => x.innerText));
  result.revokeButtonsAfterRevoke = await page.locator('form.share-revoke').count();

  // ---------------- English: admin page ----------------
  await page.goto(`${base}/admin`, { waitUntil: 'load' });
  await page.fill('#new-username', 'yuki');
  await page.fill('#new-password', 'yuki password 123');
  await page.selectOption('#new-role', 'referring');
  await waitReload(page, () => page.click('#users form.admin-form button[type="submit"]'));
  result.adminUsers = await page.$$eval('table.users tbody tr', (rows) => rows.map((r) => r.innerText));
  await page.fill('#grant-study', cfg.study);
  await page.fill('#grant-user', 'yuki');
  await page.selectOption('#grant-permission', 'view_pixels');
  await page.fill('#grant-expires', '48');
  await waitReload(page, () => page.click('#grants form.admin-form button[type="submit"]'));
  result.adminGrants = await page.$$eval('table.grants tbody tr', (rows) => rows.map((r) => r.innerText));
  // A refused creation shows the server's problem detail.
  await page.fill('#new-username', 'yuki');
  await page.fill('#new-password', 'yuki password 123');
  await page.click('#users form.admin-form button[type="submit"]');
  await page.waitForSelector('#users .form-error:not([hidden])');
  result.duplicateError = await page.innerText('#users .form-error');
  await shot(page, 'admin-en.png');

  // ---------------- Japanese ----------------
  ja = await session('ja-JP');
  page = ja.page;
  await page.goto(`${base}/admin`, { waitUntil: 'load' });
  result.ja.adminTitle = await page.innerText('h1');
  result.ja.lang = await page.getAttribute('html', 'lang');
  await shot(page, 'admin-ja.png');
  await page.goto(`${base}/studies/${cfg.study}`, { waitUntil: 'load' });
  await page.click('#share-open');
  await page.waitForSelector('#share-dialog[open]');
  result.ja.shareTitle = await page.innerText('#share-dialog h2');
  await shot(page, 'share-dialog-ja.png');

  // Revoke the grant (English session).
  page = en.page;
  await page.goto(`${base}/admin#grants`, { waitUntil: 'load' });
  await waitReload(page, () => page.click('#grants table.grants form button'));
  result.grantsAfterRevoke = await page.locator('table.grants tbody tr').count();
  result.ok = true;
} catch (e) {
  errors.push(`fatal: ${e && e.stack ? e.stack : e}`);
} finally {
  for (const s of [en, ja]) if (s) await s.context.close().catch(() => {});
  for (const p of profiles) rmSync(p, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(result) + '\n');
process.exit(result.ok ? 0 : 1);

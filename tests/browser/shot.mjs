// Log in to Mado through the real login form, open a study page, wait until
// every <img> has loaded, take a screenshot and report, per image, its
// natural size and whether it shows anything (pixel statistics from a canvas).
//
// usage: node shot.mjs '<json>'
//   { "base": "http://127.0.0.1:PORT", "path": "/studies/UID",
//     "username": "...", "password": "...", "out": "/abs/shot.png",
//     "executable": "/usr/bin/chromium", "timeoutMs": 60000 }
// Prints one JSON line on stdout: { ok, url, title, images: [...], errors: [...] }.
// Exit status 0 when the page was reached and screenshotted (the caller
// judges the images), 1 otherwise.

import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const cfg = JSON.parse(process.argv[2] ?? '{}');
const timeout = cfg.timeoutMs ?? 60000;
const errors = [];
const profile = mkdtempSync(join(tmpdir(), 'mado-chromium-'));
let context;
let result = { ok: false, url: null, title: null, images: [], errors };

try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: cfg.executable ?? '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
    viewport: { width: 1280, height: 1024 },
    timeout,
  });
  const page = context.pages()[0] ?? await context.newPage();
  page.setDefaultTimeout(timeout);
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('requestfailed', (r) => errors.push(`requestfailed: ${r.url()} ${r.failure()?.errorText ?? ''}`));
  page.on('response', (r) => { if (r.status() >= 400) errors.push(`http ${r.status()}: ${r.url()}`); });

  // 1. the real login form (its hidden csrf field goes along with the submit)
  await page.goto(cfg.base + '/login', { waitUntil: 'load' });
  await page.fill('input[name="username"]', cfg.username);
  await page.fill('input[name="password"]', cfg.password);
  const submit = page.locator('form button[type="submit"], form input[type="submit"], form button:not([type])').first();
  await Promise.all([
    page.waitForURL((u) => !u.pathname.endsWith('/login'), { timeout }),
    (await submit.count()) > 0 ? submit.click() : page.press('input[name="password"]', 'Enter'),
  ]);

  // 2. the study page, every image loaded
  const resp = await page.goto(cfg.base + cfg.path, { waitUntil: 'load' });
  result.url = page.url();
  result.status = resp ? resp.status() : null;
  result.title = await page.title();
  await page.evaluate(() => { for (const img of document.images) img.loading = 'eager'; });
  await page.waitForFunction(
    () => Array.from(document.images).filter((i) => i.getAttribute('src')).every((i) => i.complete),
    null, { timeout, polling: 100 });

  // 3. per-image statistics (same-origin images, so the canvas is readable)
  result.images = await page.evaluate(() => Array.from(document.images).filter((i) => i.getAttribute('src')).map((img) => {
    const r = { src: img.getAttribute('src'), naturalWidth: img.naturalWidth,
      naturalHeight: img.naturalHeight, nonBlank: false, distinct: 0, stddev: 0 };
    if (!img.naturalWidth || !img.naturalHeight) return r;
    const w = Math.min(img.naturalWidth, 256);
    const h = Math.max(1, Math.round(img.naturalHeight * w / img.naturalWidth));
    const c = document.createElement('canvas');
    c.width = w; c.height = h;
    const g = c.getContext('2d');
    try {
      g.drawImage(img, 0, 0, w, h);
      const d = g.getImageData(0, 0, w, h).data;
      const seen = new Set();
      let sum = 0, sum2 = 0, n = 0;
      for (let i = 0; i < d.length; i += 4) {
        const y = Math.round(0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2]);
        seen.add(y); sum += y; sum2 += y * y; n++;
      }
      const mean = sum / n;
      r.distinct = seen.size;
      r.stddev = Math.sqrt(Math.max(0, sum2 / n - mean * mean));
      r.nonBlank = r.distinct > 4 && r.stddev > 2;
    } catch (e) { r.error = String(e); }
    return r;
  }));

  await page.screenshot({ path: cfg.out, fullPage: true });
  result.ok = true;
} catch (e) {
  errors.push(`fatal: ${e && e.stack ? e.stack : e}`);
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(result) + '\n');
process.exit(result.ok ? 0 : 1);

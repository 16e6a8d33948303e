// Open a study in the bundled OHIF viewer (served by mado-server at /ohif/)
// in headless Chromium, after signing in through the real login form.
// Saves a screenshot and reports the DICOMweb requests OHIF made.
//
// usage: node tests/interop/ohif_check.mjs '<json>'
//   { "base": "http://127.0.0.1:PORT", "study": "UID", "username": "...",
//     "password": "...", "out": "/abs/ohif.png", "timeoutMs": 90000 }
// Prints one JSON line: { ok, frames, dicomweb, errors, viewportStats }.
// Uses playwright-core from tests/browser/node_modules and /usr/bin/chromium.
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const require = createRequire(new URL('../browser/package.json', import.meta.url));
const { chromium } = require('playwright-core');
const cfg = JSON.parse(process.argv[2] ?? '{}');
const timeout = cfg.timeoutMs ?? 90000;
const errors = [];
const dicomweb = {};
let frames = 0;
const profile = mkdtempSync(join(tmpdir(), 'mado-ohif-'));
let context;
const result = { ok: false, frames: 0, dicomweb, errors };
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: cfg.executable ?? '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-quic', '--no-first-run',
      '--use-angle=swiftshader', '--enable-unsafe-swiftshader', '--ignore-gpu-blocklist',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1280, height: 900 },
    timeout,
  });
  const page = context.pages()[0] ?? await context.newPage();
  page.setDefaultTimeout(timeout);
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('response', (r) => {
    const u = new URL(r.url());
    if (u.pathname.startsWith('/dicomweb/')) {
      const kind = u.pathname.includes('/frames/') ? 'frames'
        : u.pathname.endsWith('/metadata') ? 'metadata'
        : u.pathname.includes('/rendered') || u.pathname.includes('/thumbnail') ? 'rendered' : 'qido';
      const key = `${kind} ${r.status()}`;
      dicomweb[key] = (dicomweb[key] ?? 0) + 1;
      if (kind === 'frames' && r.status() === 200) frames++;
    } else if (r.status() >= 400) {
      errors.push(`http ${r.status()}: ${u.pathname}`);
    }
  });
  await page.goto(cfg.base + '/login', { waitUntil: 'load' });
  await page.fill('input[name="username"]', cfg.username);
  await page.fill('input[name="password"]', cfg.password);
  await Promise.all([
    page.waitForURL((u) => !u.pathname.endsWith('/login'), { timeout }),
    page.press('input[name="password"]', 'Enter'),
  ]);
  await page.goto(`${cfg.base}/ohif/viewer?StudyInstanceUIDs=${cfg.study}`, { waitUntil: 'load' });
  await page.waitForSelector('canvas', { timeout });
  // Wait until at least one frame has been fetched, then let it draw.
  const t0 = Date.now();
  while (frames === 0 && Date.now() - t0 < timeout) await page.waitForTimeout(250);
  await page.waitForTimeout(4000);
  await page.screenshot({ path: cfg.out });
  // Pixel statistics of the largest canvas, via a 2D copy of the screenshot.
  const shot = await page.screenshot({ type: 'png' });
  result.viewportStats = await page.evaluate(async (b64) => {
    const canvases = Array.from(document.querySelectorAll('canvas'));
    const big = canvases.sort((a, b) => b.clientWidth * b.clientHeight - a.clientWidth * a.clientHeight)[0];
    if (!big) return null;
    const r = big.getBoundingClientRect();
    const img = new Image();
    img.src = 'data:image/png;base64,' + b64;
    await img.decode();
    const c = document.createElement('canvas');
    c.width = Math.max(1, Math.floor(r.width)); c.height = Math.max(1, Math.floor(r.height));
    const g = c.getContext('2d');
    g.drawImage(img, r.left, r.top, r.width, r.height, 0, 0, c.width, c.height);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    const seen = new Set(); let nonBlack = 0;
    for (let i = 0; i < d.length; i += 4) {
      const y = (d[i] * 299 + d[i + 1] * 587 + d[i + 2] * 114) / 1000 | 0;
      seen.add(y); if (y > 16) nonBlack++;
    }
    return { width: c.width, height: c.height, distinct: seen.size, nonBlackFraction: nonBlack / (d.length / 4) };
  }, shot.toString('base64'));
  result.frames = frames;
  result.ok = frames > 0 && !!result.viewportStats && result.viewportStats.distinct > 16;
} catch (e) {
  errors.push(`fatal: ${e.message}`);
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);

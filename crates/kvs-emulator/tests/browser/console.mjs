// Drives the kvs-emulator console in headless Chromium and prints what it measured as one JSON
// line; tests/console_browser.rs asserts on it. Usage: node console.mjs CONSOLE_URL [MODE]
// (MODE: ON_DEMAND or LIVE). Chromium: CHROMIUM, default /usr/bin/chromium.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [url, mode = 'ON_DEMAND'] = process.argv.slice(2);
if (!url) {
  console.error('usage: node console.mjs CONSOLE_URL [ON_DEMAND|LIVE]');
  process.exit(2);
}
const profile = mkdtempSync(join(tmpdir(), 'kvs-console-chromium-'));
// A fresh profile directory per run (playwright passes it as --user-data-dir).
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--autoplay-policy=no-user-gesture-required',
  ],
});
const out = { pageErrors: [], failedRequests: [] };
try {
  const page = await browser.newPage();
  page.on('pageerror', (e) => out.pageErrors.push(String(e)));
  page.on('requestfailed', (r) => out.failedRequests.push(`${r.url()} ${r.failure()?.errorText}`));
  const sep = url.includes('?') ? '&' : '?';
  await page.goto(`${url}${sep}play=${mode}`, { waitUntil: 'load' });
  await page.waitForSelector('body[data-ready="true"]', { timeout: 15000 });
  // Playback: wait for the first frame, then watch currentTime move on.
  await page.waitForFunction(() => {
    const v = document.querySelector('#video');
    return v.readyState >= 2 && v.currentTime > 0;
  }, null, { timeout: 20000 }).catch(() => {});
  out.time0 = await page.evaluate(() => document.querySelector('#video').currentTime);
  await page.waitForTimeout(2000);
  out.time1 = await page.evaluate(() => document.querySelector('#video').currentTime);
  out.playerState = await page.textContent('#player-state');
  out.mse = await page.evaluate(() => window.MediaSource
    ? MediaSource.isTypeSupported('video/mp4; codecs="avc1.42c01e"') : false);
  // A captured frame: luma variance over the whole picture (a blank frame has ~0).
  Object.assign(out, await page.evaluate(() => {
    const v = document.querySelector('#video');
    const c = document.createElement('canvas');
    c.width = v.videoWidth;
    c.height = v.videoHeight;
    if (!c.width || !c.height) return { frameWidth: 0, frameHeight: 0, variance: 0 };
    const g = c.getContext('2d');
    g.drawImage(v, 0, 0);
    const px = g.getImageData(0, 0, c.width, c.height).data;
    let n = 0; let sum = 0; let sq = 0;
    for (let i = 0; i < px.length; i += 4) {
      const y = 0.299 * px[i] + 0.587 * px[i + 1] + 0.114 * px[i + 2];
      n += 1; sum += y; sq += y * y;
    }
    const mean = sum / n;
    return { frameWidth: c.width, frameHeight: c.height, variance: sq / n - mean * mean };
  }));
  // The timeline after the page's next refresh, thumbnails loaded.
  await page.waitForTimeout(2500);
  await page.evaluate(() => Promise.all([...document.querySelectorAll('#timeline img')]
    .map((i) => (i.complete ? null : new Promise((r) => { i.onload = r; i.onerror = r; })))));
  Object.assign(out, await page.evaluate(() => ({
    timelineFragments: document.querySelectorAll('#timeline .frag').length,
    fragmentCountLabel: Number(document.querySelector('#fragment-count').textContent),
    thumbnailsLoaded: [...document.querySelectorAll('#timeline img')]
      .filter((i) => i.naturalWidth > 0).length,
    ackRows: document.querySelectorAll('#acks tbody tr').length,
    errorRows: document.querySelectorAll('#acks tbody tr.error').length,
    streams: [...document.querySelectorAll('#streams li a')].map((a) => a.textContent),
  })));
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(out));

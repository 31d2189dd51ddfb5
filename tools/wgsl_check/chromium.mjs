// check.mjs's Chromium target: the browser's own WebGPU (Dawn and Tint as Chrome ships them) in
// headless Chromium, driven with playwright-core. Without a GPU (and with --disable-gpu, so
// that every machine gets the same adapter) Chromium's WebGPU runs on SwiftShader's Vulkan:
// Tint's SPIR-V back end, then SwiftShader compiles each pipeline at its creation. It offers the
// `subgroups` feature, which llvmpipe's GL ES does not, and 10 storage buffers a stage.
//
// page.html and pipeline_check.mjs are served from 127.0.0.1 (a secure context, which WebGPU
// needs; a file:// page may not import a module) by a server that serves those two files only.

import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

/** Where Debian's package (`apt-get install chromium`) puts the browser. */
export const DEFAULT_CHROMIUM = '/usr/bin/chromium';

// WebGPU is off in Chromium on Linux without --enable-unsafe-webgpu (requestAdapter gives null);
// the rest keep a headless run as root on a closed network quiet and fast.
const FLAGS = [
  '--enable-unsafe-webgpu',
  '--disable-gpu',
  '--no-sandbox',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

// Dumps sent to the page at a time, and how long one batch may take (the largest kernels take
// up to ~2 s each on SwiftShader on a loaded 2-core machine; a hang must end the run, not CI's
// clock).
const BATCH = 8;
const BATCH_TIMEOUT_MS = 180_000;

const SERVED = { '/page.html': 'text/html', '/pipeline_check.mjs': 'text/javascript' };

function serve() {
  const server = http.createServer((req, res) => {
    const { pathname } = new URL(req.url, 'http://127.0.0.1');
    const type = SERVED[pathname];
    if (!type) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': type, 'cache-control': 'no-store' });
    fs.createReadStream(path.join(here, pathname)).pipe(res);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Opens Chromium at `executable` on page.html with a device requesting the `wanted` features.
 * Returns the target ({ description, features, limits, check(dumps), close() }),
 * or { unavailable: why } where there is no browser or no WebGPU adapter in it.
 */
export async function openChromium(executable, wanted) {
  if (!fs.existsSync(executable)) {
    return { unavailable: `no Chromium at ${executable} (apt-get install chromium, or --chromium PATH)` };
  }
  const { chromium } = await import('playwright-core');
  const server = await serve();
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'wgsl-check-chromium-'));
  const pageErrors = [];
  let context = null;
  const close = async () => {
    await context?.close().catch(() => {});
    server.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  };
  try {
    context = await chromium.launchPersistentContext(userDataDir, { executablePath: executable, headless: true, args: FLAGS });
    const page = context.pages()[0] ?? (await context.newPage());
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(m.text()); });
    await page.goto(`http://127.0.0.1:${server.address().port}/page.html`);
    if (!(await page.evaluate(() => typeof window.wgslCheck === 'object'))) {
      throw new Error(`page.html did not load its checker: ${pageErrors.join('; ') || 'no message'}`);
    }
    const opened = await withTimeout(page.evaluate((f) => window.wgslCheck.open(f), wanted), BATCH_TIMEOUT_MS, 'opening the device');
    const [minSize, maxSize] = opened.subgroupSizes;
    return {
      description: `${opened.description}${opened.isFallbackAdapter ? ' (fallback adapter)' : ''}, Chromium ` +
        `${context.browser()?.version() ?? '?'}${minSize ? `, subgroups of ${minSize}–${maxSize}` : ''}`,
      features: new Set(opened.features),
      limits: opened.limits,
      async check(dumps) {
        const reports = [];
        for (let i = 0; i < dumps.length; i += BATCH) {
          // The fields pipeline_check.mjs reads, and no more, cross into the page.
          const batch = dumps.slice(i, i + BATCH).map(({ label, family, entry_point, constants, bindings, code }) =>
            ({ label, family, entry_point, constants, bindings, code }));
          reports.push(...(await withTimeout(page.evaluate((d) => window.wgslCheck.check(d), batch), BATCH_TIMEOUT_MS,
            `Chromium checking ${batch[0].label} and the ${batch.length - 1} dumps after it`)));
        }
        return reports;
      },
      close,
    };
  } catch (e) {
    await close();
    const why = e.message.split('\n')[0];
    return { unavailable: `Chromium at ${executable} gave no WebGPU device: ${why}` };
  }
}

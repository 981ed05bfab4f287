// A real browser: Debian's Chromium, headless, driven by playwright-core. Every page the browser
// stops on is photographed into e2e/artifacts/; every page Lanyard serves is checked with axe-core.
import { mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

import { chromium } from 'playwright-core';

import { artifacts } from './lanyard.js';

const require = createRequire(import.meta.url);
const axeSource = require('axe-core').source;

export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

export async function launchBrowser() {
  mkdirSync(path.join(artifacts, 'screenshots'), { recursive: true });
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
}

/** Every axe check run, for the report and the final assertion. */
export const axeRuns = [];
let shots = 0;

/** A screenshot named after the step; with `axe`, the page is checked too (Lanyard's pages). */
export async function snap(page, label, { axe = false, prefix = '' } = {}) {
  shots += 1;
  const name = `${String(shots).padStart(3, '0')}-${prefix}${label}`.replace(/[^a-zA-Z0-9_.-]+/g, '-');
  await page.screenshot({ path: path.join(artifacts, 'screenshots', `${name}.png`), fullPage: true });
  if (!axe) return null;
  // Evaluated over the DevTools protocol: Lanyard's CSP (default-src 'self') stays in force.
  await page.evaluate(axeSource);
  const result = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map((n) => n.html) }));
  });
  const run = { screenshot: `${name}.png`, url: redact(page.url()), violations: result };
  axeRuns.push(run);
  return run;
}

/** URLs in the report without codes or tokens. */
function redact(u) {
  const url = new URL(u);
  for (const k of ['code', 'state', 'token', 'invitation', 'id_token_hint']) {
    if (url.searchParams.has(k)) url.searchParams.set(k, '…');
  }
  return url.href;
}

export function writeAxeReport() {
  writeFileSync(path.join(artifacts, 'axe.json'), JSON.stringify(axeRuns, null, 2));
  return axeRuns;
}

/**
 * Opens `startUrl` in a fresh browser profile and, whenever it stops at the organization's
 * provider, signs in there as `login` (login page, then consent). Returns where the browser
 * ended: { page, context, url, errorCode (Lanyard's page code, if any) }.
 */
export async function browse(browser, startUrl, { login, label, lanyard, upstream, route }) {
  const context = await browser.newContext();
  const page = await context.newPage();
  if (route) await route(page);
  await page.goto(startUrl);
  let prefilled = null;
  for (let step = 0; step < 4 && upstream && page.url().startsWith(new URL(upstream.issuer).origin); step += 1) {
    if (await page.locator('input[name="login"]').count()) {
      await snap(page, `${label}-provider-login`, { prefix: `${upstream.kind}-` });
      prefilled = await page.inputValue('input[name="login"]');
      await page.fill('input[name="login"]', login);
      await page.fill('input[name="password"]', 'any password');
      await Promise.all([page.waitForNavigation(), page.click('button[type="submit"]')]);
    } else if (await page.locator('input[name="prompt"][value="consent"]').count()) {
      await snap(page, `${label}-provider-consent`, { prefix: `${upstream.kind}-` });
      await Promise.all([page.waitForNavigation(), page.click('button[type="submit"]')]);
    } else {
      break;
    }
  }
  await page.waitForLoadState('load');
  const url = page.url();
  const onLanyard = url.startsWith(lanyard.issuer);
  const errorCode = onLanyard ? await page.locator('main[data-error]').getAttribute('data-error').catch(() => null) : null;
  const axe = await snap(page, label, { axe: onLanyard });
  return { page, context, url, errorCode, axe, prefilled, text: await page.locator('body').innerText() };
}

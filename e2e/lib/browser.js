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
  url.pathname = url.pathname.replace(/^\/invite\/.+/, '/invite/…');
  for (const k of ['code', 'state', 'token', 'invitation', 'id_token_hint']) {
    if (url.searchParams.has(k)) url.searchParams.set(k, '…');
  }
  return url.href;
}

export function writeAxeReport() {
  writeFileSync(path.join(artifacts, 'axe.json'), JSON.stringify(axeRuns, null, 2));
  return axeRuns;
}

/** The hosted page the browser shows, if it is one of Lanyard's (`data-page`), with its text and buttons. */
async function hostedPage(page, lanyard) {
  if (!page.url().startsWith(lanyard.issuer)) return null;
  const kind = await page.locator('main[data-page]').getAttribute('data-page', { timeout: 1000 }).catch(() => null);
  if (!kind) return null;
  return {
    kind,
    url: page.url(),
    title: await page.title(),
    text: await page.locator('main').innerText(),
    buttons: await page.locator('main button').allInnerTexts(),
  };
}

/**
 * Opens `startUrl` in a fresh browser profile (or `context`) and walks the sign-in: at
 * Lanyard's invitation landing page it clicks `invitationButton`, at email-first sign-in it
 * types `email`, at the organization picker it picks `pick` (each page photographed and checked
 * with axe first; `beforeSubmit(page, seen)` may act on it before the click); at the
 * organization's provider it signs in as `login` (login page, then consent). Returns where the
 * browser ended: { page, context, url, errorCode (Lanyard's page code, if any), seen (the hosted
 * pages passed, with their text, buttons and axe result) }.
 */
export async function browse(browser, startUrl, {
  login, label, lanyard, upstream, route, context: given, invitationButton, email, pick, beforeSubmit,
}) {
  const context = given ?? await browser.newContext();
  const page = await context.newPage();
  if (route) await route(page);
  await page.goto(startUrl);
  let prefilled = null;
  const seen = [];
  const submit = async (button) => {
    await Promise.all([page.waitForNavigation(), button.click()]);
    await page.waitForLoadState('load');
  };
  for (let step = 0; step < 8; step += 1) {
    const hosted = await hostedPage(page, lanyard);
    const act = hosted && { invitation: invitationButton, sign_in: email, picker: pick }[hosted.kind];
    if (act) {
      hosted.axe = await snap(page, `${label}-${hosted.kind.replace('_', '-')}`, { axe: true });
      seen.push(hosted);
      if (beforeSubmit) await beforeSubmit(page, hosted);
      if (hosted.kind === 'sign_in') await page.fill('input[name="email"]', email);
      await submit(page.getByRole('button', { name: hosted.kind === 'sign_in' ? 'Continue' : act, exact: true }));
    } else if (upstream && page.url().startsWith(new URL(upstream.issuer).origin)) {
      if (await page.locator('input[name="login"]').count()) {
        await snap(page, `${label}-provider-login`, { prefix: `${upstream.kind}-` });
        prefilled = await page.inputValue('input[name="login"]');
        await page.fill('input[name="login"]', login);
        await page.fill('input[name="password"]', 'any password');
        await submit(page.locator('button[type="submit"]'));
      } else if (await page.locator('input[name="prompt"][value="consent"]').count()) {
        await snap(page, `${label}-provider-consent`, { prefix: `${upstream.kind}-` });
        await submit(page.locator('button[type="submit"]'));
      } else {
        break;
      }
    } else {
      break;
    }
  }
  await page.waitForLoadState('load');
  const url = page.url();
  const onLanyard = url.startsWith(lanyard.issuer);
  const errorCode = onLanyard ? await page.locator('main[data-error]').getAttribute('data-error', { timeout: 1000 }).catch(() => null) : null;
  const axe = await snap(page, label, { axe: onLanyard });
  return { page, context, url, errorCode, axe, prefilled, seen, text: await page.locator('body').innerText() };
}

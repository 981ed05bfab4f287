// Lanyard's OpenID Provider against real peers: `lanyard serve` (the built binary), oidc-provider
// as each organization's identity provider (Google Workspace, Entra ID, Okta), openid-client as
// the product's application, Authlib as a second one, and Chromium as the person's browser.
// Each backend (embedded SQLite; Postgres with Redis) gets a fresh server and tells the story.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { after, before, describe, test } from 'node:test';

import { startApp } from '../lib/app.js';
import { browse, launchBrowser, snap, writeAxeReport } from '../lib/browser.js';
import { artifacts, closeGrpc, freePort, repo, serversAnswer, startLanyard } from '../lib/lanyard.js';
import { startUpstream } from '../lib/upstream.js';

const CI = process.env.CI === 'true' || process.env.CI === '1';
mkdirSync(artifacts, { recursive: true });

const people = {
  google: {
    'it@acme.com': { email: 'it@acme.com', name: 'Ida Tech' },
    'bob@acme.com': { email: 'bob@acme.com', name: 'Bob Colleague' },
    'outsider@acme.com': { email: 'outsider@acme.com', name: 'Olga Outsider' },
    'mallory@acme.com': { email: 'mallory@acme.com', name: 'Mallory' },
  },
  // Entra ID hands out addresses as the directory spells them.
  entra: { 'admin@globex.com': { email: 'Admin@Globex.com', name: 'Gloria Admin' } },
  okta: {
    'peter@initech.com': { email: 'peter@initech.com', name: 'Peter Gibbons' },
    // initech's provider asserting an address of acme's verified domain.
    'impostor': { email: 'it@acme.com', name: 'Not Ida' },
  },
};

const denied = (answer) => answer.allowed === false && answer.reason !== 'DECISION_ALLOWED';

async function expectOAuthError(promise, error) {
  await assert.rejects(promise, (e) => {
    const got = e.error ?? e.cause?.error ?? e.code;
    assert.equal(got, error, `${e.name}: ${e.message}`);
    return true;
  });
}

// E2E_BACKENDS narrows the run while developing (`sqlite`); CI runs both.
const backends = (process.env.E2E_BACKENDS || 'sqlite,postgres').split(',').map((b) => b.trim());
if (CI && backends.length < 2) throw new Error('CI=true runs every backend: unset E2E_BACKENDS');

for (const backend of backends) {
  describe(`OpenID Provider with real peers (${backend})`, { timeout: 600_000 }, () => {
    const s = {};
    let available = true;

    before(async () => {
      if (backend === 'postgres') {
        available = await serversAnswer();
        if (!available && CI) throw new Error('Postgres or Redis does not answer on 127.0.0.1 and CI=true: nothing may be skipped');
      }
      if (!available) return;
      const httpPort = await freePort();
      const callback = `http://127.0.0.1:${httpPort}/oauth2/callback`;
      s.app = await startApp();
      s.google = await startUpstream({ kind: 'google', callback, hostedDomain: 'acme.com', accounts: people.google });
      s.entra = await startUpstream({ kind: 'entra', callback, tenantId: randomUUID(), accounts: people.entra });
      s.okta = await startUpstream({ kind: 'okta', callback, accounts: people.okta });
      // Invitation emails carry Lanyard's default link, its landing page; the landing page and
      // email-first sign-in hand the browser to the application's login initiation route.
      s.lanyard = await startLanyard({ backend, httpPort, name: backend, applicationLoginUrl: s.app.loginInitiationUri });
      s.browser = await launchBrowser();

      // The operator's side, with the CLI: organizations, verified domains, connections, the
      // application.
      const cli = s.lanyard.cli;
      const org = async (slug, name, domain) =>
        cli(['org', 'create', '--slug', slug, '--name', name, '--seats', '25', '--domain', domain, '--verify-domains']);
      const sso = async (slug, up, extra) =>
        cli(['sso', 'create', '--org', slug, '--kind', extra.kind, '--issuer', up.issuer, '--client-id', up.clientId,
          '--client-secret-file', '-', ...extra.args], { stdin: `${up.clientSecret}\n` });
      s.acme = await org('acme', 'Acme Corp', 'acme.com');
      await sso('acme', s.google, { kind: 'google-workspace', args: ['--hosted-domain', 'acme.com'] });
      s.globex = await org('globex', 'Globex', 'globex.com');
      await sso('globex', s.entra, { kind: 'azure-ad', args: ['--tenant-id', new URL(s.entra.issuer).pathname.split('/')[1]] });
      s.initech = await org('initech', 'Initech', 'initech.com');
      await sso('initech', s.okta, { kind: 'okta', args: [] });
      s.initrode = await org('initrode', 'Initrode', 'initrode.com');
      await sso('initrode', s.okta, { kind: 'okta', args: [] });
      await cli(['member', 'add', '--org', 'globex', '--email', 'admin@globex.com', '--role', 'admin']);
      await cli(['member', 'add', '--org', 'initech', '--email', 'peter@initech.com', '--role', 'member']);
      await cli(['member', 'add', '--org', 'initrode', '--email', 'peter@initech.com', '--role', 'admin', '--waive-domain-check']);
      const client = await cli(['client', 'register', '--name', 'Product dashboard', '--redirect-uri', s.app.redirectUri,
        '--post-logout-redirect-uri', s.app.postLogoutUri]);
      s.clientId = client.client_id;
      await s.app.connect(s.lanyard.issuer, client.client_id, client.client_secret);
    });

    after(async () => {
      await s.browser?.close();
      closeGrpc();
      await s.lanyard?.stop();
      for (const up of [s.google, s.entra, s.okta, s.app]) await up?.stop();
      writeAxeReport();
    });

    const it = (name, fn) => test(name, async (t) => {
      if (!available) { t.skip('Postgres or Redis does not answer on 127.0.0.1'); return; }
      await fn(t);
    });

    /**
     * The browser signs in from `startUrl` (`options`: what to do on Lanyard's hosted pages, a
     * browser `context` to keep); returns the application's result of that callback.
     */
    async function signIn(startUrl, login, upstream, label, options = {}) {
      const before = s.app.results.length;
      const end = await browse(s.browser, startUrl, { login, label: `${backend}-${label}`, lanyard: s.lanyard, upstream, ...options });
      if (options.context) await end.page.close(); else await end.context.close();
      return { end, result: s.app.results.length > before ? s.app.results.at(-1) : null };
    }

    async function signedIn(startUrl, login, upstream, label, options) {
      const { end, result } = await signIn(startUrl, login, upstream, label, options);
      assert.ok(result && !result.error, `${label}: ended at ${end.url} (${end.errorCode ?? ''}) ${JSON.stringify(result)}`);
      return { ...result, end };
    }

    const GOOGLE_BUTTON = 'Continue with Google Workspace';

    /** The status of the invitations of `org` to `email`. */
    async function invitationStatus(org, email) {
      const listed = await s.lanyard.cli(['invitation', 'list', '--org', org]);
      const all = Array.isArray(listed) ? listed : listed.invitations;
      return all.filter((i) => i.email === email).map((i) => i.status);
    }

    /** A form POST from inside `page` (its cookies, no CSRF field unless given): status and error code. */
    const postFrom = (page, action, fields) => page.evaluate(async ([to, body]) => {
      const r = await fetch(to, {
        method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(body), redirect: 'manual',
      });
      return { status: r.status, error: r.headers.get('x-lanyard-error'), cookie: r.headers.has('set-cookie') };
    }, [action, fields]);

    const hasCookie = async (context, name) => (await context.cookies()).some((c) => c.name === name);

    const loginUrl = (params) => `${s.app.base}/login?${new URLSearchParams(params)}`;

    it('discovery names the endpoints, S256 only, and the issuer in responses', async () => {
      const meta = s.app.config.serverMetadata();
      assert.equal(meta.issuer, s.lanyard.issuer);
      assert.deepEqual(meta.code_challenge_methods_supported, ['S256']);
      for (const e of ['authorization_endpoint', 'token_endpoint', 'jwks_uri', 'revocation_endpoint', 'userinfo_endpoint', 'end_session_endpoint']) {
        assert.ok(meta[e]?.startsWith(s.lanyard.issuer), `${e}: ${meta[e]}`);
      }
      assert.equal(meta.authorization_response_iss_parameter_supported, true);
    });

    it('the operator invites it@acme.com; the email\'s link opens the landing page, which signs them in as owner of acme', async () => {
      await s.lanyard.cli(['invitation', 'create', '--org', 'acme', '--email', 'it@acme.com', '--role', 'owner']);
      const mail = await s.lanyard.waitForMail('it@acme.com');
      assert.match(mail.subject, /Acme Corp/);
      // The default link: Lanyard's own landing page.
      assert.ok(mail.link?.startsWith(`${s.lanyard.issuer}/invite/`), `link: ${mail.link}`);
      s.invitationLink = mail.link;

      // A form without this browser's CSRF token is refused, and nothing happens.
      const context = await s.browser.newContext();
      try {
        const page = await context.newPage();
        await page.goto(mail.link);
        const connection = await page.locator('input[name="connection"]').first().inputValue();
        const initiations = s.app.initiations.length;
        const wrong = await postFrom(page, mail.link, { csrf: 'A'.repeat(43), connection });
        assert.deepEqual([wrong.status, wrong.error], [403, 'form_expired'], 'a CSRF field that is not this browser\'s');
        await page.evaluate(() => { for (const i of document.querySelectorAll('input[name="csrf"]')) i.remove(); });
        const [response] = await Promise.all([page.waitForNavigation(), page.getByRole('button', { name: GOOGLE_BUTTON }).click()]);
        assert.equal(response.status(), 403);
        assert.equal(await page.locator('main[data-error]').getAttribute('data-error'), 'form_expired');
        await snap(page, `${backend}-invitation-without-csrf`, { axe: true });
        assert.equal(await hasCookie(context, '__Host-lanyard-invitation'), false, 'no invitation bound to the browser');
        assert.equal(s.app.initiations.length, initiations, 'the application was not asked to sign anyone in');
        assert.deepEqual(await invitationStatus('acme', 'it@acme.com'), ['pending']);
      } finally {
        await context.close();
      }

      // Someone else at acme's provider who got hold of the link: refused, the invitation kept.
      const stolen = await signIn(mail.link, 'mallory@acme.com', s.google, 'invitation-other-person', { invitationButton: GOOGLE_BUTTON });
      assert.equal(stolen.result, null, JSON.stringify(stolen.result));
      assert.equal(stolen.end.errorCode, 'sign_in_refused', stolen.end.url);
      assert.deepEqual(await invitationStatus('acme', 'it@acme.com'), ['pending']);

      const result = await signedIn(mail.link, 'it@acme.com', s.google, 'invited-owner', { invitationButton: GOOGLE_BUTTON });
      // The landing page: the organization's display name, the invited email, the provider's button.
      const [landing, ...rest] = result.end.seen;
      assert.equal(landing?.kind, 'invitation', JSON.stringify(result.end.seen));
      assert.deepEqual(rest, [], 'no other Lanyard page on the way');
      assert.match(landing.text, /Acme Corp/);
      assert.match(landing.text, /it@acme\.com/);
      assert.deepEqual(landing.buttons, [GOOGLE_BUTTON]);
      assert.match(landing.title, /Acme Corp/);
      // From the page to the application's login route (iss, login_hint), which named no
      // organization; the hint reached the provider.
      assert.deepEqual(s.app.initiations.at(-1), { loginHint: 'it@acme.com' });
      assert.equal(result.end.prefilled, 'it@acme.com');
      assert.ok(result.url.startsWith(s.app.redirectUri), result.url);
      const { claims, tokens } = result;
      assert.equal(claims.iss, s.lanyard.issuer);
      assert.equal(claims.aud, s.clientId);
      assert.equal(claims.org_id, s.acme.organization_id);
      assert.equal(claims.org_slug, 'acme');
      assert.deepEqual(claims.roles, ['owner']);
      assert.equal(claims.email, 'it@acme.com');
      assert.ok(claims.nonce, 'the ID token carries the application nonce (openid-client compared it)');
      const authz = await s.lanyard.authorize(tokens.access_token, 'members:write');
      assert.equal(authz.allowed, true, JSON.stringify(authz));
      assert.equal(authz.principal.organization_slug, 'acme');
      const info = await s.app.userinfo(tokens.access_token, claims.sub);
      assert.equal(info.email, 'it@acme.com');
      assert.deepEqual(info.roles, ['owner']);
      assert.deepEqual(await invitationStatus('acme', 'it@acme.com'), ['accepted']);
      s.owner = { claims, tokens };
      // The link is single use: the landing page is the neutral one now, and an application
      // sending the used token itself (`invitation=`) is refused.
      const again = await browse(s.browser, mail.link, { label: `${backend}-invitation-used`, lanyard: s.lanyard });
      await again.context.close();
      assert.equal(again.errorCode, 'invitation_invalid', again.url);
      const token = new URL(mail.link).pathname.split('/').at(-1);
      const replay = await signIn(loginUrl({ invitation: token }), 'it@acme.com', s.google, 'invitation-used-by-application');
      assert.equal(replay.result?.error, 'access_denied', JSON.stringify(replay.result));
    });

    it('a used link and an unknown link show the same neutral page; its form needs the CSRF token', async () => {
      const unknown = `${s.lanyard.issuer}/invite/${randomBytes(32).toString('base64url')}`;
      const answers = [];
      for (const link of [s.invitationLink, unknown, `${s.lanyard.issuer}/invite/not%20a%20token`]) {
        const r = await fetch(link);
        answers.push({ status: r.status, error: r.headers.get('x-lanyard-error'), body: await r.text() });
      }
      assert.equal(answers[0].status, 404);
      assert.equal(answers[0].error, 'invitation_invalid');
      assert.deepEqual(answers[1], answers[0], 'an unknown link: the same bytes');
      assert.deepEqual(answers[2], answers[0], 'a malformed link: the same bytes');
      for (const [label, link] of [['invitation-neutral-used', s.invitationLink], ['invitation-neutral-unknown', unknown]]) {
        const end = await browse(s.browser, link, { label: `${backend}-${label}`, lanyard: s.lanyard });
        await end.context.close();
        assert.equal(end.errorCode, 'invitation_invalid', label);
        assert.match(end.text, /cannot be used/);
        assert.ok(end.axe, `${label}: checked with axe`);
      }
      // Every form of the hosted pages refuses a post without the CSRF pair, before anything else.
      for (const [to, fields] of [
        [unknown, { connection: randomUUID() }],
        [`${s.lanyard.issuer}/sign-in`, { email: 'it@acme.com' }],
        [`${s.lanyard.issuer}/oauth2/select`, { organization: s.acme.organization_id }],
      ]) {
        const r = await fetch(to, { method: 'POST', body: new URLSearchParams(fields), redirect: 'manual' });
        assert.deepEqual([r.status, r.headers.get('x-lanyard-error'), r.headers.get('location')], [403, 'form_expired', null], to);
      }
    });

    it('the admin adds a colleague with their own token; the colleague signs in as member', async () => {
      const fresh = await s.app.refresh(s.owner.tokens.refresh_token);
      assert.notEqual(fresh.refresh_token, s.owner.tokens.refresh_token, 'refresh tokens rotate');
      s.owner.tokens = fresh;
      const added = await s.lanyard.cli(['member', 'add', '--org', 'acme', '--email', 'bob@acme.com', '--role', 'member'],
        { apiKey: fresh.access_token });
      assert.equal(added.email, 'bob@acme.com');
      // The application signs in without naming an organization: email-first sign-in asks.
      const { end, result } = await signIn(loginUrl({}), 'bob@acme.com', s.google, 'colleague', {
        email: 'bob@acme.com',
        beforeSubmit: async (page, hosted) => {
          if (hosted.kind !== 'sign_in') return;
          const forged = await postFrom(page, '/sign-in', { email: 'bob@acme.com', ...Object.fromEntries(new URL(page.url()).searchParams) });
          assert.deepEqual([forged.status, forged.error], [403, 'form_expired'], 'the form without its CSRF field');
        },
      });
      assert.ok(result && !result.error, JSON.stringify(result));
      assert.deepEqual(end.seen.map((p) => p.kind), ['sign_in']);
      assert.ok(end.seen[0].url.startsWith(`${s.lanyard.issuer}/sign-in?`), end.seen[0].url);
      assert.match(end.seen[0].text, /work email/i);
      assert.equal(end.prefilled, 'bob@acme.com', 'the email reached the provider as login_hint');
      const { claims, tokens } = result;
      assert.equal(claims.org_slug, 'acme');
      assert.deepEqual(claims.roles, ['member']);
      assert.equal((await s.lanyard.authorize(tokens.access_token)).allowed, true);
      s.bob = { claims, tokens };
    });

    it('the admin removes the colleague: their token is denied at once and their next sign-in is refused', async () => {
      await s.lanyard.cli(['member', 'remove', '--org', 'acme', '--user', s.bob.claims.sub], { apiKey: s.owner.tokens.access_token });
      const answer = await s.lanyard.authorize(s.bob.tokens.access_token);
      assert.ok(denied(answer), JSON.stringify(answer));
      await expectOAuthError(s.app.refresh(s.bob.tokens.refresh_token), 'invalid_grant');
      await assert.rejects(s.app.userinfo(s.bob.tokens.access_token, s.bob.claims.sub), 'userinfo refuses the token too');
      const { end, result } = await signIn(loginUrl({ organization: 'acme' }), 'bob@acme.com', s.google, 'removed-colleague');
      assert.equal(result, null, 'the application got nothing');
      assert.equal(end.errorCode, 'not_a_member', end.url);
      assert.match(end.text, /not a member/i);
    });

    it('email-first sign-in: an email no organization verified gets one clear page', async () => {
      for (const [label, email] of [['no-organization', 'someone@unknown-company.example'], ['no-organization-lookalike', 'it@acme.com.example']]) {
        const { end, result } = await signIn(loginUrl({}), email, s.google, `sign-in-${label}`, { email });
        assert.equal(result, null);
        assert.equal(end.errorCode, 'no_organization', end.url);
        assert.ok(end.axe);
      }
    });

    it('someone of a verified domain who is not a member is refused on a page', async () => {
      const { end, result } = await signIn(loginUrl({ organization: 'acme' }), 'outsider@acme.com', s.google, 'not-a-member');
      assert.equal(result, null);
      assert.equal(end.errorCode, 'not_a_member');
    });

    it('an Entra ID admin of globex signs in (tid, oid, the tenant issuer)', async () => {
      // Email-first sign-in opened directly (no application): the email's verified domain names
      // globex, the page hands the browser to the application's login route with the hint, and
      // the application's request (no organization, the hint) goes straight to globex's provider.
      const { claims, tokens, end } = await signedIn(`${s.lanyard.issuer}/sign-in`, 'admin@globex.com', s.entra, 'entra-admin', { email: 'admin@globex.com' });
      assert.deepEqual(end.seen.map((p) => p.kind), ['sign_in']);
      assert.deepEqual(s.app.initiations.at(-1), { loginHint: 'admin@globex.com' });
      assert.equal(claims.org_slug, 'globex');
      assert.deepEqual(claims.roles, ['admin']);
      assert.equal(claims.email, 'admin@globex.com');
      assert.equal((await s.lanyard.authorize(tokens.access_token, 'members:read')).allowed, true);
    });

    it('a person in two organizations signs into one, then switches with a refresh', async () => {
      const { claims, tokens } = await signedIn(loginUrl({ organization: 'initech' }), 'peter@initech.com', s.okta, 'okta-two-orgs');
      assert.equal(claims.org_slug, 'initech');
      assert.deepEqual(claims.roles, ['member']);
      const switched = await s.app.refresh(tokens.refresh_token, { organization: 'initrode' });
      const idc = switched.claims();
      assert.equal(idc.org_slug, 'initrode');
      assert.deepEqual(idc.roles, ['admin']);
      assert.equal(idc.sub, claims.sub);
      const authz = await s.lanyard.authorize(switched.access_token, 'members:write');
      assert.equal(authz.allowed, true, JSON.stringify(authz));
      assert.equal(authz.principal.organization_slug, 'initrode');
      // Not a member of acme: refused, the refresh token still good.
      await expectOAuthError(s.app.refresh(switched.refresh_token, { organization: 'acme' }), 'invalid_grant');
      const back = await s.app.refresh(switched.refresh_token, { organization: s.initech.organization_id });
      assert.equal(back.claims().org_slug, 'initech');
      s.peter = { claims, tokens: back, used: switched.refresh_token };
    });

    it('a used refresh token is refused and ends the session; revoke ends a session', async () => {
      await expectOAuthError(s.app.refresh(s.peter.used), 'invalid_grant');
      await expectOAuthError(s.app.refresh(s.peter.tokens.refresh_token), 'invalid_grant');
      assert.ok(denied(await s.lanyard.authorize(s.peter.tokens.access_token)));

      const { tokens } = await signedIn(loginUrl({ organization: 'initech' }), 'peter@initech.com', s.okta, 'okta-again');
      assert.equal((await s.lanyard.authorize(tokens.access_token)).allowed, true);
      await s.app.revoke(tokens.refresh_token, 'refresh_token');
      await expectOAuthError(s.app.refresh(tokens.refresh_token), 'invalid_grant');
      const answer = await s.lanyard.authorize(tokens.access_token);
      assert.ok(denied(answer), JSON.stringify(answer));
    
      // Revoking the access token (RFC 7009) ends its session as well.
      const third = await signedIn(loginUrl({ organization: 'initech' }), 'peter@initech.com', s.okta, 'okta-revoke-access');
      await s.app.revoke(third.tokens.access_token, 'access_token');
      assert.ok(denied(await s.lanyard.authorize(third.tokens.access_token)));
      await expectOAuthError(s.app.refresh(third.tokens.refresh_token), 'invalid_grant');
    });

    it('a person in two organizations picks one at sign-in (prompt=select_account), then switches with the picker', async () => {
      const context = await s.browser.newContext();
      try {
        // No organization named, select_account: email-first, the provider, then the picker.
        const first = await signedIn(loginUrl({ prompt: 'select_account' }), 'peter@initech.com', s.okta, 'picker', {
          context, email: 'peter@initech.com', pick: 'Initrode',
        });
        assert.deepEqual(first.end.seen.map((p) => p.kind), ['sign_in', 'picker']);
        const picker = first.end.seen[1];
        assert.deepEqual([...picker.buttons].sort(), ['Initech', 'Initrode'], 'both organizations offered');
        assert.match(picker.text, /Choose an organization/);
        assert.equal(first.claims.org_slug, 'initrode');
        assert.deepEqual(first.claims.roles, ['admin']);
        const authz = await s.lanyard.authorize(first.tokens.access_token, 'members:write');
        assert.equal(authz.allowed, true, JSON.stringify(authz));
        assert.equal(authz.principal.organization_slug, 'initrode');

        // The product's "switch organization" link: select_account again; the provider's session
        // answers, the picker asks. A pick without the CSRF field changes nothing first.
        const second = await signedIn(loginUrl({ organization: 'initrode', prompt: 'select_account' }), 'peter@initech.com', s.okta, 'picker-switch', {
          context,
          pick: 'Initech',
          beforeSubmit: async (page, hosted) => {
            if (hosted.kind !== 'picker') return;
            const organization = await page.locator('input[name="organization"]').first().inputValue();
            const forged = await postFrom(page, '/oauth2/select', { organization });
            assert.deepEqual([forged.status, forged.error], [403, 'form_expired'], 'a pick without its CSRF field');
          },
        });
        assert.deepEqual(second.end.seen.map((p) => p.kind), ['picker']);
        assert.equal(second.claims.org_slug, 'initech');
        assert.deepEqual(second.claims.roles, ['member']);
        assert.equal(second.claims.sub, first.claims.sub);
        const back = await s.lanyard.authorize(second.tokens.access_token);
        assert.equal(back.allowed, true, JSON.stringify(back));
        assert.equal(back.principal.organization_slug, 'initech');
      } finally {
        await context.close();
      }
    });

    it('logout with an ID token hint ends the session and returns to the application', async () => {
      const { tokens } = await signedIn(loginUrl({ organization: 'globex' }), 'admin@globex.com', s.entra, 'before-logout');
      const url = s.app.logoutUrl({ id_token_hint: tokens.id_token, post_logout_redirect_uri: s.app.postLogoutUri, state: 'bye' });
      const end = await browse(s.browser, url.href, { label: `${backend}-logout-return`, lanyard: s.lanyard });
      await end.context.close();
      assert.ok(end.url.startsWith(s.app.postLogoutUri), end.url);
      assert.ok(denied(await s.lanyard.authorize(tokens.access_token)));
      // Without a return address: Lanyard's own page.
      const plain = await browse(s.browser, `${s.lanyard.issuer}/oauth2/logout`, { label: `${backend}-signed-out`, lanyard: s.lanyard });
      await plain.context.close();
      assert.equal(plain.errorCode, 'signed_out');
      // A return address the application did not register: a page, no redirect.
      const odd = await browse(s.browser, s.app.logoutUrl({ post_logout_redirect_uri: `${s.app.base}/elsewhere` }).href,
        { label: `${backend}-logout-unregistered`, lanyard: s.lanyard });
      await odd.context.close();
      assert.equal(odd.errorCode, 'post_logout_redirect_uri_mismatch');
    });

    it('Authlib (Python) signs in with PKCE, refreshes, and sees reuse refused', async (t) => {
      const python = process.env.E2E_PYTHON;
      if (!python) {
        if (CI) throw new Error('E2E_PYTHON is not set (scripts/e2e makes the Authlib virtualenv)');
        t.skip('E2E_PYTHON is not set: run scripts/e2e');
        return;
      }
      const port = await freePort();
      const registered = await s.lanyard.cli(['client', 'register', '--name', 'Authlib app', '--public',
        '--redirect-uri', `http://127.0.0.1:${port}/callback`]);
      const child = spawn(python, [path.join(repo, 'e2e', 'authlib', 'client.py'), '--issuer', s.lanyard.issuer,
        '--client-id', registered.client_id, '--port', String(port), '--organization', 'globex'],
      { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d) => { stderr += d; });
      const lines = readline.createInterface({ input: child.stdout });
      const outputs = [];
      const exited = new Promise((resolve) => child.on('close', resolve));
      const first = await new Promise((resolve, reject) => {
        lines.on('line', (l) => { outputs.push(JSON.parse(l)); if (outputs.length === 1) resolve(outputs[0]); });
        child.on('close', () => reject(new Error(`authlib client exited early: ${stderr}`)));
      });
      assert.ok(first.authorize_url?.startsWith(`${s.lanyard.issuer}/oauth2/authorize?`), JSON.stringify(first));
      const end = await browse(s.browser, first.authorize_url, { login: 'admin@globex.com', label: `${backend}-authlib`, lanyard: s.lanyard, upstream: s.entra });
      await end.context.close();
      const code = await exited;
      const last = outputs.at(-1);
      assert.equal(code, 0, `${JSON.stringify(last)} ${stderr}`);
      assert.equal(last.ok, true);
      assert.equal(last.claims.org_slug, 'globex');
      assert.deepEqual(last.claims.roles, ['admin']);
      assert.equal(last.userinfo.email, 'admin@globex.com');
      assert.equal(last.reuse_status, 400);
      assert.equal(last.reuse_error, 'invalid_grant');
      assert.ok(denied(await s.lanyard.authorize(last.access_token)), 'reuse ended the Authlib session');
    });

    // Attacks, through the same real peers.

    it('attack: a wrong state at Lanyard\'s callback stops on a page and issues nothing', async () => {
      const before = s.app.results.length;
      s.entra.rewriteCallback = (location) => {
        const u = new URL(location);
        u.searchParams.set('state', 'A'.repeat(43));
        return u.href;
      };
      try {
        const { end, result } = await signIn(loginUrl({ organization: 'globex' }), 'admin@globex.com', s.entra, 'attack-wrong-state');
        assert.equal(end.errorCode, 'sign_in_expired', end.url);
        assert.equal(result, null);
      } finally {
        s.entra.rewriteCallback = null;
      }
      assert.equal(s.app.results.length, before);
    });

    it('attack: the provider\'s answer opened in another browser is refused (flow cookie)', async () => {
      let stolen;
      s.entra.rewriteCallback = (location) => {
        stolen = location;
        return `${s.app.base}/signed-out`;
      };
      try {
        await signIn(loginUrl({ organization: 'globex' }), 'admin@globex.com', s.entra, 'attack-victim');
      } finally {
        s.entra.rewriteCallback = null;
      }
      assert.ok(stolen, 'the provider answered');
      const other = await browse(s.browser, stolen, { label: `${backend}-attack-other-browser`, lanyard: s.lanyard });
      await other.context.close();
      assert.equal(other.errorCode, 'sign_in_expired');
    });

    it('attack: the application refuses a callback whose state is not the one it sent', async () => {
      s.app.expectStateOverride = 'not-the-state-the-application-sent';
      try {
        const { result } = await signIn(loginUrl({ organization: 'globex' }), 'admin@globex.com', s.entra, 'attack-app-state');
        assert.ok(result?.error, JSON.stringify(result));
        assert.match(result.message, /state/i);
      } finally {
        s.app.expectStateOverride = null;
      }
    });

    it('attack: a code replayed is refused, and the tokens of its first use stop working', async () => {
      const first = await signedIn(loginUrl({ organization: 'globex' }), 'admin@globex.com', s.entra, 'attack-code-replay');
      assert.equal((await s.lanyard.authorize(first.tokens.access_token)).allowed, true);
      const attempt = [...s.app.attempts.values()].find((a) => a.state === new URL(first.url).searchParams.get('state'));
      await expectOAuthError(s.app.redeem(first.url, attempt), 'invalid_grant');
      assert.ok(denied(await s.lanyard.authorize(first.tokens.access_token)), 'the session of the reused code ended');
      await expectOAuthError(s.app.refresh(first.tokens.refresh_token), 'invalid_grant');
    });

    it('attack: PKCE missing or plain is refused back to the application', async () => {
      for (const [label, extra] of [
        ['pkce-missing', { code_challenge: null, code_challenge_method: null }],
        ['pkce-plain', { code_challenge_method: 'plain' }],
      ]) {
        const url = await s.app.authorizeUrl({ organization: 'globex', ...extra });
        const { result } = await signIn(url.href, 'admin@globex.com', s.entra, `attack-${label}`);
        assert.equal(result?.error, 'invalid_request', `${label}: ${JSON.stringify(result)}`);
        assert.match(result.description, /PKCE|S256/);
      }
    });

    it('attack: at the token endpoint a missing or wrong verifier is refused and does not spend the code', async () => {
      // The browser's code, held back from the application's own redemption.
      s.app.holdNext = true;
      await signIn(loginUrl({ organization: 'globex' }), 'admin@globex.com', s.entra, 'attack-verifier');
      assert.ok(s.app.held, 'the browser came back with a code');
      const { url: callbackUrl } = s.app.held;
      s.app.held = null;
      const code = new URL(callbackUrl).searchParams.get('code');
      const attempt = s.app.attempts.get(new URL(callbackUrl).searchParams.get('state'));
      const meta = s.app.config.serverMetadata();
      const post = (form) => fetch(meta.token_endpoint, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from(`${encodeURIComponent(s.clientId)}:${encodeURIComponent(s.app.config.clientMetadata().client_secret)}`).toString('base64')}` },
        body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: s.app.redirectUri, ...form }),
      }).then(async (r) => ({ status: r.status, body: await r.json() }));
      const missing = await post({});
      assert.deepEqual([missing.status, missing.body.error], [400, 'invalid_request']);
      const wrong = await post({ code_verifier: 'x'.repeat(43) });
      assert.deepEqual([wrong.status, wrong.body.error], [400, 'invalid_grant']);
      const other = await post({ code_verifier: attempt.verifier, redirect_uri: `${s.app.redirectUri}/` });
      assert.deepEqual([other.status, other.body.error], [400, 'invalid_grant']);
      const good = await s.app.redeem(callbackUrl, attempt);
      assert.equal(good.claims.org_slug, 'globex');
    });

    it('attack: redirect URIs that are not registered exactly, and unknown clients, stop on Lanyard pages', async () => {
      const base = s.app.redirectUri;
      const variants = {
        'redirect-prefix': `${base}/extra`,
        'redirect-case': base.replace('/callback', '/Callback'),
        'redirect-encoded': base.replace('/callback', '/%63allback'),
        'redirect-query': `${base}?next=https://evil.example`,
        'redirect-other-host': 'https://evil.example/callback',
      };
      for (const [label, redirectUri] of Object.entries(variants)) {
        const url = await s.app.authorizeUrl({ organization: 'globex', redirect_uri: redirectUri });
        const end = await browse(s.browser, url.href, { label: `${backend}-attack-${label}`, lanyard: s.lanyard });
        await end.context.close();
        assert.equal(end.errorCode, 'redirect_uri_mismatch', `${label}: ${end.url}`);
        assert.ok(end.url.startsWith(s.lanyard.issuer), `${label}: no redirect (${end.url})`);
      }
      const unknown = await s.app.authorizeUrl({ organization: 'globex', client_id: 'lc_nobody' });
      const end = await browse(s.browser, unknown.href, { label: `${backend}-attack-unknown-client`, lanyard: s.lanyard });
      await end.context.close();
      assert.equal(end.errorCode, 'unknown_client');
    });

    it('attack: a nonce rewritten on the way to the provider: its ID token is refused, nothing issued', async () => {
      s.entra.rewriteAuthorize = (url) => url.replace(/([?&]nonce=)[^&]*/, '$1tampered-nonce');
      try {
        const { end, result } = await signIn(loginUrl({ organization: 'globex' }), 'admin@globex.com', s.entra, 'attack-upstream-nonce');
        assert.equal(end.errorCode, 'provider_refused', end.url);
        assert.equal(result, null);
      } finally {
        s.entra.rewriteAuthorize = null;
      }
    });

    it('attack: one organization\'s provider asserting another organization\'s email signs nobody in', async () => {
      const { end, result } = await signIn(loginUrl({ organization: 'initech' }), 'impostor', s.okta, 'attack-foreign-email');
      assert.equal(result, null, JSON.stringify(result));
      assert.ok(['sign_in_refused', 'not_a_member'].includes(end.errorCode), `${end.errorCode} at ${end.url}`);
      // Nothing was linked to acme's owner: acme still has its one active member, and initech no new one.
      const active = async (org) => (await s.lanyard.cli(['member', 'list', '--org', org]))
        .filter((m) => m.status === 'active').map((m) => m.email).sort();
      assert.deepEqual(await active('acme'), ['it@acme.com']);
      assert.deepEqual(await active('initech'), ['peter@initech.com']);
    });

    it('attack: a provider answer naming another issuer (mix-up) is refused', async () => {
      s.okta.rewriteCallback = (location) => {
        const u = new URL(location);
        u.searchParams.set('iss', 'https://login.example.net');
        return u.href;
      };
      try {
        const { end, result } = await signIn(loginUrl({ organization: 'initech' }), 'peter@initech.com', s.okta, 'attack-mix-up');
        assert.equal(end.errorCode, 'provider_refused', end.url);
        assert.equal(result, null);
      } finally {
        s.okta.rewriteCallback = null;
      }
    });

    it('a provider whose token endpoint refuses the code: a page, no tokens', async () => {
      s.okta.tokenAnswer = { status: 400, body: { error: 'invalid_grant' } };
      try {
        const { end, result } = await signIn(loginUrl({ organization: 'initech' }), 'peter@initech.com', s.okta, 'provider-error');
        assert.equal(end.errorCode, 'provider_refused', end.url);
        assert.equal(result, null);
      } finally {
        s.okta.tokenAnswer = null;
      }
    });

    it('a provider slower than Lanyard waits for: a page says it is unavailable', async () => {
      s.okta.delayTokenMs = 6500;
      try {
        const { end, result } = await signIn(loginUrl({ organization: 'initech' }), 'peter@initech.com', s.okta, 'provider-slow');
        assert.equal(end.errorCode, 'provider_unavailable', end.url);
        assert.equal(result, null);
      } finally {
        s.okta.delayTokenMs = 0;
      }
    });

    it('prompt=login and max_age=0 make the person sign in again at their provider', async () => {
      // One browser profile: the provider's own session from the first sign-in would answer.
      const context = await s.browser.newContext();
      const page = await context.newPage();
      const atProviderLogin = async () => (await page.locator('input[name="login"]').count()) === 1;
      const providerSignIn = async (label) => {
        await snap(page, `${backend}-${label}-provider-login`, { prefix: 'okta-' });
        await page.fill('input[name="login"]', 'peter@initech.com');
        await page.fill('input[name="password"]', 'any password');
        await Promise.all([page.waitForNavigation(), page.click('button[type="submit"]')]);
        if (await page.locator('input[name="prompt"][value="consent"]').count()) {
          await Promise.all([page.waitForNavigation(), page.click('button[type="submit"]')]);
        }
        await page.waitForLoadState('load');
      };
      try {
        await page.goto(loginUrl({ organization: 'initech' }));
        assert.ok(await atProviderLogin());
        await providerSignIn('reauth-first');
        assert.ok(page.url().startsWith(s.app.redirectUri), page.url());
        // Without a demand for a fresh sign-in, the provider's session answers at once.
        await page.goto(loginUrl({ organization: 'initech' }));
        await page.waitForLoadState('load');
        assert.ok(page.url().startsWith(s.app.redirectUri), page.url());
        for (const demand of [{ prompt: 'login' }, { max_age: '0' }]) {
          const before = s.app.results.length;
          await page.goto(loginUrl({ organization: 'initech', ...demand }));
          await page.waitForLoadState('load');
          assert.ok(await atProviderLogin(), `${JSON.stringify(demand)}: the provider asked again (${page.url()})`);
          await providerSignIn(`reauth-${Object.keys(demand)[0]}`);
          assert.ok(s.app.results.length > before && !s.app.results.at(-1).error, JSON.stringify(s.app.results.at(-1)));
        }
      } finally {
        await context.close();
      }
    });

    it('the person cancels at their provider: a Lanyard page says the sign-in did not complete', async () => {
      const context = await s.browser.newContext();
      const page = await context.newPage();
      await page.goto(loginUrl({ organization: 'initech' }));
      await page.waitForSelector('input[name="login"]');
      await Promise.all([page.waitForNavigation({ url: (u) => u.href.startsWith(s.lanyard.issuer) }), page.click('text=[ Cancel ]')]);
      await page.waitForLoadState('load');
      const code = await page.locator('main[data-error]').getAttribute('data-error');
      const run = await snap(page, `${backend}-provider-cancelled`, { axe: true });
      await context.close();
      assert.equal(code, 'provider_refused');
      assert.ok(run);
    });

    it('every Lanyard page seen has no serious or critical axe violation', async () => {
      const runs = writeAxeReport();
      const mine = runs.filter((r) => r.screenshot.includes(`-${backend}-`));
      assert.ok(mine.length >= 8, `only ${mine.length} Lanyard pages were checked`);
      const bad = mine.flatMap((r) => r.violations.filter((v) => ['serious', 'critical'].includes(v.impact)).map((v) => `${r.screenshot}: ${v.id} (${v.impact}) ${v.help}`));
      assert.deepEqual(bad, []);
    });
  });
}

// The product's application: a tiny web server on loopback that signs people in through Lanyard
// with openid-client (OpenID certified relying party): discovery, authorization code with PKCE
// S256, state, nonce, the ID token's signature checked against Lanyard's JWKS.
import http from 'node:http';

import * as oidc from 'openid-client';

/** The application's server; register the client with `redirectUri` before `connect`. */
export async function startApp() {
  const server = http.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const base = `http://127.0.0.1:${server.address().port}`;
  const app = {
    base,
    redirectUri: `${base}/callback`,
    postLogoutUri: `${base}/signed-out`,
    config: null,
    /** Its login initiation route (LANYARD_APPLICATION_LOGIN_URL). */
    loginInitiationUri: `${base}/initiate-login`,
    /** What Lanyard's pages asked that route for, in order: { loginHint } or { refused }. */
    initiations: [],
    /** Sign-ins started, by state: { verifier, nonce, state }. */
    attempts: new Map(),
    /** What each callback ended with, in order: { tokens, claims } or { error }. */
    results: [],
    /** Tamper with the next callback's expected state (the attacker check). */
    expectStateOverride: null,
    /** Keep the next callback's URL without redeeming its code (`held`), for raw token requests. */
    holdNext: false,
    held: null,

    async connect(issuer, clientId, clientSecret) {
      app.config = await oidc.discovery(new URL(issuer), clientId, clientSecret, oidc.ClientSecretBasic(clientSecret), {
        execute: [oidc.allowInsecureRequests, oidc.enableNonRepudiationChecks],
      });
      return app.config;
    },

    /** The authorization URL of a new attempt, with extra parameters (organization, invitation...). */
    async authorizeUrl(extra = {}) {
      const verifier = oidc.randomPKCECodeVerifier();
      const state = oidc.randomState();
      const nonce = oidc.randomNonce();
      app.attempts.set(state, { verifier, nonce, state });
      const params = {
        redirect_uri: app.redirectUri,
        scope: 'openid email profile',
        code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
        code_challenge_method: 'S256',
        state,
        nonce,
      };
      for (const [k, v] of Object.entries(extra)) {
        if (v === undefined) continue;
        if (v === null) delete params[k]; else params[k] = v;
      }
      return oidc.buildAuthorizationUrl(app.config, params);
    },

    /** The authorization code grant for the browser's arrival at `currentUrl`. */
    async redeem(currentUrl, attempt) {
      const tokens = await oidc.authorizationCodeGrant(app.config, new URL(currentUrl), {
        pkceCodeVerifier: attempt.verifier,
        expectedState: app.expectStateOverride ?? attempt.state,
        expectedNonce: attempt.nonce,
        idTokenExpected: true,
      });
      return { tokens, claims: tokens.claims() };
    },

    userinfo: (accessToken, sub) => oidc.fetchUserInfo(app.config, accessToken, sub),
    refresh: (refreshToken, extra) => oidc.refreshTokenGrant(app.config, refreshToken, extra),
    revoke: (token, hint) => oidc.tokenRevocation(app.config, token, hint ? { token_type_hint: hint } : undefined),
    logoutUrl: (params) => oidc.buildEndSessionUrl(app.config, params),

    async stop() {
      server.closeAllConnections?.();
      await new Promise((resolve) => server.close(resolve));
    },
  };

  const page = (res, status, title, text) => {
    res.writeHead(status, { 'content-type': 'text/html; charset=utf-8' });
    res.end(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${title}</title></head>`
      + `<body><main><h1>${title}</h1><pre id="result">${text}</pre></main></body></html>`);
  };

  server.on('request', async (req, res) => {
    const url = new URL(req.url, base);
    try {
      if (url.pathname === '/login') {
        // The product's sign-in button: ?organization=acme&login_hint=...
        const location = await app.authorizeUrl(Object.fromEntries(url.searchParams));
        res.writeHead(302, { location: location.href }).end();
      } else if (url.pathname === '/initiate-login') {
        // OpenID Connect third-party-initiated login (Core 4), where Lanyard's hosted pages
        // (the invitation landing, email-first sign-in) send the browser: the issuer must be
        // ours; then the ordinary authorization request, naming no organization, with the hint.
        if (url.searchParams.get('iss') !== app.config.serverMetadata().issuer) {
          app.initiations.push({ refused: url.searchParams.get('iss') });
          page(res, 400, 'Unknown issuer', 'not our issuer');
          return;
        }
        const loginHint = url.searchParams.get('login_hint') ?? undefined;
        app.initiations.push({ loginHint });
        const location = await app.authorizeUrl({ login_hint: loginHint });
        res.writeHead(302, { location: location.href }).end();
      } else if (url.pathname === '/callback') {
        const attempt = app.attempts.get(url.searchParams.get('state')) ?? [...app.attempts.values()].at(-1);
        if (app.holdNext) {
          app.holdNext = false;
          app.held = { url: url.href, attempt };
          page(res, 200, 'Code held', 'held');
          return;
        }
        if (url.searchParams.get('error')) {
          app.results.push({ error: url.searchParams.get('error'), description: url.searchParams.get('error_description'), url: url.href });
          page(res, 400, 'Sign-in failed', url.searchParams.get('error'));
          return;
        }
        try {
          const result = await app.redeem(url.href, attempt);
          app.results.push({ ...result, url: url.href });
          page(res, 200, 'Signed in', `${result.claims.email} in ${result.claims.org_slug} as ${result.claims.roles.join(', ')}`);
        } catch (e) {
          app.results.push({ error: e.code || e.name, message: `${e.message}: ${e.cause?.message ?? ''}`, url: url.href });
          page(res, 400, 'Sign-in failed', e.code || e.message);
        }
      } else if (url.pathname === '/signed-out') {
        page(res, 200, 'Signed out of the application', url.searchParams.get('state') ?? '');
      } else {
        res.writeHead(404).end();
      }
    } catch (e) {
      page(res, 500, 'Application error', String(e));
    }
  });
  return app;
}

// The organizations' own identity providers: oidc-provider (OpenID certified) on loopback,
// dressed as Google Workspace (`hd`), Microsoft Entra ID (`tid`, `oid`, a per-tenant issuer) or
// Okta (plain OIDC). People sign in at its development login and consent pages with any
// password; who they are comes from `accounts`, keyed by the login typed.
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import http from 'node:http';

import Provider from 'oidc-provider';

/**
 * Starts one provider. `kind`: 'google' | 'entra' | 'okta'. `callback`: Lanyard's
 * /oauth2/callback, the only redirect URI of the client Lanyard's connection uses.
 * `accounts`: { [login]: { email, name, emailVerified? } }.
 */
export async function startUpstream({ kind, callback, accounts, hostedDomain, tenantId }) {
  const server = http.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  // Entra ID names the tenant in its issuer: https://login.microsoftonline.com/<tid>/v2.0.
  const prefix = kind === 'entra' ? `/${tenantId}/v2.0` : '';
  const issuer = `http://127.0.0.1:${port}${prefix}`;
  const clientId = `lanyard-${kind}-${randomBytes(4).toString('hex')}`;
  // Real secrets carry characters that client_secret_basic must form-encode (Entra's have `~`).
  const clientSecret = `${randomBytes(18).toString('base64url')}~.+/=`;

  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: `${kind}-1`, alg: 'RS256', use: 'sig' };

  const byLogin = new Map(Object.entries(accounts).map(([login, a]) => [login.toLowerCase(), a]));
  const oids = new Map();
  const claimsOf = (login) => {
    const a = byLogin.get(login.toLowerCase());
    if (!a) return null;
    const base = { sub: login, email: a.email, name: a.name };
    if (kind === 'google') {
      return { ...base, email_verified: a.emailVerified ?? true, hd: hostedDomain };
    }
    if (kind === 'entra') {
      if (!oids.has(login)) oids.set(login, randomUUID());
      // Entra's sub is pairwise per application; Lanyard keys people by (tid, oid).
      return { ...base, sub: `pairwise-${oids.get(login)}`, tid: tenantId, oid: oids.get(login), xms_edov: a.emailVerified ?? true };
    }
    return { ...base, email_verified: a.emailVerified ?? true };
  };

  const provider = new Provider(issuer, {
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: [callback],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    jwks: { keys: [jwk] },
    cookies: { keys: [randomBytes(16).toString('hex')] },
    // The ID token carries the profile claims (as Google, Entra and Okta do for a code flow),
    // not only userinfo: Lanyard reads the ID token alone.
    conformIdTokenClaims: false,
    claims: {
      openid: ['sub', 'hd', 'tid', 'oid', 'xms_edov'],
      email: ['email', 'email_verified'],
      profile: ['name'],
    },
    pkce: { required: () => true },
    ttl: { AccessToken: 600, AuthorizationCode: 60, IdToken: 600, Interaction: 600, Session: 3600, Grant: 3600 },
    features: { devInteractions: { enabled: true } },
    async findAccount(ctx, id) {
      const claims = claimsOf(id);
      if (!claims) return undefined;
      return { accountId: id, async claims() { return claims; } };
    },
  });
  provider.proxy = false;
  const handle = provider.callback();
  server.on('request', async (req, res) => {
    // A slow provider: its token endpoint answers after `upstream.delayTokenMs`.
    if (upstream.delayTokenMs && req.method === 'POST' && req.url.startsWith(`${prefix}/token`)) {
      await new Promise((r) => setTimeout(r, upstream.delayTokenMs));
    }
    // A provider whose token endpoint refuses: `upstream.tokenAnswer = { status, body }`.
    if (upstream.tokenAnswer && req.method === 'POST' && req.url.startsWith(`${prefix}/token`)) {
      res.writeHead(upstream.tokenAnswer.status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(upstream.tokenAnswer.body));
      return;
    }
    // Someone in the front channel rewrites the authorization request (`rewriteAuthorize(url)`).
    if (upstream.rewriteAuthorize && req.method === 'GET' && req.url.startsWith(`${prefix}/auth?`)) {
      req.url = upstream.rewriteAuthorize(req.url);
    }
    // A test may rewrite where the provider sends the browser back to Lanyard (an attacker on
    // the way, a stolen answer): `upstream.rewriteCallback(location)` returns the new location.
    const setHeader = res.setHeader.bind(res);
    res.setHeader = (name, value) => {
      if (upstream.rewriteCallback && name.toLowerCase() === 'location' && String(value).startsWith(callback)) {
        return setHeader(name, upstream.rewriteCallback(String(value)));
      }
      return setHeader(name, value);
    };
    if (prefix) {
      if (!req.url.startsWith(prefix)) {
        res.writeHead(404).end();
        return;
      }
      req.originalUrl = req.url;
      req.url = req.url.slice(prefix.length) || '/';
    }
    handle(req, res);
  });

  const upstream = {
    kind,
    issuer,
    rewriteCallback: null,
    rewriteAuthorize: null,
    delayTokenMs: 0,
    tokenAnswer: null,
    clientId,
    clientSecret,
    async stop() {
      server.closeAllConnections?.();
      await new Promise((resolve) => server.close(resolve));
    },
  };
  return upstream;
}

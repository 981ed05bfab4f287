-- Lanyard as an OpenID Provider for the product's applications (provider/).

-- Registered applications. A confidential client's secret is kept as its SHA-256 only (the secret
-- is 256 random bits, shown once). URIs are JSON arrays of exact strings, matched byte for byte.
CREATE TABLE oauth_clients (
    client_id                 TEXT PRIMARY KEY,
    display_name              TEXT NOT NULL,
    client_type               TEXT NOT NULL CHECK (client_type IN ('public', 'confidential')),
    secret_hash               TEXT,
    redirect_uris             TEXT NOT NULL,
    post_logout_redirect_uris TEXT NOT NULL DEFAULT '[]',
    created_at                BIGINT NOT NULL
);

-- Sign-ins in flight at the organization's provider, by the SHA-256 of the state sent there.
-- Single use (deleted when the callback takes it), short-lived, bound to the browser that started
-- it by the SHA-256 of a cookie. `upstream` (the provider's nonce, the PKCE verifier, an
-- invitation token) is sealed with the key-encryption key, bound to the row.
CREATE TABLE oauth_flows (
    id            TEXT PRIMARY KEY,
    browser_hash  TEXT NOT NULL,
    app_request   TEXT NOT NULL,
    org_id        TEXT NOT NULL,
    connection_id TEXT NOT NULL,
    upstream      TEXT NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX oauth_flows_expiry ON oauth_flows (expires_at);

-- Authorization codes, by SHA-256: single use, bound to the client, the redirect URI and the PKCE
-- challenge. The session's first refresh token waits here, sealed, until the code is redeemed.
CREATE TABLE oauth_codes (
    code_hash      TEXT PRIMARY KEY,
    client_id      TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    nonce          TEXT,
    session_id     TEXT NOT NULL,
    sealed_refresh TEXT NOT NULL,
    expires_at     BIGINT NOT NULL,
    used_at        BIGINT
);
CREATE INDEX oauth_codes_expiry ON oauth_codes (expires_at);

-- Which application a session signed in for: its refresh tokens are redeemed, and revoked, by
-- that client only.
CREATE TABLE oauth_sessions (
    session_id TEXT PRIMARY KEY,
    client_id  TEXT NOT NULL,
    auth_time  BIGINT NOT NULL
);
CREATE INDEX oauth_sessions_by_client ON oauth_sessions (client_id);

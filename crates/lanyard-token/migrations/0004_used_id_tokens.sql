-- ID tokens already exchanged for a session, by the SHA-256 of their signed part (header and
-- payload, so a re-encoded signature is the same token). A row lives until its token could no
-- longer be accepted anyway (exp, or iat plus the maximum age, plus the leeway); the key worker
-- deletes it after that. The insert is part of the session's transaction: of two exchanges of one
-- token, the primary key lets exactly one write its session.
CREATE TABLE used_id_tokens (
    token_hash TEXT PRIMARY KEY,
    issuer     TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX used_id_tokens_expiry ON used_id_tokens (expires_at);

-- Replies of ExchangeToken and RefreshSession kept by (scope, request_id), so a client that lost a
-- reply can retry with the same request_id and the same credential and get the same tokens back
-- (rather than being taken for a thief reusing a refresh token). The reply is sealed with the
-- key-encryption key: it holds a refresh token. Kept for a day.
CREATE TABLE idempotency_keys (
    scope      TEXT NOT NULL,
    request_id TEXT NOT NULL,
    response   TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (scope, request_id)
);

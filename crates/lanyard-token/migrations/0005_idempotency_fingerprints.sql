-- Idempotency records as every service now keeps them (lanyard_core::idempotency): a pending
-- record is taken before the call runs (done = 0) so concurrent duplicates wait for its reply, and
-- the request's fingerprint tells a true retry from a request_id reused for another request.
-- Records written before have no fingerprint and are complete.
ALTER TABLE idempotency_keys ADD COLUMN fingerprint TEXT NOT NULL DEFAULT '';
ALTER TABLE idempotency_keys ADD COLUMN done BIGINT NOT NULL DEFAULT 1;

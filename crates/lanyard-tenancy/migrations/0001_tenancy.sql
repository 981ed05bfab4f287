-- TenancyService tables: in the `tenancy` schema on Postgres, in the service's own file on SQLite.
-- Ids are UUID text and times are microseconds since the Unix epoch (BIGINT), so the same SQL
-- and the same queries run on both backends.

CREATE TABLE organizations (
    id            TEXT PRIMARY KEY,
    slug          TEXT NOT NULL UNIQUE,
    display_name  TEXT NOT NULL,
    seat_limit    BIGINT NOT NULL CHECK (seat_limit >= 1),
    metadata      TEXT NOT NULL DEFAULT '{}',
    status        TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'deleted')),
    owner_user_id TEXT,
    -- Bumped by every seat change: the UPDATE that bumps it is the lock that serializes seat accounting.
    seat_epoch    BIGINT NOT NULL DEFAULT 0,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    deleted_at    BIGINT
);

CREATE TABLE organization_domains (
    org_id     TEXT NOT NULL REFERENCES organizations (id),
    domain     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (org_id, domain)
);

CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    primary_email  TEXT UNIQUE,
    email_verified BIGINT NOT NULL DEFAULT 0,
    display_name   TEXT NOT NULL DEFAULT '',
    status         TEXT NOT NULL DEFAULT 'active',
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);

CREATE TABLE external_identities (
    issuer        TEXT NOT NULL,
    subject       TEXT NOT NULL,
    user_id       TEXT NOT NULL REFERENCES users (id),
    connection_id TEXT,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (issuer, subject)
);

CREATE TABLE memberships (
    org_id     TEXT NOT NULL REFERENCES organizations (id),
    user_id    TEXT NOT NULL REFERENCES users (id),
    status     TEXT NOT NULL CHECK (status IN ('active', 'removed')),
    version    BIGINT NOT NULL,
    invited_by TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX memberships_by_user ON memberships (user_id, status);
CREATE INDEX memberships_by_org ON memberships (org_id, status, created_at);

CREATE TABLE membership_roles (
    org_id  TEXT NOT NULL,
    user_id TEXT NOT NULL,
    role    TEXT NOT NULL,
    PRIMARY KEY (org_id, user_id, role),
    FOREIGN KEY (org_id, user_id) REFERENCES memberships (org_id, user_id)
);
CREATE INDEX membership_roles_by_role ON membership_roles (org_id, role);

CREATE TABLE roles (
    org_id      TEXT NOT NULL REFERENCES organizations (id),
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    permissions TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (org_id, name)
);

CREATE TABLE seat_reservations (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES organizations (id),
    expires_at      BIGINT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('held', 'claimed', 'released')),
    claimed_user_id TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX seat_reservations_held ON seat_reservations (org_id, state, expires_at);

CREATE TABLE sso_connections (
    id                   TEXT PRIMARY KEY,
    org_id               TEXT NOT NULL REFERENCES organizations (id),
    kind                 TEXT NOT NULL,
    issuer               TEXT NOT NULL,
    client_id            TEXT NOT NULL,
    client_secret_sealed TEXT,
    hosted_domains       TEXT NOT NULL DEFAULT '[]',
    tenant_id            TEXT NOT NULL DEFAULT '',
    enabled              BIGINT NOT NULL DEFAULT 1,
    created_at           BIGINT NOT NULL
);
CREATE INDEX sso_connections_by_org ON sso_connections (org_id, id);

CREATE TABLE audit_events (
    id         TEXT PRIMARY KEY,
    org_id     TEXT NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    details    TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL
);
CREATE INDEX audit_events_by_org ON audit_events (org_id, id);

-- Results of mutating RPCs by (caller, method, request_id), so a retry returns the first answer.
CREATE TABLE idempotency_keys (
    scope      TEXT NOT NULL,
    request_id TEXT NOT NULL,
    response   TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (scope, request_id)
);

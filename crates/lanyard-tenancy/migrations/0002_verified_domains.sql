-- Verified domains. A domain an organization added is `pending` until it proves ownership (a DNS
-- TXT challenge, or an operator); only a `verified` domain lets the organization's SSO connections
-- vouch for emails in it, and a domain is verified for at most one organization. Domains added
-- before this migration start pending: they were claimed without proof.
ALTER TABLE organization_domains ADD COLUMN state TEXT NOT NULL DEFAULT 'pending'
    CHECK (state IN ('pending', 'verified'));
ALTER TABLE organization_domains ADD COLUMN challenge TEXT NOT NULL DEFAULT '';
ALTER TABLE organization_domains ADD COLUMN verified_at BIGINT;
ALTER TABLE organization_domains ADD COLUMN verification_method TEXT;

CREATE UNIQUE INDEX organization_domains_verified_once ON organization_domains (domain) WHERE state = 'verified';

-- Identities by user, for the audit of links and for listing a user's identities.
CREATE INDEX external_identities_by_user ON external_identities (user_id);

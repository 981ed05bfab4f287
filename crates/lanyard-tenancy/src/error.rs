//! TenancyService's errors: what can go wrong, in the domain's words (their API form is `grpc::status`).

// The variants every service's errors share (values, authentication, permission, the database,
// replays, internal failures) and their helpers come from the macro.
lanyard_core::service_errors! {
    /// Everything a tenancy operation can fail with.
    pub enum TenancyError {
        #[error("organization not found")]
        OrganizationNotFound,
        #[error("the organization is deleted")]
        OrganizationDeleted,
        #[error("the organization is suspended")]
        OrganizationSuspended,
        #[error("an organization with this slug already exists")]
        SlugTaken,
        #[error("member not found")]
        MemberNotFound,
        #[error("user not found")]
        UserNotFound,
        #[error("the user is already an active member")]
        MemberExists,
        #[error("all {limit} seats are in use")]
        SeatsExhausted { limit: u32, used: u32 },
        #[error("the seat limit {requested} is below the {used} seats in use")]
        SeatLimitBelowUsage { requested: u32, used: u32 },
        #[error("the email domain is not one of the organization's allowed domains")]
        EmailDomainNotAllowed,
        #[error("public webmail domains are refused unless an operator allows them")]
        PublicDomainNotAllowed,
        #[error("the domain is already allowed")]
        DomainExists,
        #[error("the domain is not an allowed domain of the organization")]
        DomainNotFound,
        #[error("the owner cannot be removed or demoted; transfer ownership first")]
        OwnerProtected,
        #[error("the organization already has an owner; use TransferOwnership")]
        OwnerExists,
        #[error("role not found: {0}")]
        RoleNotFound(String),
        #[error("a role with this name already exists")]
        RoleExists,
        #[error("built-in roles cannot be changed")]
        RoleBuiltIn,
        #[error("the role is held by {0} active member(s)")]
        RoleInUse(u64),
        #[error("SSO connection not found")]
        ConnectionNotFound,
        #[error("the issuer's host is not a public address: {0}")]
        IssuerAddressForbidden(String),
        #[error("the issuer is not on the operator's issuer allowlist")]
        IssuerNotAllowed,
        #[error("the organization already has {limit} SSO connections, the most it may have")]
        ConnectionsExhausted { limit: u32 },
        #[error("seat reservation not found")]
        ReservationNotFound,
        #[error("the seat reservation has expired")]
        ReservationExpired,
        #[error("the seat reservation was released")]
        ReservationReleased,
        #[error("the seat reservation was claimed by another user")]
        ReservationClaimed,
        #[error("the identity is not linked and carries no usable email")]
        IdentityConflict,
        #[error("the domain is verified for another organization")]
        DomainVerifiedElsewhere,
        #[error("{0} belongs to the built-in owner role alone")]
        OwnerOnlyPermission(String),
        #[error("you may grant only permissions you hold; you do not hold {0}")]
        PermissionNotHeld(String),
        #[error("no TXT record {record} was found; publish it and retry")]
        DomainChallengeMissing { record: String },
        #[error("the TXT records at {record} do not hold this domain's challenge")]
        DomainChallengeMismatch { record: String },
        #[error("DNS could not be queried: {0}")]
        DnsUnavailable(String),
        #[error("the identity provider did not verify the email, and the identity is not linked to a user")]
        EmailNotVerified,
        #[error("the email's domain is not verified for this organization, so its identity provider cannot vouch for it")]
        EmailDomainNotVerified,
    }
}

//! How operator commands print: tables for people, JSON with `--json`, errors with their reason.

use super::*;

pub(super) fn status_error(s: tonic::Status) -> anyhow::Error {
    let reason = lanyard_core::status::reason_of(&s).unwrap_or_default();
    anyhow::anyhow!(
        "{:?}: {} {}",
        s.code(),
        s.message(),
        if reason.is_empty() { String::new() } else { format!("({reason})") }
    )
}

pub(super) fn org_json(o: &pb::Organization) -> serde_json::Value {
    json!({
        "organization_id": o.organization_id, "slug": o.slug, "display_name": o.display_name,
        "seat_limit": o.seat_limit, "allowed_domains": o.allowed_domains,
        "domains": o.domains.iter().map(domain_json).collect::<Vec<_>>(),
        "status": status_name(o.status), "owner_user_id": o.owner_user_id, "metadata": o.metadata,
    })
}

pub(super) fn domain_json(d: &pb::OrganizationDomain) -> serde_json::Value {
    let state = if d.state == pb::DomainState::Verified as i32 { "verified" } else { "pending" };
    json!({ "name": d.name, "state": state, "verification_method": d.verification_method })
}

pub(super) const DOMAIN_HEADERS: [&str; 3] = ["domain", "state", "method"];

pub(super) fn domain_row(d: &pb::OrganizationDomain) -> Vec<String> {
    let v = domain_json(d);
    vec![d.name.clone(), v["state"].as_str().unwrap_or_default().to_owned(), d.verification_method.clone()]
}

pub(super) fn status_name(s: i32) -> &'static str {
    match pb::OrganizationStatus::try_from(s) {
        Ok(pb::OrganizationStatus::Active) => "active",
        Ok(pb::OrganizationStatus::Suspended) => "suspended",
        Ok(pb::OrganizationStatus::Deleted) => "deleted",
        _ => "unknown",
    }
}

pub(super) fn member_json(m: &pb::Member) -> serde_json::Value {
    let status = if m.status == pb::MembershipStatus::Active as i32 { "active" } else { "removed" };
    json!({
        "user_id": m.user_id, "email": m.email, "roles": m.roles, "status": status, "version": m.version,
    })
}

/// Prints rows as an aligned table.
pub(super) fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        line(row);
    }
}

pub(super) fn print(remote: &Remote, value: serde_json::Value, headers: &[&str], rows: Vec<Vec<String>>) {
    if remote.json {
        println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
    } else {
        table(headers, rows);
    }
}

/// What a delete command prints: the deleted thing's `field` and `deleted: true`.
pub(super) fn print_deleted(remote: &Remote, field: &str, value: String) {
    let json = serde_json::json!({ field: value, "deleted": true });
    print(remote, json, &[field, "deleted"], vec![vec![value, "true".into()]]);
}

pub(super) const ORG_HEADERS: [&str; 6] = ["id", "slug", "name", "seats", "domains", "status"];

pub(super) fn org_row(o: &pb::Organization) -> Vec<String> {
    vec![
        o.organization_id.clone(),
        o.slug.clone(),
        o.display_name.clone(),
        o.seat_limit.to_string(),
        o.allowed_domains.join(","),
        status_name(o.status).to_owned(),
    ]
}

pub(super) const MEMBER_HEADERS: [&str; 5] = ["user_id", "email", "roles", "status", "version"];

pub(super) fn member_row(m: &pb::Member) -> Vec<String> {
    let v = member_json(m);
    vec![
        m.user_id.clone(),
        m.email.clone(),
        m.roles.join(","),
        v["status"].as_str().unwrap_or_default().to_owned(),
        m.version.to_string(),
    ]
}

pub(super) fn invitation_status(s: i32) -> &'static str {
    match ipb::InvitationStatus::try_from(s) {
        Ok(ipb::InvitationStatus::Pending) => "pending",
        Ok(ipb::InvitationStatus::Accepted) => "accepted",
        Ok(ipb::InvitationStatus::Revoked) => "revoked",
        Ok(ipb::InvitationStatus::Expired) => "expired",
        _ => "unknown",
    }
}

pub(super) fn delivery_status(s: i32) -> &'static str {
    match ipb::EmailDeliveryStatus::try_from(s) {
        Ok(ipb::EmailDeliveryStatus::Queued) => "queued",
        Ok(ipb::EmailDeliveryStatus::Sent) => "sent",
        Ok(ipb::EmailDeliveryStatus::Failed) => "failed",
        Ok(ipb::EmailDeliveryStatus::NotSent) => "not_sent",
        _ => "unknown",
    }
}

pub(super) fn expiry(i: &ipb::Invitation) -> String {
    i.expire_time
        .as_ref()
        .map(|t| lanyard_core::Timestamp(t.seconds * 1_000_000 + i64::from(t.nanos) / 1_000).to_rfc3339())
        .unwrap_or_default()
}

pub(super) fn invitation_json(i: &ipb::Invitation, link: Option<&str>) -> serde_json::Value {
    let mut v = json!({
        "invitation_id": i.invitation_id, "organization_id": i.organization_id, "email": i.email,
        "roles": i.roles, "status": invitation_status(i.status), "email_delivery": delivery_status(i.email_delivery),
        "expires": expiry(i),
    });
    if let Some(link) = link {
        v["invitation_link"] = json!(link);
    }
    v
}

pub(super) fn invitation_row(i: &ipb::Invitation) -> Vec<String> {
    vec![
        i.invitation_id.clone(),
        i.email.clone(),
        i.roles.join(","),
        invitation_status(i.status).to_owned(),
        delivery_status(i.email_delivery).to_owned(),
        expiry(i),
    ]
}

pub(super) fn print_invitation(remote: &Remote, i: &ipb::Invitation, link: Option<&str>) {
    print(remote, invitation_json(i, link), &INVITATION_HEADERS, vec![invitation_row(i)]);
    if let (Some(link), false) = (link, remote.json) {
        println!("\nlink: {link}");
    }
}

/// A protobuf timestamp as RFC 3339, empty when unset.
pub(super) fn time(t: Option<&prost_types::Timestamp>) -> String {
    t.map(|t| lanyard_core::Timestamp(t.seconds * 1_000_000 + i64::from(t.nanos) / 1_000).to_rfc3339())
        .unwrap_or_default()
}

//! Black-box tests of InvitationService over real gRPC on loopback, with the real
//! TenancyService, on SQLite and Postgres.

mod support;

use std::time::Duration;

use lanyard_core::Timestamp;
use lanyard_proto::invitation::v1 as ipb;
use lanyard_proto::tenancy::v1 as tpb;
use support::smtp::{token_in, SmtpServer};
use support::*;
use tonic::Code;
use tonic_types::StatusExt;

fn ts(t: &Option<prost_types::Timestamp>) -> Timestamp {
    let t = t.as_ref().expect("timestamp");
    Timestamp(t.seconds * 1_000_000 + i64::from(t.nanos) / 1_000)
}

backend_tests!(
    the_whole_story,
    the_whole_story_over_a_channel,
    preview_is_no_oracle,
    accept_rules,
    revoke_releases_the_seat,
    resend_kills_the_old_link,
    ttl_bounds,
    expiry_boundary_by_clock,
    full_org_is_seats_exhausted,
    domains_are_enforced,
    duplicates_and_members,
    bad_inputs_change_nothing,
    deleting_the_org_revokes_pending_invitations,
    listing_filters_and_pages,
    preview_is_rate_limited,
    emails_as_files,
    concurrent_accepts_make_one_membership,
    concurrent_invitations_never_oversell,
    mailer_delivers_once_across_a_restart,
    mailer_gives_up_after_max_attempts,
    expiry_frees_the_seat_without_the_sweeper,
    retries_complete_after_a_crash_between_steps,
    a_permanent_rejection_fails_at_once,
);

async fn story(backend: Backend, transport: Transport) {
    let db = TestDb::new(backend).await;
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn_with(&db, Options { transport, mail: Mail::Smtp(smtp.url()), ..Options::default() }).await;

    // The operator creates the organization and invites the customer's IT admin by email.
    let org = app.create_org("acme", 3, &["acme.com"]).await;
    let org_id = org.organization_id.clone();
    let mut req = create_req(&org_id, "it@acme.com", &["owner"], true);
    req.request_id = "invite-it-admin".into();
    let created = app.invite(op(req.clone())).await.unwrap();
    let admin_inv = created.invitation.unwrap();
    assert!(created.invitation_link.is_none());
    assert_eq!(admin_inv.status, ipb::InvitationStatus::Pending as i32);
    // A retry of the same request returns the same invitation and reserves nothing twice.
    let again = app.invite(op(req)).await.unwrap().invitation.unwrap();
    assert_eq!(again.invitation_id, admin_inv.invitation_id);
    assert_eq!(app.usage(&org_id).await.reserved, 1);

    // The email arrives at a real SMTP server; the link is read out of it.
    let mail = smtp.wait_for(1).await;
    assert_eq!(mail[0].to, vec!["<it@acme.com>".to_owned()]);
    assert!(mail[0].data.contains("multipart/alternative") && mail[0].data.contains("text/html"));
    assert!(mail[0].data.contains("acme Inc.") && mail[0].data.contains("Acme SaaS Ops"));
    let token = token_in(&mail[0].data);
    assert_eq!(token.len(), 43);
    app.wait_for_invitation(&org_id, &admin_inv.invitation_id, "SENT", |i| {
        i.email_delivery == ipb::EmailDeliveryStatus::Sent as i32
    })
    .await;

    // The landing page previews it without consuming it.
    let preview = app.preview(&token).await.unwrap();
    assert_eq!(
        (preview.organization_display_name.as_str(), preview.email.as_str(), preview.inviter_display_name.as_str()),
        ("acme Inc.", "it@acme.com", "Acme SaaS Ops")
    );
    assert_eq!(preview.status, ipb::InvitationStatus::Pending as i32);

    // The admin signs in; the token service accepts the invitation.
    let admin = app.user("it@acme.com").await;
    let accepted = app.accept(&token, &admin, "it@acme.com").await.unwrap();
    let membership = accepted.membership.unwrap();
    assert_eq!((membership.user_id.as_str(), membership.roles.clone()), (admin.as_str(), vec!["owner".to_owned()]));
    assert_eq!(accepted.invitation.unwrap().status, ipb::InvitationStatus::Accepted as i32);
    let usage = app.usage(&org_id).await;
    assert_eq!((usage.active, usage.reserved, usage.available), (1, 0, 2));

    // There is one owner: inviting a second one is refused up front.
    let err = app.invite(op(create_req(&org_id, "it2@acme.com", &["owner"], false))).await.unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "OWNER_EXISTS");

    // The admin invites two colleagues (as a member with an access token).
    let admin_token = member_token("owner", &admin, &org_id);
    let mut colleagues = Vec::new();
    for email in ["ann@acme.com", "bob@acme.com"] {
        let inv = app.invite(with_key(create_req(&org_id, email, &[], true), &admin_token)).await.unwrap();
        let inv = inv.invitation.unwrap();
        assert_eq!(inv.inviter, format!("user:{admin}"));
        assert_eq!(inv.roles, vec!["member".to_owned()]);
        colleagues.push(inv);
    }
    let mail = smtp.wait_for(3).await;
    let ann_mail = mail
        .iter()
        .find(|m| m.to == vec!["<ann@acme.com>".to_owned()])
        .unwrap_or_else(|| panic!("no mail to ann: {mail:?}"));
    assert!(ann_mail.data.contains("Subject: Invitation to join \"acme Inc.\""), "the organization is named");
    assert!(ann_mail.data.contains("it invited you"), "the inviter is named in the body");

    // A fourth invitation is refused: the org is full.
    let err = app.invite(with_key(create_req(&org_id, "cat@acme.com", &[], true), &admin_token)).await.unwrap_err();
    assert_status(&err, Code::ResourceExhausted, "SEATS_EXHAUSTED");
    assert!(err.get_details_quota_failure().is_some());

    // Ann accepts; Bob never does, and the admin revokes his invitation: the seat comes back.
    let ann = app.user("ann@acme.com").await;
    app.accept(&token_in(&ann_mail.data), &ann, "ann@acme.com").await.unwrap();
    let bob_inv = &colleagues[1];
    let revoked = app
        .invitations
        .clone()
        .revoke_invitation(with_key(
            ipb::RevokeInvitationRequest {
                organization_id: org_id.clone(),
                invitation_id: bob_inv.invitation_id.clone(),
                request_id: String::new(),
            },
            &admin_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .invitation
        .unwrap();
    assert_eq!(revoked.status, ipb::InvitationStatus::Revoked as i32);
    let usage = app.usage(&org_id).await;
    assert_eq!((usage.active, usage.reserved, usage.available), (2, 0, 1));
    app.invite(with_key(create_req(&org_id, "cat@acme.com", &[], true), &admin_token)).await.unwrap();

    // Every state change left an audit event.
    assert_eq!(app.events(&org_id, &admin_inv.invitation_id).await, vec!["invitation.created", "invitation.accepted"]);
    assert_eq!(app.events(&org_id, &bob_inv.invitation_id).await, vec!["invitation.created", "invitation.revoked"]);
}

async fn the_whole_story(backend: Backend) {
    story(backend, Transport::InProcess).await;
}

async fn the_whole_story_over_a_channel(backend: Backend) {
    story(backend, Transport::Channel).await;
}

async fn preview_is_no_oracle(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let org = app.create_org("acme", 10, &["acme.com"]).await.organization_id;

    let (_, revoked_link) = app.invite_link(&org, "rev@acme.com", &[]).await;
    let revoked_id = app.list(&org).await[0].invitation_id.clone();
    app.invitations
        .clone()
        .revoke_invitation(op(ipb::RevokeInvitationRequest {
            organization_id: org.clone(),
            invitation_id: revoked_id,
            request_id: String::new(),
        }))
        .await
        .unwrap();
    let (_, used_link) = app.invite_link(&org, "used@acme.com", &[]).await;
    let user = app.user("used@acme.com").await;
    app.accept(&token_of(&used_link), &user, "used@acme.com").await.unwrap();
    let (old, old_link) = app.invite_link(&org, "old@acme.com", &[]).await;
    app.invitations
        .clone()
        .resend_invitation(op(ipb::ResendInvitationRequest {
            organization_id: org.clone(),
            invitation_id: old.invitation_id,
            send_email: false,
            ..Default::default()
        }))
        .await
        .unwrap();
    let (expiring, expiring_link) = app.invite_link(&org, "exp@acme.com", &[]).await;
    let (_, live_link) = app.invite_link(&org, "live@acme.com", &[]).await;
    app.clock.set(Timestamp(ts(&expiring.expire_time).0 + 1));

    let unknown = lanyard_core::crypto::random_token(32);
    let answers: Vec<tonic::Status> = futures::future::join_all(
        [unknown, token_of(&revoked_link), token_of(&used_link), token_of(&old_link), token_of(&expiring_link)]
            .iter()
            .map(|t| app.preview(t)),
    )
    .await
    .into_iter()
    .map(|r| r.unwrap_err())
    .collect();
    for a in &answers {
        assert_status(a, Code::NotFound, "INVITATION_NOT_FOUND");
        assert_eq!(a.message(), answers[0].message());
        assert_eq!(a.details(), answers[0].details());
    }
    app.clock.set(Timestamp::now());
    assert!(app.preview(&token_of(&live_link)).await.is_ok());
    // Previews consume nothing.
    assert!(app.preview(&token_of(&live_link)).await.is_ok());
    assert_status(&app.preview("not a token").await.unwrap_err(), Code::InvalidArgument, "INVALID_ARGUMENT");
}

async fn accept_rules(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let org = app.create_org("acme", 5, &["acme.com"]).await.organization_id;
    let (inv, link) = app.invite_link(&org, "dana@acme.com", &["admin"]).await;
    let token = token_of(&link);
    let dana = app.user("dana@acme.com").await;
    let eve = app.user("eve@acme.com").await;
    let before = app.usage(&org).await;

    // Another person's identity: refused, nothing changes.
    assert_status(
        &app.accept(&token, &eve, "eve@acme.com").await.unwrap_err(),
        Code::PermissionDenied,
        "EMAIL_MISMATCH",
    );
    // The invited email, but unverified: refused.
    let unverified =
        app.invitations.clone().accept_invitation(svc(accept_req(&token, &dana, "dana@acme.com", false))).await;
    assert_status(&unverified.unwrap_err(), Code::PermissionDenied, "EMAIL_NOT_VERIFIED");
    // Not a service key: refused before anything is read.
    let as_operator =
        app.invitations.clone().accept_invitation(op(accept_req(&token, &dana, "dana@acme.com", true))).await;
    assert_status(&as_operator.unwrap_err(), Code::PermissionDenied, "SERVICE_ONLY");
    let anonymous = app.invitations.clone().accept_invitation(accept_req(&token, &dana, "dana@acme.com", true)).await;
    assert_status(&anonymous.unwrap_err(), Code::Unauthenticated, "CREDENTIALS_MISSING");
    let wrong_key = app
        .invitations
        .clone()
        .accept_invitation(with_key(accept_req(&token, &dana, "dana@acme.com", true), "not-a-real-key-000000000"))
        .await;
    assert_status(&wrong_key.unwrap_err(), Code::Unauthenticated, "CREDENTIALS_INVALID");
    let mut no_identity = accept_req(&token, &dana, "dana@acme.com", true);
    no_identity.identity = None;
    let err = app.invitations.clone().accept_invitation(svc(no_identity)).await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(app.usage(&org).await, before);
    assert!(app.members(&org).await.is_empty());
    assert_eq!(app.get(&org, &inv.invitation_id).await.status, ipb::InvitationStatus::Pending as i32);
    assert_eq!(app.events(&org, &inv.invitation_id).await, vec!["invitation.created"]);

    // The invited person, with a request id: accepted; the retry gets the same answer.
    let mut req = accept_req(&token, &dana, "DANA@acme.com", true);
    req.request_id = "accept-1".into();
    let first = app.invitations.clone().accept_invitation(svc(req.clone())).await.unwrap().into_inner();
    let retry = app.invitations.clone().accept_invitation(svc(req)).await.unwrap().into_inner();
    assert_eq!(first, retry);
    assert_eq!(first.membership.unwrap().roles, vec!["admin".to_owned()]);
    // Accepted at most once.
    assert_status(
        &app.accept(&token, &dana, "dana@acme.com").await.unwrap_err(),
        Code::FailedPrecondition,
        "INVITATION_ALREADY_ACCEPTED",
    );
    let usage = app.usage(&org).await;
    assert_eq!((usage.active, usage.reserved), (1, 0));
    assert_eq!(app.members(&org).await.len(), 1);
    assert_eq!(app.events(&org, &inv.invitation_id).await, vec!["invitation.created", "invitation.accepted"]);

    // A token of org A presented for org B's invitation: tokens name no organization, so the
    // invitation of org B is unaffected and org A's is what gets accepted (or not).
    let org_b = app.create_org("beta", 5, &["beta.io"]).await.organization_id;
    let (b_inv, _) = app.invite_link(&org_b, "dana@beta.io", &[]).await;
    let (_, a_link) = app.invite_link(&org, "fred@acme.com", &[]).await;
    let dana_b = app.user("dana@beta.io").await;
    let err = app.accept(&token_of(&a_link), &dana_b, "dana@beta.io").await.unwrap_err();
    assert_status(&err, Code::PermissionDenied, "EMAIL_MISMATCH");
    assert_eq!(app.get(&org_b, &b_inv.invitation_id).await.status, ipb::InvitationStatus::Pending as i32);
    assert!(app.members(&org_b).await.is_empty());
}

async fn revoke_releases_the_seat(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let org = app.create_org("acme", 1, &["acme.com"]).await.organization_id;
    let (inv, link) = app.invite_link(&org, "a@acme.com", &[]).await;
    assert_status(
        &app.invite(op(create_req(&org, "b@acme.com", &[], false))).await.unwrap_err(),
        Code::ResourceExhausted,
        "SEATS_EXHAUSTED",
    );
    let revoke = || {
        let mut client = app.invitations.clone();
        let req = op(ipb::RevokeInvitationRequest {
            organization_id: org.clone(),
            invitation_id: inv.invitation_id.clone(),
            request_id: String::new(),
        });
        async move { client.revoke_invitation(req).await }
    };
    let revoked = revoke().await.unwrap().into_inner().invitation.unwrap();
    assert_eq!(revoked.status, ipb::InvitationStatus::Revoked as i32);
    assert!(revoked.revoke_time.is_some());
    assert_eq!(app.usage(&org).await.available, 1);
    // Revoking twice is not an error and changes nothing.
    assert_eq!(revoke().await.unwrap().into_inner().invitation.unwrap().status, ipb::InvitationStatus::Revoked as i32);
    assert_eq!(app.events(&org, &inv.invitation_id).await, vec!["invitation.created", "invitation.revoked"]);
    // The revoked link is dead.
    let a = app.user("a@acme.com").await;
    assert_status(
        &app.accept(&token_of(&link), &a, "a@acme.com").await.unwrap_err(),
        Code::FailedPrecondition,
        "INVITATION_REVOKED",
    );
    // The seat is usable again; an accepted invitation cannot be revoked.
    let (b_inv, b_link) = app.invite_link(&org, "b@acme.com", &[]).await;
    let b = app.user("b@acme.com").await;
    app.accept(&token_of(&b_link), &b, "b@acme.com").await.unwrap();
    let err = app
        .invitations
        .clone()
        .revoke_invitation(op(ipb::RevokeInvitationRequest {
            organization_id: org.clone(),
            invitation_id: b_inv.invitation_id.clone(),
            request_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "INVITATION_ALREADY_ACCEPTED");
    assert_eq!(app.usage(&org).await.active, 1);
}

async fn resend_kills_the_old_link(backend: Backend) {
    let db = TestDb::new(backend).await;
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn_with(&db, Options { mail: Mail::Smtp(smtp.url()), ..Options::default() }).await;
    // A full organization: the resend has to move the seat to a new reservation.
    let org = app.create_org("acme", 1, &["acme.com"]).await.organization_id;
    let created = app.invite(op(create_req(&org, "a@acme.com", &[], true))).await.unwrap().invitation.unwrap();
    let old_token = token_in(&smtp.wait_for(1).await[0].data);
    app.clock.set(Timestamp(Timestamp::now().0 + 3_600_000_000));
    let resent = app
        .invitations
        .clone()
        .resend_invitation(op(ipb::ResendInvitationRequest {
            organization_id: org.clone(),
            invitation_id: created.invitation_id.clone(),
            send_email: true,
            ttl: Some(prost_types::Duration { seconds: 48 * 3600, nanos: 0 }),
            request_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(resent.invitation_link.is_none());
    let resent = resent.invitation.unwrap();
    assert!(ts(&resent.expire_time) > ts(&created.expire_time), "a new expiry");
    assert_ne!(resent.seat_reservation_id, created.seat_reservation_id);
    let new_token = token_in(&smtp.wait_for(2).await[1].data);
    assert_ne!(new_token, old_token);
    app.clock.set(Timestamp::now());

    let usage = app.usage(&org).await;
    assert_eq!((usage.reserved, usage.available), (1, 0), "one seat, moved");
    let a = app.user("a@acme.com").await;
    assert_status(
        &app.accept(&old_token, &a, "a@acme.com").await.unwrap_err(),
        Code::FailedPrecondition,
        "INVITATION_SUPERSEDED",
    );
    assert_status(&app.preview(&old_token).await.unwrap_err(), Code::NotFound, "INVITATION_NOT_FOUND");
    app.accept(&new_token, &a, "a@acme.com").await.unwrap();
    assert_eq!(app.usage(&org).await.active, 1);
    assert_eq!(
        app.events(&org, &created.invitation_id).await,
        vec!["invitation.created", "invitation.resent", "invitation.accepted"]
    );
    // Resending an accepted invitation is refused.
    let err = app
        .invitations
        .clone()
        .resend_invitation(op(ipb::ResendInvitationRequest {
            organization_id: org.clone(),
            invitation_id: created.invitation_id.clone(),
            send_email: false,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "INVITATION_ALREADY_ACCEPTED");
}

async fn ttl_bounds(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn_with(
        &db,
        Options {
            min_ttl: Duration::from_secs(300),
            max_ttl: Duration::from_secs(3 * 24 * 3600),
            ..Options::default()
        },
    )
    .await;
    let org = app.create_org("acme", 10, &["acme.com"]).await.organization_id;
    for (seconds, nanos) in [(299, 0), (3 * 24 * 3600 + 1, 0), (-60, 0), (0, 0)] {
        let mut req = create_req(&org, "a@acme.com", &[], false);
        req.ttl = Some(prost_types::Duration { seconds, nanos });
        let err = app.invite(op(req)).await.unwrap_err();
        assert_status(&err, Code::InvalidArgument, "INVALID_ARGUMENT");
        assert_eq!(err.get_details_bad_request().unwrap().field_violations[0].field, "ttl");
    }
    assert!(app.list(&org).await.is_empty());
    assert_eq!(app.usage(&org).await.reserved, 0);
    // The bounds themselves are allowed; no TTL means 24 hours.
    for (email, seconds) in [("min@acme.com", 300), ("max@acme.com", 3 * 24 * 3600)] {
        let mut req = create_req(&org, email, &[], false);
        req.ttl = Some(prost_types::Duration { seconds, nanos: 0 });
        let inv = app.invite(op(req)).await.unwrap().invitation.unwrap();
        assert!(ts(&inv.expire_time).0 - ts(&inv.create_time).0 >= seconds * 1_000_000);
    }
    let (inv, _) = app.invite_link(&org, "default@acme.com", &[]).await;
    let lifetime = ts(&inv.expire_time).0 - ts(&inv.create_time).0;
    assert!((24 * 3_600_000_000..25 * 3_600_000_000).contains(&lifetime), "about 24 hours: {lifetime}");
}

async fn expiry_boundary_by_clock(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let org = app.create_org("acme", 10, &["acme.com"]).await.organization_id;
    let (on_time, on_time_link) = app.invite_link(&org, "a@acme.com", &[]).await;
    let (late, late_link) = app.invite_link(&org, "b@acme.com", &[]).await;
    let a = app.user("a@acme.com").await;
    let b = app.user("b@acme.com").await;

    // At 23:59:59 the link works.
    app.clock.set(Timestamp(ts(&on_time.expire_time).0 - 1_000_000));
    app.accept(&token_of(&on_time_link), &a, "a@acme.com").await.unwrap();

    // At 24:00:01 it does not, and nothing changes but the record of the expiry.
    app.clock.set(Timestamp(ts(&late.expire_time).0 + 1_000_000));
    let before = app.members(&org).await.len();
    let err = app.accept(&token_of(&late_link), &b, "b@acme.com").await.unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "INVITATION_EXPIRED");
    assert_eq!(app.members(&org).await.len(), before);
    assert_eq!(app.get(&org, &late.invitation_id).await.status, ipb::InvitationStatus::Expired as i32);
    // The expired pending invitation does not block a new one for the same email.
    app.invite_link(&org, "b@acme.com", &[]).await;
}

async fn full_org_is_seats_exhausted(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let org = app.create_org("acme", 2, &["acme.com"]).await.organization_id;
    app.invite_link(&org, "a@acme.com", &[]).await;
    app.invite_link(&org, "b@acme.com", &[]).await;
    let err = app.invite(op(create_req(&org, "c@acme.com", &[], true))).await.unwrap_err();
    assert_status(&err, Code::ResourceExhausted, "SEATS_EXHAUSTED");
    let quota = err.get_details_quota_failure().expect("QuotaFailure");
    assert_eq!(quota.violations.len(), 1);
    assert_eq!(app.list(&org).await.len(), 2);
    assert_eq!(app.usage(&org).await.reserved, 2);
}

async fn domains_are_enforced(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let org = app.create_org("acme", 20, &["acme.com"]).await.organization_id;
    let admin = app.user("boss@acme.com").await;
    let admin_token = member_token("admin", &admin, &org);
    for email in ["x@other.com", "x@acme.com.evil.io", "x@evilacme.com", "x@sub.acme.com", "x@acme.co"] {
        let err = app.invite(with_key(create_req(&org, email, &[], true), &admin_token)).await.unwrap_err();
        assert_status(&err, Code::PermissionDenied, "EMAIL_DOMAIN_NOT_ALLOWED");
        let err = app.invite(op(create_req(&org, email, &[], false))).await.unwrap_err();
        assert_status(&err, Code::PermissionDenied, "EMAIL_DOMAIN_NOT_ALLOWED");
    }
    // A look-alike with a Cyrillic "а" is not even an email address here.
    let err = app.invite(op(create_req(&org, "x@\u{0430}cme.com", &[], false))).await.unwrap_err();
    assert_status(&err, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert!(app.list(&org).await.is_empty());
    assert_eq!(app.usage(&org).await.reserved, 0);
    // Case is normalized: the same address.
    let inv = app.invite(op(create_req(&org, "Mixed.Case@ACME.com", &[], false))).await.unwrap().invitation.unwrap();
    assert_eq!(inv.email, "mixed.case@acme.com");
    // Only the operator may waive the domain check (e.g. for the first admin).
    let mut waived = create_req(&org, "consultant@partner.io", &[], true);
    waived.waive_domain_check = true;
    let err = app.invite(with_key(waived.clone(), &admin_token)).await.unwrap_err();
    assert_status(&err, Code::PermissionDenied, "OPERATOR_ONLY");
    app.invite(op(waived)).await.unwrap();
}

async fn duplicates_and_members(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let org = app.create_org("acme", 10, &["acme.com"]).await.organization_id;
    let (first, link) = app.invite_link(&org, "a@acme.com", &[]).await;
    // A second pending invitation for the same email is refused, naming the existing one.
    let err = app.invite(op(create_req(&org, "A@acme.com", &["admin"], false))).await.unwrap_err();
    assert_status(&err, Code::AlreadyExists, "INVITATION_PENDING");
    assert_eq!(err.get_details_error_info().unwrap().metadata.get("invitation_id"), Some(&first.invitation_id));
    assert_eq!(app.usage(&org).await.reserved, 1);
    // Once the person is a member, inviting them again is ALREADY_EXISTS too.
    let a = app.user("a@acme.com").await;
    app.accept(&token_of(&link), &a, "a@acme.com").await.unwrap();
    let err = app.invite(op(create_req(&org, "a@acme.com", &[], false))).await.unwrap_err();
    assert_status(&err, Code::AlreadyExists, "MEMBER_EXISTS");
    assert_eq!(app.list(&org).await.len(), 1);

    // Someone added as a member directly while their invitation was pending: accepting answers
    // MEMBER_EXISTS, and the moot invitation gives its seat back.
    let (inv, link) = app.invite_link(&org, "c@acme.com", &[]).await;
    app.tenancy
        .clone()
        .add_member(op(tpb::AddMemberRequest {
            organization_id: org.clone(),
            email: "c@acme.com".into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    let c = app.user("c@acme.com").await;
    let err = app.accept(&token_of(&link), &c, "c@acme.com").await.unwrap_err();
    assert_status(&err, Code::AlreadyExists, "MEMBER_EXISTS");
    assert_eq!(app.get(&org, &inv.invitation_id).await.status, ipb::InvitationStatus::Revoked as i32);
    let usage = app.usage(&org).await;
    assert_eq!((usage.active, usage.reserved), (2, 0));
}

async fn bad_inputs_change_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let org = app.create_org("acme", 10, &["acme.com"]).await.organization_id;
    let other = app.create_org("beta", 10, &["beta.io"]).await.organization_id;
    let (inv, _) = app.invite_link(&org, "a@acme.com", &[]).await;
    let admin = app.user("boss@acme.com").await;
    let admin_token = member_token("admin", &admin, &org);
    let plain_token = member_token("member", &admin, &org);
    let other_admin = member_token("admin", &admin, &other);
    let snapshot =
        || async { (app.list(&org).await, app.usage(&org).await, app.list(&other).await, app.usage(&other).await) };
    let before = snapshot().await;

    let mut cases: Vec<(&str, tonic::Request<ipb::CreateInvitationRequest>, Code, &str)> = vec![
        (
            "malformed org id",
            op(create_req("not-a-uuid", "b@acme.com", &[], false)),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        ("missing org id", op(create_req("", "b@acme.com", &[], false)), Code::InvalidArgument, "INVALID_ARGUMENT"),
        ("malformed email", op(create_req(&org, "b@@acme.com", &[], false)), Code::InvalidArgument, "INVALID_ARGUMENT"),
        ("missing email", op(create_req(&org, "", &[], false)), Code::InvalidArgument, "INVALID_ARGUMENT"),
        (
            "bad role name",
            op(create_req(&org, "b@acme.com", &["Admin"], false)),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "unknown role",
            op(create_req(&org, "b@acme.com", &["wizard"], false)),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "no credentials",
            tonic::Request::new(create_req(&org, "b@acme.com", &[], true)),
            Code::Unauthenticated,
            "CREDENTIALS_MISSING",
        ),
        (
            "wrong key",
            with_key(create_req(&org, "b@acme.com", &[], true), "wrong-key-0000000000000"),
            Code::Unauthenticated,
            "CREDENTIALS_INVALID",
        ),
        (
            "other org's admin",
            with_key(create_req(&org, "b@acme.com", &[], true), &other_admin),
            Code::PermissionDenied,
            "WRONG_ORGANIZATION",
        ),
        (
            "no permission",
            with_key(create_req(&org, "b@acme.com", &[], true), &plain_token),
            Code::PermissionDenied,
            "PERMISSION_MISSING",
        ),
        (
            "member wants the link",
            with_key(create_req(&org, "b@acme.com", &[], false), &admin_token),
            Code::PermissionDenied,
            "OPERATOR_ONLY",
        ),
        (
            "member grants owner",
            with_key(create_req(&org, "b@acme.com", &["owner"], true), &admin_token),
            Code::PermissionDenied,
            "OWNER_ROLE_OPERATOR_ONLY",
        ),
        (
            "unknown org",
            op(create_req(&uuid::Uuid::now_v7().to_string(), "b@acme.com", &[], false)),
            Code::NotFound,
            "ORGANIZATION_NOT_FOUND",
        ),
    ];
    let long_email = format!("{}@acme.com", "b".repeat(250));
    cases.push((
        "oversize email",
        op(create_req(&org, &long_email, &[], false)),
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    ));
    let many: Vec<String> = (0..21).map(|i| format!("r{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    cases.push((
        "too many roles",
        op(create_req(&org, "b@acme.com", &many, false)),
        Code::InvalidArgument,
        "INVALID_ARGUMENT",
    ));
    let mut long_request_id = create_req(&org, "b@acme.com", &[], false);
    long_request_id.request_id = "r".repeat(129);
    cases.push(("oversize request id", op(long_request_id), Code::InvalidArgument, "INVALID_ARGUMENT"));
    let mut bad_header = tonic::Request::new(create_req(&org, "b@acme.com", &[], false));
    bad_header.metadata_mut().insert("authorization", OPERATOR_KEY.parse().unwrap());
    cases.push(("not a bearer header", bad_header, Code::Unauthenticated, "CREDENTIALS_MALFORMED"));
    for (what, req, code, wanted) in cases {
        let err = app.invite(req).await.expect_err(what);
        assert_eq!((err.code(), reason(&err).as_str()), (code, wanted), "{what}: {err:?}");
    }

    // Reads and revokes across tenants, and malformed ids.
    let get = |org: &str, id: &str, key: &str| {
        let mut client = app.invitations.clone();
        let req = with_key(ipb::GetInvitationRequest { organization_id: org.into(), invitation_id: id.into() }, key);
        async move { client.get_invitation(req).await }
    };
    assert_status(
        &get(&other, &inv.invitation_id, OPERATOR_KEY).await.unwrap_err(),
        Code::NotFound,
        "INVITATION_NOT_FOUND",
    );
    assert_status(
        &get(&org, &inv.invitation_id, &other_admin).await.unwrap_err(),
        Code::PermissionDenied,
        "WRONG_ORGANIZATION",
    );
    assert_status(&get(&org, "nope", OPERATOR_KEY).await.unwrap_err(), Code::InvalidArgument, "INVALID_ARGUMENT");
    assert!(get(&org, &inv.invitation_id, &admin_token).await.is_ok());
    let revoke = |org: &str, id: &str, key: &str| {
        let mut client = app.invitations.clone();
        let req = with_key(
            ipb::RevokeInvitationRequest {
                organization_id: org.into(),
                invitation_id: id.into(),
                request_id: String::new(),
            },
            key,
        );
        async move { client.revoke_invitation(req).await }
    };
    assert_status(
        &revoke(&other, &inv.invitation_id, OPERATOR_KEY).await.unwrap_err(),
        Code::NotFound,
        "INVITATION_NOT_FOUND",
    );
    assert_status(
        &revoke(&org, &inv.invitation_id, &other_admin).await.unwrap_err(),
        Code::PermissionDenied,
        "WRONG_ORGANIZATION",
    );
    assert_status(
        &revoke(&org, &inv.invitation_id, &plain_token).await.unwrap_err(),
        Code::PermissionDenied,
        "PERMISSION_MISSING",
    );
    let list = app
        .invitations
        .clone()
        .list_invitations(with_key(
            ipb::ListInvitationsRequest { organization_id: org.clone(), status: 99, ..Default::default() },
            OPERATOR_KEY,
        ))
        .await
        .unwrap_err();
    assert_status(&list, Code::InvalidArgument, "INVALID_ARGUMENT");
    assert_eq!(snapshot().await, before, "nothing changed");
}

async fn deleting_the_org_revokes_pending_invitations(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let org = app.create_org("acme", 10, &["acme.com"]).await.organization_id;
    let keep = app.create_org("keep", 10, &["keep.io"]).await.organization_id;
    let (inv, link) = app.invite_link(&org, "a@acme.com", &[]).await;
    let (kept, _) = app.invite_link(&keep, "a@keep.io", &[]).await;
    app.tenancy
        .clone()
        .delete_organization(op(tpb::DeleteOrganizationRequest { organization_id: org.clone(), ..Default::default() }))
        .await
        .unwrap();
    let a = app.user("a@acme.com").await;
    // Before the sweeper: the acceptance fails because tenancy released the seat.
    let err = app.accept(&token_of(&link), &a, "a@acme.com").await.unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "INVITATION_REVOKED");
    let (inv2, _) = {
        // A second pending invitation, created before deletion in another run, is revoked by the sweeper.
        let org2 = app.create_org("acme2", 10, &["acme.com"]).await.organization_id;
        let made = app.invite_link(&org2, "b@acme.com", &[]).await;
        app.tenancy
            .clone()
            .delete_organization(op(tpb::DeleteOrganizationRequest {
                organization_id: org2.clone(),
                ..Default::default()
            }))
            .await
            .unwrap();
        (made.0, org2)
    };
    let report = app.sweep().await;
    assert_eq!(report.revoked, 1);
    assert_eq!(app.get(&inv2.organization_id, &inv2.invitation_id).await.status, ipb::InvitationStatus::Revoked as i32);
    assert_eq!(app.get(&org, &inv.invitation_id).await.status, ipb::InvitationStatus::Revoked as i32);
    assert_eq!(app.get(&keep, &kept.invitation_id).await.status, ipb::InvitationStatus::Pending as i32);
    let events = app.events(&inv2.organization_id, &inv2.invitation_id).await;
    assert_eq!(events, vec!["invitation.created", "invitation.revoked"]);
    // Creating in a deleted organization is refused.
    let err = app.invite(op(create_req(&org, "c@acme.com", &[], false))).await.unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "ORGANIZATION_INACTIVE");
}

async fn listing_filters_and_pages(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let org = app.create_org("acme", 20, &["acme.com"]).await.organization_id;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(app.invite_link(&org, &format!("u{i}@acme.com"), &[]).await.0.invitation_id);
    }
    app.invitations
        .clone()
        .revoke_invitation(op(ipb::RevokeInvitationRequest {
            organization_id: org.clone(),
            invitation_id: ids[0].clone(),
            request_id: String::new(),
        }))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let resp = app
            .invitations
            .clone()
            .list_invitations(op(ipb::ListInvitationsRequest {
                organization_id: org.clone(),
                status: ipb::InvitationStatus::Pending as i32,
                page_size: 2,
                page_token: page_token.clone(),
            }))
            .await
            .unwrap()
            .into_inner();
        assert!(resp.invitations.len() <= 2);
        seen.extend(resp.invitations.into_iter().map(|i| i.invitation_id));
        if resp.next_page_token.is_empty() {
            break;
        }
        page_token = resp.next_page_token;
    }
    let mut expected: Vec<String> = ids[1..].to_vec();
    expected.reverse();
    assert_eq!(seen, expected, "pending ones, newest first");
    let revoked = app
        .invitations
        .clone()
        .list_invitations(op(ipb::ListInvitationsRequest {
            organization_id: org.clone(),
            status: ipb::InvitationStatus::Revoked as i32,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .invitations;
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].invitation_id, ids[0]);
}

async fn preview_is_rate_limited(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn_with(
        &db,
        Options { preview_limit: lanyard_invitation::RateLimit::new(3, 1), ..Options::default() },
    )
    .await;
    let org = app.create_org("acme", 10, &["acme.com"]).await.organization_id;
    let (_, link) = app.invite_link(&org, "a@acme.com", &[]).await;
    for _ in 0..3 {
        app.preview(&token_of(&link)).await.unwrap();
    }
    let err = app.preview(&token_of(&link)).await.unwrap_err();
    assert_status(&err, Code::ResourceExhausted, "RATE_LIMITED");
    use tonic_types::StatusExt;
    let retry = err.get_details_retry_info().and_then(|r| r.retry_delay).expect("a retry-after hint");
    assert!(retry >= std::time::Duration::from_secs(1) && retry <= std::time::Duration::from_secs(60), "{retry:?}");
}

async fn emails_as_files(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let org = app.create_org("acme", 10, &["acme.com"]).await.organization_id;
    let inv = app.invite(op(create_req(&org, "a@acme.com", &[], true))).await.unwrap().invitation.unwrap();
    app.wait_for_invitation(&org, &inv.invitation_id, "SENT", |i| {
        i.email_delivery == ipb::EmailDeliveryStatus::Sent as i32
    })
    .await;
    let files = app.eml_files();
    assert_eq!(files.len(), 1);
    let eml = std::fs::read_to_string(&files[0]).unwrap();
    let token = token_in(&eml);
    let a = app.user("a@acme.com").await;
    app.accept(&token, &a, "a@acme.com").await.unwrap();
}

async fn concurrent_accepts_make_one_membership(backend: Backend) {
    const TASKS: usize = 20;
    const ROUNDS: usize = 8;
    let db = TestDb::new(backend).await;
    let app = std::sync::Arc::new(TestApp::spawn(&db).await);
    let org = app.create_org("acme", 100, &["acme.com"]).await.organization_id;
    for round in 0..ROUNDS {
        let email = format!("u{round}@acme.com");
        let (inv, link) = app.invite_link(&org, &email, &["admin"]).await;
        let user = app.user(&email).await;
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(TASKS));
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let (app, barrier, token, user, email) =
                    (app.clone(), barrier.clone(), token_of(&link), user.clone(), email.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    app.accept(&token, &user, &email).await
                })
            })
            .collect();
        let results: Vec<_> = futures::future::join_all(tasks).await.into_iter().map(|r| r.unwrap()).collect();
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "round {round}: exactly one acceptance");
        for err in results.iter().filter_map(|r| r.as_ref().err()) {
            assert_status(err, Code::FailedPrecondition, "INVITATION_ALREADY_ACCEPTED");
        }
        assert_eq!(app.events(&org, &inv.invitation_id).await, vec!["invitation.created", "invitation.accepted"]);
        let usage = app.usage(&org).await;
        assert_eq!((usage.active as usize, usage.reserved), (round + 1, 0), "round {round}");
    }
    assert_eq!(app.members(&org).await.len(), ROUNDS);
}

async fn concurrent_invitations_never_oversell(backend: Backend) {
    const FREE: usize = 3;
    const TASKS: usize = 10;
    const ROUNDS: usize = 5;
    let db = TestDb::new(backend).await;
    let app = std::sync::Arc::new(TestApp::spawn(&db).await);
    for round in 0..ROUNDS {
        // One seat is held by a pending invitation that is accepted during the race: accepting
        // turns its reservation into the membership and must not take a second seat.
        let org = app.create_org(&format!("acme-{round}"), (FREE + 1) as i32, &["acme.com"]).await.organization_id;
        let (_, link) = app.invite_link(&org, "first@acme.com", &[]).await;
        let first = app.user("first@acme.com").await;
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(TASKS + 1));
        let creates: Vec<_> = (0..TASKS)
            .map(|i| {
                let (app, barrier, org) = (app.clone(), barrier.clone(), org.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    app.invite(op(create_req(&org, &format!("u{i}@acme.com"), &[], false))).await
                })
            })
            .collect();
        let accept = {
            let (app, barrier, token, first) = (app.clone(), barrier.clone(), token_of(&link), first.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                app.accept(&token, &first, "first@acme.com").await
            })
        };
        let results: Vec<_> = futures::future::join_all(creates).await.into_iter().map(|r| r.unwrap()).collect();
        accept.await.unwrap().expect("the acceptance succeeds");
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), FREE, "round {round}: exactly the free seats");
        for err in results.iter().filter_map(|r| r.as_ref().err()) {
            assert_status(err, Code::ResourceExhausted, "SEATS_EXHAUSTED");
        }
        let usage = app.usage(&org).await;
        assert_eq!((usage.active, usage.reserved, usage.available), (1, FREE as i32, 0), "round {round}");
        let pending = app.list(&org).await.iter().filter(|i| i.status == ipb::InvitationStatus::Pending as i32).count();
        assert_eq!(pending, FREE);
    }
}

async fn mailer_delivers_once_across_a_restart(backend: Backend) {
    let db = TestDb::new(backend).await;
    let port = support::smtp::free_port();
    let url = format!("smtp://127.0.0.1:{port}");
    let options = Options { mail: Mail::Smtp(url), max_attempts: 10_000, ..Options::default() };

    // Phase 1: the server is up; one message goes out.
    let first_server = SmtpServer::start_on(port).await;
    let app = TestApp::spawn_with(&db, options.clone()).await;
    let org = app.create_org("acme", 10, &["acme.com"]).await.organization_id;
    let delivered = app.invite(op(create_req(&org, "a@acme.com", &[], true))).await.unwrap().invitation.unwrap();
    first_server.wait_for(1).await;
    app.wait_for_invitation(&org, &delivered.invitation_id, "SENT", |i| {
        i.email_delivery == ipb::EmailDeliveryStatus::Sent as i32
    })
    .await;

    // Phase 2: the server goes down; the next message fails and waits for a retry.
    drop(first_server);
    let pending = app.invite(op(create_req(&org, "b@acme.com", &[], true))).await.unwrap().invitation.unwrap();
    let failed_once = app
        .wait_for_invitation(&org, &pending.invitation_id, "a failed attempt", |i| i.email_delivery_error.is_some())
        .await;
    assert_eq!(failed_once.email_delivery, ipb::EmailDeliveryStatus::Queued as i32);

    // Phase 3: the process restarts and the server comes back: the pending message arrives once,
    // and the one delivered before the restart is not sent again.
    app.stop().await;
    let server = SmtpServer::start_on(port).await;
    let app = TestApp::spawn_with(&db, options).await;
    let got = server.wait_for(1).await;
    assert_eq!(got[0].to, vec!["<b@acme.com>".to_owned()]);
    app.wait_for_invitation(&org, &pending.invitation_id, "SENT", |i| {
        i.email_delivery == ipb::EmailDeliveryStatus::Sent as i32 && i.email_delivery_error.is_none()
    })
    .await;
    assert_eq!(app.mailer.deliver_due().await.unwrap(), 0, "nothing left to send");
    assert_eq!(server.messages().len(), 1);
    let b = app.user("b@acme.com").await;
    app.accept(&token_in(&got[0].data), &b, "b@acme.com").await.unwrap();
}

async fn mailer_gives_up_after_max_attempts(backend: Backend) {
    let db = TestDb::new(backend).await;
    let port = support::smtp::free_port();
    let options =
        Options { mail: Mail::Smtp(format!("smtp://127.0.0.1:{port}")), max_attempts: 3, ..Options::default() };
    let app = TestApp::spawn_with(&db, options).await;
    let org = app.create_org("acme", 10, &["acme.com"]).await.organization_id;
    let inv = app.invite(op(create_req(&org, "a@acme.com", &[], true))).await.unwrap().invitation.unwrap();
    let failed = app
        .wait_for_invitation(&org, &inv.invitation_id, "FAILED", |i| {
            i.email_delivery == ipb::EmailDeliveryStatus::Failed as i32
        })
        .await;
    assert!(failed.email_delivery_error.is_some());
    // The invitation itself stays pending: an admin can resend it.
    assert_eq!(failed.status, ipb::InvitationStatus::Pending as i32);
    assert_eq!(app.mailer.deliver_due().await.unwrap(), 0);
}

/// Real time, not the injectable clock: the seat is tenancy's, and tenancy's clock is the system
/// clock. The test waits for the condition (however long the one-minute TTL takes), asserting no
/// duration.
async fn expiry_frees_the_seat_without_the_sweeper(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let org = app.create_org("acme", 1, &["acme.com"]).await.organization_id;
    let mut req = create_req(&org, "a@acme.com", &[], false);
    req.ttl = Some(prost_types::Duration { seconds: 60, nanos: 0 });
    let first = app.invite(op(req)).await.unwrap().invitation.unwrap();
    let err = app.invite(op(create_req(&org, "b@acme.com", &[], false))).await.unwrap_err();
    assert_status(&err, Code::ResourceExhausted, "SEATS_EXHAUSTED");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while app.usage(&org).await.available == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the reservation never lapsed");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // No sweeper has run: the invitation reads expired, and its seat is already usable.
    assert_eq!(app.get(&org, &first.invitation_id).await.status, ipb::InvitationStatus::Expired as i32);
    assert_eq!(app.events(&org, &first.invitation_id).await, vec!["invitation.created"]);
    app.invite(op(create_req(&org, "b@acme.com", &[], false))).await.unwrap();
    // The sweeper then records the expiry.
    assert_eq!(app.sweep().await.expired, 1);
    assert_eq!(app.events(&org, &first.invitation_id).await, vec!["invitation.created", "invitation.expired"]);
    assert_eq!(app.sweep().await.expired, 0);
}

/// The cross-service steps are made to look interrupted by doing the first step directly on
/// tenancy (as a crashed attempt would have), then retrying through the invitation service.
async fn retries_complete_after_a_crash_between_steps(backend: Backend) {
    let db = TestDb::new(backend).await;
    let app = TestApp::spawn(&db).await;
    let org = app.create_org("acme", 5, &["acme.com"]).await.organization_id;

    // Accept: the seat was claimed, then the process died before recording the acceptance.
    let (inv, link) = app.invite_link(&org, "a@acme.com", &["admin"]).await;
    let a = app.user("a@acme.com").await;
    app.tenancy
        .clone()
        .claim_seat(svc(tpb::ClaimSeatRequest {
            organization_id: org.clone(),
            reservation_id: inv.seat_reservation_id.clone(),
            user_id: a.clone(),
            roles: vec!["admin".into()],
            invited_by: inv.inviter.clone(),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(app.get(&org, &inv.invitation_id).await.status, ipb::InvitationStatus::Pending as i32);
    let done = app.accept(&token_of(&link), &a, "a@acme.com").await.unwrap();
    assert_eq!(done.invitation.unwrap().status, ipb::InvitationStatus::Accepted as i32);
    let usage = app.usage(&org).await;
    assert_eq!((usage.active, usage.reserved), (1, 0), "never double-counted");
    assert_eq!(app.members(&org).await.len(), 1);
    assert_eq!(app.events(&org, &inv.invitation_id).await, vec!["invitation.created", "invitation.accepted"]);

    // Revoke: the seat was released, then the process died before recording the revocation.
    let (inv, link) = app.invite_link(&org, "b@acme.com", &[]).await;
    app.tenancy
        .clone()
        .release_seat(svc(tpb::ReleaseSeatRequest {
            organization_id: org.clone(),
            reservation_id: inv.seat_reservation_id.clone(),
        }))
        .await
        .unwrap();
    let revoked = app
        .invitations
        .clone()
        .revoke_invitation(op(ipb::RevokeInvitationRequest {
            organization_id: org.clone(),
            invitation_id: inv.invitation_id.clone(),
            request_id: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .invitation
        .unwrap();
    assert_eq!(revoked.status, ipb::InvitationStatus::Revoked as i32);
    let b = app.user("b@acme.com").await;
    assert_status(
        &app.accept(&token_of(&link), &b, "b@acme.com").await.unwrap_err(),
        Code::FailedPrecondition,
        "INVITATION_REVOKED",
    );
    let usage = app.usage(&org).await;
    assert_eq!((usage.active, usage.reserved), (1, 0));
}

async fn a_permanent_rejection_fails_at_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let smtp = SmtpServer::start().await;
    let app = TestApp::spawn_with(&db, Options { mail: Mail::Smtp(smtp.url()), ..Options::default() }).await;
    let org = app.create_org("acme", 10, &["acme.com"]).await.organization_id;
    let inv = app.invite(op(create_req(&org, "reject-me@acme.com", &[], true))).await.unwrap().invitation.unwrap();
    let failed = app
        .wait_for_invitation(&org, &inv.invitation_id, "FAILED", |i| {
            i.email_delivery == ipb::EmailDeliveryStatus::Failed as i32
        })
        .await;
    assert!(failed.email_delivery_error.unwrap().contains("550"));
    assert_eq!(smtp.rejected().len(), 1, "a 5xx answer is not retried");
    assert!(smtp.messages().is_empty());
}

//! Domain-ownership checks: the real hickory resolver in `DomainVerifier` asking the fake DNS
//! server over loopback, for each answer a domain owner's DNS can give.

use std::time::Duration;

use lanyard_tenancy::dns::{challenge_name, challenge_value, Check, DnsConfig, DnsError, DomainVerifier};
use lanyard_testkit::dns::FakeDns;
use tokio::net::UdpSocket;

const DOMAIN: &str = "acme.test";
const TOKEN: &str = "p2Vq9-Xr_tLw3uZb8KfE1c";

/// Generous: these tests assert what the answer is, never how fast it came, and the machine may
/// be busy.
const TIMEOUT: Duration = Duration::from_secs(10);

fn verifier(dns: &FakeDns) -> DomainVerifier {
    DomainVerifier::new(&DnsConfig { servers: vec![dns.addr()], timeout: TIMEOUT }).unwrap()
}

fn expected() -> String {
    challenge_value(TOKEN)
}

#[tokio::test]
async fn published_value_is_found() {
    let dns = FakeDns::start().await;
    dns.set_txt(&challenge_name(DOMAIN), &[&expected()]);
    assert_eq!(verifier(&dns).check(DOMAIN, TOKEN).await, Ok(Check::Found));
}

#[tokio::test]
async fn names_match_whatever_the_case_and_trailing_dot() {
    let dns = FakeDns::start().await;
    dns.set_txt("_LANYARD-challenge.Acme.Test", &[&expected()]);
    assert_eq!(verifier(&dns).check("acme.test.", TOKEN).await, Ok(Check::Found));
    assert_eq!(verifier(&dns).check("ACME.test", TOKEN).await, Ok(Check::Found));
}

#[tokio::test]
async fn unknown_name_is_missing() {
    let dns = FakeDns::start().await;
    assert_eq!(verifier(&dns).check(DOMAIN, TOKEN).await, Ok(Check::Missing));
    assert!(dns.queries() >= 1, "the server was asked");
}

#[tokio::test]
async fn name_without_txt_records_is_missing() {
    let dns = FakeDns::start().await;
    dns.set_a(&challenge_name(DOMAIN), &["192.0.2.1".parse().unwrap()]);
    assert_eq!(verifier(&dns).check(DOMAIN, TOKEN).await, Ok(Check::Missing));
}

#[tokio::test]
async fn other_value_is_wrong() {
    let dns = FakeDns::start().await;
    dns.set_txt(&challenge_name(DOMAIN), &[&challenge_value("someone-elses-token")]);
    assert_eq!(verifier(&dns).check(DOMAIN, TOKEN).await, Ok(Check::Wrong));
}

#[tokio::test]
async fn a_token_is_not_matched_by_a_prefix_or_extension_of_it() {
    let dns = FakeDns::start().await;
    let name = challenge_name(DOMAIN);
    dns.set_txt(&name, &[&expected()[..expected().len() - 1], &format!("{} ", expected()), TOKEN]);
    assert_eq!(verifier(&dns).check(DOMAIN, TOKEN).await, Ok(Check::Wrong));
}

#[tokio::test]
async fn one_matching_record_among_several_is_found() {
    let dns = FakeDns::start().await;
    dns.set_txt(
        &challenge_name(DOMAIN),
        &["v=spf1 -all", &challenge_value("old-token"), &expected(), "google-site-verification=x"],
    );
    assert_eq!(verifier(&dns).check(DOMAIN, TOKEN).await, Ok(Check::Found));
}

#[tokio::test]
async fn value_split_into_character_strings_is_found() {
    let dns = FakeDns::start().await;
    let value = expected();
    let (head, tail) = value.split_at(10);
    dns.set_txt_strings(&challenge_name(DOMAIN), &[&[head, tail]]);
    assert_eq!(verifier(&dns).check(DOMAIN, TOKEN).await, Ok(Check::Found));
}

#[tokio::test]
async fn record_behind_a_cname_is_found() {
    let dns = FakeDns::start().await;
    dns.set_cname("_lanyard-challenge.acme.test", "acme.verify.test");
    dns.set_txt("acme.verify.test", &[&expected()]);
    assert_eq!(verifier(&dns).check(DOMAIN, TOKEN).await, Ok(Check::Found));
}

#[tokio::test]
async fn record_behind_a_chain_of_cnames_is_found() {
    let dns = FakeDns::start().await;
    dns.set_cname("_lanyard-challenge.acme.test", "acme.verify.test");
    dns.set_cname("acme.verify.test", "acme.delegated.test");
    dns.set_txt("acme.delegated.test", &[&expected()]);
    assert_eq!(verifier(&dns).check(DOMAIN, TOKEN).await, Ok(Check::Found));
}

#[tokio::test]
async fn cname_to_nothing_is_missing() {
    let dns = FakeDns::start().await;
    dns.set_cname("_lanyard-challenge.acme.test", "acme.verify.test");
    assert_eq!(verifier(&dns).check(DOMAIN, TOKEN).await, Ok(Check::Missing));
}

#[tokio::test]
async fn servfail_is_unavailable() {
    let dns = FakeDns::start().await;
    dns.set_txt(&challenge_name(DOMAIN), &[&expected()]);
    dns.set_servfail(true);
    let result = verifier(&dns).check(DOMAIN, TOKEN).await;
    assert!(matches!(result, Err(DnsError::Unavailable(_))), "{result:?}");

    // The outage is not remembered either.
    dns.set_servfail(false);
    assert_eq!(verifier(&dns).check(DOMAIN, TOKEN).await, Ok(Check::Found));
}

#[tokio::test]
async fn silent_server_is_unavailable() {
    // Bound and never read: every query is lost.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let verifier = DomainVerifier::new(&DnsConfig {
        servers: vec![silent.local_addr().unwrap()],
        timeout: Duration::from_secs(1),
    })
    .unwrap();
    let result = verifier.check(DOMAIN, TOKEN).await;
    assert!(matches!(result, Err(DnsError::Unavailable(_))), "{result:?}");
}

#[tokio::test]
async fn changes_are_seen_by_the_next_check() {
    let dns = FakeDns::start().await;
    let verifier = verifier(&dns);
    let name = challenge_name(DOMAIN);

    assert_eq!(verifier.check(DOMAIN, TOKEN).await, Ok(Check::Missing));
    dns.set_txt(&name, &[&challenge_value("typo")]);
    assert_eq!(verifier.check(DOMAIN, TOKEN).await, Ok(Check::Wrong));
    dns.set_txt(&name, &[&expected()]);
    assert_eq!(verifier.check(DOMAIN, TOKEN).await, Ok(Check::Found));
    dns.remove(&name);
    assert_eq!(verifier.check(DOMAIN, TOKEN).await, Ok(Check::Missing));

    // Each check reached the server, although every answer carried a TTL of minutes.
    assert!(dns.queries() >= 4, "{} queries", dns.queries());
}

#[tokio::test]
async fn answers_too_large_for_udp_come_over_tcp() {
    let dns = FakeDns::start().await;
    let filler: Vec<String> = (0..20).map(|i| format!("filler-{i}-{}", "x".repeat(200))).collect();
    let mut values: Vec<&str> = filler.iter().map(String::as_str).collect();
    let value = expected();
    values.push(&value);
    dns.set_txt(&challenge_name(DOMAIN), &values);
    assert_eq!(verifier(&dns).check(DOMAIN, TOKEN).await, Ok(Check::Found));
}

#[tokio::test]
async fn invalid_domain_is_rejected_before_asking() {
    let dns = FakeDns::start().await;
    let result = verifier(&dns).check("acme..test", TOKEN).await;
    assert!(matches!(result, Err(DnsError::InvalidDomain(_))), "{result:?}");
    assert_eq!(dns.queries(), 0);
}

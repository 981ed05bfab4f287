//! Domain-ownership proof over DNS: an organization publishes `lanyard-domain-verification=<token>`
//! as a TXT record at `_lanyard-challenge.<domain>`, and `DomainVerifier` looks it up.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::proto::rr::{Name, RData};
use hickory_resolver::TokioResolver;

/// The label under which the challenge is published. A dedicated underscore label keeps the
/// record away from the domain's own TXT records (SPF, other vendors' proofs).
const CHALLENGE_LABEL: &str = "_lanyard-challenge";
const VALUE_PREFIX: &str = "lanyard-domain-verification=";

/// A hostile or misconfigured zone can return many large records; we only look at this many.
const MAX_RECORDS: usize = 32;
/// Longer than any value we hand out, short enough that joining the strings costs nothing.
const MAX_RECORD_BYTES: usize = 1024;

/// Where and how long to ask.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// Recursive resolvers to ask. Empty means the system configuration (`/etc/resolv.conf`).
    pub servers: Vec<SocketAddr>,
    /// The longest a whole check may take, retries included.
    pub timeout: Duration,
}

/// What the challenge name holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// A TXT record carries exactly the expected value.
    Found,
    /// The name does not exist or has no TXT records.
    Missing,
    /// TXT records exist, but none carries the expected value.
    Wrong,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The domain cannot form a DNS name (empty label, label over 63 bytes, name over 255).
    #[error("invalid domain name: {0}")]
    InvalidDomain(String),
    /// No usable answer: timeout, SERVFAIL, REFUSED, network error. Worth retrying later; says
    /// nothing about whether the record is there.
    #[error("DNS unavailable: {0}")]
    Unavailable(String),
}

/// Looks up domain challenges. Cheap to clone: clones share one resolver and its connections.
#[derive(Clone, Debug)]
pub struct DomainVerifier {
    resolver: TokioResolver,
    timeout: Duration,
}

impl DomainVerifier {
    pub fn new(config: &DnsConfig) -> anyhow::Result<Self> {
        // An admin who fixes their record and presses "verify" again must be seen at once, and a
        // record they remove must stop counting: no cache, positive or negative.
        let resolver = lanyard_core::outbound::uncached_resolver(&config.servers, config.timeout)?;
        Ok(Self { resolver, timeout: config.timeout })
    }

    /// Whether `domain` publishes the challenge for `token`. CNAMEs at the challenge name are
    /// followed, so an owner may delegate the record to another zone as ACME DNS-01 allows.
    pub async fn check(&self, domain: &str, token: &str) -> Result<Check, DnsError> {
        let name = Name::from_ascii(challenge_name(domain))
            .map_err(|e| DnsError::InvalidDomain(format!("{domain:?}: {e}")))?;
        let expected = challenge_value(token);

        // The resolver bounds each try; this bounds the check, whatever the resolver's internal
        // retries and fallbacks add up to.
        let lookup = tokio::time::timeout(self.timeout, self.resolver.txt_lookup(name))
            .await
            .map_err(|_| DnsError::Unavailable(format!("no answer within {:?}", self.timeout)))?;

        match lookup {
            Ok(lookup) => Ok(match_records(
                lookup.answers().iter().filter_map(|record| match &record.data {
                    RData::TXT(txt) => Some(&*txt.txt_data),
                    _ => None,
                }),
                expected.as_bytes(),
            )),
            // NXDOMAIN and NOERROR-without-TXT both mean "not published (yet)".
            Err(e) if e.is_no_records_found() => Ok(Check::Missing),
            Err(e) => Err(DnsError::Unavailable(e.to_string())),
        }
    }
}

/// The fully qualified name the challenge lives at. A trailing dot on `domain` is accepted.
pub fn challenge_name(domain: &str) -> String {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    format!("{CHALLENGE_LABEL}.{domain}.")
}

/// The TXT value that proves ownership for `token`.
pub fn challenge_value(token: &str) -> String {
    format!("{VALUE_PREFIX}{token}")
}

/// Compares TXT records, each a list of character-strings, with the expected value. The strings
/// of one record are joined before comparing (RFC 7208 §3.3 does the same for SPF), because a
/// DNS provider may split a value wherever it likes.
fn match_records<'a>(records: impl IntoIterator<Item = &'a [Box<[u8]>]>, expected: &[u8]) -> Check {
    let mut seen = false;
    for strings in records.into_iter().take(MAX_RECORDS) {
        seen = true;
        let len: usize = strings.iter().map(|s| s.len()).sum();
        if len > MAX_RECORD_BYTES || len != expected.len() {
            continue;
        }
        let joined: Vec<u8> = strings.concat();
        if joined == expected {
            return Check::Found;
        }
    }
    if seen {
        Check::Wrong
    } else {
        Check::Missing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(strings: &[&str]) -> Box<[Box<[u8]>]> {
        strings.iter().map(|s| s.as_bytes().into()).collect()
    }

    fn check(records: &[Box<[Box<[u8]>]>], expected: &str) -> Check {
        match_records(records.iter().map(|r| &**r), expected.as_bytes())
    }

    #[test]
    fn challenge_name_is_fully_qualified() {
        assert_eq!(challenge_name("acme.test"), "_lanyard-challenge.acme.test.");
        assert_eq!(challenge_name("acme.test."), "_lanyard-challenge.acme.test.");
    }

    #[test]
    fn challenge_value_prefixes_the_token() {
        assert_eq!(challenge_value("abc-_9"), "lanyard-domain-verification=abc-_9");
    }

    #[test]
    fn challenge_name_parses_as_a_dns_name() {
        let name = Name::from_ascii(challenge_name("Acme.Example.com")).unwrap();
        assert!(name.is_fqdn());
        assert_eq!(name.num_labels(), 4);
    }

    #[test]
    fn no_records_is_missing() {
        assert_eq!(check(&[], "v"), Check::Missing);
    }

    #[test]
    fn exact_value_is_found_among_others() {
        let records = [record(&["v=spf1 -all"]), record(&["want"]), record(&["other"])];
        assert_eq!(check(&records, "want"), Check::Found);
    }

    #[test]
    fn split_strings_are_joined() {
        assert_eq!(check(&[record(&["wa", "nt"])], "want"), Check::Found);
        assert_eq!(check(&[record(&["wa", "", "nt"])], "want"), Check::Found);
    }

    #[test]
    fn near_misses_are_wrong() {
        for value in ["wan", "wantx", "WANT", " want", "want "] {
            assert_eq!(check(&[record(&[value])], "want"), Check::Wrong, "{value:?}");
        }
        // Two records do not combine into one value.
        assert_eq!(check(&[record(&["wa"]), record(&["nt"])], "want"), Check::Wrong);
    }

    #[test]
    fn an_empty_record_is_wrong_not_missing() {
        assert_eq!(check(&[record(&[])], "want"), Check::Wrong);
    }

    #[test]
    fn only_the_first_records_are_considered() {
        let mut records: Vec<_> = (0..MAX_RECORDS).map(|i| record(&[&format!("x{i}")])).collect();
        records.push(record(&["want"]));
        assert_eq!(check(&records, "want"), Check::Wrong);
        records.remove(0);
        assert_eq!(check(&records, "want"), Check::Found);
    }

    #[test]
    fn oversized_records_are_skipped() {
        let expected = "a".repeat(MAX_RECORD_BYTES + 1);
        let halves = [&expected[..600], &expected[600..]];
        assert_eq!(check(&[record(&halves)], &expected), Check::Wrong);

        let expected = "a".repeat(MAX_RECORD_BYTES);
        let halves = [&expected[..600], &expected[600..]];
        assert_eq!(check(&[record(&halves)], &expected), Check::Found);
    }
}

//! Outbound HTTP to hosts that customers name (identity providers' discovery and JWKS documents
//! today, webhooks tomorrow), made safe to aim at anything: `https` only, the host resolved once
//! per connection with every address checked and only the checked addresses connected to,
//! private, loopback, link-local, metadata and other non-public addresses refused, no redirects,
//! no proxy, and bodies read chunk by chunk under a hard byte cap.
//!
//! Loopback (and `http` to it) is allowed only when [`AddressPolicy::allow_loopback`] is set,
//! for local development and tests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use url::{Host, Url};

/// Why an outbound request was refused or failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    /// Not a URL Lanyard fetches: unparsable, not `https`, credentials in it, no host.
    #[error("{0}")]
    BadUrl(String),
    /// The host is, or resolves to, an address (or a name) Lanyard never connects to.
    #[error("{host}: {why}")]
    Forbidden { host: String, why: String },
    /// The body is larger than the cap; reading stopped there.
    #[error("the response is larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// A status other than 2xx (a redirect is one: redirects are not followed).
    #[error("HTTP status {0}")]
    Status(u16),
    /// No answer: DNS, connection, TLS, timeout.
    #[error("{0}")]
    Unavailable(String),
}

/// Which destinations are acceptable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    /// Loopback addresses, `localhost`, and `http` to them: local development and tests only.
    pub allow_loopback: bool,
}

/// What a non-public address is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reserved {
    Loopback,
    Other(&'static str),
}

impl AddressPolicy {
    /// `Err(why)` when `ip` must not be connected to.
    pub fn check(&self, ip: IpAddr) -> Result<(), &'static str> {
        match reserved(ip) {
            None => Ok(()),
            Some(Reserved::Loopback) if self.allow_loopback => Ok(()),
            Some(Reserved::Loopback) => Err("a loopback address"),
            Some(Reserved::Other(why)) => Err(why),
        }
    }

    /// Checks a host as written in a URL: an address literal by its address, a name by the
    /// rules names can be judged by before resolution (`localhost`, single labels and the
    /// private-use suffixes are refused; the rest is judged by what it resolves to).
    pub fn check_host(&self, host: &Host<&str>) -> Result<(), OutboundError> {
        let forbidden = |why: &str| OutboundError::Forbidden { host: host.to_string(), why: why.to_owned() };
        match host {
            Host::Ipv4(ip) => self.check(IpAddr::V4(*ip)).map_err(forbidden),
            Host::Ipv6(ip) => self.check(IpAddr::V6(*ip)).map_err(forbidden),
            Host::Domain(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if name == "localhost" || name.ends_with(".localhost") {
                    return if self.allow_loopback { Ok(()) } else { Err(forbidden("a loopback name")) };
                }
                if !name.contains('.') {
                    // A resolver's search list would make it a name inside the local network.
                    return Err(forbidden("a single-label name"));
                }
                const PRIVATE_SUFFIXES: [&str; 4] = [".internal", ".local", ".home.arpa", ".lan"];
                if PRIVATE_SUFFIXES.iter().any(|s| name.ends_with(s)) {
                    return Err(forbidden("a name of a private network"));
                }
                Ok(())
            }
        }
    }
}

/// The classification of non-public addresses; `None` is a public address.
fn reserved(ip: IpAddr) -> Option<Reserved> {
    match ip {
        IpAddr::V4(v4) => reserved_v4(v4),
        IpAddr::V6(v6) => reserved_v6(v6),
    }
}

fn reserved_v4(ip: Ipv4Addr) -> Option<Reserved> {
    let other = Reserved::Other;
    Some(match ip.octets() {
        [127, ..] => Reserved::Loopback,
        [0, ..] => other("an unspecified address (0.0.0.0/8)"),
        [10, ..] | [192, 168, ..] => other("a private address"),
        [172, b, ..] if (16..=31).contains(&b) => other("a private address"),
        [100, 100, 100, 200] => other("a cloud metadata address"),
        [100, b, ..] if (64..=127).contains(&b) => other("a shared (CGNAT) address"),
        [169, 254, 169, 254] | [169, 254, 170, 2] => other("a cloud metadata address"),
        [169, 254, ..] => other("a link-local address"),
        [192, 0, 0, _] => other("an IETF protocol address (192.0.0.0/24)"),
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => other("a documentation address"),
        [192, 88, 99, _] => other("a 6to4 relay address"),
        [198, 18 | 19, ..] => other("a benchmarking address"),
        [255, 255, 255, 255] => other("the broadcast address"),
        [a, ..] if (224..240).contains(&a) => other("a multicast address"),
        [a, ..] if a >= 240 => other("a reserved address"),
        _ => return None,
    })
}

fn reserved_v6(ip: Ipv6Addr) -> Option<Reserved> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return reserved_v4(v4);
    }
    let s = ip.segments();
    let other = Reserved::Other;
    Some(match s {
        [0, 0, 0, 0, 0, 0, 0, 1] => Reserved::Loopback,
        [0, 0, 0, 0, 0, 0, 0, 0] => other("the unspecified address"),
        [0, 0, 0, 0, 0, 0, _, _] => other("an IPv4-compatible address"),
        // The well-known NAT64 prefix reaches the IPv4 address it embeds.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => return reserved_v4(embedded_v4(hi, lo)),
        [0x64, 0xff9b, 1, ..] => other("a local NAT64 address"),
        [0x100, 0, 0, 0, ..] => other("a discard-only address"),
        [0x2001, 0xdb8, ..] => other("a documentation address"),
        [0x3fff, b, ..] if b < 0x1000 => other("a documentation address"),
        [0x2001, 0, ..] => other("a Teredo address"),
        [0x2001, 2, 0, ..] => other("a benchmarking address"),
        [0x2001, b, ..] if b < 0x200 => other("an IETF protocol address (2001::/23)"),
        // 6to4 reaches the IPv4 address it embeds.
        [0x2002, hi, lo, ..] => return reserved_v4(embedded_v4(hi, lo)),
        [a, ..] if a & 0xfe00 == 0xfc00 => other("a unique local address"),
        [a, ..] if a & 0xffc0 == 0xfe80 => other("a link-local address"),
        [a, ..] if a & 0xffc0 == 0xfec0 => other("a site-local address"),
        [a, ..] if a & 0xff00 == 0xff00 => other("a multicast address"),
        // Only 2000::/3 is global unicast.
        [a, ..] if a & 0xe000 != 0x2000 => other("not a global unicast address"),
        _ => return None,
    })
}

fn embedded_v4(hi: u16, lo: u16) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))
}

/// Parses `raw` and checks what can be checked without resolving: `https` (or `http` to
/// loopback when allowed), no credentials, a host, and that host by [`AddressPolicy::check_host`].
pub fn check_url(raw: &str, policy: AddressPolicy) -> Result<Url, OutboundError> {
    let url = Url::parse(raw).map_err(|e| OutboundError::BadUrl(format!("not an absolute URL: {e}")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(OutboundError::BadUrl("the URL must not carry credentials".into()));
    }
    let host = url.host().ok_or_else(|| OutboundError::BadUrl("the URL must name a host".into()))?;
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_loopback && is_loopback_host(&host) => {}
        _ => return Err(OutboundError::BadUrl("the URL must use https".into())),
    }
    policy.check_host(&host)?;
    Ok(url)
}

fn is_loopback_host(host: &Host<&str>) -> bool {
    match host {
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
    }
}

/// Issuers an operator accepts: exact issuers (`https://accounts.google.com`) and host suffixes
/// (`okta.com` accepts `okta.com` and `acme.okta.com`, never `evilokta.com`). Empty accepts any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IssuerAllowlist {
    exact: Vec<String>,
    suffixes: Vec<String>,
}

impl IssuerAllowlist {
    /// Parses the entries of the setting; an entry with `://` is an exact issuer.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        let mut list = Self::default();
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry.is_empty() {
                continue;
            }
            if entry.contains("://") {
                Url::parse(entry).map_err(|e| format!("issuer allowlist entry {entry:?}: {e}"))?;
                list.exact.push(entry.to_owned());
            } else {
                let suffix = entry.trim_start_matches('.').trim_end_matches('.').to_ascii_lowercase();
                let valid = !suffix.is_empty()
                    && suffix.split('.').all(|l| {
                        !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    });
                if !valid {
                    return Err(format!("issuer allowlist entry {entry:?}: not a host name or an issuer URL"));
                }
                list.suffixes.push(suffix);
            }
        }
        Ok(list)
    }

    /// Whether the list is empty (every issuer accepted).
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.suffixes.is_empty()
    }

    /// Whether `issuer` is accepted.
    pub fn allows(&self, issuer: &str) -> bool {
        if self.is_empty() || self.exact.iter().any(|e| e == issuer) {
            return true;
        }
        let Some(host) = Url::parse(issuer).ok().and_then(|u| u.host_str().map(str::to_ascii_lowercase)) else {
            return false;
        };
        let host = host.trim_end_matches('.');
        self.suffixes.iter().any(|s| host == s || host.strip_suffix(s.as_str()).is_some_and(|rest| rest.ends_with('.')))
    }
}

/// A DNS resolver with no answer cache, asking `servers` (empty: the system configuration),
/// each lookup bounded by `timeout` with one retry for a lost datagram.
pub fn uncached_resolver(servers: &[SocketAddr], timeout: Duration) -> anyhow::Result<TokioResolver> {
    anyhow::ensure!(!timeout.is_zero(), "DNS timeout must be greater than zero");
    const TRIES: u32 = 2;
    let mut builder = if servers.is_empty() {
        TokioResolver::builder_tokio()?
    } else {
        let servers = servers
            .iter()
            .map(|addr| {
                // UDP first; TCP when an answer comes back truncated.
                let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                for connection in &mut server.connections {
                    connection.port = addr.port();
                }
                server
            })
            .collect();
        TokioResolver::builder_with_config(ResolverConfig::from_name_servers(servers), TokioRuntimeProvider::default())
    };
    // Start from the options the builder holds (the system's, when reading resolv.conf) and
    // override what our callers depend on.
    let options: &mut ResolverOpts = builder.options_mut();
    // A capacity of 0 makes hickory's cache hold no map at all: every lookup asks again.
    options.cache_size = 0;
    options.timeout = timeout / TRIES;
    // hickory counts retries after the first try.
    options.attempts = (TRIES - 1) as usize;
    options.use_hosts_file = ResolveHosts::Never;
    options.preserve_intermediates = false;
    Ok(builder.build()?)
}

/// How outbound requests are made.
#[derive(Clone, Debug)]
pub struct OutboundConfig {
    pub policy: AddressPolicy,
    /// The largest body read; reading stops, and the request fails, past it.
    pub max_body_bytes: usize,
    /// The whole request, body included.
    pub timeout: Duration,
    /// Recursive resolvers to ask; empty means the system configuration.
    pub dns_servers: Vec<SocketAddr>,
    /// One lookup, retries included.
    pub dns_timeout: Duration,
    pub user_agent: String,
}

/// Resolves for the HTTP client and hands it only addresses that passed the policy, so the
/// address checked is the address connected to (no rebinding between check and connect).
struct CheckedResolver {
    resolver: TokioResolver,
    policy: AddressPolicy,
    timeout: Duration,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let (resolver, policy, timeout) = (self.resolver.clone(), self.policy, self.timeout);
        let host = name.as_str().trim_end_matches('.').to_owned();
        Box::pin(async move {
            let addrs = resolve_checked(&resolver, &host, policy, timeout).await?;
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

async fn resolve_checked(
    resolver: &TokioResolver,
    host: &str,
    policy: AddressPolicy,
    timeout: Duration,
) -> Result<Vec<IpAddr>, OutboundError> {
    policy.check_host(&Host::Domain(host))?;
    // Fully qualified, so no search list turns it into a local name.
    let lookup = tokio::time::timeout(timeout, resolver.lookup_ip(format!("{host}.")))
        .await
        .map_err(|_| OutboundError::Unavailable(format!("{host}: no DNS answer within {timeout:?}")))?
        .map_err(|e| OutboundError::Unavailable(format!("{host}: {e}")))?;
    let addrs: Vec<IpAddr> = lookup.iter().collect();
    if addrs.is_empty() {
        return Err(OutboundError::Unavailable(format!("{host}: no address")));
    }
    // One forbidden address refuses the name: a name that mixes public and private addresses
    // is an attack or a mistake either way.
    for ip in &addrs {
        policy
            .check(*ip)
            .map_err(|why| OutboundError::Forbidden { host: host.to_owned(), why: format!("{ip} is {why}") })?;
    }
    Ok(addrs)
}

/// The outbound HTTP client. Cheap to clone.
#[derive(Clone)]
pub struct OutboundClient {
    http: reqwest::Client,
    policy: AddressPolicy,
    max_body_bytes: usize,
}

impl std::fmt::Debug for OutboundClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundClient")
            .field("policy", &self.policy)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

impl OutboundClient {
    pub fn new(config: &OutboundConfig) -> anyhow::Result<Self> {
        let resolver = CheckedResolver {
            resolver: uncached_resolver(&config.dns_servers, config.dns_timeout)?,
            policy: config.policy,
            timeout: config.dns_timeout,
        };
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve the host itself, past our checks.
            .no_proxy()
            .dns_resolver(Arc::new(resolver))
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent(config.user_agent.clone())
            .build()?;
        Ok(Self { http, policy: config.policy, max_body_bytes: config.max_body_bytes })
    }

    /// The policy requests are checked against.
    pub fn policy(&self) -> AddressPolicy {
        self.policy
    }

    /// `GET url`, returning the body of a 2xx answer of at most `max_body_bytes`.
    pub async fn get(&self, url: &str) -> Result<Vec<u8>, OutboundError> {
        let url = check_url(url, self.policy)?;
        let resp = self.http.get(url).send().await.map_err(request_error)?;
        if !resp.status().is_success() {
            return Err(OutboundError::Status(resp.status().as_u16()));
        }
        self.read_body(resp).await
    }

    /// `POST url` with a form body (and HTTP Basic credentials, when given), returning the
    /// status and the body of at most `max_body_bytes`, whatever the status: an OAuth token
    /// endpoint explains its refusals in the body.
    pub async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> Result<(u16, Vec<u8>), OutboundError> {
        let url = check_url(url, self.policy)?;
        let mut request = self.http.post(url).form(form).header(reqwest::header::ACCEPT, "application/json");
        if let Some((user, password)) = basic {
            request = request.basic_auth(user, Some(password));
        }
        let resp = request.send().await.map_err(request_error)?;
        let status = resp.status().as_u16();
        Ok((status, self.read_body(resp).await?))
    }

    async fn read_body(&self, mut resp: reqwest::Response) -> Result<Vec<u8>, OutboundError> {
        let limit = self.max_body_bytes;
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(OutboundError::TooLarge { limit });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(request_error)? {
            if body.len() + chunk.len() > limit {
                // Dropping the response closes the connection: nothing more is read.
                return Err(OutboundError::TooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// The resolver's refusal travels inside the client's error; find it, so a refused address
/// is reported as such and not as an unreachable host.
fn request_error(e: reqwest::Error) -> OutboundError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(err) = source {
        if let Some(ours) = err.downcast_ref::<OutboundError>() {
            return ours.clone();
        }
        source = err.source();
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    OutboundError::Unavailable(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden(ip: &str) -> bool {
        AddressPolicy::default().check(ip.parse().unwrap()).is_err()
    }

    #[test]
    fn non_public_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "127.8.9.10",
            "10.255.255.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.254",
            "169.254.169.254",
            "169.254.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "192.0.0.192",
            "198.18.0.1",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "100::1",
            "2001::1",
        ] {
            assert!(forbidden(ip), "{ip} should be refused");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700:4700::1111", "64:ff9b::808:808"] {
            assert!(!forbidden(ip), "{ip} should be allowed");
        }
    }

    #[test]
    fn loopback_only_in_development() {
        let dev = AddressPolicy { allow_loopback: true };
        assert!(dev.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(dev.check("::1".parse().unwrap()).is_ok());
        assert!(dev.check("::ffff:127.0.0.1".parse().unwrap()).is_ok());
        assert!(dev.check("10.0.0.1".parse().unwrap()).is_err());
        assert!(dev.check("169.254.169.254".parse().unwrap()).is_err());
    }

    #[test]
    fn urls() {
        let strict = AddressPolicy::default();
        let dev = AddressPolicy { allow_loopback: true };
        assert!(check_url("https://accounts.google.com", strict).is_ok());
        assert!(check_url("https://login.microsoftonline.com/tid/v2.0", strict).is_ok());
        for bad in [
            "http://accounts.google.com",
            "https://127.0.0.1:5432",
            "https://169.254.169.254/latest",
            "https://10.255.255.1",
            "https://[::ffff:a9fe:a9fe]/",
            "https://2130706433/",
            "https://0x7f.0.0.1/",
            "https://localhost/",
            "https://metadata.google.internal/",
            "https://redis/",
            "https://u:p@idp.example.com/",
            "file:///etc/passwd",
            "not a url",
        ] {
            assert!(check_url(bad, strict).is_err(), "{bad} should be refused");
        }
        assert!(check_url("http://127.0.0.1:8080/x", dev).is_ok());
        assert!(check_url("http://localhost:8080", dev).is_ok());
        assert!(check_url("https://127.0.0.1:8443", dev).is_ok());
        assert!(check_url("http://10.0.0.1", dev).is_err());
        assert!(check_url("https://10.0.0.1", dev).is_err());
        assert!(check_url("http://evil.example", dev).is_err());
        assert!(matches!(check_url("https://127.0.0.1", strict), Err(OutboundError::Forbidden { .. })));
    }

    #[test]
    fn allowlist() {
        let list = IssuerAllowlist::parse(&["okta.com", ".Example.ORG", "https://accounts.google.com"]).unwrap();
        assert!(list.allows("https://acme.okta.com"));
        assert!(list.allows("https://okta.com/oauth2/default"));
        assert!(list.allows("https://idp.example.org"));
        assert!(list.allows("https://accounts.google.com"));
        assert!(!list.allows("https://accounts.google.com/"));
        assert!(!list.allows("https://evilokta.com"));
        assert!(!list.allows("https://okta.com.evil.example"));
        assert!(!list.allows("not a url"));
        assert!(IssuerAllowlist::parse::<&str>(&[]).unwrap().allows("https://anything.example"));
        assert!(IssuerAllowlist::parse(&["bad host!"]).is_err());
    }

    /// A one-route HTTP server on loopback answering `head` then `body_len` bytes, counting
    /// the connections it accepted.
    async fn serve(head: String, body_len: usize) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let head = head.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = stream.read(&mut buf).await;
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(&vec![b'x'; body_len]).await;
                });
            }
        });
        (format!("http://{addr}/doc"), accepted)
    }

    fn client(allow_loopback: bool, max_body_bytes: usize) -> OutboundClient {
        OutboundClient::new(&OutboundConfig {
            policy: AddressPolicy { allow_loopback },
            max_body_bytes,
            timeout: Duration::from_secs(5),
            dns_servers: vec!["127.0.0.1:9".parse().unwrap()],
            dns_timeout: Duration::from_secs(1),
            user_agent: "lanyard-test".into(),
        })
        .unwrap()
    }

    #[tokio::test]
    async fn bodies_are_capped_with_or_without_a_length() {
        let cap = 1000;
        let http = client(true, cap);
        let close = "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n";
        let (url, _) = serve(close.into(), cap).await;
        assert_eq!(http.get(&url).await.unwrap().len(), cap, "exactly the cap is read");
        let (url, _) = serve(close.into(), cap + 1).await;
        assert_eq!(http.get(&url).await, Err(OutboundError::TooLarge { limit: cap }));
        let announced = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", cap + 1);
        let (url, _) = serve(announced, cap + 1).await;
        assert_eq!(http.get(&url).await, Err(OutboundError::TooLarge { limit: cap }));
        let redirect = "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:9/\r\ncontent-length: 0\r\n\r\n";
        let (url, _) = serve(redirect.into(), 0).await;
        assert_eq!(http.get(&url).await, Err(OutboundError::Status(302)));
    }

    #[tokio::test]
    async fn loopback_is_not_connected_to_without_the_setting() {
        let (url, accepted) = serve("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}".into(), 0).await;
        let https = url.replace("http://", "https://");
        assert!(matches!(client(false, 1000).get(&https).await, Err(OutboundError::Forbidden { .. })));
        assert!(matches!(client(false, 1000).get(&url).await, Err(OutboundError::BadUrl(_))));
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert_eq!(client(true, 1000).get(&url).await.unwrap(), b"{}");
    }
}

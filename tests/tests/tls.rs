//! TLS on every hop, with certificates made here (rcgen): both listeners of the real composition
//! root over TLS, certificate rotation, client certificates, the handshake deadline, the CLI,
//! service-to-service channels, `rediss://` and Postgres `sslmode=verify-full`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use lanyard::{Application, ServiceName, Settings};
use lanyard_core::tls::ClientTls;
use lanyard_proto::invitation::v1 as ipb;
use lanyard_proto::invitation::v1::invitation_service_client::InvitationServiceClient;
use lanyard_proto::tenancy::v1 as pb;
use lanyard_proto::tenancy::v1::tenancy_service_client::TenancyServiceClient;
use lanyard_tests::{OPERATOR_KEY, SERVICE_KEY};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// A certificate authority made for one test.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its key, as PEM, and the certificate's DER to recognise it on the wire.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate for `localhost` and 127.0.0.1, good for a server and a client.
    fn leaf(&self, name: &str) -> Leaf {
        let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().to_vec() }
    }
}

/// Files in a test's directory.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        // Written beside, then renamed: a reader never sees half a file (as with Kubernetes' swap).
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }

    fn server_pair(&self, leaf: &Leaf) -> (PathBuf, PathBuf) {
        (self.write("tls.crt", &leaf.cert_pem), self.write("tls.key", &leaf.key_pem))
    }
}

/// A running server built by the binary's composition root.
struct Server {
    grpc: SocketAddr,
    http: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Server {
    fn https(&self) -> String {
        format!("https://localhost:{}", self.grpc.port())
    }
}

/// The settings of a test server on SQLite, on loopback ports chosen by the system.
fn settings(data: &Path) -> Settings {
    Settings {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: Some("127.0.0.1:0".parse().unwrap()),
        data_dir: data.to_path_buf(),
        operator_keys: vec![SecretString::from(OPERATOR_KEY)],
        service_keys: vec![SecretString::from(SERVICE_KEY)],
        encryption_key: Some(SecretString::from(base64::engine::general_purpose::STANDARD.encode([42u8; 32]))),
        shutdown_grace_seconds: 2,
        tls_reload_interval_ms: 100,
        ..Settings::default()
    }
}

async fn start(services: &[ServiceName], tweak: impl FnOnce(&mut Settings)) -> Server {
    let data = tempfile::tempdir().unwrap();
    let mut settings = settings(data.path());
    tweak(&mut settings);
    let app = Application::build(settings, services).await.expect("the server builds");
    let (grpc, http, metrics) = (app.local_addr(), app.http_addr(), app.metrics_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    Server { grpc, http, metrics, stop: Some(stop), _data: data }
}

/// A server of every service with TLS from `cert`/`key`.
async fn start_tls(cert: &Path, key: &Path, tweak: impl FnOnce(&mut Settings)) -> Server {
    let (cert, key) = (cert.to_owned(), key.to_owned());
    start(&ServiceName::ALL, move |s| {
        s.tls_cert_file = Some(cert);
        s.tls_key_file = Some(key);
        tweak(s);
    })
    .await
}

fn client_tls(ca: Option<&Ca>, identity: Option<&Leaf>) -> ClientTls {
    ClientTls {
        ca_pem: ca.map(|ca| ca.pem().into_bytes()),
        identity: identity.map(|l| (l.cert_pem.clone().into_bytes(), l.key_pem.clone().into_bytes())),
        server_name: None,
    }
}

/// A channel to `url`, connected (TLS included) or the connection's error.
async fn channel(url: &str, tls: &ClientTls) -> Result<Channel, tonic::transport::Error> {
    lanyard_core::tls::install_crypto_provider();
    lanyard_core::tls::endpoint(url, tls)?.connect_timeout(Duration::from_secs(5)).connect().await
}

/// An authenticated call: the operator lists organizations.
async fn operator_call(channel: Channel) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(pb::ListOrganizationsRequest::default());
    request.metadata_mut().insert("authorization", format!("Bearer {OPERATOR_KEY}").parse().unwrap());
    TenancyServiceClient::new(channel).list_organizations(request).await.map(|_| ())
}

/// Whether `url` answers a health check over TLS with `tls` (any failure, handshake included, is false).
async fn answers(url: &str, tls: &ClientTls) -> bool {
    let Ok(channel) = channel(url, tls).await else { return false };
    HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await.is_ok()
}

/// The certificate the server presents in a fresh handshake (trusting `ca`).
async fn presented(addr: SocketAddr, ca: &Ca) -> Result<Vec<u8>, std::io::Error> {
    lanyard_core::tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = connector.connect("localhost".try_into().unwrap(), tcp).await?;
    let (_, session) = tls.get_ref();
    Ok(session.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).unwrap_or_default())
}

fn https_client(ca: Option<&Ca>, identity: Option<&Leaf>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(5));
    if let Some(ca) = ca {
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap());
    }
    if let Some(leaf) = identity {
        let pem = format!("{}{}", leaf.key_pem, leaf.cert_pem);
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

#[tokio::test]
async fn both_listeners_serve_tls_and_refuse_plaintext_and_strangers() {
    let (ca, other_ca) = (Ca::new("lanyard test CA"), Ca::new("some other CA"));
    let files = Files::new();
    let (cert, key) = files.server_pair(&ca.leaf("lanyard"));
    let server = start_tls(&cert, &key, |s| s.metrics_addr = Some("127.0.0.1:0".parse().unwrap())).await;

    // gRPC over TLS: health, and an authenticated call through the real services.
    let trusted = client_tls(Some(&ca), None);
    operator_call(channel(&server.https(), &trusted).await.expect("TLS channel"))
        .await
        .expect("operator call over TLS");
    // A plaintext client gets nothing from the TLS port; a client that trusts another CA neither.
    assert!(!answers(&format!("http://{}", server.grpc), &trusted).await, "plaintext HTTP/2 was served");
    assert!(
        !answers(&server.https(), &client_tls(Some(&other_ca), None)).await,
        "an untrusted certificate was accepted"
    );

    // The HTTP listener: JWKS over TLS, not over plaintext, not to a client that does not trust the CA.
    let http = server.http.expect("the token service's HTTP address");
    let jwks = format!("https://localhost:{}/.well-known/jwks.json", http.port());
    let response = https_client(Some(&ca), None).get(&jwks).send().await.expect("JWKS over TLS");
    assert!(response.status().is_success());
    assert!(response.text().await.unwrap().contains("\"keys\""));
    assert!(https_client(None, None).get(&jwks).send().await.is_err(), "a private CA's certificate was trusted");
    assert!(https_client(Some(&other_ca), None).get(&jwks).send().await.is_err());
    let plain =
        reqwest::Client::new().get(format!("http://127.0.0.1:{}/.well-known/jwks.json", http.port())).send().await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true), "JWKS served over plaintext on the TLS port");
    // The metrics address too.
    let metrics = server.metrics.unwrap().port();
    let scraped = https_client(Some(&ca), None).get(format!("https://localhost:{metrics}/metrics")).send().await;
    assert!(scraped.expect("metrics over TLS").status().is_success());
    let plain = reqwest::Client::new().get(format!("http://127.0.0.1:{metrics}/metrics")).send().await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true), "metrics served over plaintext");
}

#[tokio::test]
async fn a_rotated_certificate_is_served_and_a_broken_one_is_not() {
    let ca = Ca::new("rotation CA");
    let files = Files::new();
    let first = ca.leaf("first");
    let (cert, key) = files.server_pair(&first);
    let server = start_tls(&cert, &key, |s| s.metrics_addr = Some("127.0.0.1:0".parse().unwrap())).await;
    assert_eq!(presented(server.grpc, &ca).await.unwrap(), first.der);
    let old = channel(&server.https(), &client_tls(Some(&ca), None)).await.unwrap();
    operator_call(old.clone()).await.unwrap();

    // cert-manager writes a new pair into the same files.
    let second = ca.leaf("second");
    files.server_pair(&second);
    let mut served = Vec::new();
    for _ in 0..300 {
        served = presented(server.grpc, &ca).await.unwrap();
        if served == second.der {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(served, second.der, "the server never presented the rotated certificate");
    // The HTTP listener shares it.
    assert_eq!(presented_http(server.http.unwrap(), &ca).await, Some(second.der.clone()));
    // A connection made before the rotation keeps working.
    operator_call(old.clone()).await.expect("the connection from before the rotation");

    // A broken pair (a certificate file that is not PEM, then a key of another certificate) is
    // refused; the rotated certificate stays served.
    let errors = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("lanyard_tls_reloads_total") && l.contains("result=\"error\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // The metrics address serves TLS with the same certificate.
    let metrics = format!("https://localhost:{}/metrics", server.metrics.unwrap().port());
    let scraper = https_client(Some(&ca), None);
    let scrape = || async { scraper.get(&metrics).send().await.expect("metrics over TLS").text().await.unwrap() };
    let before = errors(&scrape().await);
    files.write("tls.crt", "this is not a certificate");
    let mut after = before;
    for _ in 0..300 {
        after = errors(&scrape().await);
        if after > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(after > before, "the broken certificate file was never looked at");
    assert_eq!(presented(server.grpc, &ca).await.unwrap(), second.der, "a broken file replaced the certificate");
    let mismatched = ca.leaf("third");
    files.write("tls.crt", &mismatched.cert_pem);
    let before = after;
    for _ in 0..300 {
        after = errors(&scrape().await);
        if after > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(after > before, "the mismatched pair was never looked at");
    assert_eq!(presented(server.grpc, &ca).await.unwrap(), second.der, "a key of another certificate was served");
    operator_call(channel(&server.https(), &client_tls(Some(&ca), None)).await.unwrap()).await.unwrap();
}

/// The certificate the HTTP listener presents (ALPN http/1.1).
async fn presented_http(addr: SocketAddr, ca: &Ca) -> Option<Vec<u8>> {
    lanyard_core::tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let tls =
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect("localhost".try_into().unwrap(), tcp).await.ok()?;
    tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec())
}

#[tokio::test]
async fn with_a_client_ca_grpc_requires_a_certificate_from_it() {
    let (ca, clients, strangers) = (Ca::new("server CA"), Ca::new("client CA"), Ca::new("stranger CA"));
    let files = Files::new();
    let (cert, key) = files.server_pair(&ca.leaf("lanyard"));
    let client_ca = files.write("client-ca.crt", &clients.pem());
    let server = start_tls(&cert, &key, |s| s.tls_client_ca_file = Some(client_ca)).await;

    assert!(!answers(&server.https(), &client_tls(Some(&ca), None)).await, "no client certificate, yet served");
    let stranger = strangers.leaf("stranger");
    assert!(
        !answers(&server.https(), &client_tls(Some(&ca), Some(&stranger))).await,
        "a stranger's certificate was accepted"
    );
    let member = clients.leaf("client");
    let channel = channel(&server.https(), &client_tls(Some(&ca), Some(&member))).await.expect("mutual TLS");
    operator_call(channel).await.expect("a call with the right client certificate");

    // JWKS and health stay reachable with server TLS alone: token verifiers everywhere fetch them.
    let jwks = format!("https://localhost:{}/.well-known/jwks.json", server.http.unwrap().port());
    let response = https_client(Some(&ca), None).get(&jwks).send().await.expect("JWKS without a client certificate");
    assert!(response.status().is_success());
}

#[tokio::test]
async fn peers_that_never_finish_the_tls_handshake_are_dropped_and_free_their_place() {
    let ca = Ca::new("deadline CA");
    let files = Files::new();
    let (cert, key) = files.server_pair(&ca.leaf("lanyard"));
    let server = start_tls(&cert, &key, |s| {
        s.grpc_max_connections = 2;
        s.grpc_handshake_timeout_ms = 300;
        s.http_max_connections = 2;
        s.http_header_read_timeout_ms = 300;
    })
    .await;
    for addr in [server.grpc, server.http.unwrap()] {
        // Two peers take every place: one sends nothing, one half a ClientHello.
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut half = tokio::net::TcpStream::connect(addr).await.unwrap();
        half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]).await.unwrap();
        for stream in [&mut silent, &mut half] {
            let mut buf = [0u8; 64];
            // The server closes them (end of stream, or a reset); a server that kept them would
            // leave this waiting, and the bound below would say so.
            let closed = tokio::time::timeout(Duration::from_secs(60), async {
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => continue,
                    }
                }
            })
            .await;
            assert!(closed.is_ok(), "{addr}: a peer without a TLS handshake kept its connection");
        }
    }
    // Their places are free again: TLS clients are served.
    operator_call(channel(&server.https(), &client_tls(Some(&ca), None)).await.unwrap()).await.unwrap();
    let jwks = format!("https://localhost:{}/.well-known/jwks.json", server.http.unwrap().port());
    assert!(https_client(Some(&ca), None).get(&jwks).send().await.unwrap().status().is_success());
}

#[tokio::test]
async fn a_certificate_without_its_key_or_a_broken_one_stops_the_start() {
    let ca = Ca::new("settings CA");
    let files = Files::new();
    let (cert, key) = files.server_pair(&ca.leaf("lanyard"));
    let data = tempfile::tempdir().unwrap();
    let build = |tweak: &dyn Fn(&mut Settings)| {
        let mut s = settings(data.path());
        tweak(&mut s);
        async move { Application::build(s, &[ServiceName::Tenancy]).await.err().map(|e| format!("{e:#}")) }
    };
    let e = build(&|s| s.tls_cert_file = Some(cert.clone())).await.expect("started with a certificate and no key");
    assert!(e.contains("LANYARD_TLS_CERT_FILE is set without LANYARD_TLS_KEY_FILE"), "{e}");
    let e = build(&|s| s.tls_key_file = Some(key.clone())).await.expect("started with a key and no certificate");
    assert!(e.contains("without LANYARD_TLS_CERT_FILE"), "{e}");
    let garbage = files.write("garbage.crt", "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n");
    let e = build(&|s| {
        s.tls_cert_file = Some(garbage.clone());
        s.tls_key_file = Some(key.clone());
    })
    .await
    .expect("started with a broken certificate");
    assert!(e.contains("LANYARD_TLS_CERT_FILE"), "{e}");
    let other_key = files.write("other.key", &ca.leaf("other").key_pem);
    let e = build(&|s| {
        s.tls_cert_file = Some(cert.clone());
        s.tls_key_file = Some(other_key.clone());
    })
    .await
    .expect("started with a key of another certificate");
    assert!(e.contains("does not belong"), "{e}");
    // The control: the right pair starts.
    assert_eq!(
        build(&|s| {
            s.tls_cert_file = Some(cert.clone());
            s.tls_key_file = Some(key.clone());
        })
        .await,
        None
    );
}

/// Runs an operator command as `lanyard <args>` would.
async fn cli(args: &[&str], data: &Path) -> anyhow::Result<()> {
    use clap::Parser;
    let cli = lanyard::cli::Cli::try_parse_from(std::iter::once("lanyard").chain(args.iter().copied()))?;
    lanyard::cli::run_operator(cli.command, data).await
}

/// An address of this machine that is not loopback, if it has one.
fn non_loopback_address() -> Option<std::net::IpAddr> {
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // No packet leaves: connecting a UDP socket only picks the route and its source address.
    probe.connect("192.0.2.1:9").ok()?;
    let ip = probe.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test]
async fn the_cli_speaks_tls_and_sends_no_key_in_cleartext_off_loopback() {
    let ca = Ca::new("CLI CA");
    let files = Files::new();
    let (cert, key) = files.server_pair(&ca.leaf("lanyard"));
    let server = start_tls(&cert, &key, |_| {}).await;
    let ca_file = files.write("ca.crt", &ca.pem());
    let data = tempfile::tempdir().unwrap();
    let endpoint = server.https();
    let ca_path = ca_file.to_str().unwrap();
    cli(
        &["org", "list", "--json", "--endpoint", &endpoint, "--api-key", OPERATOR_KEY, "--ca-file", ca_path],
        data.path(),
    )
    .await
    .expect("the CLI over TLS");
    // `lanyard health` as a probe would run it: dialing an address the certificate does not
    // name, checking the name it does.
    let by_address = format!("https://127.0.0.1:{}", server.grpc.port());
    cli(&["health", "--endpoint", &by_address, "--ca-file", ca_path, "--tls-server-name", "localhost"], data.path())
        .await
        .expect("health over TLS");
    let e = cli(
        &["health", "--endpoint", &by_address, "--ca-file", ca_path, "--tls-server-name", "elsewhere"],
        data.path(),
    )
    .await;
    assert!(e.is_err(), "a certificate for another name was accepted");
    // Without the CA the server is not trusted, and the command fails.
    assert!(cli(&["org", "list", "--endpoint", &endpoint, "--api-key", OPERATOR_KEY], data.path()).await.is_err());

    // Plaintext to a host that is not loopback: refused before connecting, so no key is sent.
    let e = cli(&["org", "list", "--endpoint", "http://lanyard.invalid:50051", "--api-key", OPERATOR_KEY], data.path())
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("refusing to send the API key in cleartext"), "{e:#}");
    if let Some(ip) = non_loopback_address() {
        let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let e =
            cli(&["org", "list", "--endpoint", &endpoint, "--api-key", OPERATOR_KEY], data.path()).await.unwrap_err();
        assert!(format!("{e:#}").contains("cleartext"), "{e:#}");
        match listener.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("the CLI connected to a cleartext endpoint off loopback: {other:?}"),
        }
        // The control: asked explicitly, it does connect (and this listener would have seen it).
        let explicit = tokio::spawn({
            let data = data.path().to_owned();
            async move {
                cli(&["org", "list", "--endpoint", &endpoint, "--api-key", OPERATOR_KEY, "--insecure-cleartext"], &data)
                    .await
            }
        });
        let accepted = tokio::task::spawn_blocking(move || {
            listener.set_nonblocking(false).unwrap();
            listener.accept().map(|_| ())
        })
        .await
        .unwrap();
        assert!(accepted.is_ok());
        explicit.abort();
    }
    // Loopback over plaintext stays allowed (a port-forward): a plaintext server answers.
    let plain = start(&[ServiceName::Tenancy], |_| {}).await;
    for host in ["127.0.0.1", "localhost"] {
        let endpoint = format!("http://{host}:{}", plain.grpc.port());
        cli(&["org", "list", "--endpoint", &endpoint, "--api-key", OPERATOR_KEY], data.path()).await.expect(host);
    }
}

#[tokio::test]
async fn services_call_each_other_over_mutual_tls() {
    let ca = Ca::new("mesh CA");
    let files = Files::new();
    let tenancy_leaf = ca.leaf("tenancy");
    let (tenancy_cert, tenancy_key) =
        (files.write("tenancy.crt", &tenancy_leaf.cert_pem), files.write("tenancy.key", &tenancy_leaf.key_pem));
    let invitation_leaf = ca.leaf("invitation");
    let (invitation_cert, invitation_key) = (
        files.write("invitation.crt", &invitation_leaf.cert_pem),
        files.write("invitation.key", &invitation_leaf.key_pem),
    );
    let ca_file = files.write("ca.crt", &ca.pem());
    let tenancy = start(&[ServiceName::Tenancy], |s| {
        s.tls_cert_file = Some(tenancy_cert);
        s.tls_key_file = Some(tenancy_key);
        s.tls_client_ca_file = Some(ca_file.clone());
    })
    .await;
    let mesh = client_tls(Some(&ca), Some(&invitation_leaf));
    let org = {
        let mut request = tonic::Request::new(pb::CreateOrganizationRequest {
            slug: lanyard_tests::unique_slug(),
            display_name: "Acme".into(),
            seat_limit: 5,
            allowed_domains: vec!["acme.test".into()],
            ..Default::default()
        });
        request.metadata_mut().insert("authorization", format!("Bearer {OPERATOR_KEY}").parse().unwrap());
        let c = channel(&tenancy.https(), &mesh).await.unwrap();
        TenancyServiceClient::new(c).create_organization(request).await.unwrap().into_inner().organization.unwrap()
    };
    let invite = |invitation: &Server, tls: bool| {
        let url = if tls { invitation.https() } else { format!("http://{}", invitation.grpc) };
        let org = org.organization_id.clone();
        let mesh = mesh.clone();
        async move {
            let mut request = tonic::Request::new(ipb::CreateInvitationRequest {
                organization_id: org,
                email: "ada@acme.test".into(),
                send_email: false,
                ..Default::default()
            });
            request.metadata_mut().insert("authorization", format!("Bearer {OPERATOR_KEY}").parse().unwrap());
            let c = channel(&url, &mesh).await.unwrap();
            InvitationServiceClient::new(c).create_invitation(request).await
        }
    };
    // The invitation service reaches tenancy over TLS, presenting its certificate: the seat is reserved.
    let with_certificate = start(&[ServiceName::Invitation], |s| {
        s.tenancy_url = Some(format!("https://localhost:{}", tenancy.grpc.port()));
        s.tls_ca_file = Some(ca_file.clone());
        s.tls_cert_file = Some(invitation_cert);
        s.tls_key_file = Some(invitation_key);
        s.mail_transport = Some(lanyard::settings::MailTransportKind::Files);
    })
    .await;
    let created = invite(&with_certificate, true).await.expect("an invitation through tenancy over mutual TLS");
    assert!(created.into_inner().invitation_link.is_some());
    // Without a client certificate tenancy refuses it, and no invitation is made.
    let without = start(&[ServiceName::Invitation], |s| {
        s.tenancy_url = Some(format!("https://localhost:{}", tenancy.grpc.port()));
        s.tls_ca_file = Some(ca_file.clone());
    })
    .await;
    assert!(invite(&without, false).await.is_err(), "tenancy served a peer without a client certificate");
}

/// A `redis-server` with TLS only, on a free loopback port, stopped when dropped.
struct TlsRedis {
    child: std::process::Child,
    port: u16,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_redis(files: &Files, ca: &Ca) -> TlsRedis {
    let leaf = ca.leaf("redis");
    let (cert, key, ca_file) = (
        files.write("redis.crt", &leaf.cert_pem),
        files.write("redis.key", &leaf.key_pem),
        files.write("redis-ca.crt", &ca.pem()),
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = std::process::Command::new("redis-server")
        .args(["--port", "0", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
        .arg("--tls-cert-file")
        .arg(cert)
        .arg("--tls-key-file")
        .arg(key)
        .arg("--tls-ca-cert-file")
        .arg(ca_file)
        .arg("--dir")
        .arg(files.dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server");
    TlsRedis { child, port }
}

#[tokio::test]
async fn rediss_urls_reach_redis_over_tls_trusting_the_configured_ca() {
    let ca = Ca::new("redis CA");
    let files = Files::new();
    let redis = tls_redis(&files, &ca);
    let url = format!("rediss://localhost:{}", redis.port);
    let ca_pem = ca.pem().into_bytes();
    lanyard_core::tls::install_crypto_provider();
    let mut cache = None;
    for _ in 0..100 {
        match lanyard_core::cache::Cache::redis_tls(&url, "tls-test", Some(&ca_pem)).await {
            Ok(c) => {
                cache = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let cache = cache.expect("Redis over TLS with the test CA");
    cache.ping().await.expect("PING over TLS");
    // Not trusted by the system's roots; plaintext to the TLS port gets nothing.
    assert!(lanyard_core::cache::Cache::redis(&url, "tls-test").await.is_err(), "a private CA was trusted");
    let plain = format!("redis://localhost:{}", redis.port);
    assert!(lanyard_core::cache::Cache::redis(&plain, "tls-test").await.is_err(), "plaintext reached the TLS port");
    // The composition root: the shared cache and its subscription over TLS.
    let ca_file = files.write("ca.crt", &ca.pem());
    let server = start(&ServiceName::ALL, |s| {
        s.redis_url = Some(SecretString::from(url.clone()));
        s.tls_ca_file = Some(ca_file);
    })
    .await;
    let plain_channel = Channel::from_shared(format!("http://{}", server.grpc)).unwrap().connect().await.unwrap();
    operator_call(plain_channel).await.expect("a server whose cache is Redis over TLS");
}

#[tokio::test]
async fn postgres_verify_full_is_honoured_and_fails_closed() {
    let ca = Ca::new("postgres CA");
    let files = Files::new();
    let foreign_root = files.write("pg-ca.crt", &ca.pem());
    let admin = lanyard_tests::postgres_admin_url();
    let with = |url: &str, query: &str| format!("{url}{}{query}", if url.contains('?') { '&' } else { '?' });
    let data = tempfile::tempdir().unwrap();
    let mut s = settings(data.path());
    s.startup_retry_seconds = 0;
    s.mail_transport = Some(lanyard::settings::MailTransportKind::Files);
    // The control: this server answers when TLS is not demanded.
    s.database_url = Some(SecretString::from(admin.clone()));
    lanyard::app::wait_for_database(&s).await.expect("the test Postgres answers");
    // Asked for TLS verified against a CA that did not sign the server's certificate (or against
    // a server without TLS), the process does not settle for less: no connection at all.
    let verify = with(&admin, &format!("sslmode=verify-full&sslrootcert={}", foreign_root.display()));
    s.database_url = Some(SecretString::from(verify.clone()));
    let e = format!("{:#}", lanyard::app::wait_for_database(&s).await.expect_err("connected under verify-full"));
    assert!(e.contains("TLS") || e.contains("certificate"), "{e}");
    let e = Application::build(s.clone(), &[ServiceName::Tenancy]).await.err().expect("the server started");
    assert!(format!("{e:#}").contains("certificate") || format!("{e:#}").contains("TLS"), "{e:#}");
    let config = |url: String| lanyard_core::db::DatabaseConfig { url, schema: "tenancy".into(), max_connections: 1 };
    assert!(
        lanyard_core::db::Database::connect(&config(verify)).await.is_err(),
        "the pool connected under verify-full"
    );

    // Where the local server serves TLS with Debian's certificate for `localhost`, verify-full
    // trusting exactly that certificate connects: the setting is honoured, not just refused.
    let snakeoil = Path::new("/etc/ssl/certs/ssl-cert-snakeoil.pem");
    if snakeoil.exists() && admin.contains("@127.0.0.1:") {
        let local = admin.replace("@127.0.0.1:", "@localhost:");
        let trusted = with(&local, &format!("sslmode=verify-full&sslrootcert={}", snakeoil.display()));
        let answered = lanyard_core::db::Database::check_reachable(&trusted).await;
        let tls_on = lanyard_core::db::Database::check_reachable(&with(&local, "sslmode=require")).await.is_ok();
        if tls_on {
            answered.expect("verify-full with the server's own certificate as root");
        }
    }
}

/// A split deployment with TLS on every hop: the test's clients, tenancy and the token service
/// require client certificates from the mesh CA, the token service calls tenancy over mutual TLS,
/// and tenancy fetches the token service's JWKS over `https://` trusting `LANYARD_TLS_CA_FILE`. A
/// signed-in admin's access token works at the tenancy process; at one that does not trust the
/// mesh CA, the keys cannot be fetched and the token is refused.
#[tokio::test]
async fn a_split_deployment_over_tls_accepts_member_tokens_through_https_jwks() {
    use lanyard_core::db::Backend;
    use lanyard_tests::{redis_url, spawn_services, sso};
    let (ca, other) = (Ca::new("mesh CA"), Ca::new("another CA"));
    let files = Files::new();
    let ca_file = files.write("ca.crt", &ca.pem());
    let pair = |name: &str, ca: &Ca| {
        let leaf = ca.leaf(name);
        (files.write(&format!("{name}.crt"), &leaf.cert_pem), files.write(&format!("{name}.key"), &leaf.key_pem))
    };
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (grpc, http) = (free(), free());
    let issuer = format!("https://localhost:{http}");
    let prefix = format!("tls-split-{}", uuid::Uuid::new_v4().simple());
    let mesh = |s: &mut Settings, (cert, key): (PathBuf, PathBuf), trusted: &Path| {
        s.tls_cert_file = Some(cert);
        s.tls_key_file = Some(key);
        s.tls_ca_file = Some(trusted.to_owned());
        s.tls_client_ca_file = Some(ca_file.clone());
        s.allow_http_issuers = true;
        s.redis_url = Some(redis_url().into());
        s.redis_key_prefix = prefix.clone();
        s.token_issuer = issuer.clone();
    };
    let member_verifier = |s: &mut Settings| {
        s.token_url = Some(format!("https://localhost:{grpc}"));
        s.token_jwks_url = Some(format!("{issuer}/.well-known/jwks.json"));
    };
    let tenancy = spawn_services(Backend::Sqlite, &[ServiceName::Tenancy], |s| {
        mesh(s, pair("tenancy", &ca), &ca_file);
        member_verifier(s);
    })
    .await;
    assert!(tenancy.endpoint.starts_with("https://"));
    let token = spawn_services(Backend::Sqlite, &[ServiceName::Token], |s| {
        mesh(s, pair("token", &ca), &ca_file);
        s.listen_addr = format!("127.0.0.1:{grpc}").parse().unwrap();
        s.http_addr = Some(format!("127.0.0.1:{http}").parse().unwrap());
        s.tenancy_url = Some(tenancy.endpoint.clone());
    })
    .await;
    // A tenancy process that trusts another CA only (its own certificate is from it).
    let other_file = files.write("other.crt", &other.pem());
    let stranger = spawn_services(Backend::Sqlite, &[ServiceName::Tenancy], |s| {
        mesh(s, pair("stranger", &other), &other_file);
        s.tls_client_ca_file = None;
        member_verifier(s);
    })
    .await;

    let idp = sso::provider().await;
    let org = sso::org(&tenancy, &idp).await;
    let email = format!("admin@{}", sso::DOMAIN);
    tenancy.add_member(&org, &email, &["admin"]).await;
    let session = sso::sign_in(&token, &idp, &org, &email).await;
    let list = |app: &lanyard_tests::TestApp| {
        let request = pb::ListMembersRequest { organization_id: org.clone(), ..Default::default() };
        let header = format!("Bearer {}", session.access_token);
        let mut client = app.client_with(Some(&header));
        async move { client.list_members(request).await }
    };
    let members = list(&tenancy).await.expect("the admin's token at tenancy, keys fetched over TLS");
    assert!(!members.into_inner().members.is_empty());
    let refused = list(&stranger).await.expect_err("a token accepted with keys from an untrusted server");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
}

//! The `lanyard` binary as a newcomer uses it: `serve` on the embedded default with nothing
//! configured, operator commands against it (tables and JSON), clean errors, and SIGTERM.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_lanyard");

use lanyard_testkit::free_port;

/// Runs an operator command against `endpoint`, with the data directory's generated key.
fn lanyard(data: &Path, endpoint: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LANYARD_DATA_DIR", data)
        .env("LANYARD_ENDPOINT", endpoint)
        .output()
        .expect("runs the binary")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(o)).expect("JSON output")
}

/// A running `lanyard serve` (killed when dropped) and its HTTP port.
struct Server(Child, u16);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `lanyard serve` with only a data directory and an address, and waits until it answers.
fn serve(data: &Path) -> (Server, String) {
    let mut command = Command::new(BIN);
    command.arg("serve");
    start(command, data)
}

/// Starts `lanyard serve` under `umask 000`, where only explicit modes keep anything private.
fn serve_with_open_umask(data: &Path) -> (Server, String) {
    let mut command = Command::new("sh");
    // `exec`, so the child is the server itself and stopping it stops the server.
    command.args(["-c", "umask 000 && exec \"$0\" serve", BIN]);
    start(command, data)
}

fn start(mut command: Command, data: &Path) -> (Server, String) {
    let (port, http) = (free_port(), free_port());
    let child = command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LANYARD_DATA_DIR", data)
        .env("LANYARD_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("LANYARD_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts the server");
    let server = Server(child, http);
    let endpoint = format!("http://127.0.0.1:{port}");
    // Readiness, not timing: poll until the port accepts (bounded, in case it never starts).
    for _ in 0..600 {
        let files = ["tenancy.db", "invitation.db", "token.db", "operator.key", "service.key", "encryption.key"];
        let up = |p: u16| std::net::TcpStream::connect(("127.0.0.1", p)).is_ok();
        if files.iter().all(|f| data.join(f).exists()) && up(port) && up(http) {
            return (server, endpoint);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("lanyard serve did not start");
}

#[test]
fn a_fresh_serve_works_with_the_cli_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut server, endpoint) = serve(&data);

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("operator.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let table = stdout(&lanyard(
        &data,
        &endpoint,
        &["org", "create", "--slug", "acme", "--name", "Acme Corp", "--seats", "2", "--domain", "acme.com"],
    ));
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains("acme") && table.contains("Acme Corp") && table.contains("acme.com"), "{table}");

    let org = json(&lanyard(&data, &endpoint, &["org", "show", "acme", "--json"]));
    assert_eq!(org["slug"], "acme");
    assert_eq!(org["seat_limit"], 2);
    assert_eq!(org["status"], "active");

    let alice = json(&lanyard(
        &data,
        &endpoint,
        &["member", "add", "--org", "acme", "--email", "alice@acme.com", "--role", "admin", "--json"],
    ));
    assert_eq!(alice["roles"], serde_json::json!(["admin"]));
    stdout(&lanyard(&data, &endpoint, &["member", "add", "--org", "acme", "--email", "bob@acme.com"]));

    let full = lanyard(&data, &endpoint, &["member", "add", "--org", "acme", "--email", "carol@acme.com"]);
    assert!(!full.status.success());
    let err = String::from_utf8_lossy(&full.stderr);
    assert!(err.contains("SEATS_EXHAUSTED"), "{err}");
    assert!(!err.contains("backtrace"), "{err}");

    let seats = json(&lanyard(&data, &endpoint, &["seats", "show", "--org", "acme", "--json"]));
    assert_eq!((seats["active"].as_i64(), seats["available"].as_i64()), (Some(2), Some(0)));

    let user = alice["user_id"].as_str().unwrap().to_owned();
    let removed = json(&lanyard(&data, &endpoint, &["member", "remove", "--org", "acme", "--user", &user, "--json"]));
    assert_eq!(removed["status"], "removed");
    let members = json(&lanyard(&data, &endpoint, &["member", "list", "--org", "acme", "--json"]));
    assert_eq!(members.as_array().unwrap().len(), 1);
    let orgs = json(&lanyard(&data, &endpoint, &["org", "list", "--json"]));
    assert_eq!(orgs.as_array().unwrap().len(), 1);

    // A wrong key is refused with the stable reason.
    let wrong = Command::new(BIN)
        .args(["org", "list", "--api-key", "not-the-right-key-at-all"])
        .env_clear()
        .env("LANYARD_ENDPOINT", &endpoint)
        .env("LANYARD_DATA_DIR", &data)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("CREDENTIALS_INVALID"));

    // SIGTERM: a graceful stop with exit code 0.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.0.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    let status = server.0.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn migrate_creates_the_schema_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["migrate", "--service", "tenancy"])
        .env_clear()
        .env("LANYARD_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.path().join("tenancy.db").exists());
}

#[test]
fn bad_settings_fail_with_a_clear_message() {
    let out = Command::new(BIN).args(["migrate"]).env_clear().env("LANYARD_LISTEN_ADRESS", "typo").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error:") && err.contains("listen_adress"), "{err}");
}

#[test]
fn invitations_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (_server, endpoint) = serve(&data);
    stdout(&lanyard(
        &data,
        &endpoint,
        &["org", "create", "--slug", "globex", "--name", "Globex", "--seats", "3", "--domain", "globex.com"],
    ));

    let printed = json(&lanyard(
        &data,
        &endpoint,
        &[
            "invitation",
            "create",
            "--org",
            "globex",
            "--email",
            "it@globex.com",
            "--role",
            "owner",
            "--print-link",
            "--json",
        ],
    ));
    assert_eq!(printed["status"], "pending");
    // The default link is the token service's landing page, under the (default) issuer.
    assert!(printed["invitation_link"].as_str().unwrap().starts_with("http://127.0.0.1:50052/invite/"));
    let id = printed["invitation_id"].as_str().unwrap().to_owned();

    // Sent by email (the embedded default writes .eml files): the link is not printed.
    let mailed = json(&lanyard(
        &data,
        &endpoint,
        &["invitation", "create", "--org", "globex", "--email", "bob@globex.com", "--json"],
    ));
    assert!(mailed.get("invitation_link").is_none());

    let outside = lanyard(&data, &endpoint, &["invitation", "create", "--org", "globex", "--email", "eve@evil.com"]);
    assert!(String::from_utf8_lossy(&outside.stderr).contains("EMAIL_DOMAIN_NOT_ALLOWED"));

    let listed =
        json(&lanyard(&data, &endpoint, &["invitation", "list", "--org", "globex", "--status", "pending", "--json"]));
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let resent = json(&lanyard(
        &data,
        &endpoint,
        &["invitation", "resend", "--org", "globex", "--id", &id, "--print-link", "--json"],
    ));
    assert_ne!(resent["invitation_link"], printed["invitation_link"]);
    let revoked = json(&lanyard(&data, &endpoint, &["invitation", "revoke", "--org", "globex", "--id", &id, "--json"]));
    assert_eq!(revoked["status"], "revoked");
    let seats = json(&lanyard(&data, &endpoint, &["seats", "show", "--org", "globex", "--json"]));
    assert_eq!((seats["reserved"].as_i64(), seats["available"].as_i64()), (Some(1), Some(2)));
    let table = stdout(&lanyard(&data, &endpoint, &["invitation", "list", "--org", "globex"]));
    assert!(table.starts_with("ID") && table.contains("revoked") && table.contains("bob@globex.com"), "{table}");
}

#[test]
fn domains_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (_server, endpoint) = serve(&data);
    let org = json(&lanyard(
        &data,
        &endpoint,
        &[
            "org",
            "create",
            "--slug",
            "umbrella",
            "--name",
            "Umbrella",
            "--seats",
            "3",
            "--domain",
            "umbrella.com",
            "--verify-domains",
            "--json",
        ],
    ));
    assert_eq!(org["domains"][0]["state"], "verified", "{org}");
    assert_eq!(org["domains"][0]["verification_method"], "operator");

    let added =
        json(&lanyard(&data, &endpoint, &["domain", "add", "--org", "umbrella", "--domain", "umbrella.io", "--json"]));
    assert_eq!(added["record_name"], "_lanyard-challenge.umbrella.io");
    assert_eq!(added["record_type"], "TXT");
    assert!(added["record_value"].as_str().unwrap().starts_with("lanyard-domain-verification="), "{added}");
    let listed = json(&lanyard(&data, &endpoint, &["domain", "list", "--org", "umbrella", "--json"]));
    let states: Vec<_> = listed.as_array().unwrap().iter().map(|d| (d["name"].clone(), d["state"].clone())).collect();
    assert_eq!(states, [("umbrella.com".into(), "verified".into()), ("umbrella.io".into(), "pending".into())]);
    let verified = json(&lanyard(
        &data,
        &endpoint,
        &["domain", "verify", "--org", "umbrella", "--domain", "umbrella.io", "--operator", "--json"],
    ));
    assert_eq!(verified["state"], "verified");

    // A second organization cannot verify it, and its members stay inside their domains unless waived.
    stdout(&lanyard(
        &data,
        &endpoint,
        &["org", "create", "--slug", "other", "--name", "Other", "--seats", "3", "--domain", "other.com"],
    ));
    let taken = lanyard(&data, &endpoint, &["domain", "add", "--org", "other", "--domain", "umbrella.io"]);
    assert!(taken.status.success(), "an operator may add it pending");
    let refused =
        lanyard(&data, &endpoint, &["domain", "verify", "--org", "other", "--domain", "umbrella.io", "--operator"]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("DOMAIN_VERIFIED_ELSEWHERE"), "{refused:?}");
    let outside = lanyard(&data, &endpoint, &["member", "add", "--org", "other", "--email", "x@evil.io"]);
    assert!(String::from_utf8_lossy(&outside.stderr).contains("EMAIL_DOMAIN_NOT_ALLOWED"), "{outside:?}");
    let waived = json(&lanyard(
        &data,
        &endpoint,
        &["member", "add", "--org", "other", "--email", "x@evil.io", "--waive-domain-check", "--json"],
    ));
    assert_eq!(waived["email"], "x@evil.io");
    let removed = json(&lanyard(
        &data,
        &endpoint,
        &["domain", "remove", "--org", "umbrella", "--domain", "umbrella.io", "--json"],
    ));
    assert_eq!(removed.as_array().unwrap().len(), 1);
}

/// SIGTERM while RPCs are arriving and in flight: the process exits 0, every RPC it answered is
/// committed, every committed change was answered, and the rest were refused at the transport.
#[test]
fn sigterm_under_load_drops_no_accepted_rpc() {
    use lanyard_proto::tenancy::v1 as pb;
    use lanyard_proto::tenancy::v1::tenancy_service_client::TenancyServiceClient;

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut server, endpoint) = serve(&data);
    let key = std::fs::read_to_string(data.join("operator.key")).unwrap().trim().to_owned();
    let pid = nix::unistd::Pid::from_raw(server.0.id() as i32);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (org, results) = runtime.block_on(async move {
        let channel = tonic::transport::Channel::from_shared(endpoint).unwrap().connect().await.unwrap();
        let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {key}").parse().unwrap();
        let with_key = move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert("authorization", bearer.clone());
            Ok(req)
        };
        let client = TenancyServiceClient::with_interceptor(channel, with_key);
        let org = client
            .clone()
            .create_organization(pb::CreateOrganizationRequest {
                slug: "loaded".into(),
                display_name: "Loaded".into(),
                seat_limit: 100_000,
                allowed_domains: vec!["acme.com".into()],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .organization
            .unwrap()
            .organization_id;
        let calls = 300;
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(calls + 1));
        let (first_answer, mut answered) = tokio::sync::watch::channel(false);
        let first_answer = std::sync::Arc::new(first_answer);
        let tasks: Vec<_> = (0..calls)
            .map(|i| {
                let (mut client, barrier, org) = (client.clone(), barrier.clone(), org.clone());
                let first_answer = first_answer.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    let result = client
                        .add_member(pb::AddMemberRequest {
                            organization_id: org,
                            email: format!("load{i}@acme.com"),
                            ..Default::default()
                        })
                        .await
                        .map(|_| ());
                    if result.is_ok() {
                        let _ = first_answer.send(true);
                    }
                    result
                })
            })
            .collect();
        barrier.wait().await;
        // Stop once the server is demonstrably busy: one call answered, the others in flight.
        let _ = answered.wait_for(|a| *a).await;
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        (org, results)
    });
    let status = server.0.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");

    let answered = results.iter().filter(|r| r.is_ok()).count();
    eprintln!("sigterm under load: {answered} of {} answered", results.len());
    assert!(answered >= 1);
    for r in &results {
        if let Err(s) = r {
            let transport = matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::Internal | tonic::Code::Cancelled | tonic::Code::Unknown
            ) && lanyard_core::status::reason_of(s).is_none();
            assert!(transport, "an RPC failed otherwise than by being refused: {s:?}");
        }
    }
    let committed = runtime.block_on(async {
        let url = format!("sqlite://{}", data.join("tenancy.db").display());
        let db = lanyard_core::db::Database::connect(&lanyard_core::db::DatabaseConfig {
            url,
            schema: "tenancy".into(),
            max_connections: 1,
        })
        .await
        .unwrap();
        let row = sqlx_count(&db, &org).await;
        row
    });
    assert_eq!(committed as usize, answered, "answered RPCs and committed changes are the same set");
}

async fn sqlx_count(db: &lanyard_core::db::Database, org: &str) -> i64 {
    use sqlx::Row;
    sqlx::query("SELECT COUNT(*) AS n FROM memberships WHERE org_id = $1")
        .bind(org)
        .fetch_one(&db.pool)
        .await
        .unwrap()
        .try_get("n")
        .unwrap()
}

/// Every path under `data` (itself included) whose mode is not 0700 for a directory or 0600 for a
/// file, and every path looked at.
#[cfg(unix)]
fn loose_paths(data: &Path) -> (Vec<String>, Vec<std::path::PathBuf>) {
    use std::os::unix::fs::PermissionsExt;
    let (mut loose, mut seen, mut pending) = (Vec::new(), Vec::new(), vec![data.to_path_buf()]);
    while let Some(path) = pending.pop() {
        // The server runs on: a temporary file may be gone between listing and looking.
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => panic!("{}: {e}", path.display()),
        };
        let mode = meta.permissions().mode() & 0o7777;
        let want = if meta.is_dir() { 0o700 } else { 0o600 };
        if mode != want {
            loose.push(format!("{} is {mode:o}, not {want:o}", path.display()));
        }
        if meta.is_dir() {
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
        seen.push(path);
    }
    (loose, seen)
}

/// Creates an organization and an invitation sent by email, and waits until its `.eml` is written.
#[cfg(unix)]
fn mail_an_invitation(data: &Path, endpoint: &str) {
    let emails = || {
        std::fs::read_dir(data.join("mail"))
            .map(|d| d.filter_map(Result::ok).filter(|e| e.path().extension().is_some_and(|x| x == "eml")).count())
            .unwrap_or(0)
    };
    let before = emails();
    stdout(&lanyard(
        data,
        endpoint,
        &["org", "create", "--slug", "initech", "--name", "Initech", "--seats", "3", "--domain", "initech.com"],
    ));
    stdout(&lanyard(data, endpoint, &["invitation", "create", "--org", "initech", "--email", "peter@initech.com"]));
    // Readiness, not timing: poll until the mailer wrote it (bounded, in case it never does).
    for _ in 0..600 {
        if emails() > before {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the invitation email was not written to {}", data.join("mail").display());
}

#[cfg(unix)]
#[test]
fn data_at_rest_is_private_under_an_open_umask() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (_server, endpoint) = serve_with_open_umask(&data);
    mail_an_invitation(&data, &endpoint);

    let (loose, seen) = loose_paths(&data);
    assert!(loose.is_empty(), "readable by others:\n{}", loose.join("\n"));
    // The walk covered what matters: SQLite's own files (they exist while the server runs) and mail.
    let names: Vec<String> =
        seen.iter().filter_map(|p| p.strip_prefix(&data).ok()).map(|p| p.display().to_string()).collect();
    for expected in ["tenancy.db-wal", "tenancy.db-shm", "invitation.db-wal", "token.db-wal", "encryption.key", "mail"]
    {
        assert!(names.iter().any(|n| n == expected), "{expected} not in {names:?}");
    }
    assert!(names.iter().any(|n| n.starts_with("mail/") && n.ends_with(".eml")), "no .eml in {names:?}");
}

#[cfg(unix)]
#[test]
fn loose_modes_left_by_an_older_version_are_tightened_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let chmod = |path: &Path, mode: u32| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("mail")).unwrap();
    // An empty file is an empty SQLite database.
    std::fs::write(data.join("tenancy.db"), "").unwrap();
    std::fs::write(data.join("encryption.key"), "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap();
    std::fs::write(data.join("mail").join("old.eml"), "To: someone@initech.com\r\n\r\nan old link\r\n").unwrap();
    chmod(&data, 0o777);
    chmod(&data.join("mail"), 0o777);
    chmod(&data.join("tenancy.db"), 0o666);
    chmod(&data.join("encryption.key"), 0o644);
    chmod(&data.join("mail").join("old.eml"), 0o666);

    let (_server, endpoint) = serve_with_open_umask(&data);
    mail_an_invitation(&data, &endpoint);

    let (loose, _) = loose_paths(&data);
    assert!(loose.is_empty(), "readable by others:\n{}", loose.join("\n"));
}

#[test]
fn an_https_endpoint_gets_no_key_in_cleartext() {
    use std::io::Read;
    let data = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("https://{}", listener.local_addr().unwrap());
    let key = "lny_a_key_that_must_not_travel_in_cleartext";
    // A server that is not TLS: it reads what the CLI sends, then hangs up.
    let received = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..2 {
            let (mut stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).unwrap_or(0);
            seen.push(buf[..n].to_vec());
        }
        seen
    });
    for endpoint in [endpoint.clone(), endpoint.replacen("https", "HTTPS", 1)] {
        let out = Command::new(BIN)
            .args(["org", "list", "--endpoint", &endpoint, "--api-key", key])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LANYARD_DATA_DIR", data.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "a server without TLS was used: {out:?}");
    }
    // Each connection opened with a TLS ClientHello (a handshake record), and the key never went out.
    for bytes in received.join().unwrap() {
        assert_eq!(bytes.first(), Some(&0x16), "not a TLS handshake: {bytes:?}");
        assert!(!bytes.windows(key.len()).any(|w| w == key.as_bytes()), "the key was sent in cleartext");
    }
}

#[test]
fn a_plaintext_endpoint_off_loopback_gets_no_key() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["org", "list", "--endpoint", "http://lanyard.invalid:50051", "--api-key", "lny_key"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LANYARD_DATA_DIR", data.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refusing to send the API key in cleartext"), "{stderr}");
}

#[test]
fn health_answers_for_the_server_and_each_service() {
    let data = tempfile::tempdir().unwrap();
    let health = |endpoint: &str, service: Option<&str>| {
        let mut command = Command::new(BIN);
        command.args(["health", "--endpoint", endpoint, "--timeout-ms", "5000"]);
        if let Some(service) = service {
            command.args(["--service", service]);
        }
        command.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).output().unwrap()
    };
    // Nothing listens: not healthy, and said so.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let out = health(&closed, None);
    assert!(!out.status.success(), "{out:?}");
    let (_server, endpoint) = serve(data.path());
    for service in [None, Some("tenancy"), Some("invitation"), Some("token")] {
        let out = health(&endpoint, service);
        assert_eq!(stdout(&out).trim(), "SERVING", "{service:?}");
    }
}

/// `GET path` over HTTP/1.1: the head and the body.
fn get(port: u16, path: &str) -> (String, String) {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_ascii_lowercase(), body.to_owned())
}

/// `lanyard client ...` against a real `lanyard serve`, and the binary's HTTP listener serving
/// the OpenID Provider: discovery names the endpoints, and an authorization request from a
/// registered application with an unregistered redirect URI stops on a page, never a redirect.
#[test]
fn clients_from_the_cli_and_the_provider_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (server, endpoint) = serve(&data);
    let http = server.1;
    let registered = json(&lanyard(
        &data,
        &endpoint,
        &[
            "client",
            "register",
            "--name",
            "Dashboard",
            "--redirect-uri",
            "https://app.example/callback",
            "--post-logout-redirect-uri",
            "https://app.example/",
            "--json",
        ],
    ));
    let client_id = registered["client_id"].as_str().unwrap().to_owned();
    assert!(registered["client_secret"].as_str().is_some_and(|s| s.len() >= 43), "{registered}");
    assert_eq!(registered["public"], false);
    let public = json(&lanyard(
        &data,
        &endpoint,
        &["client", "register", "--name", "SPA", "--public", "--redirect-uri", "http://127.0.0.1:3000/cb", "--json"],
    ));
    assert_eq!(public["client_secret"], "");
    let bad =
        lanyard(&data, &endpoint, &["client", "register", "--name", "X", "--redirect-uri", "http://evil.example/"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("must be https"), "{}", String::from_utf8_lossy(&bad.stderr));

    let listed = json(&lanyard(&data, &endpoint, &["client", "list", "--json"]));
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert!(listed.to_string().contains(&client_id) && !listed.to_string().contains("secret"), "{listed}");

    // The binary's HTTP listener serves the provider.
    let (head, body) = get(http, "/.well-known/openid-configuration");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(doc["authorization_endpoint"].as_str().unwrap().ends_with("/oauth2/authorize"), "{doc}");
    assert_eq!(doc["code_challenge_methods_supported"], serde_json::json!(["S256"]));
    let (head, body) =
        get(http, &format!("/oauth2/authorize?client_id={client_id}&redirect_uri=https%3A%2F%2Fevil.example%2F"));
    assert!(head.starts_with("http/1.1 400") && !head.contains("\r\nlocation:"), "{head}");
    assert!(head.contains("content-security-policy: default-src 'self'; frame-ancestors 'none'"), "{head}");
    assert!(head.contains("x-lanyard-error: redirect_uri_mismatch"), "{head}");
    assert!(body.contains("<h1>"), "{body}");

    let deleted = lanyard(&data, &endpoint, &["client", "delete", "--client-id", &client_id]);
    assert!(deleted.status.success());
    let listed = json(&lanyard(&data, &endpoint, &["client", "list", "--json"]));
    assert_eq!(listed.as_array().unwrap().len(), 1);
    let (head, _) = get(http, &format!("/oauth2/authorize?client_id={client_id}"));
    assert!(head.contains("x-lanyard-error: unknown_client"), "{head}");
}

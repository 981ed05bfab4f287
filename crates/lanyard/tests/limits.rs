//! Hostile traffic against `lanyard serve` on loopback, each attack as a client would send it:
//! many HTTP/2 streams of 4 MB requests, floods of idle and half-sent connections to both
//! listeners, and running out of file descriptors. The server must stay within its limits
//! (memory, open connections, log volume) and keep serving a well-behaved client.
//!
//! Nothing here asserts speed: timeouts are configured small and each test only waits, with a
//! generous bound, for what must eventually happen.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use lanyard_proto::token::v1::token_service_client::TokenServiceClient;
use lanyard_proto::token::v1::GetJwksRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_lanyard");

/// How long anything that must eventually happen may take on a busy machine.
const EVENTUALLY: Duration = Duration::from_secs(30);

use lanyard_testkit::free_port;

/// A `lanyard serve` child on the embedded default, killed when dropped.
struct Server {
    child: Child,
    grpc: SocketAddr,
    http: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts the server with `env` on top of a data directory and two free ports; `prefix` runs
    /// it under a wrapper (`prlimit ...`) that execs it, so the child is the server.
    fn start(env: &[(&str, &str)], prefix: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let log = dir.path().join("server.log");
        let grpc = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut command = match prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("LANYARD_DATA_DIR", &data)
            .env("LANYARD_LISTEN_ADDR", grpc.to_string())
            .env("LANYARD_HTTP_ADDR", http.to_string())
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = command.spawn().expect("starts the server");
        let server = Server { child, grpc, http, log, _dir: dir };
        let deadline = std::time::Instant::now() + EVENTUALLY;
        while std::time::Instant::now() < deadline {
            let files = ["tenancy.db", "invitation.db", "token.db", "operator.key", "service.key", "encryption.key"];
            if files.iter().all(|f| data.join(f).exists())
                && std::net::TcpStream::connect(grpc).is_ok()
                && std::net::TcpStream::connect(http).is_ok()
            {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("lanyard serve did not start: {}", std::fs::read_to_string(&server.log).unwrap_or_default());
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory, in bytes.
    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("the server runs");
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
        let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kb * 1024
    }

    /// Open file descriptors.
    fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map(|d| d.count()).unwrap_or(0)
    }

    /// CPU time used so far (user and system), in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("the server runs");
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }
}

/// One `GetJwks` over a fresh connection, as a well-behaved client makes it.
async fn get_jwks(endpoint: String) -> Result<usize, String> {
    let call = async {
        let mut client = TokenServiceClient::connect(endpoint).await.map_err(|e| format!("connect: {e}"))?;
        let keys = client.get_jwks(GetJwksRequest {}).await.map_err(|e| format!("GetJwks: {e}"))?;
        Ok(keys.into_inner().keys.len())
    };
    tokio::time::timeout(EVENTUALLY, call).await.unwrap_or_else(|_| Err("GetJwks did not answer".into()))
}

/// `GET /.well-known/jwks.json` over a fresh HTTP/1.1 connection.
async fn http_jwks(addr: SocketAddr) -> Result<String, String> {
    let call = async {
        let mut stream = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        stream
            .write_all(b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: lanyard\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&response).into_owned();
        if text.starts_with("HTTP/1.1 200") && text.contains("\"keys\"") {
            Ok(text)
        } else {
            Err(format!("unexpected response: {text:?}"))
        }
    };
    tokio::time::timeout(EVENTUALLY, call).await.unwrap_or_else(|_| Err("no HTTP answer".into()))
}

/// Retries `call` until it succeeds, for at most [`EVENTUALLY`].
async fn eventually<T, F, Fut>(mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + EVENTUALLY;
    loop {
        match call().await {
            Ok(v) => return v,
            Err(e) if tokio::time::Instant::now() > deadline => panic!("never succeeded: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// A gRPC message (with its 5-byte frame header) of an `AuthorizeRequest` padded to about
/// `size` bytes with an unknown length-delimited field, which protobuf decoders skip.
fn padded_authorize_request(size: usize) -> Bytes {
    let mut message = BytesMut::new();
    message.put_slice(&[0x0a, 0x01, b'x']); // access_token = "x"
    message.put_slice(&[0x12, 0x0c]); // permission
    message.put_slice(b"members:read");
    // Field 1000, wire type 2.
    put_varint(&mut message, (1000 << 3) | 2);
    let padding = size - message.len() - 16;
    put_varint(&mut message, padding as u64);
    message.put_bytes(0, padding);
    let mut framed = BytesMut::with_capacity(message.len() + 5);
    framed.put_u8(0);
    framed.put_u32(message.len() as u32);
    framed.put_slice(&message);
    framed.freeze()
}

fn put_varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// How one attacking stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Outcome {
    /// The `grpc-status` the server answered.
    Status(u32),
    /// Reset or closed without a status.
    Reset,
}

/// Sends `payload` on a new stream of `client` and waits for the answer, stopping the upload as
/// soon as the server has answered or reset the stream.
async fn attack_stream(client: h2::client::SendRequest<Bytes>, uri: String, payload: Bytes) -> Outcome {
    let Ok(mut client) = client.ready().await else { return Outcome::Reset };
    let request =
        http::Request::post(uri).header("content-type", "application/grpc").header("te", "trailers").body(()).unwrap();
    let Ok((response, mut body)) = client.send_request(request, false) else { return Outcome::Reset };
    let upload = async move {
        let mut data = payload;
        while !data.is_empty() {
            body.reserve_capacity(data.len().min(1 << 20));
            match std::future::poll_fn(|cx| body.poll_capacity(cx)).await {
                Some(Ok(0)) => continue,
                Some(Ok(n)) => {
                    let chunk = data.split_to(n.min(data.len()));
                    if body.send_data(chunk, data.is_empty()).is_err() {
                        break;
                    }
                }
                _ => break,
            }
        }
        // Answered or reset: wait for the answer below.
        std::future::pending::<()>().await
    };
    let answer = async move {
        let response = response.await.map_err(|_| ())?;
        if let Some(code) = grpc_status(response.headers()) {
            return Ok(code);
        }
        let mut body = response.into_body();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|_| ())?;
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        let trailers = body.trailers().await.map_err(|_| ())?.ok_or(())?;
        grpc_status(&trailers).ok_or(())
    };
    tokio::select! {
        () = upload => unreachable!(),
        answer = answer => answer.map(Outcome::Status).unwrap_or(Outcome::Reset),
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<u32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// Attack 1: unauthenticated clients open many HTTP/2 streams at once, each posting a 4 MB
/// `AuthorizeRequest`. The server refuses them from the message header (the limit for
/// `Authorize` is 64 KiB) and bounds the streams per connection, so its memory stays bounded
/// and a second client's calls keep succeeding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_streams_of_4mb_requests_are_refused_early_with_bounded_memory() {
    const RSS_BOUND: u64 = 500 * 1024 * 1024;
    const CONNECTIONS: usize = 4;
    const STREAMS_PER_CONNECTION: usize = 250;

    let server = Arc::new(Server::start(&[], &[]));
    let before = server.rss();
    assert!(get_jwks(server.endpoint()).await.is_ok());

    // Memory is watched throughout; past the bound the attack stops so the machine does not suffer.
    let peak = Arc::new(AtomicU64::new(before));
    let over = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (server, peak, over, done) = (server.clone(), peak.clone(), over.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let rss = server.rss();
                peak.fetch_max(rss, Ordering::Relaxed);
                if rss > RSS_BOUND {
                    over.store(true, Ordering::Relaxed);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    // The second client: well-behaved calls, one after another, all through the attack.
    let bystander = {
        let (endpoint, done) = (server.endpoint(), done.clone());
        tokio::spawn(async move {
            let mut calls = 0;
            while !done.load(Ordering::Relaxed) {
                let keys = get_jwks(endpoint.clone()).await.expect("a second client is served during the attack");
                assert!(keys > 0);
                calls += 1;
            }
            calls
        })
    };

    let payload = padded_authorize_request(4_000_000 - 10_000);
    assert!(payload.len() > 3_900_000);
    let uri = format!("http://{}/lanyard.authz.v1.AuthorizationService/Authorize", server.grpc);
    let mut streams = tokio::task::JoinSet::new();
    let mut connections = Vec::new();
    for _ in 0..CONNECTIONS {
        let tcp = TcpStream::connect(server.grpc).await.unwrap();
        let (client, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
        connections.push(tokio::spawn(connection));
        for _ in 0..STREAMS_PER_CONNECTION {
            streams.spawn(attack_stream(client.clone(), uri.clone(), payload.clone()));
        }
    }
    let mut outcomes = std::collections::HashMap::<Outcome, usize>::new();
    loop {
        tokio::select! {
            next = streams.join_next() => match next {
                Some(outcome) => *outcomes.entry(outcome.unwrap()).or_default() += 1,
                None => break,
            },
            _ = tokio::time::sleep(Duration::from_millis(50)) => {
                if over.load(Ordering::Relaxed) {
                    streams.abort_all();
                    for c in &connections {
                        c.abort();
                    }
                    panic!(
                        "the server's memory went past {} MB (from {} MB) under the attack",
                        RSS_BOUND >> 20,
                        before >> 20
                    );
                }
            }
        }
    }
    done.store(true, Ordering::Relaxed);
    watcher.await.unwrap();
    let calls = bystander.await.expect("the second client's calls all succeeded");
    for c in connections {
        c.abort();
    }
    let after = server.rss();
    let peak = peak.load(Ordering::Relaxed);
    eprintln!(
        "RSS before {} MB, peak {} MB, after {} MB; outcomes {outcomes:?}; second client: {calls} calls",
        before >> 20,
        peak >> 20,
        after >> 20
    );
    assert!(!over.load(Ordering::Relaxed) && peak <= RSS_BOUND, "peak RSS {} MB", peak >> 20);
    // Every oversized request was refused by a status (OUT_OF_RANGE from the size limit,
    // RESOURCE_EXHAUSTED from load shedding) or a reset; none was processed.
    let refused: usize = outcomes
        .iter()
        .filter(|(o, _)| matches!(o, Outcome::Status(11) | Outcome::Status(8) | Outcome::Reset))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(refused, CONNECTIONS * STREAMS_PER_CONNECTION, "{outcomes:?}");
    assert!(outcomes.contains_key(&Outcome::Status(11)), "the size limit answers OUT_OF_RANGE: {outcomes:?}");
    // And the server is still healthy afterwards.
    assert!(get_jwks(server.endpoint()).await.is_ok());
}

/// Opens `count` TCP connections to `addr`; every other one sends `partial` (a request that never
/// ends) and the rest send nothing.
async fn flood(addr: SocketAddr, count: usize, partial: &[u8]) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(count);
    for i in 0..count {
        let Ok(mut stream) = TcpStream::connect(addr).await else { continue };
        if i % 2 == 0 {
            let _ = stream.write_all(partial).await;
        }
        streams.push(stream);
    }
    streams
}

/// Waits until the server has closed every one of `streams` (read gives end of file or an error).
async fn all_closed_by_server(streams: Vec<TcpStream>) {
    let waits = streams.into_iter().map(|mut s| async move {
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    });
    tokio::time::timeout(EVENTUALLY, futures::future::join_all(waits))
        .await
        .expect("the server closed every idle or half-sent connection");
}

/// The most file descriptors the server held while `streams` were open (sampled for a moment,
/// while the server accepts what the kernel queued).
async fn most_open_files(server: &Server) -> usize {
    let mut most = 0;
    for _ in 0..20 {
        most = most.max(server.open_files());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    most
}

const CAP: usize = 20;
const FLOOD: usize = 300;

fn small_limits() -> Vec<(&'static str, &'static str)> {
    vec![
        ("LANYARD_GRPC_MAX_CONNECTIONS", "20"),
        ("LANYARD_HTTP_MAX_CONNECTIONS", "20"),
        ("LANYARD_GRPC_HANDSHAKE_TIMEOUT_MS", "1000"),
        ("LANYARD_HTTP_HEADER_READ_TIMEOUT_MS", "1000"),
    ]
}

/// Attack 2, HTTP side: hundreds of idle and half-sent connections to the JWKS port. The server
/// holds at most its cap of them, closes the rest at once and the held ones after the header-read
/// timeout, keeps answering gRPC throughout, and answers HTTP again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_sent_http_connections_are_capped_and_closed() {
    let server = Server::start(&small_limits(), &[]);
    assert!(http_jwks(server.http).await.is_ok());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = server.open_files();

    let streams = flood(server.http, FLOOD, b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: lanyard\r\n").await;
    assert!(streams.len() > CAP * 2, "the flood connected");
    let most = most_open_files(&server).await;
    // gRPC has its own connections: an HTTP flood does not starve it.
    assert!(get_jwks(server.endpoint()).await.is_ok(), "gRPC is served during the HTTP flood");
    all_closed_by_server(streams).await;

    assert!(
        most <= baseline + CAP + 5,
        "the server held {most} files with {FLOOD} connections (baseline {baseline}, cap {CAP})"
    );
    eventually(|| http_jwks(server.http)).await;
}

/// Attack 2, gRPC side: hundreds of connections that never send (or never finish) the HTTP/2
/// preface. The server holds at most its cap of them, closes them after the handshake timeout,
/// keeps answering HTTP throughout, and answers gRPC again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_connections_without_a_preface_are_capped_and_closed() {
    let server = Server::start(&small_limits(), &[]);
    assert!(get_jwks(server.endpoint()).await.is_ok());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = server.open_files();

    let streams = flood(server.grpc, FLOOD, b"PRI * HTTP/2.0\r\n").await;
    assert!(streams.len() > CAP * 2, "the flood connected");
    let most = most_open_files(&server).await;
    assert!(http_jwks(server.http).await.is_ok(), "HTTP is served during the gRPC flood");
    all_closed_by_server(streams).await;

    assert!(
        most <= baseline + CAP + 5,
        "the server held {most} files with {FLOOD} connections (baseline {baseline}, cap {CAP})"
    );
    eventually(|| get_jwks(server.endpoint())).await;
}

/// Attack 2, out of file descriptors: with a low `RLIMIT_NOFILE` and caps above it, a flood
/// makes `accept` fail with `EMFILE`. The accept loops back off instead of spinning (CPU time
/// stays low, the error is logged once per burst) and serve again once connections close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_loops_back_off_when_out_of_file_descriptors() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("skipped: prlimit (util-linux) is not installed");
        return;
    }
    let env = [
        ("LANYARD_GRPC_MAX_CONNECTIONS", "10000"),
        ("LANYARD_HTTP_MAX_CONNECTIONS", "10000"),
        ("LANYARD_GRPC_HANDSHAKE_TIMEOUT_MS", "600000"),
        ("LANYARD_HTTP_HEADER_READ_TIMEOUT_MS", "600000"),
    ];
    let server = Server::start(&env, &["prlimit", "--nofile=256:256", "--"]);
    assert!(get_jwks(server.endpoint()).await.is_ok());
    let ticks_per_second = 100; // USER_HZ on Linux

    // More connections than descriptors, but fewer than fit in the listen queues (128 each), so
    // that every connect completes and the server is left out of descriptors with connections
    // queued on both listeners.
    let mut held = flood(server.grpc, 240, b"").await;
    held.extend(flood(server.http, 60, b"").await);
    eventually(|| async {
        match server.open_files() {
            n if n >= 250 => Ok(()),
            n => Err(format!("{n} files open")),
        }
    })
    .await;
    let cpu_before = server.cpu_ticks();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cpu = server.cpu_ticks() - cpu_before;

    drop(held);
    eventually(|| get_jwks(server.endpoint())).await;
    eventually(|| http_jwks(server.http)).await;

    let log = server.log_text();
    let errors = log.lines().filter(|l| l.contains("Too many open files")).count();
    assert!(errors <= 10, "accept errors logged {errors} times");
    // Spinning on accept would burn a core for the 3 s; backing off costs almost nothing.
    assert!(cpu < ticks_per_second / 2, "{cpu} ticks of CPU in 3 s while out of descriptors");
}

/// A gRPC connection that finished its handshake but sends no request (and answers pings) is
/// closed once it has been idle for the idle timeout, freeing its place under the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_grpc_connections_are_closed() {
    let server = Server::start(&[("LANYARD_GRPC_IDLE_TIMEOUT_SECONDS", "1")], &[]);
    let tcp = TcpStream::connect(server.grpc).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    let connection = tokio::spawn(connection);
    // One request first: the connection is idle from when it ends.
    let uri = format!("http://{}/lanyard.token.v1.TokenService/GetJwks", server.grpc);
    let outcome = attack_stream(client.clone(), uri, Bytes::from_static(&[0, 0, 0, 0, 0])).await;
    assert_eq!(outcome, Outcome::Status(0));
    // The connection task ends when the server closes the connection.
    tokio::time::timeout(EVENTUALLY, connection).await.expect("the server closed the idle connection").ok();
    drop(client);
    eventually(|| get_jwks(server.endpoint())).await;
}

/// A busy gRPC connection is still closed (GOAWAY) once it reaches the maximum connection age,
/// so a client reconnects and pods added by an autoscaler get their share; the client's next
/// connection works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_grpc_connections_are_closed_at_their_maximum_age() {
    let server = Server::start(
        // Old enough that a slow first answer (a loaded machine, a debug build) still comes before
        // the connection ages: what is checked is that a connection that answered is then closed.
        &[("LANYARD_GRPC_MAX_CONNECTION_AGE_SECONDS", "5"), ("LANYARD_GRPC_MAX_CONNECTION_AGE_GRACE_SECONDS", "1")],
        &[],
    );
    let tcp = TcpStream::connect(server.grpc).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    let mut connection = tokio::spawn(connection);
    let uri = format!("http://{}/lanyard.token.v1.TokenService/GetJwks", server.grpc);
    // Never idle: a request every 100 ms until the server ends the connection.
    let closed = tokio::time::timeout(EVENTUALLY, async {
        let mut answered = 0;
        loop {
            tokio::select! {
                _ = &mut connection => return answered,
                outcome = attack_stream(client.clone(), uri.clone(), Bytes::from_static(&[0, 0, 0, 0, 0])) => {
                    if outcome == Outcome::Status(0) {
                        answered += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
    .await
    .expect("the server closed the busy connection at its maximum age");
    assert!(closed >= 1, "the connection answered before it aged");
    drop(client);
    eventually(|| get_jwks(server.endpoint())).await;
}

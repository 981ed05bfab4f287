//! `lanyard client ...` against a real `lanyard serve`, and the binary's HTTP listener serving
//! the OpenID Provider: discovery names the endpoints, and an authorization request from a
//! registered application with an unregistered redirect URI stops on a page, never a redirect.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use lanyard_testkit::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_lanyard");

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

fn json(o: &Output) -> serde_json::Value {
    assert!(
        o.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("JSON output")
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `lanyard serve` with a data directory, a gRPC and an HTTP port; waits until both accept.
fn serve(data: &Path) -> (Server, String, u16) {
    let (port, http) = (free_port(), free_port());
    let child = Command::new(BIN)
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LANYARD_DATA_DIR", data)
        .env("LANYARD_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("LANYARD_HTTP_ADDR", format!("127.0.0.1:{http}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts the server");
    let server = Server(child);
    for _ in 0..600 {
        let up = |p: u16| std::net::TcpStream::connect(("127.0.0.1", p)).is_ok();
        if data.join("operator.key").exists() && up(port) && up(http) {
            return (server, format!("http://127.0.0.1:{port}"), http);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("lanyard serve did not start");
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

#[test]
fn clients_from_the_cli_and_the_provider_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (_server, endpoint, http) = serve(&data);
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

//! Every RPC of every Lanyard service, with an arbitrary request body, over real gRPC to the whole
//! application (all three services in one process on the embedded default, built by the binary's
//! own composition root): the protobuf decoding and the request → domain conversion of each
//! handler, as an operator, as a service, and unauthenticated.
//!
//! Input: one byte picks the RPC (from the services' file descriptor set, so a new RPC is fuzzed
//! without touching this file), one byte picks the caller, the rest is the request message.
//!
//! Invariants: the server never panics and keeps answering; a refusal carries a code a client
//! can act on and, when Lanyard (not the protobuf decoder) refused, a stable reason. `INTERNAL`
//! is allowed only for a body that is not a valid protobuf message (the gRPC status-code table
//! assigns that to `INTERNAL`); any other `INTERNAL`, and `UNKNOWN`, is a finding.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};

const OPERATOR_KEY: &str = "lny_fuzz_operator_key_0123456789abcdef";
const SERVICE_KEY: &str = "lny_fuzz_service_key_0123456789abcdef";

/// The running application and a channel to it.
struct Target {
    runtime: tokio::runtime::Runtime,
    channel: Channel,
    methods: Vec<String>,
    _dir: tempfile::TempDir,
}

fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let settings = lanyard::Settings {
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            http_addr: Some("127.0.0.1:0".parse().unwrap()),
            data_dir: dir.path().join("data"),
            operator_keys: vec![OPERATOR_KEY.to_owned().into()],
            service_keys: vec![SERVICE_KEY.to_owned().into()],
            // Nothing answers there: domain verification fails at once instead of waiting on a
            // resolver this machine cannot reach.
            dns_servers: vec!["127.0.0.1:9".parse().unwrap()],
            dns_timeout_ms: 50,
            // No outbound fetch leaves the process: the only issuer accepted does not resolve.
            sso_issuer_allowlist: vec!["https://idp.fuzz.invalid".to_owned()],
            rate_limit_exchange_per_minute: 1_000_000,
            rate_limit_exchange_burst: 1_000_000,
            rate_limit_invitation_per_minute: 1_000_000,
            rate_limit_invitation_burst: 1_000_000,
            mail_dir: Some(dir.path().join("mail")),
            ..lanyard::Settings::default()
        };
        let channel = runtime.block_on(async {
            let app = lanyard::Application::build(settings, &[]).await.unwrap();
            let addr = app.local_addr();
            tokio::spawn(app.run_until(std::future::pending()));
            Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .timeout(Duration::from_secs(10))
                .connect()
                .await
                .unwrap()
        });
        Target { runtime, channel, methods: methods(), _dir: dir }
    })
}

/// `/package.Service/Method` for every RPC the services declare, and Envoy's check.
fn methods() -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(lanyard_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut paths: Vec<String> = set
        .file
        .iter()
        .flat_map(|f| {
            f.service.iter().flat_map(move |s| {
                s.method.iter().map(move |m| format!("/{}.{}/{}", f.package(), s.name(), m.name()))
            })
        })
        .collect();
    paths.push("/envoy.service.auth.v3.Authorization/Check".to_owned());
    assert!(paths.len() > 40, "the descriptor set lists every RPC: {paths:?}");
    paths
}

/// Sends the fuzzer's bytes as the message and reads the reply as bytes.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

async fn call(channel: Channel, path: &str, caller: u8, body: Bytes) -> Result<Bytes, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(body);
    let key = match caller % 3 {
        0 => Some(OPERATOR_KEY),
        1 => Some(SERVICE_KEY),
        _ => None,
    };
    if let Some(key) = key {
        request.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    grpc.unary(request, PathAndQuery::try_from(path).unwrap(), Raw).await.map(|r| r.into_inner())
}

fuzz_target!(|input: &[u8]| {
    let [method, caller, body @ ..] = input else { return };
    let target = target();
    let path = &target.methods[*method as usize % target.methods.len()];
    let result = target.runtime.block_on(call(target.channel.clone(), path, *caller, Bytes::copy_from_slice(body)));
    let Err(status) = result else { return };
    match status.code() {
        Code::Internal => assert!(
            status.message().starts_with("failed to decode Protobuf message"),
            "{path}: INTERNAL for a well-formed request: {status:?}"
        ),
        Code::Unknown | Code::DataLoss => panic!("{path}: {status:?}"),
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::FailedPrecondition
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable => assert!(
            lanyard_core::status::reason_of(&status).is_some() || status.message().starts_with("failed to decode"),
            "{path}: {:?} without a reason: {status:?}",
            status.code()
        ),
        Code::DeadlineExceeded => panic!("{path}: no answer within the deadline: {status:?}"),
        Code::Ok | Code::Cancelled | Code::Unimplemented => {}
    }
});

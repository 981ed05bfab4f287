//! A fake recursive DNS server on loopback (UDP and TCP on one port) whose zone the test edits
//! while it runs, so that the real resolver can be tested against answers we choose: records,
//! CNAME chains, NXDOMAIN, SERVFAIL.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};

/// Long enough that a resolver which cached would still hold the old answer when the test asks
/// again: a test that a change is seen proves the resolver does not cache.
const TTL: u32 = 300;
/// Real recursive servers give up on longer chains (and on loops) with SERVFAIL.
const MAX_CNAME_CHAIN: usize = 8;
/// The largest UDP answer for a query without EDNS (RFC 1035 §4.2.1).
const CLASSIC_UDP_LIMIT: usize = 512;
/// A character-string holds at most 255 bytes; longer values are split, as zone files do.
const MAX_CHARACTER_STRING: usize = 255;

#[derive(Clone, Debug)]
enum Node {
    /// A name that is an alias holds nothing else (RFC 1034 §3.6.2).
    Cname(String),
    Records {
        txt: Vec<Vec<Vec<u8>>>,
        a: Vec<Ipv4Addr>,
    },
}

#[derive(Debug, Default)]
struct Zone {
    nodes: Mutex<HashMap<String, Node>>,
    servfail: AtomicBool,
    queries: AtomicUsize,
}

/// The server. Dropping it stops it.
pub struct FakeDns {
    addr: SocketAddr,
    zone: Arc<Zone>,
    tasks: Vec<JoinHandle<()>>,
}

impl FakeDns {
    /// Binds UDP and TCP on the same free port of 127.0.0.1 and starts answering.
    pub async fn start() -> Self {
        // The UDP port the OS picks may be taken for TCP; pick again then.
        for _ in 0..16 {
            let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind fake DNS (UDP)");
            let addr = udp.local_addr().expect("UDP address");
            let Ok(tcp) = TcpListener::bind(addr).await else {
                continue;
            };
            let zone = Arc::new(Zone::default());
            let tasks = vec![tokio::spawn(serve_udp(udp, zone.clone())), tokio::spawn(serve_tcp(tcp, zone.clone()))];
            return Self { addr, zone, tasks };
        }
        panic!("no loopback port free for both UDP and TCP");
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the TXT records of `name`, one record per value. Values over 255 bytes are split
    /// into several character-strings. Turns a CNAME at `name` into a plain name.
    pub fn set_txt(&self, name: &str, values: &[&str]) {
        let records = values
            .iter()
            .map(|value| value.as_bytes().chunks(MAX_CHARACTER_STRING).map(<[u8]>::to_vec).collect())
            .collect();
        self.put_txt(name, records);
    }

    /// Replaces the TXT records of `name`, each given as its character-strings, for the records
    /// a DNS provider splits where it likes.
    pub fn set_txt_strings(&self, name: &str, records: &[&[&str]]) {
        let records = records.iter().map(|strings| strings.iter().map(|s| s.as_bytes().to_vec()).collect()).collect();
        self.put_txt(name, records);
    }

    /// Replaces the A records of `name`.
    pub fn set_a(&self, name: &str, addrs: &[Ipv4Addr]) {
        let mut nodes = self.nodes();
        match nodes.entry(key(name)).or_insert_with(empty_node) {
            Node::Records { a, .. } => *a = addrs.to_vec(),
            node => *node = Node::Records { txt: Vec::new(), a: addrs.to_vec() },
        }
    }

    /// Makes `name` an alias of `target`, dropping whatever `name` held.
    pub fn set_cname(&self, name: &str, target: &str) {
        self.nodes().insert(key(name), Node::Cname(key(target)));
    }

    /// Forgets `name`: it answers NXDOMAIN again.
    pub fn remove(&self, name: &str) {
        self.nodes().remove(&key(name));
    }

    /// While on, every query is answered SERVFAIL, as a recursive server does when the
    /// authoritative servers are broken.
    pub fn set_servfail(&self, on: bool) {
        self.zone.servfail.store(on, Ordering::SeqCst);
    }

    /// How many queries arrived, over both transports, answered or not.
    pub fn queries(&self) -> usize {
        self.zone.queries.load(Ordering::SeqCst)
    }

    fn put_txt(&self, name: &str, records: Vec<Vec<Vec<u8>>>) {
        let mut nodes = self.nodes();
        match nodes.entry(key(name)).or_insert_with(empty_node) {
            Node::Records { txt, .. } => *txt = records,
            node => *node = Node::Records { txt: records, a: Vec::new() },
        }
    }

    fn nodes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Node>> {
        self.zone.nodes.lock().expect("fake DNS zone lock")
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn empty_node() -> Node {
    Node::Records { txt: Vec::new(), a: Vec::new() }
}

/// Names compare without case and without the trailing dot.
fn key(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

fn fqdn(key: &str) -> Name {
    Name::from_ascii(format!("{key}.")).expect("fake DNS: a valid name")
}

async fn serve_udp(socket: UdpSocket, zone: Arc<Zone>) {
    let mut buf = vec![0u8; 65_535];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let Some((response, request_edns)) = respond(&zone, &buf[..len]) else {
            continue;
        };
        let limit = request_edns.map_or(CLASSIC_UDP_LIMIT, |max| usize::from(max).max(CLASSIC_UDP_LIMIT));
        let Ok(mut bytes) = response.to_vec() else {
            continue;
        };
        // Too big for the client's buffer: say so, and the client asks again over TCP.
        if bytes.len() > limit {
            let Ok(truncated) = response.truncate().to_vec() else {
                continue;
            };
            bytes = truncated;
        }
        let _ = socket.send_to(&bytes, peer).await;
    }
}

async fn serve_tcp(listener: TcpListener, zone: Arc<Zone>) {
    // Owned here so that aborting this task ends the connections too.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    connections.spawn(serve_tcp_connection(stream, zone.clone()));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Messages over TCP are preceded by their length in two bytes (RFC 1035 §4.2.2).
async fn serve_tcp_connection(mut stream: TcpStream, zone: Arc<Zone>) {
    loop {
        let Ok(len) = stream.read_u16().await else {
            return;
        };
        let mut buf = vec![0u8; usize::from(len)];
        if stream.read_exact(&mut buf).await.is_err() {
            return;
        }
        let Some((response, _)) = respond(&zone, &buf) else {
            return;
        };
        let Ok(bytes) = response.to_vec() else {
            return;
        };
        let Ok(len) = u16::try_from(bytes.len()) else {
            return;
        };
        if stream.write_u16(len).await.is_err() || stream.write_all(&bytes).await.is_err() {
            return;
        }
    }
}

/// The answer to one request, and the UDP payload size the request offered (EDNS), if any.
/// `None` for what is not a DNS query at all: a real server drops those too.
fn respond(zone: &Zone, request: &[u8]) -> Option<(Message, Option<u16>)> {
    let request = Message::from_vec(request).ok()?;
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    zone.queries.fetch_add(1, Ordering::SeqCst);

    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.add_queries(request.queries.iter().cloned());
    let edns = request.edns.as_ref().map(Edns::max_payload);
    if edns.is_some() {
        // A server must answer EDNS with EDNS (RFC 6891 §6.1.1).
        let mut ours = Edns::new();
        ours.set_max_payload(1232);
        response.set_edns(ours);
    }

    response.metadata.response_code = if request.metadata.op_code != OpCode::Query {
        ResponseCode::NotImp
    } else if request.queries.len() != 1 {
        ResponseCode::FormErr
    } else if zone.servfail.load(Ordering::SeqCst) {
        ResponseCode::ServFail
    } else {
        let query = &request.queries[0];
        let nodes = zone.nodes.lock().expect("fake DNS zone lock");
        resolve(&nodes, query.name(), query.query_type(), &mut response.answers)
    };
    Some((response, edns))
}

/// Answers like a recursive server: the CNAME chain from `name`, then the records of the type
/// asked for at its end. The first owner keeps the query's spelling, as resolvers that randomize
/// case (0x20) check.
fn resolve(
    nodes: &HashMap<String, Node>,
    name: &Name,
    query_type: RecordType,
    answers: &mut Vec<Record>,
) -> ResponseCode {
    let mut owner = name.clone();
    for _ in 0..=MAX_CNAME_CHAIN {
        let node = nodes.get(&key(&owner.to_ascii()));
        match node {
            // The code is that of the end of the chain, CNAMEs or not.
            None => return ResponseCode::NXDomain,
            Some(Node::Cname(target)) => {
                let target = fqdn(target);
                answers.push(Record::from_rdata(owner, TTL, RData::CNAME(CNAME(target.clone()))));
                if query_type == RecordType::CNAME {
                    return ResponseCode::NoError;
                }
                owner = target;
            }
            Some(Node::Records { txt, a }) => {
                match query_type {
                    RecordType::TXT => answers.extend(txt.iter().map(|strings| {
                        let strings = strings.iter().map(Vec::as_slice).collect();
                        Record::from_rdata(owner.clone(), TTL, RData::TXT(TXT::from_bytes(strings)))
                    })),
                    RecordType::A => {
                        answers.extend(a.iter().map(|ip| Record::from_rdata(owner.clone(), TTL, RData::A(A(*ip)))))
                    }
                    // The name exists with other types only: NOERROR, no answers.
                    _ => {}
                }
                return ResponseCode::NoError;
            }
        }
    }
    ResponseCode::ServFail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(entries: &[(&str, Node)]) -> HashMap<String, Node> {
        entries.iter().map(|(name, node)| (key(name), node.clone())).collect()
    }

    fn txt(value: &str) -> Node {
        Node::Records { txt: vec![vec![value.as_bytes().to_vec()]], a: Vec::new() }
    }

    fn ask(nodes: &HashMap<String, Node>, name: &str, t: RecordType) -> (ResponseCode, Vec<Record>) {
        let mut answers = Vec::new();
        let code = resolve(nodes, &Name::from_ascii(name).unwrap(), t, &mut answers);
        (code, answers)
    }

    #[test]
    fn names_ignore_case_and_trailing_dot() {
        let nodes = zone(&[("Acme.Test.", txt("v"))]);
        let (code, answers) = ask(&nodes, "aCME.test", RecordType::TXT);
        assert_eq!(code, ResponseCode::NoError);
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].name.to_ascii(), "aCME.test");
    }

    #[test]
    fn chains_end_in_the_target_records_or_nxdomain() {
        let nodes = zone(&[
            ("a.test", Node::Cname("b.test".into())),
            ("b.test", txt("v")),
            ("dangling.test", Node::Cname("nowhere.test".into())),
        ]);
        let (code, answers) = ask(&nodes, "a.test.", RecordType::TXT);
        assert_eq!(code, ResponseCode::NoError);
        let types: Vec<_> = answers.iter().map(Record::record_type).collect();
        assert_eq!(types, [RecordType::CNAME, RecordType::TXT]);

        let (code, answers) = ask(&nodes, "dangling.test.", RecordType::TXT);
        assert_eq!(code, ResponseCode::NXDomain);
        assert_eq!(answers.len(), 1);

        let (code, answers) = ask(&nodes, "b.test.", RecordType::A);
        assert_eq!((code, answers.len()), (ResponseCode::NoError, 0));
    }

    #[test]
    fn loops_are_servfail() {
        let nodes = zone(&[("a.test", Node::Cname("b.test".into())), ("b.test", Node::Cname("a.test".into()))]);
        assert_eq!(ask(&nodes, "a.test.", RecordType::TXT).0, ResponseCode::ServFail);
    }
}

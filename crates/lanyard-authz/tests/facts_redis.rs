//! Facts on a real Redis, two `Facts` per test standing for two processes on one prefix (every
//! test is named `redis::…`: the runner skips them when no Redis answers):
//!
//! - A write through A is seen by the very next read on B, whose near cache held the old fact:
//!   for many rounds, with readers on B racing the write and readers released behind a barrier
//!   once it returned (none of those ever sees the old version).
//! - A read on B that got the old fact from Redis just before the write, and whose answer arrives
//!   only after the invalidation, never puts the old fact back into B's near cache (a proxy in
//!   front of B's Redis connection holds that answer back).
//! - A process that is not subscribed, or whose subscription stopped, reads Redis: newest always.
//! - An older version never replaces a newer one.
//! - Two authorizers on Redis: a revocation written through one is denied by the other at once.

mod support;

mod redis {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use lanyard_authz::facts::value;
    use lanyard_authz::{Decision, FactKey, Facts};
    use lanyard_core::cache::Versioned;
    use lanyard_core::{OrganizationId, UserId};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::{watch, Barrier};

    use super::support::{fact, forget, redis_authority, unique_prefix, wait_until, Harness, RedisFacts, REDIS_DB};

    const ROUNDS: i64 = 40;
    const READERS: usize = 8;

    /// Reads `key` on `facts` until its near cache holds it (reads fill it while subscribed).
    async fn warm(facts: &Facts, key: &FactKey) -> Option<Versioned> {
        loop {
            let read = facts.read(key).await.expect("read");
            if facts.near_len() == 1 {
                return read;
            }
            wait_until("the subscription's lease is current", || facts.subscribed()).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_write_is_seen_by_the_next_read_in_the_other_process() {
        let prefix = unique_prefix();
        let (a, b) = (RedisFacts::subscribed(&prefix).await, RedisFacts::subscribed(&prefix).await);
        let key = FactKey::Membership(OrganizationId::new(), UserId::new());
        a.facts.write(&key, &fact(1, value::MEMBER_ACTIVE)).await.expect("write");

        for version in 1..=ROUNDS {
            assert_eq!(warm(&b.facts, &key).await, Some(fact(version, value::MEMBER_ACTIVE)), "B's near cache");
            // Readers racing the write keep trying to put the old fact back into B's near cache.
            let racing = Arc::new(AtomicBool::new(true));
            let racers: Vec<_> = (0..2)
                .map(|_| {
                    let (facts, racing) = (b.facts.clone(), racing.clone());
                    tokio::spawn(async move {
                        while racing.load(Ordering::SeqCst) {
                            facts.read(&key).await.expect("read");
                            tokio::task::yield_now().await;
                        }
                    })
                })
                .collect();
            let barrier = Arc::new(Barrier::new(READERS + 1));
            let readers: Vec<_> = (0..READERS)
                .map(|_| {
                    let (facts, barrier) = (b.facts.clone(), barrier.clone());
                    tokio::spawn(async move {
                        barrier.wait().await;
                        facts.read(&key).await.expect("read")
                    })
                })
                .collect();

            a.facts.write(&key, &fact(version + 1, value::MEMBER_ACTIVE)).await.expect("write");
            barrier.wait().await;
            for reader in readers {
                let read = reader.await.expect("reader").expect("a fact");
                assert_eq!(read.version, version + 1, "round {version}: a read after write() returned");
            }
            assert_eq!(b.facts.read(&key).await.expect("read").map(|v| v.version), Some(version + 1));
            racing.store(false, Ordering::SeqCst);
            for racer in racers {
                racer.await.expect("racer");
            }
        }
        a.stop().await;
        b.stop().await;
        forget(&prefix).await;
    }

    /// A TCP proxy in front of Redis that can hold back what Redis answers on the first connection
    /// made through it (a `Cache`'s own connection; its subscription opens the second).
    struct Proxy {
        url: String,
        hold: watch::Sender<bool>,
        /// What was held back since the hold began.
        held: Held,
    }

    type Held = Arc<Mutex<Vec<u8>>>;

    impl Proxy {
        async fn start() -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let url = format!("redis://{}/{REDIS_DB}", listener.local_addr().expect("address"));
            let (hold, _) = watch::channel(false);
            let proxy = Self { url, hold, held: Held::default() };
            let (hold, held) = (proxy.hold.clone(), proxy.held.clone());
            tokio::spawn(async move {
                // Other connections follow a hold that never comes.
                let (never, _) = watch::channel(false);
                for connection in 0.. {
                    let (client, _) = listener.accept().await.expect("accept");
                    let server = TcpStream::connect(redis_authority()).await.expect("Redis answers");
                    let hold = if connection == 0 { hold.subscribe() } else { never.subscribe() };
                    tokio::spawn(pipe(client, server, hold, held.clone()));
                }
            });
            proxy
        }

        fn hold(&self, on: bool) {
            self.held.lock().expect("held").clear();
            self.hold.send_replace(on);
        }

        /// Whether an answer containing `text` is held back.
        fn holds(&self, text: &str) -> bool {
            self.held.lock().expect("held").windows(text.len()).any(|w| w == text.as_bytes())
        }
    }

    /// Copies both ways; while `hold` is on, what the server sends is kept back (and shown in
    /// `held`) until it is off again.
    async fn pipe(client: TcpStream, server: TcpStream, mut hold: watch::Receiver<bool>, held: Held) {
        let (mut client_read, mut client_write) = client.into_split();
        let (mut server_read, mut server_write) = server.into_split();
        tokio::spawn(async move { tokio::io::copy(&mut client_read, &mut server_write).await });
        let (mut buf, mut pending) = (vec![0; 64 * 1024], Vec::new());
        loop {
            tokio::select! {
                read = server_read.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                },
                changed = hold.changed() => if changed.is_err() { return },
            }
            if *hold.borrow_and_update() {
                held.lock().expect("held").clone_from(&pending);
                continue;
            }
            if client_write.write_all(&pending).await.is_err() {
                return;
            }
            pending.clear();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_read_answered_after_the_invalidation_never_puts_the_old_fact_back() {
        let prefix = unique_prefix();
        let proxy = Proxy::start().await;
        let a = RedisFacts::subscribed(&prefix).await;
        let b = RedisFacts::subscribed_at(&proxy.url, &prefix).await;
        for _ in 0..10 {
            let key = FactKey::Session(lanyard_core::SessionId::new());
            a.facts.write(&key, &fact(0, value::SESSION_ACTIVE)).await.expect("write");
            proxy.hold(true);
            let reader = tokio::spawn({
                let facts = b.facts.clone();
                async move { facts.read(&key).await.expect("read") }
            });
            // B's own acknowledgements share the connection: wait for the answer to the read.
            wait_until("Redis answered B's read with the old fact", || proxy.holds(value::SESSION_ACTIVE)).await;
            a.facts.write(&key, &fact(1, value::SESSION_REVOKED)).await.expect("write");
            proxy.hold(false);
            let raced = reader.await.expect("reader");
            assert_eq!(raced, Some(fact(0, value::SESSION_ACTIVE)), "it read before the write");
            assert_eq!(b.facts.read(&key).await.expect("read"), Some(fact(1, value::SESSION_REVOKED)));
        }
        a.stop().await;
        b.stop().await;
        forget(&prefix).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unsubscribed_process_reads_redis_and_sees_the_newest_version() {
        let prefix = unique_prefix();
        let a = RedisFacts::subscribed(&prefix).await;
        let b = RedisFacts::unsubscribed(&prefix).await;
        let key = FactKey::Session(lanyard_core::SessionId::new());
        assert_eq!(b.read(&key).await.expect("read"), None, "a miss");
        for version in 0..10 {
            a.facts.write(&key, &fact(version, value::SESSION_ACTIVE)).await.expect("write");
            assert_eq!(b.read(&key).await.expect("read"), Some(fact(version, value::SESSION_ACTIVE)));
        }
        assert_eq!(b.near_len(), 0, "nothing kept in memory without a subscription");
        a.stop().await;
        forget(&prefix).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopped_subscription_stops_trusting_the_near_cache() {
        let prefix = unique_prefix();
        let a = RedisFacts::unsubscribed(&prefix).await;
        let b = RedisFacts::subscribed(&prefix).await;
        let key = FactKey::Organization(OrganizationId::new());
        a.fill(&key, &fact(1, value::ORG_ACTIVE)).await.expect("fill");
        assert_eq!(warm(&b.facts, &key).await, Some(fact(1, value::ORG_ACTIVE)));

        let facts = b.facts.clone();
        b.stop().await;
        assert!(!facts.subscribed());
        // Stored without any invalidation: only a process reading Redis can see it.
        a.fill(&key, &fact(2, value::ORG_SUSPENDED)).await.expect("fill");
        assert_eq!(facts.read(&key).await.expect("read"), Some(fact(2, value::ORG_SUSPENDED)));
        forget(&prefix).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_older_version_never_replaces_a_newer_one() {
        let prefix = unique_prefix();
        let (a, b) = (RedisFacts::subscribed(&prefix).await, RedisFacts::subscribed(&prefix).await);
        let key = FactKey::Membership(OrganizationId::new(), UserId::new());
        a.facts.write(&key, &fact(5, value::MEMBER_REMOVED)).await.expect("write");
        b.facts.write(&key, &fact(4, value::MEMBER_ACTIVE)).await.expect("a stale write returns");
        b.facts.fill(&key, &fact(3, value::MEMBER_ACTIVE)).await.expect("a stale fill returns");
        for facts in [&a.facts, &b.facts] {
            assert_eq!(facts.read(&key).await.expect("read"), Some(fact(5, value::MEMBER_REMOVED)));
        }
        a.stop().await;
        b.stop().await;
        forget(&prefix).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_revocation_through_one_authorizer_is_denied_by_the_other_at_once() {
        let prefix = unique_prefix();
        let (a, b) = (RedisFacts::subscribed(&prefix).await, RedisFacts::subscribed(&prefix).await);
        let (writer, reader) = (Harness::with_facts(a.facts.clone()), Harness::with_facts(b.facts.clone()));
        for _ in 0..10 {
            let (m, token) = reader.member(&["projects:read"]);
            let token_of = |m: &super::support::Member| reader.signer.sign(&m.claims());
            assert_eq!(reader.decide(&token).await, Decision::Allowed, "warm B");
            writer
                .authorizer
                .facts()
                .write(&m.membership(), &fact(m.mv + 1, value::MEMBER_ACTIVE))
                .await
                .expect("write");
            assert_eq!(reader.decide(&token).await, Decision::MembershipChanged);
            let refreshed = super::support::Member { mv: m.mv + 1, ..m.clone() };
            assert_eq!(reader.decide(&token_of(&refreshed)).await, Decision::Allowed, "a token at the new version");
            writer.authorizer.facts().write(&m.session(), &fact(1, value::SESSION_REVOKED)).await.expect("write");
            assert_eq!(reader.decide(&token_of(&refreshed)).await, Decision::SessionRevoked);
        }
        let (m, token) = reader.member(&["projects:read"]);
        assert_eq!(reader.decide(&token).await, Decision::Allowed);
        writer.authorizer.facts().write(&m.org(), &fact(2, value::ORG_SUSPENDED)).await.expect("write");
        assert_eq!(reader.decide(&token).await, Decision::OrgSuspended);
        a.stop().await;
        b.stop().await;
        forget(&prefix).await;
    }
}

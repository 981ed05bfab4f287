//! The shared cache on a real Redis.

use std::time::Duration;

use lanyard_core::cache::{Cache, Versioned};
use lanyard_tests::redis_url;

#[tokio::test]
async fn redis_entries_expire_and_keep_the_newest_version() {
    let cache = Cache::redis(&redis_url(), &format!("lanyard-test-{}", uuid::Uuid::new_v4().simple())).await.unwrap();
    cache.ping().await.unwrap();
    let v = |version, value: &str| Versioned { version, value: value.to_owned() };
    assert!(cache.set_if_newer("k", &v(2, "two"), Duration::from_secs(60)).await.unwrap());
    assert!(!cache.set_if_newer("k", &v(1, "one"), Duration::from_secs(60)).await.unwrap());
    assert_eq!(cache.get("k").await.unwrap(), Some(v(2, "two")));
    assert!(cache.set_if_newer("k", &v(3, "three"), Duration::from_millis(20)).await.unwrap());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(cache.get("k").await.unwrap(), None);
    assert_eq!(cache.get("missing").await.unwrap(), None);
}

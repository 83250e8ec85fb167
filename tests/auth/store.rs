//! Redis-only tests of the token-set store and the lease lock (real Redis on 127.0.0.1:6379, one
//! random key prefix per test).

use std::time::Duration;

use ccsync::auth::lock::LeaseLock;
use ccsync::auth::store::{Marker, Store, Stored};
use ccsync::auth::{AccessToken, RefreshMode, RefreshToken, TokenSet};

fn store(key: Option<[u8; 32]>) -> Store {
    store_at(&format!("test-{}", uuid::Uuid::new_v4()), key)
}

fn store_at(prefix: &str, key: Option<[u8; 32]>) -> Store {
    Store::new(
        ccsync::redis::Redis::from_settings(&ccsync::config::Settings::from_pairs([]).unwrap())
            .unwrap(),
        prefix,
        key,
    )
}

fn set(generation: u64, access: &str, refresh: &str) -> TokenSet {
    TokenSet::from_grant(
        AccessToken::new(access),
        RefreshToken::new(refresh),
        Some(3600),
        RefreshMode::Rotating,
        generation,
        ccsync::clock::now_unix(),
    )
}

fn live(s: Stored) -> TokenSet {
    match s {
        Stored::Live(t) => t,
        other => panic!("expected a live set, got {other:?}"),
    }
}

#[tokio::test]
async fn holder_whose_lease_ran_out_cannot_overwrite_a_newer_set() {
    let st = store(None);
    let acct = "default";
    assert!(
        st.compare_and_set(acct, 0, &set(1, "a1", "r1"))
            .await
            .unwrap()
    );

    // Holder A takes the lock with a short lease and reads generation 1...
    let a = LeaseLock::try_acquire(&st, acct, 200)
        .await
        .unwrap()
        .expect("free lock");
    let seen_by_a = live(st.load(acct).await.unwrap());
    assert_eq!(seen_by_a.generation, 1);
    // ...stalls past its lease. B takes the lock, refreshes, writes generation 2.
    let b = loop {
        if let Some(b) = LeaseLock::try_acquire(&st, acct, 10_000).await.unwrap() {
            break b;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        st.compare_and_set(acct, 1, &set(2, "a2", "r2"))
            .await
            .unwrap()
    );
    // A wakes up and tries to write its (older) refresh result: the generation check refuses.
    assert!(
        !st.compare_and_set(acct, seen_by_a.generation, &set(2, "a2-stale", "r2-stale"))
            .await
            .unwrap()
    );
    // A's release must not free B's lock (compare-and-delete).
    assert!(!a.release(&st).await.unwrap());
    assert!(
        LeaseLock::try_acquire(&st, acct, 1000)
            .await
            .unwrap()
            .is_none(),
        "B still holds it"
    );
    let now = live(st.load(acct).await.unwrap());
    assert_eq!(now.generation, 2);
    assert_eq!(now.access.expose(), "a2");
    assert!(b.release(&st).await.unwrap());
    assert!(
        LeaseLock::try_acquire(&st, acct, 1000)
            .await
            .unwrap()
            .is_some()
    );
    st.wipe(acct).await.unwrap();
}

#[tokio::test]
async fn marker_is_cleared_by_the_write_that_resolves_it() {
    let st = store(None);
    let acct = "a";
    assert!(
        st.compare_and_set(acct, 0, &set(1, "a1", "r1"))
            .await
            .unwrap()
    );
    let m = Marker {
        generation: 1,
        fingerprint: RefreshToken::new("r1").fingerprint(),
        owner: "owner-1".into(),
        started_at: 5,
    };
    st.write_marker(acct, &m).await.unwrap();
    assert_eq!(st.read_marker(acct).await.unwrap(), Some(m.clone()));
    // Someone else's clear does nothing.
    st.clear_marker(acct, "owner-2").await.unwrap();
    assert!(st.read_marker(acct).await.unwrap().is_some());
    // The CAS write of generation 2 clears the marker of generation 1 atomically.
    assert!(
        st.compare_and_set(acct, 1, &set(2, "a2", "r2"))
            .await
            .unwrap()
    );
    assert_eq!(st.read_marker(acct).await.unwrap(), None);
    st.wipe(acct).await.unwrap();
}

#[tokio::test]
async fn restore_writes_back_only_when_absent_or_older() {
    let st = store(None);
    let acct = "a";
    // Redis lost everything: a replica's cached generation 5 goes back in.
    assert!(st.restore(acct, &set(5, "a5", "r5")).await.unwrap());
    assert_eq!(st.generation(acct).await.unwrap(), Some(5));
    // An older cached set never overwrites a newer one.
    assert!(!st.restore(acct, &set(4, "a4", "r4")).await.unwrap());
    assert!(!st.restore(acct, &set(5, "a5b", "r5b")).await.unwrap());
    assert_eq!(live(st.load(acct).await.unwrap()).access.expose(), "a5");
    // A newer one wins.
    assert!(st.restore(acct, &set(7, "a7", "r7")).await.unwrap());
    assert_eq!(live(st.load(acct).await.unwrap()).generation, 7);
    // Dead records and logout tombstones are honoured.
    assert!(st.mark_dead(acct, 7, "invalid_grant").await.unwrap());
    assert!(!st.mark_dead(acct, 6, "stale").await.unwrap());
    assert!(matches!(
        st.load(acct).await.unwrap(),
        Stored::Dead { generation: 7, .. }
    ));
    let g = st.tombstone(acct, "logged out").await.unwrap();
    assert_eq!(g, 8);
    assert!(
        !st.restore(acct, &set(7, "a7", "r7")).await.unwrap(),
        "no write-back over a logout"
    );
    // A new login writes above the tombstone.
    assert!(
        st.compare_and_set(acct, 8, &set(9, "a9", "r9"))
            .await
            .unwrap()
    );
    assert_eq!(live(st.load(acct).await.unwrap()).generation, 9);
    st.wipe(acct).await.unwrap();
}

#[tokio::test]
async fn with_a_key_redis_holds_only_ciphertext() {
    let prefix = format!("test-{}", uuid::Uuid::new_v4());
    let st = store_at(&prefix, Some([42u8; 32]));
    let acct = "enc";
    let access = "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjF9.c2ln";
    assert!(
        st.compare_and_set(acct, 0, &set(1, access, "refresh-secret-123"))
            .await
            .unwrap()
    );
    let raw = st.raw_blob(acct).await.unwrap().unwrap();
    assert!(raw.starts_with("aes256gcm:"));
    assert!(!raw.contains("eyJ") && !raw.contains("refresh-secret"));
    assert_eq!(live(st.load(acct).await.unwrap()).access.expose(), access);
    // The same Redis read without the key is refused with a clear reason.
    let keyless = store_at(&prefix, None);
    let err = keyless.load(acct).await.unwrap_err();
    assert!(
        err.to_string().contains("CCSYNC_TOKEN_ENCRYPTION_KEY"),
        "{err}"
    );
    let wrong = store_at(&prefix, Some([43u8; 32]));
    assert!(wrong.load(acct).await.is_err());
    st.wipe(acct).await.unwrap();
}

#[tokio::test]
async fn large_generations_stay_exact_through_the_scripts() {
    let st = store(None);
    let acct = "big";
    let g = 1_795_421_699_675u64; // a login's generation (Unix ms)
    assert!(
        st.compare_and_set(acct, 0, &set(g, "a", "r"))
            .await
            .unwrap()
    );
    assert!(
        st.compare_and_set(acct, g, &set(g + 1, "b", "r2"))
            .await
            .unwrap()
    );
    assert_eq!(st.tombstone(acct, "logged out").await.unwrap(), g + 2);
    assert_eq!(st.generation(acct).await.unwrap(), Some(g + 2));
    assert!(st.restore(acct, &set(g + 3, "c", "r3")).await.unwrap());
    assert_eq!(live(st.load(acct).await.unwrap()).generation, g + 3);
    st.wipe(acct).await.unwrap();
}

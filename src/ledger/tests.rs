use super::*;

fn ledger() -> Ledger {
    let prefix = format!("test-{}", uuid::Uuid::new_v4());
    let s = Settings::from_pairs([("CCSYNC_REDIS__KEY_PREFIX", prefix.as_str())]).unwrap();
    Ledger::connect(&s).unwrap()
}

fn go(stale: &[&str]) -> Verdict {
    Verdict::Go {
        stale: stale.iter().map(|s| s.to_string()).collect(),
    }
}

fn at(ms: i64, n: &[&str]) -> Vec<(String, i64)> {
    n.iter().map(|s| (s.to_string(), ms)).collect()
}

#[tokio::test]
async fn newest_wins_field_by_field_and_one_import_per_email_in_flight() {
    let l = ledger();
    let newer = [("default", "a@x.co", at(2_000, &["first_name"]))];
    assert_eq!(l.claim("imp1", &newer).await.unwrap(), vec![go(&[])]);
    // Another import for the same email while imp1 is in flight: busy.
    let older = [("default", "a@x.co", at(1_000, &["first_name", "last_name"]))];
    assert_eq!(l.claim("imp2", &older).await.unwrap(), vec![Verdict::Busy]);
    // Other emails and other accounts are independent.
    let other = [
        ("default", "b@x.co", at(1_000, &[])),
        ("acme", "a@x.co", at(1_000, &["first_name"])),
    ];
    assert_eq!(
        l.claim("imp2", &other).await.unwrap(),
        vec![go(&[]), go(&[])]
    );
    l.release("imp1", &[("default", "a@x.co")]).await.unwrap();
    // The older event loses the field the newer one set, keeps the one it alone sets.
    assert_eq!(
        l.claim("imp2", &older).await.unwrap(),
        vec![go(&["first_name"])]
    );
    l.release("imp2", &[("default", "a@x.co")]).await.unwrap();
    // Equal occurred_at: the later delivery wins.
    let same = [("default", "a@x.co", at(2_000, &["first_name"]))];
    assert_eq!(l.claim("imp3", &same).await.unwrap(), vec![go(&[])]);
    // Releasing (or renewing) with the wrong owner does not touch the lease.
    l.release("imp9", &[("default", "a@x.co")]).await.unwrap();
    l.renew("imp9", &[("default", "a@x.co")]).await.unwrap();
    assert_eq!(l.claim("imp4", &same).await.unwrap(), vec![Verdict::Busy]);
    l.renew("imp3", &[("default", "a@x.co")]).await.unwrap();
    assert_eq!(l.claim("imp4", &same).await.unwrap(), vec![Verdict::Busy]);
}

/// The three-event case of issue 11: replica A coalesced t1 {first, last} with t3 {first},
/// replica B holds t2 {first, last}. Each field carries its own time, so in either claim order
/// every field ends with its newest value: first_name from t3, last_name from t2.
#[tokio::test]
async fn a_coalesced_entry_claims_each_field_with_its_own_time() {
    let merged = vec![("first_name".to_string(), 3), ("last_name".to_string(), 1)];
    let middle = at(2, &["first_name", "last_name"]);
    for a_first in [true, false] {
        let l = ledger();
        let a = [("default", "x@x.co", merged.clone())];
        let b = [("default", "x@x.co", middle.clone())];
        let (first, second) = if a_first { (&a, &b) } else { (&b, &a) };
        let v1 = l.claim("one", first).await.unwrap();
        l.release("one", &[("default", "x@x.co")]).await.unwrap();
        let v2 = l.claim("two", second).await.unwrap();
        let (va, vb) = if a_first { (v1, v2) } else { (v2, v1) };
        if a_first {
            assert_eq!(va, vec![go(&[])]);
            assert_eq!(
                vb,
                vec![go(&["first_name"])],
                "B's last_name (t2) beats A's t1"
            );
        } else {
            assert_eq!(vb, vec![go(&[])]);
            assert_eq!(va, vec![go(&["last_name"])], "A's t1 last_name is stale");
        }
        l.forget_all().await.unwrap();
    }
}

#[tokio::test]
async fn forget_all_removes_this_prefix_only() {
    let (mine, other) = (ledger(), ledger());
    let items: Vec<String> = (0..2_500).map(|i| format!("p{i}@x.co")).collect();
    let claims: Vec<Claim> = items
        .iter()
        .map(|e| ("default", e.as_str(), at(1_000, &["first_name"])))
        .collect();
    mine.claim("imp1", &claims).await.unwrap();
    other.claim("imp1", &claims[..1]).await.unwrap();
    other
        .release("imp1", &[("default", "p0@x.co")])
        .await
        .unwrap();
    // One key per email (its field ledger, which holds the in-flight lease) and imp1's
    // liveness key, over several SCAN pages.
    assert_eq!(mine.forget_all().await.unwrap(), 2_501);
    assert_eq!(mine.forget_all().await.unwrap(), 0);
    // An older event: this prefix forgot the newer one (and the lease), the other did not.
    let older = [("default", "p0@x.co", at(0, &["first_name"]))];
    assert_eq!(mine.claim("imp2", &older).await.unwrap(), vec![go(&[])]);
    assert_eq!(
        other.claim("imp2", &older).await.unwrap(),
        vec![go(&["first_name"])]
    );
    mine.forget_all().await.unwrap();
    other.forget_all().await.unwrap();
}

/// A claim lives as long as its owner's liveness key: letting go of some emails frees only
/// those, ending the claim frees the rest in one call, and a claim nobody renews (its replica
/// died) lapses after the lease, so another replica takes the emails over.
#[tokio::test]
async fn a_claim_lives_with_its_owner_and_lapses_without_renewal() {
    let prefix = format!("test-{}", uuid::Uuid::new_v4());
    let s = Settings::from_pairs([
        ("CCSYNC_REDIS__KEY_PREFIX", prefix.as_str()),
        ("CCSYNC_WORKER__CLAIM_LEASE_SECS", "1"),
    ])
    .unwrap();
    let l = Ledger::connect(&s).unwrap();
    let three: Vec<Claim> = ["a@x.co", "b@x.co", "c@x.co"]
        .into_iter()
        .map(|e| ("default", e, at(1_000, &["first_name"])))
        .collect();
    assert_eq!(l.claim("imp1", &three).await.unwrap(), vec![go(&[]); 3]);
    l.let_go("imp1", &[("default", "a@x.co")]).await.unwrap();
    assert_eq!(
        l.claim("imp2", &three).await.unwrap(),
        vec![go(&[]), Verdict::Busy, Verdict::Busy],
        "only a was let go (an equal time goes: the later delivery wins)"
    );
    l.release("imp1", &[("default", "b@x.co"), ("default", "c@x.co")])
        .await
        .unwrap();
    assert_eq!(
        l.claim("imp2", &three[1..]).await.unwrap(),
        vec![go(&[]); 2]
    );
    // imp2 holds all three now and is never renewed: busy for imp3 until its lease lapses.
    assert_eq!(
        l.claim("imp3", &three).await.unwrap(),
        vec![Verdict::Busy; 3]
    );
    let mut tries = 0;
    loop {
        let v = l.claim("imp3", &three).await.unwrap();
        if v.iter().all(|v| matches!(v, Verdict::Go { .. })) {
            break;
        }
        tries += 1;
        assert!(tries < 100, "imp2's one-second lease never lapsed: {v:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    l.forget_all().await.unwrap();
}

fn ev<'a>(email: &'a str, kind: Kind, t: i64, lists: &'a [uuid::Uuid]) -> Event<'a> {
    let fields = match kind {
        Kind::Upsert { .. } => at(t, &["first_name"]),
        _ => Vec::new(),
    };
    Event {
        account: "default",
        email,
        kind,
        occurred_at: t,
        fields,
        lists,
    }
}

async fn one(l: &Ledger, e: Event<'_>) -> Go {
    let owner = uuid::Uuid::new_v4().to_string();
    let out = l
        .claim_events(&owner, std::slice::from_ref(&e))
        .await
        .unwrap();
    l.release(&owner, &[(e.account, e.email)]).await.unwrap();
    match out.into_iter().next().unwrap() {
        Outcome::Go(g) => g,
        Outcome::Busy => panic!("busy"),
    }
}

/// Issue 15: an upsert older than a known unsubscribe never re-subscribes (its fields still
/// go); one newer does; an unsubscribe older than a newer sign-up is moot.
#[tokio::test]
async fn an_explicit_upsert_older_than_an_opt_out_is_blocked_from_sign_up() {
    let l = ledger();
    let explicit = Kind::Upsert { explicit: true };
    assert!(
        !one(&l, ev("a@x.co", Kind::Unsubscribe, 2_000, &[]))
            .await
            .superseded
    );
    let old = one(&l, ev("a@x.co", explicit, 1_000, &[])).await;
    assert!(old.signup_blocked && !old.superseded && old.stale_fields.is_empty());
    let new = one(&l, ev("a@x.co", explicit, 3_000, &[])).await;
    assert!(!new.signup_blocked);
    // The sign-up at 3,000 is newer than an unsubscribe at 2,500 arriving late.
    assert!(
        one(&l, ev("a@x.co", Kind::Unsubscribe, 2_500, &[]))
            .await
            .superseded
    );
    // CC's feed: an opt-out at 4,000 blocks sign-ups from before it.
    l.record_optout("default", "a@x.co", 4_000).await.unwrap();
    assert!(
        one(&l, ev("a@x.co", explicit, 3_500, &[]))
            .await
            .signup_blocked
    );
    assert!(
        !one(&l, ev("a@x.co", explicit, 4_500, &[]))
            .await
            .signup_blocked
    );
    l.forget_all().await.unwrap();
}

#[tokio::test]
async fn deletes_and_list_removals_are_ordered_against_upserts() {
    let l = ledger();
    let up = Kind::Upsert { explicit: false };
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    // Delete at 2,000: an upsert from before is superseded whole, one after goes.
    assert!(
        !one(&l, ev("d@x.co", Kind::Delete, 2_000, &[]))
            .await
            .superseded
    );
    assert!(one(&l, ev("d@x.co", up, 1_000, &[a])).await.superseded);
    let after = one(&l, ev("d@x.co", up, 3_000, &[a])).await;
    assert!(!after.superseded && after.stale_fields.is_empty());
    // A delete older than that upsert is moot.
    assert!(
        one(&l, ev("d@x.co", Kind::Delete, 2_500, &[]))
            .await
            .superseded
    );
    // A floor (unsubscribe of a contact CC lacks) acts like a delete for older upserts.
    l.record_floor("default", "f@x.co", 5_000).await.unwrap();
    assert!(one(&l, ev("f@x.co", up, 4_000, &[])).await.superseded);
    // Lists: removal of a and b at 2,000 after an upsert added a at 1,000 and b at 3,000.
    one(&l, ev("r@x.co", up, 1_000, &[a])).await;
    one(&l, ev("r@x.co", up, 3_000, &[b])).await;
    let rm = one(&l, ev("r@x.co", Kind::RemoveLists, 2_000, &[a, b])).await;
    assert_eq!(rm.stale_lists, vec![b], "b was re-added after the removal");
    // An older upsert naming a does not re-add it; one naming b still does.
    let older = one(&l, ev("r@x.co", up, 1_500, &[a, b])).await;
    assert_eq!(older.stale_lists, vec![a]);
    // Consent facts live in their own key only for emails with consent events.
    // d: fields + consent; f: consent only; r: fields only.
    assert_eq!(l.forget_all().await.unwrap(), 2 + 1 + 1);
}

#[tokio::test]
async fn key_names_stay_what_earlier_releases_wrote() {
    // The names are built by hand for speed; a running deployment's ledger must keep its keys,
    // so they must equal what `format!` made before.
    let reference = |account: &str, email: &str| -> String {
        let d = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            format!("{account}\n{email}").as_bytes(),
        );
        d.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    for (a, e) in [
        ("default", "a@x.co"),
        ("acme", "Ünïcode@exämple.com"),
        ("", ""),
    ] {
        assert_eq!(Ledger::hash(a, e), reference(a, e));
    }
    let mut l = ledger();
    let h = Ledger::hash("default", "a@x.co");
    assert_eq!(l.key("f", &h), format!("{}:f:{h}", l.prefix));
    assert_eq!(l.key("c", &h), format!("{}:c:{h}", l.prefix));
    l.cluster = true;
    assert_eq!(
        l.key("f", &h),
        format!("{}:{{{}}}:f:{h}", l.prefix, &h[..2])
    );
}

use super::*;

#[test]
fn durations_keep_the_unit_their_key_names_and_print_as_written() {
    let s = Settings::from_pairs([
        ("CCSYNC_WORKER__LINGER_MAX_MS", "5000"),
        ("CCSYNC_WORKER__MAX_HOLD_SECS", "900"),
        ("CCSYNC_RATELIMIT__JITTER_ALLOWANCE_MS", "50"),
    ])
    .unwrap();
    assert_eq!(s.worker.linger_max, Duration::from_secs(5));
    assert_eq!(s.worker.max_hold, Duration::from_secs(900));
    assert_eq!(s.ratelimit.jitter_allowance, Duration::from_millis(50));
    assert_eq!(s.auth.lock_lease, Duration::from_millis(15_000));
    let shown = s.redacted();
    assert!(shown.contains("linger_max_ms: 5000,"), "{shown}");
    assert!(shown.contains("max_hold_secs: 900,"), "{shown}");
    assert!(shown.contains("jitter_allowance_ms: 50,"), "{shown}");
    assert!(shown.contains("jwks_url: \"\","), "{shown}");
    assert!(shown.contains("poll_secs: 900,"), "{shown}");
}

#[test]
fn a_bad_jwks_url_names_its_key() {
    let err = Settings::from_pairs([("CCSYNC_AUTH__JWKS_URL", "not a url")]).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("configuration: CCSYNC_AUTH__JWKS_URL: is not a URL"),
        "{err}"
    );
    let s = Settings::from_pairs([("CCSYNC_AUTH__JWKS_URL", "https://idp.example/keys")]).unwrap();
    assert_eq!(
        s.auth.jwks_url.unwrap().as_str(),
        "https://idp.example/keys"
    );
}

#[test]
fn defaults_load_and_are_valid() {
    let s = Settings::from_pairs([]).unwrap();
    assert_eq!(s.queue, "ccsync.contacts");
    assert_eq!(s.dead_letter_queue(), "ccsync.contacts.dead");
    assert_eq!(s.api_base_url.as_str(), "https://api.cc.email/v3");
    assert_eq!(s.ratelimit.per_second, 4);
    assert!(s.client_secret.is_none());
}

#[test]
fn env_style_overrides_apply() {
    let s = Settings::from_pairs([
        ("CCSYNC_QUEUE", "q1"),
        ("CCSYNC_CLIENT_ID", "12345"),
        ("CCSYNC_WORKER__BATCH_MAX_CONTACTS", "500"),
        (
            "CCSYNC_DEFAULT_LIST_IDS",
            "c2a2b8b4-0000-4000-8000-000000000001, c2a2b8b4-0000-4000-8000-000000000002",
        ),
    ])
    .unwrap();
    assert_eq!(s.queue, "q1");
    assert_eq!(s.client_id, "12345");
    assert_eq!(s.worker.batch_max_contacts, 500);
    assert_eq!(s.default_list_ids.len(), 2);
    // Per-account lists override the global ones for that account only.
    let acme = "c2a2b8b4-0000-4000-8000-00000000000a";
    let s2 = Settings::from_pairs([
        (
            "CCSYNC_DEFAULT_LIST_IDS",
            "c2a2b8b4-0000-4000-8000-000000000001",
        ),
        ("CCSYNC_ACCOUNTS__ACME__DEFAULT_LIST_IDS", acme),
    ])
    .unwrap();
    let lists = s2.default_lists();
    assert_eq!(lists.for_account("acme")[0].to_string(), acme);
    assert_eq!(lists.for_account("other"), s2.default_list_ids.as_slice());
    assert!(s2.redacted().contains("[accounts.acme]"));
    let bad = Settings::from_pairs([("CCSYNC_ACCOUNTS__ACME__DEFAULT_LIST_IDS", "nope")]);
    assert!(
        bad.unwrap_err()
            .to_string()
            .contains("CCSYNC_ACCOUNTS__ACME__DEFAULT_LIST_IDS")
    );
    // Weights of the key's fair shares: per account, default 1, checked.
    let s3 = Settings::from_pairs([("CCSYNC_ACCOUNTS__ACME__WEIGHT", "2.5")]).unwrap();
    assert_eq!(s3.account_weights()["acme"], 2.5);
    assert!(s3.redacted().contains("weight = 2.5"));
    for bad in ["0", "-1", "x", "1001"] {
        let e = Settings::from_pairs([("CCSYNC_ACCOUNTS__ACME__WEIGHT", bad)]).unwrap_err();
        assert!(
            e.to_string().contains("CCSYNC_ACCOUNTS__ACME__WEIGHT"),
            "{e}"
        );
    }
}

#[test]
fn bad_values_name_the_key() {
    let e = Settings::from_pairs([("CCSYNC_DEFAULT_LIST_IDS", "nope")]).unwrap_err();
    assert!(e.to_string().contains("CCSYNC_DEFAULT_LIST_IDS"), "{e}");
    let e = Settings::from_pairs([("CCSYNC_AMQP_URL", "http://x")]).unwrap_err();
    assert!(e.to_string().contains("CCSYNC_AMQP_URL"), "{e}");
    let e = Settings::from_pairs([("CCSYNC_TOKEN_ENCRYPTION_KEY", "c2hvcnQ=")]).unwrap_err();
    assert!(e.to_string().contains("32 bytes"), "{e}");
    let e = Settings::from_pairs([("CCSYNC_WORKER__PREFETCH", "many")]).unwrap_err();
    assert!(e.to_string().contains("CCSYNC_WORKER__PREFETCH"), "{e}");
    let e = Settings::from_pairs([("CCSYNC_INGEST__SECRETS", "short")]).unwrap_err();
    assert!(e.to_string().contains("CCSYNC_INGEST__SECRETS"), "{e}");
    let e =
        Settings::from_pairs([("CCSYNC_INGEST__SHOPIFY_ACCOUNTS", "a.myshopify.com")]).unwrap_err();
    assert!(e.to_string().contains("shop-domain=account"), "{e}");
    let e = Settings::from_pairs([("CCSYNC_INGEST__SHOPIFY_LIST_IDS", "x")]).unwrap_err();
    assert!(
        e.to_string().contains("CCSYNC_INGEST__SHOPIFY_LIST_IDS"),
        "{e}"
    );
    let e = Settings::from_pairs([("CCSYNC_WORKER__BATCH_MAX_BYTES", "5000000")]).unwrap_err();
    assert!(e.to_string().contains("4 MB"), "{e}");
}

#[test]
fn the_events_exchange_and_the_opt_out_feed_are_validated() {
    let s = Settings::from_pairs([]).unwrap();
    assert_eq!(s.events_exchange, "ccsync.events");
    assert!(s.optouts.enabled);
    assert_eq!(s.optouts.poll, Duration::from_secs(900));
    assert_eq!(s.optouts.backfill_from, None);
    let s = Settings::from_pairs([
        ("CCSYNC_EVENTS_EXCHANGE", "shop.events"),
        ("CCSYNC_OPTOUTS__POLL_SECS", "1"),
        ("CCSYNC_OPTOUTS__ENABLED", "false"),
        ("CCSYNC_OPTOUTS__BACKFILL_FROM", "2026-01-01T00:00:00Z"),
    ])
    .unwrap();
    assert_eq!(s.events_exchange, "shop.events");
    assert_eq!(s.optouts.poll, Duration::from_secs(1));
    assert!(!s.optouts.enabled);
    assert_eq!(
        s.optouts.backfill_from.map(|t| t.unix_timestamp()),
        Some(1_767_225_600)
    );
    assert!(s.redacted().contains("poll_secs: 1"), "{}", s.redacted());
    for (k, v, says) in [
        ("CCSYNC_OPTOUTS__POLL_SECS", "0", "1..=86400"),
        ("CCSYNC_OPTOUTS__POLL_SECS", "86401", "1..=86400"),
        (
            "CCSYNC_OPTOUTS__POLL_SECS",
            "soon",
            "CCSYNC_OPTOUTS__POLL_SECS",
        ),
        ("CCSYNC_OPTOUTS__BACKFILL_FROM", "last week", "RFC 3339"),
        ("CCSYNC_EVENTS_EXCHANGE", " ", "1 to 255"),
        ("CCSYNC_EVENTS_EXCHANGE", "amq.topic", "amq."),
    ] {
        let e = Settings::from_pairs([(k, v)]).unwrap_err().to_string();
        assert!(e.contains(k) && e.contains(says), "{k}={v}: {e}");
    }
}

#[test]
fn connect_links_need_a_long_secret_and_a_base_url_and_warn_when_half_set() {
    let secret = "invite-secret-0123456789-0123456789";
    let s = Settings::from_pairs([
        ("CCSYNC_AUTH__INVITE_SECRET", secret),
        ("CCSYNC_INGEST__PUBLIC_URL", "https://ingest.example.com/"),
        ("CCSYNC_CLIENT_SECRET", "app-secret"),
    ])
    .unwrap();
    assert!(s.connect_links());
    assert_eq!(
        s.ingest.public_url.as_ref().unwrap().as_str(),
        "https://ingest.example.com/"
    );
    let out = s.redacted();
    assert!(!out.contains(secret), "{out}");
    assert!(!format!("{s:?}").contains(secret));
    assert!(
        !s.warnings().iter().any(|w| w.contains("connect links")),
        "{:?}",
        s.warnings()
    );
    let e = Settings::from_pairs([("CCSYNC_AUTH__INVITE_SECRET", "short")]).unwrap_err();
    assert!(e.to_string().contains("CCSYNC_AUTH__INVITE_SECRET"), "{e}");
    for bad in [
        "ingest.example.com",
        "ftp://x",
        "https://x/?a=1",
        "https://x/#f",
    ] {
        let e = Settings::from_pairs([("CCSYNC_INGEST__PUBLIC_URL", bad)]).unwrap_err();
        assert!(
            e.to_string().contains("CCSYNC_INGEST__PUBLIC_URL"),
            "{bad}: {e}"
        );
    }
    let half = Settings::from_pairs([("CCSYNC_AUTH__INVITE_SECRET", secret)]).unwrap();
    assert!(!half.connect_links());
    assert!(half.warnings().iter().any(|w| {
        w.contains("CCSYNC_AUTH__INVITE_SECRET is set but CCSYNC_INGEST__PUBLIC_URL is not")
    }));
    let half = Settings::from_pairs([("CCSYNC_INGEST__PUBLIC_URL", "https://x.example")]).unwrap();
    assert!(half.warnings().iter().any(|w| {
        w.contains("CCSYNC_INGEST__PUBLIC_URL is set but CCSYNC_AUTH__INVITE_SECRET is not")
    }));
    // Both set, no client secret: named, since ingest then refuses to start.
    let no_secret = Settings::from_pairs([
        ("CCSYNC_AUTH__INVITE_SECRET", secret),
        ("CCSYNC_INGEST__PUBLIC_URL", "https://x.example"),
    ])
    .unwrap();
    assert!(
        no_secret
            .warnings()
            .iter()
            .any(|w| w.contains("CCSYNC_CLIENT_SECRET is not set"))
    );
}

#[test]
fn redis_topologies_and_tls_files_are_checked_and_name_their_key() {
    let s = Settings::from_pairs([(
        "CCSYNC_REDIS__CLUSTER_NODES",
        "redis://:pw-in-url@10.0.0.1:7001, redis://10.0.0.2:7002",
    )])
    .unwrap();
    match &s.redis.topology {
        RedisTopology::Cluster(n) => assert_eq!(n.len(), 2),
        other => panic!("{other:?}"),
    }
    let out = s.redacted();
    assert!(!out.contains("pw-in-url"), "{out}");
    assert!(out.contains("10.0.0.2:7002"), "{out}");
    let s = Settings::from_pairs([
        ("CCSYNC_REDIS__SENTINELS", "redis://10.0.0.1:26379"),
        ("CCSYNC_REDIS__SENTINEL_MASTER", "mymaster"),
    ])
    .unwrap();
    assert!(
        matches!(&s.redis.topology, RedisTopology::Sentinel { master, .. } if master == "mymaster")
    );
    for (pairs, key) in [
        (
            vec![("CCSYNC_REDIS__SENTINELS", "redis://h:26379")],
            "CCSYNC_REDIS__SENTINEL_MASTER",
        ),
        (
            vec![("CCSYNC_REDIS__SENTINEL_MASTER", "m")],
            "CCSYNC_REDIS__SENTINELS",
        ),
        (
            vec![
                ("CCSYNC_REDIS__SENTINELS", "redis://h:26379"),
                ("CCSYNC_REDIS__SENTINEL_MASTER", "m"),
                ("CCSYNC_REDIS__CLUSTER_NODES", "redis://h:7001"),
            ],
            "CCSYNC_REDIS__SENTINELS",
        ),
        (
            vec![("CCSYNC_REDIS__CLUSTER_NODES", "http://h:7001")],
            "CCSYNC_REDIS__CLUSTER_NODES",
        ),
        (
            vec![("CCSYNC_AMQP_CA_FILE", "/nonexistent/ca.pem")],
            "CCSYNC_AMQP_CA_FILE",
        ),
        (
            vec![("CCSYNC_REDIS_CLIENT_KEY_FILE", "/nonexistent/k.pem")],
            "CCSYNC_REDIS_CLIENT_KEY_FILE",
        ),
    ] {
        let e = Settings::from_pairs(pairs.clone()).unwrap_err().to_string();
        assert!(e.contains(key), "{pairs:?}: {e}");
    }
    // Files must hold PEM of the right kind, the client pair comes whole, and TLS files
    // need a TLS URL.
    let dir = std::env::temp_dir().join(format!("ccsync-cfg-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a pem").unwrap();
    let (ca, junk) = (ca.to_str().unwrap(), junk.to_str().unwrap());
    let amqps = ("CCSYNC_AMQP_URL", "amqps://u:p@mq:5671/%2f");
    let ok = Settings::from_pairs([amqps, ("CCSYNC_AMQP_CA_FILE", ca)]).unwrap();
    assert_eq!(
        ok.amqp().tls.ca_file.as_deref(),
        Some(std::path::Path::new(ca))
    );
    for (pairs, key) in [
        (
            vec![amqps, ("CCSYNC_AMQP_CA_FILE", junk)],
            "CCSYNC_AMQP_CA_FILE",
        ),
        (vec![("CCSYNC_AMQP_CA_FILE", ca)], "CCSYNC_AMQP_CA_FILE"),
        (vec![("CCSYNC_REDIS_CA_FILE", ca)], "CCSYNC_REDIS_CA_FILE"),
        (
            vec![amqps, ("CCSYNC_AMQP_CLIENT_CERT_FILE", ca)],
            "CCSYNC_AMQP_CLIENT_KEY_FILE",
        ),
    ] {
        let e = Settings::from_pairs(pairs.clone()).unwrap_err().to_string();
        assert!(e.contains(key), "{pairs:?}: {e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn redaction_hides_secrets() {
    let key = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=";
    let s = Settings::from_pairs([
        (
            "CCSYNC_AMQP_URL",
            "amqps://user:hunter2@mq.example:5671/%2f",
        ),
        (
            "CCSYNC_REDIS_URL",
            "rediss://ccsync:s3cret@redis.example:6380",
        ),
        ("CCSYNC_CLIENT_SECRET", "topsecret"),
        ("CCSYNC_TOKEN_ENCRYPTION_KEY", key),
    ])
    .unwrap();
    let out = s.redacted();
    for secret in ["hunter2", "s3cret", "topsecret", key] {
        assert!(!out.contains(secret), "{secret} leaked: {out}");
    }
    assert!(!format!("{s:?}").contains("hunter2"));
    assert!(out.contains("mq.example"));
    let s = Settings::from_pairs([
        (
            "CCSYNC_INGEST__SECRETS",
            "old-secret-0123456789,new-secret-9876543210",
        ),
        ("CCSYNC_INGEST__SHOPIFY_SECRET", "shpss_topsecret"),
    ])
    .unwrap();
    assert_eq!(s.ingest.secrets.len(), 2);
    let out = s.redacted();
    for secret in ["old-secret", "new-secret", "shpss_topsecret"] {
        assert!(!out.contains(secret), "{secret} leaked: {out}");
    }
    assert!(out.contains("2 secret(s)"), "{out}");
    assert!(!format!("{s:?}").contains("shpss_topsecret"));
}

//! `ccsync auth status` (one account or all) and the refresh-mode warnings of `config check`.

use super::*;

/// `config check`: one warning per account whose stored set uses rotating refresh tokens (or
/// has not refreshed yet, which ccsync treats as rotating) — the one failure no client can undo
/// (DESIGN §3.6). Redis trouble is itself a warning: `config check` must not fail on it.
pub async fn refresh_mode_warnings(settings: &Settings) -> Vec<String> {
    let store = match Store::from_settings(settings) {
        Ok(s) => s,
        Err(e) => return vec![format!("cannot read the token sets in Redis: {e}")],
    };
    let accounts = match store.accounts().await {
        Ok(a) => a,
        Err(e) => return vec![format!("cannot read the token sets in Redis: {e}")],
    };
    let mut w = Vec::new();
    for a in accounts {
        let Ok(Stored::Live(set)) = store.load(&a).await else {
            continue;
        };
        let what = match set.mode {
            RefreshMode::LongLived => continue,
            RefreshMode::Rotating => "uses rotating refresh tokens",
            RefreshMode::Unknown => {
                "has not refreshed yet, so its refresh-token mode is unknown (treated as rotating)"
            }
        };
        let via = set
            .flow
            .map(|f| format!(" (stored by --flow {})", f.as_str()))
            .unwrap_or_default();
        w.push(format!(
            "account {a} {what}{via}: a lost refresh response will need a new login; long-lived tokens via `ccsync auth login --flow code --account {a}` avoid it (app setting Refresh Token Type: Long-Lived)"
        ));
    }
    w
}

fn when(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// `ccsync auth status`: exit 0 when healthy, 2 when re-authorization is needed.
/// `ccsync auth status` without `--account` (every account with a token set, and every one the
/// configuration names), or with `--json`: one summary per account; non-zero when any needs a
/// login.
pub async fn status_all(
    settings: &Settings,
    only: Option<&str>,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<ExitCode, AuthCliError> {
    let store = Store::from_settings(settings)?;
    let mut accounts: std::collections::BTreeSet<String> = match only {
        Some(a) => [a.to_string()].into_iter().collect(),
        None => {
            let mut v: std::collections::BTreeSet<String> =
                store.accounts().await?.into_iter().collect();
            v.extend(settings.accounts.keys().cloned());
            v
        }
    };
    if accounts.is_empty() && only.is_none() {
        accounts.insert("default".to_string());
    }
    let parked = crate::parking::parked_accounts(settings)
        .await
        .unwrap_or_default();
    let now = crate::clock::now_unix();
    let mut all_ok = true;
    let mut docs = Vec::new();
    for account in &accounts {
        let stored = store.load(account).await;
        let mut doc = serde_json::json!({
            "account": account,
            "parked": parked.contains(account),
        });
        let ok = match &stored {
            Ok(Stored::Live(set)) => {
                let idle_left = set.idle_expiry_left_secs(now);
                doc["state"] = (if idle_left > 0 { "live" } else { "expired" }).into();
                doc["generation"] = set.generation.into();
                doc["access_token_expires_at"] = set.expires_at.into();
                doc["refresh_token_age_seconds"] = (now - set.refreshed_at).max(0).into();
                doc["days_to_idle_expiry"] = (idle_left / 86_400).into();
                doc["refresh_token_mode"] = set.mode.as_str().into();
                doc["login_flow"] = match set.flow {
                    Some(LoginFlow::Device) => "device",
                    Some(LoginFlow::Code) => "code",
                    Some(LoginFlow::Pkce) => "pkce",
                    Some(LoginFlow::Import) => "import",
                    None => "unknown",
                }
                .into();
                idle_left > 0
            }
            Ok(Stored::Dead { generation, reason }) => {
                doc["state"] = "dead".into();
                doc["generation"] = (*generation).into();
                doc["reason"] = reason.clone().into();
                false
            }
            Ok(Stored::Absent) => {
                doc["state"] = "none".into();
                false
            }
            Err(StoreError::Unreadable(why)) => {
                doc["state"] = "unreadable".into();
                doc["reason"] = why.clone().into();
                false
            }
            Err(e) => return Err(AuthCliError::Store(e.clone())),
        };
        doc["needs_login"] = (!ok).into();
        all_ok &= ok;
        docs.push(doc);
    }
    if json {
        let v = match only {
            Some(_) => docs.into_iter().next().unwrap_or_default(),
            None => serde_json::Value::Array(docs),
        };
        let _ = writeln!(out, "{v}");
    } else {
        for d in &docs {
            let _ = writeln!(
                out,
                "{:<24} {:<10} {:<10} {:>6} days to idle expiry  {}{}",
                d["account"].as_str().unwrap_or_default(),
                d["state"].as_str().unwrap_or_default(),
                d["refresh_token_mode"].as_str().unwrap_or("-"),
                d["days_to_idle_expiry"]
                    .as_i64()
                    .map_or("-".to_string(), |n| n.to_string()),
                if d["parked"].as_bool() == Some(true) {
                    "PARKED "
                } else {
                    ""
                },
                if d["needs_login"].as_bool() == Some(true) {
                    format!(
                        "— run `ccsync auth login --account {}`",
                        d["account"].as_str().unwrap_or_default()
                    )
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

pub async fn status(
    settings: &Settings,
    account: &str,
    out: &mut (dyn Write + Send),
) -> Result<ExitCode, AuthCliError> {
    let store = Store::from_settings(settings)?;
    let now = crate::clock::now_unix();
    let stored = store.load(account).await;
    let lock = LeaseLock::holder(&store, account).await?;
    let marker = store.read_marker(account).await?;
    let mut healthy = false;
    let _ = writeln!(out, "account: {account}");
    match &stored {
        Ok(Stored::Absent) => {
            let _ = writeln!(
                out,
                "state: NO TOKEN SET — run `ccsync auth login --account {account}`"
            );
        }
        Ok(Stored::Dead { generation, reason }) => {
            let _ = writeln!(out, "generation: {generation}");
            let _ = writeln!(
                out,
                "state: DEAD ({reason}) — run `ccsync auth login --account {account}`"
            );
        }
        Err(StoreError::Unreadable(why)) => {
            let _ = writeln!(
                out,
                "state: UNREADABLE ({why}) — fix CCSYNC_TOKEN_ENCRYPTION_KEY or run `ccsync auth login --account {account}`"
            );
        }
        Err(e) => return Err(AuthCliError::Store(e.clone())),
        Ok(Stored::Live(set)) => {
            let idle_left = set.idle_expiry_left_secs(now);
            healthy = idle_left > 0;
            let _ = writeln!(out, "generation: {}", set.generation);
            let _ = writeln!(
                out,
                "state: {}",
                if healthy {
                    "live"
                } else {
                    "EXPIRED (refresh token unused for 180 days) — run `ccsync auth login`"
                }
            );
            let left = set.expires_at - now;
            let _ = writeln!(
                out,
                "access token expires: {} ({})",
                when(set.expires_at),
                if left > 0 {
                    format!("in {left} s")
                } else {
                    format!("{} s ago; refreshed on next use", -left)
                }
            );
            let _ = writeln!(
                out,
                "login flow: {}",
                match set.flow {
                    Some(LoginFlow::Device) => "device (OAuth device flow)",
                    Some(LoginFlow::Code) => "code (authorization code, client secret)",
                    Some(LoginFlow::Pkce) => "pkce (authorization code with PKCE)",
                    Some(LoginFlow::Import) => "import (an existing refresh token)",
                    None => "not recorded (stored before ccsync recorded the flow)",
                }
            );
            let _ = writeln!(out, "refresh-token mode: {}", set.mode.as_str());
            let _ = writeln!(
                out,
                "refresh token: fingerprint {}, last used {} (age {:.1} days), {} days left before the 180-day idle expiry",
                set.refresh.fingerprint(),
                when(set.refreshed_at),
                (now - set.refreshed_at) as f64 / 86_400.0,
                idle_left / 86_400
            );
            if set.mode != RefreshMode::LongLived {
                let _ = writeln!(
                    out,
                    "hint: rotating refresh tokens cannot survive a lost refresh response; switching the app to CC's long-lived refresh tokens removes that failure entirely (they need the authorization code flow: `ccsync auth login --flow code`)"
                );
            }
        }
    }
    match lock {
        Some((owner, ttl)) => {
            let _ = writeln!(out, "refresh lock: held by {owner} (lease {ttl} ms left)");
        }
        None => {
            let _ = writeln!(out, "refresh lock: free");
        }
    }
    match marker {
        Some(m) => {
            let _ = writeln!(
                out,
                "refresh in flight: generation {} (refresh token {}), started {} by {}{}",
                m.generation,
                m.fingerprint,
                when(m.started_at),
                m.owner,
                if stored.as_ref().map(|s| s.generation()).ok() == Some(m.generation) {
                    " — if no replica holds the lock, that refresh was interrupted and the stored refresh token may be spent"
                } else {
                    " (stale)"
                }
            );
        }
        None => {
            let _ = writeln!(out, "refresh in flight: none");
        }
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

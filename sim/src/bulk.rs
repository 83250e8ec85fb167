//! `POST /v3/activities/contact_delete` and `POST /v3/activities/remove_list_memberships`
//! (reference §6.2, §6.3): asynchronous like imports (`activity.rs` runs them).
//!
//! Request-level checks (→ 400 in CC's array form, nothing queued): content type (415), JSON, the
//! operation's Swagger body (`ContactDelete`, `ListActivityRemoveContacts`, with the described
//! id limits in place of the document's `maxItems: 0` quirk, see `schema.rs`), ids that are not
//! UUIDs. More than [`super::SimConfig::max_queued_activities`] queued activities → the same 429
//! as imports.
//!
//! Choices where the reference is silent (strictest plausible):
//! - `contact_delete`: exactly one of `contact_ids` (1–500) and `list_ids` (1–50); both or
//!   neither → 400. By `list_ids`, every member of those lists is deleted; an unknown list → 400.
//! - `remove_list_memberships`: `source` must be `contact_ids` (1–500) or `list_ids` (1–50);
//!   the other sources (`all_active_contacts`, `engagement_level`, `tag_ids`) are not simulated →
//!   400. The target `list_ids` must name 1–50 lists of the account (unknown → 400).
//! - Ids that name no contact of the account are skipped when the activity completes (they do
//!   not count in `items_completed_count`); CC reports no per-id errors for these activities.

// Handlers return a ready `Response` as their early-exit error; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use uuid::Uuid;

use super::activity::{Activity, Kind, State as AState, queued, settle};
use super::api::{cc_error, json_body, too_many};
use super::faults::Ctx;
use super::jwt::Claims;
use super::state::{Shared, lock};

pub async fn contact_delete(
    State(sh): State<Arc<Shared>>,
    Extension(ctx): Extension<Ctx>,
    Extension(claims): Extension<Claims>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let v = match json_body(&sh, &ctx, &headers, &body, "ContactDelete") {
        Ok(v) => v,
        Err(r) => return r,
    };
    let ids = v.get("contact_ids").and_then(Value::as_array);
    let lists = v.get("list_ids").and_then(Value::as_array);
    let (ids, lists) = match (ids, lists) {
        (Some(i), None) if !i.is_empty() => (uuids(i), None),
        (None, Some(l)) if !l.is_empty() => (None, Some(uuids(l))),
        _ => {
            return bad(
                &sh,
                &ctx,
                "Exactly one of contact_ids (1 to 500) or list_ids (1 to 50) is required.",
            );
        }
    };
    create(&sh, &ctx, &claims, Kind::ContactDelete, ids, lists, true)
}

pub async fn remove_list_memberships(
    State(sh): State<Arc<Shared>>,
    Extension(ctx): Extension<Ctx>,
    Extension(claims): Extension<Claims>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let v = match json_body(&sh, &ctx, &headers, &body, "ListActivityRemoveContacts") {
        Ok(v) => v,
        Err(r) => return r,
    };
    let source = v["source"].as_object().cloned().unwrap_or_default();
    if source.keys().any(|k| k != "contact_ids" && k != "list_ids") {
        return bad(
            &sh,
            &ctx,
            "The simulator supports source.contact_ids or source.list_ids only.",
        );
    }
    let ids = source.get("contact_ids").and_then(Value::as_array);
    let from = source.get("list_ids").and_then(Value::as_array);
    let (ids, from) = match (ids, from) {
        (Some(i), None) if !i.is_empty() => (uuids(i), None),
        (None, Some(l)) if !l.is_empty() => (None, Some(uuids(l))),
        _ => {
            return bad(
                &sh,
                &ctx,
                "source needs exactly one of contact_ids (1 to 500) or list_ids (1 to 50).",
            );
        }
    };
    let Some(targets) = v["list_ids"].as_array().filter(|l| !l.is_empty()) else {
        return bad(&sh, &ctx, "list_ids must name 1 to 50 lists.");
    };
    let Some(targets) = uuids(targets) else {
        return bad(&sh, &ctx, "list_ids must be list UUIDs.");
    };
    // Source by lists: every member of those lists, resolved now.
    let ids = match (ids, from) {
        (Some(i), _) => Some(i),
        (None, Some(Some(from))) => {
            let mut all = lock(&sh.stores);
            let s = all.account(&claims.platform_user_id);
            settle(s);
            if let Some(l) = from.iter().find(|l| !s.list_exists(l)) {
                drop(all);
                return bad(
                    &sh,
                    &ctx,
                    &format!("source.list_ids contains an unknown list: {l}"),
                );
            }
            Some(
                s.contacts
                    .values()
                    .filter(|c| {
                        c.deleted_at.is_none() && c.list_ids.iter().any(|l| from.contains(l))
                    })
                    .map(|c| c.contact_id)
                    .collect(),
            )
        }
        _ => None,
    };
    create(
        &sh,
        &ctx,
        &claims,
        Kind::RemoveLists,
        ids,
        Some(Some(targets)),
        false,
    )
}

/// Parse an array of UUID strings (`None` when one is not a UUID).
fn uuids(a: &[Value]) -> Option<Vec<Uuid>> {
    a.iter()
        .map(|v| v.as_str().and_then(|s| Uuid::parse_str(s).ok()))
        .collect()
}

fn bad(sh: &Shared, ctx: &Ctx, m: &str) -> Response {
    cc_error(
        sh,
        ctx,
        StatusCode::BAD_REQUEST,
        "contacts.api.validation.error",
        m,
    )
}

/// Queue one activity. `ids`: the contacts named (`None`: an id was not a UUID). `lists`: for a
/// delete, the lists whose members go; for a removal, the target lists (`Some(None)`: a list id
/// was not a UUID). `members_of_lists`: a delete by lists resolves the members now.
fn create(
    sh: &Shared,
    ctx: &Ctx,
    claims: &Claims,
    kind: Kind,
    ids: Option<Vec<Uuid>>,
    lists: Option<Option<Vec<Uuid>>>,
    members_of_lists: bool,
) -> Response {
    let lists = match lists {
        Some(None) => return bad(sh, ctx, "list_ids must be list UUIDs."),
        Some(Some(l)) => Some(l),
        None => None,
    };
    let mut all = lock(&sh.stores);
    let s = all.account(&claims.platform_user_id);
    settle(s);
    let lists: BTreeSet<Uuid> = lists.unwrap_or_default().into_iter().collect();
    if let Some(l) = lists.iter().find(|l| !s.list_exists(l)) {
        let l = *l;
        drop(all);
        return bad(sh, ctx, &format!("list_ids contains an unknown list: {l}"));
    }
    let ids = match ids {
        Some(i) => i,
        None if members_of_lists && !lists.is_empty() => s
            .contacts
            .values()
            .filter(|c| c.deleted_at.is_none() && c.list_ids.iter().any(|l| lists.contains(l)))
            .map(|c| c.contact_id)
            .collect(),
        None => {
            drop(all);
            return bad(sh, ctx, "contact_ids must be contact UUIDs.");
        }
    };
    if queued(s, &claims.platform_user_id) >= sh.cfg.max_queued_activities {
        drop(all);
        return too_many(
            sh,
            ctx,
            "too_many_activities",
            "You exceeded 1,000 queued activities for this user account.",
        );
    }
    let faults = sh.faults();
    let extra = Duration::from_millis(
        faults.extra_processing_ms + sh.random_below(faults.processing_jitter_ms),
    );
    let a = Activity {
        id: Uuid::new_v4(),
        kind,
        items_total: ids.len() as u64,
        contact_ids: ids,
        account: claims.platform_user_id.clone(),
        created_at: sh.clock.now(),
        created_real: Instant::now(),
        start_after: sh.cfg.processing / 2 + extra / 2,
        end_after: sh.cfg.processing + extra,
        fail: sh.chance(faults.activity_failure_rate),
        // A removal's target lists; a delete's lists (its members were resolved above) only
        // count in `list_count`.
        list_ids: lists,
        rows: Vec::new(),
        error_count: 0,
        correctable_count: 0,
        errors: Vec::new(),
        state: AState::Initialized,
        person_count: 0,
    };
    let out = a.to_json();
    s.activities.push(a);
    (StatusCode::CREATED, Json(out)).into_response()
}

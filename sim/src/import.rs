//! `POST /v3/activities/contacts_json_import` (reference §6.1).
//!
//! Request-level checks (→ 400, CC's array form, nothing queued): content type (415), JSON, the
//! `ContactsJsonImport` envelope from the Swagger (`import_data` present, `list_ids` 1–50
//! strings), every list id an existing list of the token's account, at most 40,000 rows (counted over the whole body,
//! before the 4 MB cut). More than 1,000 non-terminal activities for the token's account → 429
//! `{"error_key":"too_many_activities","error_message":"You exceeded 1,000 queued activities for
//! this user account."}` (object form like CC's other 429s; the key is the simulator's choice).
//!
//! Choices where the reference is silent (strictest plausible):
//! - **4 MB**: CC "only imports the first 4 MB and drops the remaining data". The simulator reads
//!   the whole body, then keeps only the `import_data` rows whose JSON text *ends* within the first
//!   4,000,000 bytes of the body; later rows vanish without an error, so `items_total_count`
//!   shows fewer rows than were sent. `list_ids` are honoured wherever they appear.
//! - **Row errors** (the row is not written; the activity still completes): a row violating the
//!   Swagger `JsonImportContact` schema (over-long or ill-typed field), an unknown column, a
//!   `cf:NAME` naming no existing custom field, more than 25 `cf:` keys, a custom-field value that
//!   is not a string of ≤ 255 characters, birthday month/day out of range or not together, an
//!   email matching the `reject_emails_containing` fault → `error_count`; a missing or malformed
//!   email or anniversary → `correctable_count` (the Swagger lists these as correctable). SMS-only
//!   rows are not simulated (error). `activity_errors` give the reason without naming the row,
//!   like CC, which does not say which rows failed.
//! - **Correctable fault** (`correctable_rate`): that share of rows that passed every check is
//!   skipped as correctable too (not written, `correctable_count` + 1, one `activity_errors`
//!   entry). The draw is random per row and per import, not a hash of the email: a worker that
//!   re-sends the row later can succeed, as after a human fixed it in CC's UI. Counts follow the
//!   Swagger's `ActivityStatus`: `items_total_count` = every row read (skipped ones included),
//!   `items_completed_count` = all of them once completed (processed, whatever the outcome),
//!   `error_count` = non-correctable refusals, `correctable_count` = correctable ones,
//!   `person_count` = distinct contacts written.
//! - **Processing time** grows with the rows read: `SimConfig::processing` +
//!   N/1000 × (`SimConfig::processing_per_1000_rows` + fault `processing_per_1000_rows_ms`)
//!   + `extra_processing_ms` + jitter; half of it `initialized`, half `processing`.
//! - **Duplicates** (same email, case-insensitive) in one payload: silently de-duplicated, the
//!   last row wins whole (earlier duplicates' fields are not merged); `person_count` counts
//!   distinct contacts.
//! - Column `home country` (the Swagger's spelling) and `home_country` are both accepted.

// Handlers return a ready `Response` as their early-exit error; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::activity::{Activity, Row, State as AState, queued, settle};
use super::api::{cc_error, json_body, too_many};
use super::bytecut::row_ends;
use super::faults::{Ctx, lose};
use super::jwt::Claims;
use super::schema::{IMPORT_ENVELOPE, check, document};
use super::state::{Shared, lock};
use super::store::Store;

/// CC's limits (reference §6.1, §11).
pub const MAX_ROWS: usize = 40_000;
pub const MAX_BYTES: usize = 4_000_000;
const MAX_CF: usize = 25;

/// `activity_errors` entry of a row the `correctable_rate` fault skipped. CC names the kinds of
/// correctable error (Swagger `ActivityStatus.correctable_count`) but not the rows.
pub const CORRECTABLE_FAULT_MSG: &str =
    "The contact has data that needs correcting; it is available in the product UI to correct.";

/// The columns the Swagger's `JsonImportContact` names (plus `home_country`), minus the
/// `cf:custom_field_name` placeholder.
fn known_columns() -> BTreeSet<String> {
    let mut cols: BTreeSet<String> = document()
        .ok()
        .and_then(|d| d["definitions"]["JsonImportContact"]["properties"].as_object())
        .map(|p| {
            p.keys()
                .filter(|k| !k.starts_with("cf:"))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    cols.insert("home_country".into());
    cols
}

fn valid_date(s: &str) -> bool {
    let parts: Vec<&str> = s.split(['/', '-']).collect();
    s.len() <= 10
        && parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Outcome of one row.
enum RowOutcome {
    Ok(Row),
    Error(String),
    Correctable(String),
}

fn check_row(
    row: &Map<String, Value>,
    store: &Store,
    cols: &BTreeSet<String>,
    reject: Option<&str>,
) -> RowOutcome {
    if let Err(errs) = check("JsonImportContact", &Value::Object(row.clone())) {
        return RowOutcome::Error(format!("Invalid contact data: {}", errs.join("; ")));
    }
    let mut fields = BTreeMap::new();
    let mut cf_count = 0;
    for (k, v) in row {
        if let Some(name) = k.strip_prefix("cf:") {
            cf_count += 1;
            if store.field_by_name(name).is_none() {
                return RowOutcome::Error(format!("Custom field '{name}' does not exist."));
            }
            match v.as_str() {
                Some(s) if s.chars().count() <= 255 => fields.insert(k.clone(), s.to_owned()),
                _ => {
                    return RowOutcome::Error(format!(
                        "Custom field '{name}' must be a string of at most 255 characters."
                    ));
                }
            };
        } else if !cols.contains(k) {
            return RowOutcome::Error(format!("Unknown column '{k}'."));
        } else if k != "email" {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return RowOutcome::Error(format!("Column '{k}' must be a string.")),
            };
            fields.insert(
                if k == "home country" {
                    "home_country".into()
                } else {
                    k.clone()
                },
                s,
            );
        }
    }
    if cf_count > MAX_CF {
        return RowOutcome::Error(format!(
            "A contact can have at most {MAX_CF} custom fields."
        ));
    }
    let month = row.get("birthday_month").and_then(Value::as_i64);
    let day = row.get("birthday_day").and_then(Value::as_i64);
    if month.is_some() != day.is_some()
        || !month.is_none_or(|m| (1..=12).contains(&m))
        || !day.is_none_or(|d| (1..=31).contains(&d))
    {
        return RowOutcome::Error(
            "birthday_month (1-12) and birthday_day (1-31) must be given together.".into(),
        );
    }
    if let Some(a) = row.get("anniversary").and_then(Value::as_str)
        && !valid_date(a)
    {
        return RowOutcome::Correctable("Anniversary is not in a valid date format.".into());
    }
    let Some(email) = row.get("email").and_then(Value::as_str) else {
        if row.contains_key("sms_number") {
            return RowOutcome::Error(
                "SMS-only contacts are not supported by the simulator.".into(),
            );
        }
        return RowOutcome::Correctable("The contact has no email address.".into());
    };
    if !email_address::EmailAddress::is_valid(email) {
        return RowOutcome::Correctable("Invalid email address format.".into());
    }
    if reject.is_some_and(|r| !r.is_empty() && email.to_lowercase().contains(&r.to_lowercase())) {
        return RowOutcome::Error("The contact was rejected.".into());
    }
    RowOutcome::Ok(Row {
        email: email.to_owned(),
        fields,
    })
}

pub async fn contacts_json_import(
    State(sh): State<Arc<Shared>>,
    Extension(ctx): Extension<Ctx>,
    Extension(claims): Extension<Claims>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let out = match accept(&sh, &ctx, &claims, &headers, &body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    // Committed: the activity exists and will run. A lost-response fault now swallows the 201.
    if let Some(mode) = sh.take_lost(|f| &mut f.import_lost_response) {
        return lose(&sh, &ctx, mode).await;
    }
    (StatusCode::CREATED, Json(out)).into_response()
}

/// Validate and queue the import; returns the 201 body.
fn accept(
    sh: &Shared,
    ctx: &Ctx,
    claims: &Claims,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Value, Response> {
    let v = json_body(sh, ctx, headers, body, IMPORT_ENVELOPE)?;
    let bad = |m: &str| {
        Err(cc_error(
            sh,
            ctx,
            StatusCode::BAD_REQUEST,
            "contacts.api.validation.error",
            m,
        ))
    };
    let rows = v["import_data"].as_array().cloned().unwrap_or_default();
    if rows.len() > MAX_ROWS {
        return bad(&format!(
            "import_data contains {} contacts; the maximum is {MAX_ROWS}.",
            rows.len()
        ));
    }
    let kept = if body.len() > MAX_BYTES {
        row_ends(body).map_or(0, |ends| {
            ends.iter().take_while(|e| **e <= MAX_BYTES).count()
        })
    } else {
        rows.len()
    };
    let faults = sh.faults();
    let cols = known_columns();
    // The caller's account only: another account's lists, fields and activities do not exist here.
    let mut all = lock(&sh.stores);
    let s = all.account(&claims.platform_user_id);
    settle(s);
    let mut list_ids = BTreeSet::new();
    for l in v["list_ids"].as_array().into_iter().flatten() {
        match l
            .as_str()
            .and_then(|l| Uuid::parse_str(l).ok())
            .filter(|u| s.list_exists(u))
        {
            Some(u) => list_ids.insert(u),
            None => {
                return bad(&format!(
                    "list_ids contains a list that does not exist: {l}"
                ));
            }
        };
    }
    if queued(s, &claims.platform_user_id) >= sh.cfg.max_queued_activities {
        return Err(too_many(
            sh,
            ctx,
            "too_many_activities",
            "You exceeded 1,000 queued activities for this user account.",
        ));
    }
    let (mut errors, mut error_count, mut correctable) = (Vec::new(), 0, 0);
    let mut by_email: BTreeMap<String, Row> = BTreeMap::new();
    for row in rows.iter().take(kept) {
        let outcome = match row.as_object() {
            Some(r) => check_row(r, s, &cols, faults.reject_emails_containing.as_deref()),
            None => RowOutcome::Error("A contact must be a JSON object.".into()),
        };
        match outcome {
            // Fault `correctable_rate`: a valid row skipped as correctable (not written, counted
            // in `correctable_count`). Drawn afresh per import, so a re-sent row can succeed.
            RowOutcome::Ok(_) if sh.chance(faults.correctable_rate) => {
                correctable += 1;
                errors.push(CORRECTABLE_FAULT_MSG.into());
            }
            RowOutcome::Ok(r) => {
                by_email.insert(r.email.to_lowercase(), r);
            }
            RowOutcome::Error(m) => {
                error_count += 1;
                errors.push(m);
            }
            RowOutcome::Correctable(m) => {
                correctable += 1;
                errors.push(m);
            }
        }
    }
    // Processing grows with the rows read (CC takes minutes for 40,000 rows, reference §6):
    // `processing_per_1000_rows` (config) + `processing_per_1000_rows_ms` (fault), pro rata.
    let per_1000 =
        sh.cfg.processing_per_1000_rows + Duration::from_millis(faults.processing_per_1000_rows_ms);
    let extra = Duration::from_millis(
        faults.extra_processing_ms + sh.random_below(faults.processing_jitter_ms),
    ) + per_1000.mul_f64(kept as f64 / 1000.0);
    let a = Activity {
        id: Uuid::new_v4(),
        kind: super::activity::Kind::Import,
        contact_ids: Vec::new(),
        account: claims.platform_user_id.clone(),
        created_at: sh.clock.now(),
        created_real: Instant::now(),
        start_after: sh.cfg.processing / 2 + extra / 2,
        end_after: sh.cfg.processing + extra,
        fail: sh.chance(faults.activity_failure_rate),
        list_ids,
        rows: by_email.into_values().collect(),
        items_total: kept as u64,
        error_count,
        correctable_count: correctable,
        errors,
        state: AState::Initialized,
        person_count: 0,
    };
    let mut out = a.to_json();
    // The create answer is an `ActivityImport`, whose `status` has no `items_completed_count`
    // (that one belongs to the `Activity` a GET returns).
    if let Some(st) = out["status"].as_object_mut() {
        st.remove("items_completed_count");
    }
    s.activities.push(a);
    Ok(out)
}

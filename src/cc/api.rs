//! The V3 REST calls the pipeline makes, and the mapping from a validated [`Contact`] to CC's JSON.
//!
//! * `POST /activities/contacts_json_import` (reference §6.1): one import carries one `list_ids`;
//!   rows map message fields to CC's keys (`address.postal_code` → `zip`, custom fields as
//!   `cf:NAME`). New contacts get implicit permission; existing ones only change the fields sent,
//!   so the bulk path never upgrades permission (DESIGN §2).
//! * `GET /activities/{id}` (reference §6.5) to follow an import to a terminal state.
//! * `POST /contacts/sign_up_form` (reference §5.1) for `"consent": "explicit"` only: it sets
//!   explicit permission, one call per contact, custom fields by id.
//! * `GET /contacts?email=&status=all` (reference §5.4) to find out whether a row landed.
//! * `GET`/`POST /contact_custom_fields` (reference §5.6) to resolve names to ids.
//! * Consent (issue 15): `GET /contacts?email=` then `PUT /contacts/{id}` to unsubscribe
//!   (reference §5.3: the PUT replaces every top-level property, so the body repeats what the
//!   GET read and changes only the permission); `POST /activities/contact_delete` and
//!   `/activities/remove_list_memberships` by contact ids (≤ 500, reference §6.2, §6.3);
//!   `GET /contacts?status=unsubscribed&optout_after=` for the opt-out feed (reference §5.4).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{CcError, Endpoint, record_call};
use crate::auth::AccessToken;
use crate::contact::{Contact, Field};

/// Client for the API host (`CCSYNC_API_BASE_URL`).
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
}

mod account;
mod bodies;
mod contacts;
mod types;

pub(crate) use bodies::{IMPORT_ENVELOPE_MAX, ImportRow, import_row_len};
use bodies::{sign_up_body, unsubscribe_body};
use types::ActivityDto;
pub(crate) use types::*;

impl Api {
    pub fn new(http: reqwest::Client, base: &url::Url) -> Api {
        Api {
            http,
            base: base.as_str().trim_end_matches('/').to_string(),
        }
    }

    /// The JSON body of one import. Built separately so the pipeline can measure it exactly
    /// against the 4 MB limit before sending.
    pub fn import_body(list_ids: &[Uuid], contacts: &[&Contact]) -> Vec<u8> {
        // Rows are serialized straight from the contacts: building a `serde_json::Value` tree
        // first cost ~16x the body in peak memory for a 40,000-row import (BENCHMARKS.md).
        #[derive(serde::Serialize)]
        struct Body<'a> {
            import_data: Vec<ImportRow<'a>>,
            list_ids: &'a [Uuid],
        }
        let body = Body {
            import_data: contacts.iter().map(|c| ImportRow(c)).collect(),
            list_ids,
        };
        // Sized up front from the exact row count: growing by doubling would hold up to 2x the
        // body, plus both buffers during each copy (several imports may be built at once).
        let size = IMPORT_ENVELOPE_MAX + contacts.iter().map(|c| import_row_len(c)).sum::<usize>();
        let mut out = Vec::with_capacity(size);
        serde_json::to_writer(&mut out, &body).expect("JSON of strings serializes");
        out
    }

    /// `POST /activities/contacts_json_import` with a body from [`Api::import_body`].
    pub(crate) async fn import(
        &self,
        token: &AccessToken,
        body: Vec<u8>,
    ) -> Result<Created, CcError> {
        let url = format!("{}/activities/contacts_json_import", self.base);
        let req = self
            .http
            .post(url)
            .bearer_auth(token.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let v: ActivityDto = self.send(Endpoint::ContactsJsonImport, req).await?;
        let activity_id = v.activity_id.ok_or_else(|| CcError::Unexpected {
            status: 201,
            detail: "import answer without activity_id".into(),
        })?;
        Ok(Created { activity_id })
    }

    /// `GET /activities/{id}`.
    pub async fn activity(&self, token: &AccessToken, id: &str) -> Result<ActivityStatus, CcError> {
        let url = format!("{}/activities/{}", self.base, urlencode(id));
        let req = self.http.get(url).bearer_auth(token.expose());
        let v: ActivityDto = self.send(Endpoint::Activities, req).await?;
        let state = match v.state.as_deref() {
            Some("initialized") => ActivityState::Initialized,
            Some("processing") => ActivityState::Processing,
            Some("completed") => ActivityState::Completed,
            Some("cancelled") => ActivityState::Cancelled,
            Some("failed") => ActivityState::Failed,
            Some("timed_out") => ActivityState::TimedOut,
            other => {
                return Err(CcError::Unexpected {
                    status: 200,
                    detail: format!("unknown activity state {other:?}"),
                });
            }
        };
        Ok(ActivityStatus {
            state,
            items_total: v.status.items_total_count.unwrap_or(0),
            items_completed: v.status.items_completed_count.unwrap_or(0),
            errors: v.status.error_count.unwrap_or(0),
            correctable: v.status.correctable_count.unwrap_or(0),
            activity_errors: v
                .activity_errors
                .into_iter()
                .map(|e| match e {
                    Value::String(s) => s,
                    Value::Object(o) => o
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    other => other.to_string(),
                })
                .collect(),
        })
    }

    /// `POST /contacts/sign_up_form`: create or update one contact with explicit permission.
    pub(crate) async fn sign_up_form(
        &self,
        token: &AccessToken,
        c: &Contact,
        custom_field_ids: &HashMap<String, String>,
    ) -> Result<(), CcError> {
        let url = format!("{}/contacts/sign_up_form", self.base);
        let req = self
            .http
            .post(url)
            .bearer_auth(token.expose())
            .json(&sign_up_body(c, custom_field_ids));
        let _: Value = self.send(Endpoint::SignUpForm, req).await?;
        Ok(())
    }

    async fn created(
        &self,
        endpoint: Endpoint,
        req: reqwest::RequestBuilder,
    ) -> Result<Created, CcError> {
        let v: ActivityDto = self.send(endpoint, req).await?;
        let activity_id = v.activity_id.ok_or_else(|| CcError::Unexpected {
            status: 201,
            detail: "activity answer without activity_id".into(),
        })?;
        Ok(Created { activity_id })
    }

    /// `_links` hrefs are path-relative (`/v3/...`); join them to the base's origin.
    fn absolute(&self, href: &str) -> String {
        if href.starts_with("http") {
            return href.to_string();
        }
        match url::Url::parse(&self.base).and_then(|b| b.join(href)) {
            Ok(u) => u.to_string(),
            Err(_) => format!("{}{}", self.base, href),
        }
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        req: reqwest::RequestBuilder,
    ) -> Result<T, CcError> {
        let started = Instant::now();
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                record_call(endpoint, None, started);
                return Err(CcError::Transport(transport_text(e)));
            }
        };
        let status = resp.status().as_u16();
        let body = resp.bytes().await;
        record_call(endpoint, Some(status), started);
        let body = body.map_err(|e| CcError::Transport(transport_text(e)))?;
        if !(200..300).contains(&status) {
            return Err(CcError::from_response(endpoint, status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| CcError::Unexpected {
            status,
            detail: format!("undecodable answer: {e}"),
        })
    }
}

/// reqwest errors may carry the URL; ours carry no secrets in URLs, but keep the text short.
fn transport_text(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "io"
    };
    format!("{kind}: {}", e.without_url())
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

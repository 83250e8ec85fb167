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

use serde::Deserialize;
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

/// A created import activity.
#[derive(Debug, Clone)]
pub struct Created {
    pub activity_id: String,
}

/// Where an activity stands (reference §6.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivityState {
    Initialized,
    Processing,
    Completed,
    Cancelled,
    Failed,
    TimedOut,
}

impl ActivityState {
    pub fn is_terminal(self) -> bool {
        !matches!(self, ActivityState::Initialized | ActivityState::Processing)
    }
}

/// The parts of an activity the pipeline acts on.
#[derive(Debug, Clone)]
pub struct ActivityStatus {
    pub state: ActivityState,
    pub items_total: u64,
    pub items_completed: u64,
    pub errors: u64,
    /// `status.correctable_count`: rows CC skipped as correctable (invalid email, date format,
    /// no minimal contact data; Swagger `ActivityStatus`). Not written; 0 when absent.
    pub correctable: u64,
    pub activity_errors: Vec<String>,
}

/// What `GET /contacts?email=` knows about one contact.
#[derive(Debug, Clone)]
pub struct RemoteContact {
    pub list_ids: Vec<Uuid>,
    pub updated_at: Option<String>,
}

/// A contact as `GET /contacts` returns it, for the consent paths: its id, whether it opted
/// out, and the top-level properties a PUT must repeat (reference §5.3).
#[derive(Debug, Clone)]
pub struct ContactRecord {
    pub contact_id: String,
    pub address: String,
    pub permission: String,
    /// `first_name`, `last_name`, `job_title`, `company_name`, `birthday_month`,
    /// `birthday_day`, `anniversary` as CC holds them (only those set).
    pub top_level: Map<String, Value>,
}

/// The top-level properties of `ContactPutRequest` that a PUT overwrites with null when left out.
const PUT_TOP_LEVEL: [&str; 7] = [
    "first_name",
    "last_name",
    "job_title",
    "company_name",
    "birthday_month",
    "birthday_day",
    "anniversary",
];

/// One contact of the opt-out feed (`GET /contacts?status=unsubscribed&optout_after=`).
#[derive(Debug, Clone)]
pub struct OptOut {
    pub email: String,
    /// CC's `opt_out_date` (RFC 3339, as CC wrote it).
    pub opt_out_date: String,
    /// `Contact` (the person, e.g. an email's unsubscribe link) or `Account`.
    pub source: Option<String>,
    pub reason: Option<String>,
}

/// One page of the opt-out feed and the href of the next, if any.
#[derive(Debug, Clone)]
pub struct OptOutPage {
    pub contacts: Vec<OptOut>,
    pub next: Option<String>,
}

#[derive(Deserialize)]
struct ActivityDto {
    activity_id: Option<String>,
    state: Option<String>,
    #[serde(default)]
    activity_errors: Vec<Value>,
    #[serde(default)]
    status: StatusDto,
}

#[derive(Deserialize, Default)]
struct StatusDto {
    items_total_count: Option<u64>,
    items_completed_count: Option<u64>,
    error_count: Option<u64>,
    correctable_count: Option<u64>,
}

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
    pub async fn import(&self, token: &AccessToken, body: Vec<u8>) -> Result<Created, CcError> {
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
    pub async fn sign_up_form(
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

    /// `GET /contacts?email=…&status=all&include=list_memberships`: does CC hold this contact?
    pub async fn find_contact(
        &self,
        token: &AccessToken,
        email: &str,
    ) -> Result<Option<RemoteContact>, CcError> {
        let url = format!("{}/contacts", self.base);
        let req = self.http.get(url).bearer_auth(token.expose()).query(&[
            ("email", email),
            ("status", "all"),
            ("include", "list_memberships"),
        ]);
        let v: Value = self.send(Endpoint::Contacts, req).await?;
        let Some(first) = v
            .get("contacts")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
        else {
            return Ok(None);
        };
        let list_ids = first
            .get("list_memberships")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().and_then(|s| Uuid::parse_str(s).ok()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some(RemoteContact {
            list_ids,
            updated_at: first
                .get("updated_at")
                .and_then(Value::as_str)
                .map(str::to_string),
        }))
    }

    /// `GET /contacts?email=…` (CC's default status: every non-deleted contact, reference §5.4):
    /// the contact a consent action applies to, or `None` (unknown, or deleted: a PUT would
    /// revive a deleted contact, reference §5.3).
    pub async fn contact_record(
        &self,
        token: &AccessToken,
        email: &str,
    ) -> Result<Option<ContactRecord>, CcError> {
        let url = format!("{}/contacts", self.base);
        let req = self
            .http
            .get(url)
            .bearer_auth(token.expose())
            .query(&[("email", email)]);
        let v: Value = self.send(Endpoint::Contacts, req).await?;
        let Some(first) = v
            .get("contacts")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
        else {
            return Ok(None);
        };
        let text = |p: &str| first.pointer(p).and_then(Value::as_str).map(str::to_string);
        let (Some(contact_id), Some(address)) =
            (text("/contact_id"), text("/email_address/address"))
        else {
            return Err(CcError::Unexpected {
                status: 200,
                detail: "contact without contact_id or email_address".into(),
            });
        };
        let top_level = PUT_TOP_LEVEL
            .iter()
            .filter_map(|k| {
                first
                    .get(*k)
                    .filter(|v| !v.is_null())
                    .map(|v| (k.to_string(), v.clone()))
            })
            .collect();
        Ok(Some(ContactRecord {
            contact_id,
            address,
            permission: text("/email_address/permission_to_send").unwrap_or_default(),
            top_level,
        }))
    }

    /// `PUT /contacts/{id}` that opts `c` out: the body repeats every top-level property read
    /// (a PUT nulls the ones left out) and leaves the sub-resources out (a PUT keeps those),
    /// `update_source: Account` (the account records the person's wish; CC then shows
    /// `opt_out_source: Account`).
    pub async fn unsubscribe(
        &self,
        token: &AccessToken,
        c: &ContactRecord,
        reason: Option<&str>,
    ) -> Result<(), CcError> {
        let url = format!("{}/contacts/{}", self.base, urlencode(&c.contact_id));
        let req = self
            .http
            .put(url)
            .bearer_auth(token.expose())
            .json(&unsubscribe_body(c, reason));
        let _: Value = self.send(Endpoint::ContactsPut, req).await?;
        Ok(())
    }

    /// `POST /activities/contact_delete` for up to 500 contact ids.
    pub async fn delete_contacts(
        &self,
        token: &AccessToken,
        contact_ids: &[String],
    ) -> Result<Created, CcError> {
        let url = format!("{}/activities/contact_delete", self.base);
        let req = self
            .http
            .post(url)
            .bearer_auth(token.expose())
            .json(&json!({ "contact_ids": contact_ids }));
        self.created(Endpoint::ContactDelete, req).await
    }

    /// `POST /activities/remove_list_memberships` of up to 500 contact ids from `lists`.
    pub async fn remove_from_lists(
        &self,
        token: &AccessToken,
        contact_ids: &[String],
        lists: &[Uuid],
    ) -> Result<Created, CcError> {
        let url = format!("{}/activities/remove_list_memberships", self.base);
        let req = self
            .http
            .post(url)
            .bearer_auth(token.expose())
            .json(&json!({ "source": { "contact_ids": contact_ids }, "list_ids": lists }));
        self.created(Endpoint::RemoveListMemberships, req).await
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

    /// One page of `GET /contacts?status=unsubscribed&optout_after=SINCE&limit=500` (or the
    /// `next` href of the previous page): contacts that opted out strictly after `since`.
    pub async fn optouts(
        &self,
        token: &AccessToken,
        since: &str,
        next: Option<&str>,
    ) -> Result<OptOutPage, CcError> {
        let req = match next {
            Some(href) => self.http.get(self.absolute(href)),
            None => self.http.get(format!("{}/contacts", self.base)).query(&[
                ("status", "unsubscribed"),
                ("optout_after", since),
                ("limit", "500"),
            ]),
        }
        .bearer_auth(token.expose());
        let v: Value = self.send(Endpoint::Contacts, req).await?;
        let contacts = v
            .get("contacts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| {
                let e = c.get("email_address")?;
                let s = |k: &str| e.get(k).and_then(Value::as_str).map(str::to_string);
                Some(OptOut {
                    email: s("address")?,
                    opt_out_date: s("opt_out_date")?,
                    source: s("opt_out_source"),
                    reason: s("opt_out_reason"),
                })
            })
            .collect();
        Ok(OptOutPage {
            contacts,
            next: v
                .pointer("/_links/next/href")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }

    /// `GET /contact_lists`: the ids of every list the account has (following `_links.next`,
    /// 1,000 a page, CC's maximum; reference §5.6). One request for nearly every account.
    pub async fn lists(&self, token: &AccessToken) -> Result<HashSet<Uuid>, CcError> {
        let mut out = HashSet::new();
        let mut url = format!("{}/contact_lists?limit=1000", self.base);
        for _ in 0..20 {
            let req = self.http.get(&url).bearer_auth(token.expose());
            let v: Value = self.send(Endpoint::ContactLists, req).await?;
            for l in v
                .get("lists")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(id) = l
                    .get("list_id")
                    .and_then(Value::as_str)
                    .and_then(|s| Uuid::parse_str(s).ok())
                {
                    out.insert(id);
                }
            }
            match v.pointer("/_links/next/href").and_then(Value::as_str) {
                Some(next) => url = self.absolute(next),
                None => break,
            }
        }
        Ok(out)
    }

    /// The cheapest call that tells whether CC answers this account (`GET /contact_lists?limit=1`):
    /// the probe of an outage or `forbidden` pause.
    pub async fn probe(&self, token: &AccessToken) -> Result<(), CcError> {
        let url = format!("{}/contact_lists?limit=1", self.base);
        let req = self.http.get(url).bearer_auth(token.expose());
        let _: Value = self.send(Endpoint::ContactLists, req).await?;
        Ok(())
    }

    /// `GET /contact_custom_fields`: every custom field's name → id (following `_links.next`).
    pub async fn custom_fields(
        &self,
        token: &AccessToken,
    ) -> Result<HashMap<String, String>, CcError> {
        let mut out = HashMap::new();
        let mut url = format!("{}/contact_custom_fields?limit=100", self.base);
        // CC caps an account at 100 custom fields, so two pages at most; bound the loop anyway.
        for _ in 0..10 {
            let req = self.http.get(&url).bearer_auth(token.expose());
            let v: Value = self.send(Endpoint::ContactCustomFields, req).await?;
            for f in v
                .get("custom_fields")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let (Some(name), Some(id)) = (
                    f.get("name").and_then(Value::as_str),
                    f.get("custom_field_id").and_then(Value::as_str),
                ) {
                    out.insert(name.to_string(), id.to_string());
                }
            }
            match v.pointer("/_links/next/href").and_then(Value::as_str) {
                Some(next) => url = self.absolute(next),
                None => break,
            }
        }
        Ok(out)
    }

    /// `POST /contact_custom_fields` with the name as label (CC derives the name from the label by
    /// replacing blanks with underscores); returns the new id.
    pub async fn create_custom_field(
        &self,
        token: &AccessToken,
        name: &str,
    ) -> Result<String, CcError> {
        let url = format!("{}/contact_custom_fields", self.base);
        let req = self
            .http
            .post(url)
            .bearer_auth(token.expose())
            .json(&json!({ "label": name, "type": "string" }));
        let v: Value = self.send(Endpoint::ContactCustomFields, req).await?;
        v.get("custom_field_id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| CcError::Unexpected {
                status: 201,
                detail: "custom field answer without custom_field_id".into(),
            })
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

fn put(m: &mut Map<String, Value>, key: &str, v: &Option<Box<str>>) {
    if let Some(v) = v {
        m.insert(key.to_string(), Value::String(v.to_string()));
    }
}

/// The bytes `c` adds to an import body: its row exactly as [`import_row`]
/// serializes it, plus the comma before the next row. Computed without serializing (it runs for
/// every delivery); control characters are counted at their longest escape (`\u00XX`), so this is
/// never below the real size. An exact count matters: batches fill up to `batch_max_bytes`
/// instead of stopping at an estimate (an earlier 2x-margin estimate stopped them
/// at about 45% of it, doubling the imports of a backlog; BENCHMARKS.md, figure 2). The sender
/// still halves any body that comes out larger than the limit.
pub fn import_row_len(c: &Contact) -> usize {
    fn string(v: &str) -> usize {
        2 + v.len()
            + v.bytes()
                .map(|b| match b {
                    b'"' | b'\\' => 1,
                    0..=0x1f => 5,
                    _ => 0,
                })
                .sum::<usize>()
    }
    fn digits(n: u8) -> usize {
        match n {
            0..=9 => 1,
            10..=99 => 2,
            _ => 3,
        }
    }
    let f = &c.fields;
    let (mut n, mut entries) = (0usize, 0usize);
    // `"key":value` is the key's length + 3 (two quotes and the colon) + the value's.
    let mut add = |key: usize, value: usize| {
        n += key + 3 + value;
        entries += 1;
    };
    add("email".len(), string(&c.email));
    for (k, v) in row_text_fields(f) {
        if let Some(v) = v {
            add(k.len(), string(v));
        }
    }
    if let Some((month, day)) = f.birthday {
        add("birthday_month".len(), digits(month));
        add("birthday_day".len(), digits(day));
    }
    for (name, value) in &f.custom_fields {
        // `cf:NAME`, escaped like any string (without its quotes).
        add(3 + string(name) - 2, string(value));
    }
    // Braces, the commas between entries, and the comma after the row.
    2 + n + entries.saturating_sub(1) + 1
}

/// The text columns of an import row (CC key, message field), from the one list of contact
/// fields ([`Field`]), shared by the serializer and the size count so the two can never disagree.
fn row_text_fields(
    f: &crate::contact::Fields,
) -> impl Iterator<Item = (&'static str, &Option<Box<str>>)> {
    Field::ALL
        .into_iter()
        .filter_map(move |field| Some((field.import_column()?, field.text(f)?)))
}

/// Bytes of an import body outside its rows: `{"import_data":[`, `],"list_ids":[…]}` with up to
/// 50 quoted list UUIDs (39 bytes each with the comma), rounded up. Batches leave this much room.
pub const IMPORT_ENVELOPE_MAX: usize = 4_096;

/// One `import_data` row (Swagger `JsonImportContact`), serialized from the contact as is.
pub struct ImportRow<'a>(pub &'a Contact);

impl serde::Serialize for ImportRow<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let c = self.0;
        let f = &c.fields;
        let mut m = ser.serialize_map(None)?;
        m.serialize_entry("email", &c.email)?;
        for (k, v) in row_text_fields(f) {
            if let Some(v) = v {
                m.serialize_entry(k, v)?;
            }
        }
        if let Some((month, day)) = f.birthday {
            m.serialize_entry("birthday_month", &month)?;
            m.serialize_entry("birthday_day", &day)?;
        }
        for (name, value) in &f.custom_fields {
            m.serialize_entry(&format!("cf:{name}"), value)?;
        }
        m.end()
    }
}

/// The PUT body of [`Api::unsubscribe`] (Swagger `ContactPutRequest`).
fn unsubscribe_body(c: &ContactRecord, reason: Option<&str>) -> Value {
    let mut m = c.top_level.clone();
    let mut email = Map::new();
    email.insert("address".into(), Value::String(c.address.clone()));
    email.insert("permission_to_send".into(), json!("unsubscribed"));
    if let Some(r) = reason {
        email.insert("opt_out_reason".into(), Value::String(r.to_string()));
    }
    m.insert("email_address".into(), Value::Object(email));
    m.insert("update_source".into(), json!("Account"));
    Value::Object(m)
}

/// The `sign_up_form` body (Swagger `ContactCreateOrUpdateInput`).
fn sign_up_body(c: &Contact, custom_field_ids: &HashMap<String, String>) -> Value {
    let f = &c.fields;
    let mut m = Map::new();
    m.insert("email_address".into(), Value::String(c.email.clone()));
    m.insert("list_memberships".into(), json!(c.list_ids));
    put(&mut m, "first_name", &f.first_name);
    put(&mut m, "last_name", &f.last_name);
    put(&mut m, "job_title", &f.job_title);
    put(&mut m, "company_name", &f.company_name);
    put(&mut m, "phone_number", &f.phone);
    put(&mut m, "anniversary", &f.anniversary);
    if let Some((month, day)) = f.birthday {
        m.insert("birthday_month".into(), json!(month));
        m.insert("birthday_day".into(), json!(day));
    }
    let a = f.address();
    if !a.is_empty() {
        let mut addr = Map::new();
        addr.insert("kind".into(), json!("home"));
        put(&mut addr, "street", &a.street);
        put(&mut addr, "city", &a.city);
        put(&mut addr, "state", &a.state);
        put(&mut addr, "postal_code", &a.postal_code);
        put(&mut addr, "country", &a.country);
        m.insert("street_address".into(), Value::Object(addr));
    }
    let cfs: Vec<Value> = f
        .custom_fields
        .iter()
        .filter_map(|(name, value)| {
            custom_field_ids
                .get(name)
                .map(|id| json!({ "custom_field_id": id, "value": value }))
        })
        .collect();
    if !cfs.is_empty() {
        m.insert("custom_fields".into(), Value::Array(cfs));
    }
    Value::Object(m)
}

//! Import activities: `initialized` → `processing` → `completed` (or `failed`), on real time.
//!
//! Activities advance lazily: every read of the store (API calls, admin calls, the handle) first
//! runs [`settle`], which completes every activity whose time has come **in the order of its
//! completion time** and only then writes its contacts. Observably this is the same as a
//! background worker, without one. Choices where the reference is silent:
//! - The processing time is `SimConfig::processing`, plus N/1000 × the per-1,000-rows time
//!   (`SimConfig::processing_per_1000_rows` + fault `processing_per_1000_rows_ms`) for an import
//!   of N rows read, plus `extra_processing_ms` and jitter. Its first half is spent
//!   `initialized`, the second half `processing` (`percent_done` and `items_completed_count`
//!   grow linearly during it).
//! - Counts (`status`, meanings from the Swagger's `ActivityStatus`, reference §6.5):
//!   `items_total_count` = rows CC read (after the 4 MB cut), skipped rows included;
//!   `items_completed_count` = all of them once completed (processed, whatever the outcome);
//!   `error_count` = rows refused as non-correctable (unknown custom field, over-long or
//!   ill-typed field, rejected by the `reject_emails_containing` fault);
//!   `correctable_count` = rows refused as correctable (a missing or malformed email or
//!   anniversary, or the `correctable_rate` fault); `person_count` = distinct contacts written
//!   (duplicates merged). Counts other than `items_total_count` are reported once the activity
//!   is terminal.
//! - A `failed` activity writes nothing; its `activity_errors` says so.
//! - `created_at`/`started_at`/`completed_at` are on the simulator clock.
//! - **`contact_delete` and `remove_list_memberships`** (reference §6.2, §6.3) run the same way
//!   ([`Kind`]): on completion a delete hides each named contact (`deleted_at`) and strips its
//!   list memberships (what CC's deletion does, reference §5.2), a removal takes the target lists
//!   off each named contact. Their `status` is the Swagger's `ActivityDeleteStatus` /
//!   `ActivityListsMembership`: `items_total_count` = ids named, `items_completed_count` = ids
//!   that named a contact of the account once completed (unknown or already deleted ids are
//!   skipped, not errors: CC reports no per-id errors for these), `list_count` = target lists.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use super::store::{Source, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Initialized,
    Processing,
    Completed,
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initialized => "initialized",
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }
    pub fn terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }
}

/// One row that passed validation, waiting to be written.
#[derive(Debug, Clone)]
pub struct Row {
    pub email: String,
    pub fields: BTreeMap<String, String>,
}

/// What an activity does when it completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `contacts_json_import`: write [`Activity::rows`] onto [`Activity::list_ids`].
    Import,
    /// `contact_delete` by `contact_ids`: delete [`Activity::contact_ids`].
    ContactDelete,
    /// `remove_list_memberships` from `contact_ids`: take [`Activity::list_ids`] off
    /// [`Activity::contact_ids`].
    RemoveLists,
}

#[derive(Debug, Clone)]
pub struct Activity {
    pub id: Uuid,
    pub kind: Kind,
    /// The contacts a delete or a list removal names (empty for an import).
    pub contact_ids: Vec<Uuid>,
    pub account: String,
    pub created_at: OffsetDateTime,
    pub created_real: Instant,
    /// Real time after creation when it turns `processing`, and when it ends.
    pub start_after: Duration,
    pub end_after: Duration,
    pub fail: bool,
    pub list_ids: BTreeSet<Uuid>,
    pub rows: Vec<Row>,
    pub items_total: u64,
    pub error_count: u64,
    pub correctable_count: u64,
    pub errors: Vec<String>,
    pub state: State,
    pub person_count: u64,
}

fn ts(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

impl Activity {
    fn state_at(&self, now: Instant) -> State {
        if self.state.terminal() {
            return self.state;
        }
        let e = now.saturating_duration_since(self.created_real);
        if e >= self.end_after {
            if self.fail {
                State::Failed
            } else {
                State::Completed
            }
        } else if e >= self.start_after {
            State::Processing
        } else {
            State::Initialized
        }
    }

    /// The `ActivityImport` / `Activity` JSON (Swagger definitions of the same names).
    pub fn to_json(&self) -> Value {
        let now = Instant::now();
        let e = now.saturating_duration_since(self.created_real);
        let span = self
            .end_after
            .saturating_sub(self.start_after)
            .as_secs_f64()
            .max(1e-9);
        let (percent, done) = match self.state {
            State::Completed => (100, self.items_total),
            State::Failed => (0, 0),
            State::Initialized => (0, 0),
            State::Processing => {
                let f = (e.saturating_sub(self.start_after).as_secs_f64() / span).clamp(0.0, 0.99);
                ((f * 100.0) as i64, (f * self.items_total as f64) as u64)
            }
        };
        let terminal = self.state.terminal();
        let status = match self.kind {
            Kind::Import => json!({
                "items_total_count": self.items_total,
                "items_completed_count": done,
                "person_count": if terminal { self.person_count } else { 0 },
                "error_count": if terminal { self.error_count } else { 0 },
                "correctable_count": if terminal { self.correctable_count } else { 0 },
                "cannot_add_to_list_count": 0,
            }),
            // `person_count` holds how many ids named a contact (set on completion).
            Kind::ContactDelete | Kind::RemoveLists => json!({
                "items_total_count": self.items_total,
                "items_completed_count": if terminal { self.person_count } else { done.min(self.person_count) },
                "list_count": self.list_ids.len(),
            }),
        };
        let mut v = json!({
            "activity_id": self.id,
            "state": self.state.as_str(),
            "created_at": ts(self.created_at),
            "updated_at": ts(self.created_at + e.min(self.end_after)),
            "percent_done": percent,
            "activity_errors": if terminal { self.errors.clone() } else { Vec::new() },
            "status": status,
            "_links": {"self": {"href": format!("/v3/activities/{}", self.id)}},
        });
        if self.state != State::Initialized {
            v["started_at"] = ts(self.created_at + self.start_after).into();
        }
        if terminal {
            v["completed_at"] = ts(self.created_at + self.end_after).into();
        }
        v
    }
}

/// Advance every activity to its current state; completions write their contacts, in order of
/// completion time.
pub fn settle(store: &mut Store) {
    let now = Instant::now();
    let mut due: Vec<(Instant, usize)> = Vec::new();
    for (i, a) in store.activities.iter_mut().enumerate() {
        match a.state_at(now) {
            s if s.terminal() && !a.state.terminal() => due.push((a.created_real + a.end_after, i)),
            s => a.state = s,
        }
    }
    due.sort();
    for (_, i) in due {
        let a = &mut store.activities[i];
        let rows = std::mem::take(&mut a.rows);
        let lists = a.list_ids.clone();
        let at = a.created_at + a.end_after;
        if a.fail {
            a.state = State::Failed;
            a.errors.push(
                "The activity failed because of an internal error; no contacts were changed."
                    .into(),
            );
            continue;
        }
        a.state = State::Completed;
        let kind = a.kind;
        let ids = std::mem::take(&mut a.contact_ids);
        let mut touched = 0u64;
        match kind {
            Kind::Import => {
                touched = rows.len() as u64;
                for r in rows {
                    store.upsert(&r.email, r.fields, &lists, Source::Import, at);
                }
            }
            Kind::ContactDelete => {
                for id in &ids {
                    if let Some(c) = store
                        .contact_by_id_mut(id)
                        .filter(|c| c.deleted_at.is_none())
                    {
                        // Deletion strips the lists and hides the contact (reference §5.2).
                        c.deleted_at = Some(at);
                        c.list_ids.clear();
                        c.updated_at = at;
                        c.writes += 1;
                        touched += 1;
                    }
                }
            }
            Kind::RemoveLists => {
                for id in &ids {
                    if let Some(c) = store
                        .contact_by_id_mut(id)
                        .filter(|c| c.deleted_at.is_none())
                    {
                        c.list_ids.retain(|l| !lists.contains(l));
                        c.updated_at = at;
                        c.writes += 1;
                        touched += 1;
                    }
                }
            }
        }
        store.activities[i].person_count = touched;
    }
}

/// Non-terminal activities of `account` (for the 1,000 cap).
pub fn queued(store: &Store, account: &str) -> usize {
    store
        .activities
        .iter()
        .filter(|a| a.account == account && !a.state.terminal())
        .count()
}

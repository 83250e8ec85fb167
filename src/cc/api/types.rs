//! What the calls of [`super::Api`] answer, and the DTOs they read.

use serde::Deserialize;
use serde_json::{Map, Value};

/// A created import activity.
#[derive(Debug, Clone)]
pub(crate) struct Created {
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
    pub(crate) fn is_terminal(self) -> bool {
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

/// A contact as `GET /contacts` returns it, for the consent paths: its id, whether it opted
/// out, and the top-level properties a PUT must repeat (reference §5.3).
#[derive(Debug, Clone)]
pub(crate) struct ContactRecord {
    pub contact_id: String,
    pub address: String,
    pub permission: String,
    /// `first_name`, `last_name`, `job_title`, `company_name`, `birthday_month`,
    /// `birthday_day`, `anniversary` as CC holds them (only those set).
    pub top_level: Map<String, Value>,
}

/// The top-level properties of `ContactPutRequest` that a PUT overwrites with null when left out.
pub(super) const PUT_TOP_LEVEL: [&str; 7] = [
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
pub(crate) struct OptOut {
    pub email: String,
    /// CC's `opt_out_date` (RFC 3339, as CC wrote it).
    pub opt_out_date: String,
    /// `Contact` (the person, e.g. an email's unsubscribe link) or `Account`.
    pub source: Option<String>,
    pub reason: Option<String>,
}

/// One page of the opt-out feed and the href of the next, if any.
#[derive(Debug, Clone)]
pub(crate) struct OptOutPage {
    pub contacts: Vec<OptOut>,
    pub next: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct ActivityDto {
    pub(super) activity_id: Option<String>,
    pub(super) state: Option<String>,
    #[serde(default)]
    pub(super) activity_errors: Vec<Value>,
    #[serde(default)]
    pub(super) status: StatusDto,
}

#[derive(Deserialize, Default)]
pub(super) struct StatusDto {
    pub(super) items_total_count: Option<u64>,
    pub(super) items_completed_count: Option<u64>,
    pub(super) error_count: Option<u64>,
    pub(super) correctable_count: Option<u64>,
}

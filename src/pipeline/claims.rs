//! The ordering ledger's side of a batch (see [`crate::ledger`]): claiming its emails, settling
//! what a newer event made moot, holding the claims while an import is in flight (renewed every
//! third of the lease, and past a requeue until CC settles the import), and letting them go.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::contact::{Action, Consent, unix_ms};
use crate::ledger::{Event, Kind, Ledger, Outcome};
use crate::queue::Settler;
use crate::ratelimit::CallKind;
use crate::telemetry::metrics;

use super::call::{Stop, call};
use super::ctx::Ctx;
use super::settle::{Chunk, Disposition, apply};

/// The import a batch has in flight at CC (a batch sends its chunks one at a time), if any.
#[derive(Default)]
pub(super) struct InFlight(std::sync::Mutex<Option<String>>);

impl InFlight {
    pub(super) fn set(&self, activity: Option<String>) {
        *self.0.lock().expect("not poisoned") = activity;
    }
    pub(super) fn take(&self) -> Option<String> {
        self.0.lock().expect("not poisoned").take()
    }
}

/// Renew `owner`'s claims on `emails` every third of the lease; never returns (drop it).
pub(super) async fn renew_claims(
    ledger: &Ledger,
    owner: &str,
    account: &str,
    emails: &[String],
) -> std::convert::Infallible {
    let refs: Vec<(&str, &str)> = emails.iter().map(|e| (account, e.as_str())).collect();
    let every = ledger.lease() / 3;
    loop {
        tokio::time::sleep(every).await;
        if let Err(e) = ledger.renew(owner, &refs).await {
            tracing::warn!(error = %e, "cannot renew ledger claims; retrying at the next tick");
        }
    }
}

pub(super) async fn release_claims(ledger: &Ledger, owner: &str, account: &str, emails: &[String]) {
    let refs: Vec<(&str, &str)> = emails.iter().map(|e| (account, e.as_str())).collect();
    if let Err(e) = ledger.release(owner, &refs).await {
        tracing::warn!(error = %e, "cannot release ledger leases; they expire on their own");
    }
}

/// How long an abandoned import is followed before its claim is let go anyway: CC takes minutes
/// for a 40,000-row import; one that is not done after a day is not coming.
const ABANDONED_WATCH: Duration = Duration::from_secs(24 * 3600);

/// Follow an import whose deliveries were requeued (hold bound, pause) until CC settles it,
/// holding its claims meanwhile; then release them. Polls at `worker.poll_max_ms` through the
/// shared budget; an activity CC no longer knows (404) or a dead connection ends the watch.
pub(super) async fn watch_abandoned(
    ctx: Arc<Ctx>,
    ledger: Arc<Ledger>,
    owner: String,
    account: String,
    emails: Vec<String>,
    activity: String,
) {
    let watch = async {
        let started = Instant::now();
        let every = ctx.worker.poll_max;
        while started.elapsed() < ABANDONED_WATCH {
            tokio::time::sleep(every).await;
            if ctx.outage.is_down() {
                // No polls into an outage; the claim is renewed meanwhile.
                continue;
            }
            let deadline = Instant::now() + every.max(Duration::from_secs(60));
            let st = call(&ctx, &account, CallKind::Poll, deadline, |t| {
                let id = activity.clone();
                let ctx = &ctx;
                async move { ctx.api.activity(&t, &id).await }
            })
            .await;
            match st {
                Ok(st) if st.state.is_terminal() => return,
                Ok(_) | Err(Stop::Deadline) | Err(Stop::Busy) | Err(Stop::Pause(_)) => {}
                // The account's connection died meanwhile: the claim lapses with the watch (a
                // new login re-sends the parked messages; imports are upserts).
                Err(Stop::Park(_)) | Err(Stop::UnknownAccount(_)) => return,
                // CC no longer knows it (or refuses the poll for good): nothing left to wait for.
                Err(Stop::UnknownActivity) | Err(Stop::Reject(_)) | Err(Stop::Envelope(_)) => {
                    return;
                }
            }
        }
    };
    tracing::info!(
        account,
        activity_id = %activity,
        contacts = emails.len(),
        "holding the claims of an import whose messages were requeued until CC settles it"
    );
    tokio::select! {
        () = watch => {}
        never = renew_claims(&ledger, &owner, &account, &emails) => match never {},
    }
    release_claims(&ledger, &owner, &account, &emails).await;
}

/// Claim entries of one action in the ledger. Returns (send now, busy elsewhere); what a newer
/// event made moot is settled here as superseded. Sent entries are stripped of stale fields and
/// lists, and an explicit upsert older than a known opt-out is turned to the import path.
pub(super) async fn claim(
    settler: &Settler,
    ledger: &Ledger,
    owner: &str,
    account: &str,
    action: Action,
    consent: Consent,
    entries: Chunk,
) -> Result<(Chunk, Chunk), (Chunk, crate::ledger::LedgerError)> {
    let kind = match action {
        Action::Upsert => Kind::Upsert {
            explicit: consent == Consent::Explicit,
        },
        Action::Unsubscribe => Kind::Unsubscribe,
        Action::RemoveLists => Kind::RemoveLists,
        Action::Delete => Kind::Delete,
    };
    let outcomes = {
        let items: Vec<Event> = entries
            .iter()
            .map(|e| Event {
                account,
                email: e.item.email.as_str(),
                kind,
                occurred_at: unix_ms(e.item.occurred_at),
                fields: e.item.field_stamps(),
                lists: &e.item.list_ids,
            })
            .collect();
        match ledger.claim_events(owner, &items).await {
            Ok(v) => v,
            Err(e) => return Err((entries, e)),
        }
    };
    let (mut go, mut busy, mut moot) = (Vec::new(), Vec::new(), Vec::new());
    let (mut stale_fields, mut blocked) = (0, 0u64);
    for (mut e, o) in entries.into_iter().zip(outcomes) {
        let g = match o {
            Outcome::Busy => {
                busy.push(e);
                continue;
            }
            Outcome::Go(g) => g,
        };
        stale_fields += g.stale_fields.len();
        e.item.fields.drop_named(&g.stale_fields);
        e.item.list_ids.retain(|l| !g.stale_lists.contains(l));
        if g.signup_blocked {
            // Never a machine re-subscribe (issue 15): sign_up_form would set explicit
            // permission on a contact who opted out after this consent was given (reference
            // §5.1); its fields may still be imported, which never changes permission.
            e.item.consent = Consent::Implicit;
            blocked += 1;
        }
        match Disposition::of_claim(action, g.superseded, e.item.list_ids.len()) {
            Some(_) => moot.push(e),
            None => go.push(e),
        }
    }
    if blocked > 0 {
        metrics().resubscribes_prevented(account, blocked);
        tracing::info!(
            account,
            contacts = blocked,
            "explicit consent older than the contact's latest opt-out: not sent through sign_up_form (its fields go through the import)"
        );
    }
    tracing::debug!(
        account,
        go = go.len(),
        busy = busy.len(),
        superseded = moot.len(),
        stale_fields,
        "claimed emails in the ordering ledger"
    );
    if !moot.is_empty() {
        apply_superseded(settler, ledger, owner, account, moot).await;
    }
    Ok((go, busy))
}

async fn apply_superseded(
    settler: &Settler,
    ledger: &Ledger,
    owner: &str,
    account: &str,
    moot: Chunk,
) {
    let emails: Vec<String> = moot.iter().map(|e| e.item.email.clone()).collect();
    // Settled without a CC call: ack, then let these emails go at once (the owner keeps the
    // ones it sends; a superseded event took no lease at all).
    apply(settler, moot, Disposition::Superseded).await;
    let refs: Vec<(&str, &str)> = emails.iter().map(|e| (account, e.as_str())).collect();
    if let Err(e) = ledger.let_go(owner, &refs).await {
        tracing::warn!(error = %e, "cannot release ledger leases; they expire on their own");
    }
}

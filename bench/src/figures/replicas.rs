//! Figure 9: one backlog drained by three replicas sharing one key.

use super::*;

/// Figure 9 (issue 18): three worker processes sharing one API key (one token set, one Redis
/// limiter and quota, one queue) drain the backlog of figure 2, against one worker; then both
/// drain a backlog twice that size, for the steady-state (marginal) figure.
#[derive(Debug, Clone)]
pub struct Replicas {
    pub one: Backlog,
    pub three: Backlog,
    /// Whether `one` was measured in this phase (an `--only` run) or is figure 2's backlog.
    pub one_measured_here: bool,
    /// One worker, a backlog of twice `one`'s contacts.
    pub one_double: Backlog,
    /// Three workers, a backlog of twice `three`'s contacts.
    pub three_double: Backlog,
}

/// Contacts per request that the second half of a backlog twice as large cost: what a key
/// carries in a day of steady load, without the costs a drain pays once whatever its size
/// (each process's list look-up and token, each replica's partial last batch).
pub fn marginal_contacts_per_request(small: &Backlog, double: &Backlog) -> f64 {
    let contacts = double.contacts.saturating_sub(small.contacts) as f64;
    let requests = double.total.saturating_sub(small.total).max(1) as f64;
    contacts / requests
}

impl Replicas {
    /// Three replicas ÷ one in steady state: the marginal contacts per request of each
    /// ([`marginal_contacts_per_request`]), so what a day of load gets through one key.
    pub fn marginal_vs_one(&self) -> f64 {
        marginal_contacts_per_request(&self.three, &self.three_double)
            / marginal_contacts_per_request(&self.one, &self.one_double)
    }
}

/// Figure 9: the backlog of figure 2 drained by three replicas (the default
/// `ratelimit.expected_replicas` = 3). `one` is figure 2's single-worker backlog when the whole
/// table is measured; an `--only replicas` run measures it here first.
pub async fn replicas(scale: Scale, one: Option<&Backlog>) -> Result<Replicas, BenchError> {
    let n = scale.backlog_messages();
    let (one, one_measured_here) = match one {
        Some(b) => (b.clone(), false),
        None => (drain_backlog_with(n, message, 1).await?, true),
    };
    let three = drain_backlog_with(n, message, 3).await?;
    let one_double = drain_backlog_with(2 * n, message, 1).await?;
    let three_double = drain_backlog_with(2 * n, message, 3).await?;
    Ok(Replicas {
        one,
        three,
        one_measured_here,
        one_double,
        three_double,
    })
}

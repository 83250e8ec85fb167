//! Figure 9: one backlog drained by three replicas sharing one key.

use super::*;

/// Figure 9 (issue 18): three worker processes sharing one API key (one token set, one Redis
/// limiter and quota, one queue) drain the backlog of figure 2, against one worker.
#[derive(Debug, Clone)]
pub struct Replicas {
    pub one: Backlog,
    pub three: Backlog,
    /// Whether `one` was measured in this phase (an `--only` run) or is figure 2's backlog.
    pub one_measured_here: bool,
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
    Ok(Replicas {
        one,
        three,
        one_measured_here,
    })
}

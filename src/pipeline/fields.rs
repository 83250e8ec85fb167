//! Custom-field names → CC custom-field ids, cached per account.

use crate::contact::Reason;
use std::collections::HashMap;

use tokio::time::Instant;

use crate::queue::Settler;
use crate::ratelimit::CallKind;

use super::call::{Stop, call};
use super::ctx::{Ctx, FieldIds};
use super::settle::{Chunk, Disposition, apply};

/// Resolve the custom-field names the batch uses; unknown names are created when configured,
/// otherwise the contacts naming them are dead-lettered as `unknown_custom_field`.
pub(super) async fn resolve_custom_fields(
    ctx: &Ctx,
    settler: &Settler,
    account: &str,
    entries: Chunk,
    deadline: Instant,
) -> Result<(Chunk, HashMap<String, String>), (Chunk, Stop)> {
    let names: std::collections::BTreeSet<&String> = entries
        .iter()
        .flat_map(|e| e.item.fields.custom_fields.keys())
        .collect();
    if names.is_empty() {
        return Ok((entries, HashMap::new()));
    }
    let mut cache = ctx.custom_fields.lock().await;
    let fresh = |c: &Option<&FieldIds>| {
        c.is_some_and(|(at, map)| {
            names.iter().all(|n| map.contains_key(*n))
                || at.elapsed() < ctx.worker.custom_fields_refresh
        })
    };
    if !fresh(&cache.get(account)) {
        match call(ctx, account, CallKind::Lookup, deadline, |t| async move {
            ctx.api.custom_fields(&t).await
        })
        .await
        {
            Ok(map) => {
                cache.insert(account.to_string(), (Instant::now(), map));
            }
            Err(stop) => return Err((entries, stop)),
        }
    }
    let known = &mut cache.get_mut(account).expect("just filled").1;
    let unknown: Vec<String> = names
        .iter()
        .filter(|n| !known.contains_key(**n))
        .map(|n| (*n).clone())
        .collect();
    if ctx.worker.create_custom_fields {
        for name in &unknown {
            match call(ctx, account, CallKind::Lookup, deadline, |t| async move {
                ctx.api.create_custom_field(&t, name).await
            })
            .await
            {
                Ok(id) => {
                    known.insert(name.clone(), id);
                }
                Err(Stop::Reject(text)) => {
                    tracing::warn!(account, error = %text, "CC refused to create a custom field");
                }
                Err(stop) => return Err((entries, stop)),
            }
        }
    }
    let ids = known.clone();
    drop(cache);
    let mut keep = Vec::with_capacity(entries.len());
    for e in entries {
        match e
            .item
            .fields
            .custom_fields
            .keys()
            .find(|n| !ids.contains_key(*n))
        {
            None => keep.push(e),
            Some(n) => {
                let detail = format!(
                    "custom field '{n}' does not exist in CC; create it there, or set worker.create_custom_fields = true"
                );
                let d = Disposition::DeadLetter {
                    reason: Reason::UnknownCustomField,
                    detail,
                };
                apply(settler, vec![e], d).await;
            }
        }
    }
    Ok((keep, ids))
}

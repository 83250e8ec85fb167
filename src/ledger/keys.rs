//! Where an email's facts live: its hash, its keys, and the script-call groups of a claim.

use aws_lc_rs::digest;

use super::Ledger;

impl Ledger {
    /// The key `<prefix>:<part>:<h>` of an email's hash `h` (`part`: `f` or `c`). On Redis
    /// Cluster it is `<prefix>:{<first two hex digits of h>}:<part>:<h>`: the tag puts an email's
    /// two keys (and the liveness keys of their claims) in one slot and spreads the emails over
    /// 256 slots (so over every master),
    /// while a claim of a 40,000-contact import still takes at most 256 script calls (one per
    /// tag, see [`Ledger::groups`]). One server keeps the untagged names, so an existing
    /// deployment keeps its ledger.
    pub(super) fn key(&self, part: &str, h: &str) -> String {
        // Built by hand, not with `format!`: a claim builds two keys per contact, and the
        // formatting machinery was a tenth of the worker's CPU in the overhead figure
        // (BENCHMARKS.md, profiling notes).
        let mut k = self.slot_prefix(h, part.len() + h.len() + 1);
        k.push_str(part);
        k.push(':');
        k.push_str(h);
        k
    }

    /// `<prefix>:`, and on a cluster `{<first two hex digits of h>}:` after it (the slot of
    /// `h`'s keys), with room for `more` bytes.
    fn slot_prefix(&self, h: &str, more: usize) -> String {
        let mut k = String::with_capacity(self.prefix.len() + 6 + more);
        k.push_str(&self.prefix);
        k.push(':');
        if self.cluster {
            k.push('{');
            k.push_str(&h[..2]);
            k.push_str("}:");
        }
        k
    }

    /// Where `owner`'s liveness keys start for the emails of hash `h`: `<prefix>:live:` on one
    /// server, `<prefix>:{<tag of h>}:live:` on a cluster (beside the emails' hashes, so a claim
    /// script may check another owner's key: it shares the slot of the hash naming it).
    pub(super) fn live_prefix(&self, h: &str) -> String {
        let mut k = self.slot_prefix(h, 5 + 40);
        k.push_str("live:");
        k
    }

    /// `owner`'s liveness keys for `hashes`: one on a server, one per hash tag on a cluster.
    pub(super) fn live_keys(&self, owner: &str, hashes: &[String]) -> Vec<String> {
        let mut keys: Vec<String> = if self.cluster {
            let tags: std::collections::BTreeSet<&str> = hashes.iter().map(|h| &h[..2]).collect();
            tags.into_iter().map(|t| self.live_prefix(t)).collect()
        } else {
            vec![self.live_prefix("")]
        };
        for k in &mut keys {
            k.push_str(owner);
        }
        keys
    }

    /// The indices of `hashes` in script-call groups of at most 500 (so Redis is never blocked
    /// for long): in order on one server, per hash tag on a cluster (a script's keys must share
    /// a slot).
    pub(super) fn groups(&self, hashes: &[String]) -> Vec<Vec<usize>> {
        let all: Vec<usize> = (0..hashes.len()).collect();
        if !self.cluster {
            return all.chunks(500).map(<[usize]>::to_vec).collect();
        }
        let mut by_tag: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
        for (i, h) in hashes.iter().enumerate() {
            by_tag.entry(&h[..2]).or_default().push(i);
        }
        by_tag
            .into_values()
            .flat_map(|v| v.chunks(500).map(<[usize]>::to_vec).collect::<Vec<_>>())
            .collect()
    }

    /// The 128-bit hex name of an (account, email): Redis never holds an address in clear.
    pub(super) fn hash(account: &str, email: &str) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(account.as_bytes());
        ctx.update(b"\n");
        ctx.update(email.as_bytes());
        let d = ctx.finish();
        let mut out = String::with_capacity(32);
        for &b in &d.as_ref()[..16] {
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        out
    }
}

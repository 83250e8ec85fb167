//! Where an email's facts live: its hash, its keys, and the script-call groups of a claim.

use aws_lc_rs::digest;

use super::Ledger;

impl Ledger {
    /// The key `<prefix>:<part>:<h>` of an email's hash `h` (`part`: `f`, `fly` or `c`). On Redis
    /// Cluster it is `<prefix>:{<first two hex digits of h>}:<part>:<h>`: the tag puts an email's
    /// three keys in one slot and spreads the emails over 256 slots (so over every master),
    /// while a claim of a 40,000-contact import still takes at most 256 script calls (one per
    /// tag, see [`Ledger::groups`]). One server keeps the untagged names, so an existing
    /// deployment keeps its ledger.
    pub(super) fn key(&self, part: &str, h: &str) -> String {
        // Built by hand, not with `format!`: a claim builds three keys per contact, and the
        // formatting machinery was a tenth of the worker's CPU in the overhead figure
        // (BENCHMARKS.md, profiling notes).
        let mut k = String::with_capacity(self.prefix.len() + part.len() + h.len() + 8);
        k.push_str(&self.prefix);
        k.push(':');
        if self.cluster {
            k.push('{');
            k.push_str(&h[..2]);
            k.push_str("}:");
        }
        k.push_str(part);
        k.push(':');
        k.push_str(h);
        k
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

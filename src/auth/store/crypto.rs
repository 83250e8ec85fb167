//! The token set at rest: AES-256-GCM (aws-lc-rs) with a random 96-bit nonce per write and
//! `ccsync-tokenset-v1|{account}|{generation}` as associated data, so a blob only opens under the
//! account and generation it was written for. Without a key the set is stored as `plain:` JSON
//! (`config check` warns).

use base64::Engine as _;

use super::{Store, StoreError};
use crate::auth::tokenset::TokenSet;

const AAD_TAG: &str = "ccsync-tokenset-v1";

impl Store {
    fn aad(account: &str, generation: u64) -> String {
        format!("{AAD_TAG}|{account}|{generation}")
    }

    /// Serialize (and encrypt, when a key is configured) a set for storage.
    pub(crate) fn seal(&self, account: &str, set: &TokenSet) -> Result<String, StoreError> {
        let json = set.to_json();
        let Some(key) = &self.key else {
            let text =
                String::from_utf8(json).map_err(|e| StoreError::Unreadable(e.to_string()))?;
            return Ok(format!("plain:{text}"));
        };
        use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
        let k = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, key)
                .map_err(|_| StoreError::Unreadable("bad key".into()))?,
        );
        // A random 96-bit nonce per write: writes are rare (one per refresh), far below the
        // 2^32 messages where random GCM nonces start to risk a collision.
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| StoreError::Unreadable("no randomness".into()))?;
        let mut buf = json;
        k.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(Self::aad(account, set.generation).as_bytes()),
            &mut buf,
        )
        .map_err(|_| StoreError::Unreadable("encryption failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(format!(
            "aes256gcm:{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        ))
    }

    /// The inverse of [`Store::seal`]; `generation` is the clear `gen` field, checked against the
    /// AAD and the decrypted content.
    pub(crate) fn open(
        &self,
        account: &str,
        generation: u64,
        blob: &str,
    ) -> Result<TokenSet, StoreError> {
        let set = if let Some(text) = blob.strip_prefix("plain:") {
            // A clear set while a key is configured: accepted (migration from an unencrypted
            // deployment); the next refresh writes it encrypted.
            TokenSet::from_json(text.as_bytes())
                .map_err(|e| StoreError::Unreadable(format!("corrupt token set: {e}")))?
        } else if let Some(b64) = blob.strip_prefix("aes256gcm:") {
            let Some(key) = &self.key else {
                return Err(StoreError::Unreadable(
                    "the token set is encrypted but CCSYNC_TOKEN_ENCRYPTION_KEY is not set".into(),
                ));
            };
            use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| StoreError::Unreadable("corrupt ciphertext encoding".into()))?;
            if raw.len() < NONCE_LEN + 16 {
                return Err(StoreError::Unreadable("ciphertext too short".into()));
            }
            let (n, ct) = raw.split_at(NONCE_LEN);
            let mut nonce = [0u8; NONCE_LEN];
            nonce.copy_from_slice(n);
            let k = LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, key)
                    .map_err(|_| StoreError::Unreadable("bad key".into()))?,
            );
            let mut buf = ct.to_vec();
            let plain = k
                .open_in_place(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(Self::aad(account, generation).as_bytes()),
                    &mut buf,
                )
                .map_err(|_| {
                    StoreError::Unreadable(
                        "cannot decrypt the token set (wrong CCSYNC_TOKEN_ENCRYPTION_KEY, or data tampered with)"
                            .into(),
                    )
                })?;
            TokenSet::from_json(plain)
                .map_err(|e| StoreError::Unreadable(format!("corrupt token set: {e}")))?
        } else {
            return Err(StoreError::Unreadable("unknown token set format".into()));
        };
        if set.generation != generation {
            return Err(StoreError::Unreadable(
                "token set generation does not match its record".into(),
            ));
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::tokenset::{AccessToken, RefreshMode, RefreshToken};

    fn set(g: u64) -> TokenSet {
        TokenSet::from_grant(
            AccessToken::new("access-XYZ"),
            RefreshToken::new("refresh-ABC"),
            Some(60),
            RefreshMode::Rotating,
            g,
            1000,
        )
    }

    fn store(key: Option<[u8; 32]>) -> Store {
        // The pool connects lazily; these tests never touch Redis.
        Store::new(
            crate::redis::Redis::from_settings(&crate::config::Settings::from_pairs([]).unwrap())
                .unwrap(),
            "t",
            key,
        )
    }

    #[tokio::test]
    async fn sealed_blob_is_ciphertext_bound_to_account_and_generation() {
        let s = store(Some([7u8; 32]));
        let blob = s.seal("acct", &set(3)).unwrap();
        assert!(blob.starts_with("aes256gcm:"));
        assert!(!blob.contains("access-XYZ") && !blob.contains("refresh-ABC"));
        assert_eq!(s.open("acct", 3, &blob).unwrap().generation, 3);
        // Replayed under another generation or account: authentication fails.
        assert!(s.open("acct", 4, &blob).is_err());
        assert!(s.open("other", 3, &blob).is_err());
        // Wrong key or no key.
        assert!(store(Some([8u8; 32])).open("acct", 3, &blob).is_err());
        assert!(store(None).open("acct", 3, &blob).is_err());
        // Two seals of the same set differ (random nonce).
        assert_ne!(blob, s.seal("acct", &set(3)).unwrap());
    }

    #[tokio::test]
    async fn plain_blob_roundtrips() {
        let s = store(None);
        let blob = s.seal("a", &set(1)).unwrap();
        assert!(blob.starts_with("plain:"));
        assert_eq!(s.open("a", 1, &blob).unwrap().access.expose(), "access-XYZ");
        assert!(s.open("a", 2, &blob).is_err());
    }
}

//! Bearer tokens. A token is shown once; only its SHA-256 is stored. Vendor keys and sandbox
//! tokens carry the id of what they open (`tdv_<vendor>_<secret>`, `tds_<sandbox>_<secret>`),
//! so checking one is a lookup by primary key and a constant-time comparison of hashes, never
//! a search by secret. The secret part is 256 random bits.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{SandboxId, VendorId};

const VENDOR_PREFIX: &str = "tdv_";
const SANDBOX_PREFIX: &str = "tds_";
const ADMIN_PREFIX: &str = "tda_";

/// A freshly issued token, in clear. Its `Debug` never shows the secret, so it cannot end up
/// in a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken(String);

impl IssuedToken {
    pub fn for_vendor(id: VendorId) -> Self {
        IssuedToken(format!(
            "{VENDOR_PREFIX}{}_{}",
            id.simple(),
            random_secret()
        ))
    }

    pub fn for_sandbox(id: SandboxId) -> Self {
        IssuedToken(format!(
            "{SANDBOX_PREFIX}{}_{}",
            id.simple(),
            random_secret()
        ))
    }

    pub fn for_admin() -> Self {
        IssuedToken(format!("{ADMIN_PREFIX}{}", random_secret()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash::of(&self.0)
    }
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IssuedToken(…)")
    }
}

fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256 of a token. Tokens are high-entropy, so a fast hash is enough; what matters is that
/// a database dump does not hand out working credentials.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    pub fn of(token: &str) -> Self {
        TokenHash(Sha256::digest(token.as_bytes()).into())
    }

    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(raw: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(raw, &mut out).ok()?;
        Some(TokenHash(out))
    }

    /// Whether `presented` is the token this hash was made from, in time independent of where
    /// the two differ.
    pub fn matches(&self, presented: &str) -> bool {
        TokenHash::of(presented).0.ct_eq(&self.0).into()
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(…)")
    }
}

/// What a presented bearer token claims to be, read from its shape alone. The claim still has
/// to be checked against the stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Vendor(VendorId),
    Sandbox(SandboxId),
    /// Anything else: only the admin token can match it.
    Other,
}

impl Claim {
    pub fn of(presented: &str) -> Claim {
        let id_part = |rest: &str| rest.split_once('_').map(|(id, _)| id.to_string());
        if let Some(rest) = presented.strip_prefix(VENDOR_PREFIX) {
            if let Some(id) = id_part(rest).and_then(|id| VendorId::from_simple(&id)) {
                return Claim::Vendor(id);
            }
        } else if let Some(rest) = presented.strip_prefix(SANDBOX_PREFIX)
            && let Some(id) = id_part(rest).and_then(|id| SandboxId::from_simple(&id))
        {
            return Claim::Sandbox(id);
        }
        Claim::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_claim_their_owner_and_match_their_hash() {
        let vendor = VendorId::new();
        let key = IssuedToken::for_vendor(vendor);
        assert_eq!(Claim::of(key.expose()), Claim::Vendor(vendor));
        assert!(key.hash().matches(key.expose()));
        assert!(!key.hash().matches(&format!("{}x", key.expose())));

        let sandbox = SandboxId::new();
        let token = IssuedToken::for_sandbox(sandbox);
        assert_eq!(Claim::of(token.expose()), Claim::Sandbox(sandbox));
        assert_eq!(Claim::of("tds_nothex_abc"), Claim::Other);
        assert_eq!(Claim::of("whatever"), Claim::Other);
    }

    #[test]
    fn secrets_are_long_and_distinct() {
        let a = IssuedToken::for_admin();
        let b = IssuedToken::for_admin();
        assert_ne!(a, b);
        // 32 random bytes in unpadded base64url.
        assert_eq!(a.expose().len(), ADMIN_PREFIX.len() + 43);
        assert_eq!(format!("{a:?}"), "IssuedToken(…)");
    }

    #[test]
    fn hashes_round_trip_through_hex() {
        let h = TokenHash::of("x");
        assert_eq!(TokenHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(TokenHash::from_hex("zz"), None);
    }
}

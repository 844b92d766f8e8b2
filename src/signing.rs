//! The service's signing key: Ed25519, kept in the data directory (mode 0600) so that
//! deletion receipts stay verifiable across restarts. A receipt is handed out as the exact
//! bytes that were signed, beside the signature; `GET /v1/receipt-key` gives the public key.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::pkcs8::EncodePublicKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::{Signer, SigningKey};
use serde::Serialize;

use crate::domain::receipt::Receipt;

/// The service's receipt signing key: Ed25519, kept in the data directory (mode 0600) so
/// receipts stay verifiable across restarts.
pub struct ReceiptKey {
    key: SigningKey,
}

/// A receipt as handed out: the exact bytes that were signed, and the signature.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SignedReceipt {
    pub receipt: Receipt,
    /// The receipt's JSON exactly as signed, base64 (verify these bytes, not a re-encoding).
    pub signed: String,
    /// Ed25519 signature of the decoded `signed` bytes, base64.
    pub signature: String,
    pub algorithm: &'static str,
    /// Where the public key is: `GET /v1/receipt-key`.
    pub key: &'static str,
}

/// The public half, for verifiers.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PublicReceiptKey {
    pub algorithm: &'static str,
    /// The raw 32-byte public key, base64.
    pub public_key: String,
    /// The same key as a PEM `PUBLIC KEY` (SPKI), for `openssl pkeyutl -verify`.
    pub pem: String,
}

impl ReceiptKey {
    /// Loads the key from `path`, or makes and stores a new one.
    pub fn load_or_create(path: &Path) -> std::io::Result<ReceiptKey> {
        match std::fs::read_to_string(path) {
            Ok(stored) => {
                let bytes: [u8; 32] = hex::decode(stored.trim())
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("{} does not hold an Ed25519 key", path.display()),
                        )
                    })?;
                Ok(ReceiptKey {
                    key: SigningKey::from_bytes(&bytes),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret: [u8; 32] = rand::random();
                crate::secrets::write_secret(path, &hex::encode(secret))?;
                Ok(ReceiptKey {
                    key: SigningKey::from_bytes(&secret),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// A new key, as the hex text it is kept as.
    pub fn new_hex() -> String {
        hex::encode(rand::random::<[u8; 32]>())
    }

    /// The key kept as hex text (`new_hex`).
    pub fn from_hex(stored: &str) -> Option<ReceiptKey> {
        let bytes: [u8; 32] = hex::decode(stored.trim()).ok()?.try_into().ok()?;
        Some(ReceiptKey {
            key: SigningKey::from_bytes(&bytes),
        })
    }

    pub fn sign(&self, receipt: Receipt) -> SignedReceipt {
        let bytes = serde_json::to_vec(&receipt).expect("a receipt serialises");
        let signature = self.key.sign(&bytes);
        SignedReceipt {
            receipt,
            signed: BASE64.encode(&bytes),
            signature: BASE64.encode(signature.to_bytes()),
            algorithm: "Ed25519",
            key: "/v1/receipt-key",
        }
    }

    pub fn public(&self) -> PublicReceiptKey {
        let public = self.key.verifying_key();
        PublicReceiptKey {
            algorithm: "Ed25519",
            public_key: BASE64.encode(public.to_bytes()),
            pem: public
                .to_public_key_pem(LineEnding::LF)
                .expect("an Ed25519 public key encodes"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{EndReason, Sandbox, Timestamp};

    #[test]
    fn receipts_are_signed_over_the_exact_bytes_handed_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("receipt-key");
        let key = ReceiptKey::load_or_create(&path).unwrap();
        let again = ReceiptKey::load_or_create(&path).unwrap();
        assert_eq!(
            key.public().public_key,
            again.public().public_key,
            "kept across restarts"
        );

        let mut sandbox = Sandbox::example();
        sandbox.ended_at = Some(Timestamp::from_millis(5_000));
        sandbox.end_reason = Some(EndReason::EndedByProspect);
        sandbox.data_deleted_at = Some(Timestamp::from_millis(5_300));
        let signed = key.sign(Receipt::of(&sandbox, &[]).unwrap());
        let bytes = BASE64.decode(&signed.signed).unwrap();
        let raw: [u8; 64] = BASE64
            .decode(&signed.signature)
            .unwrap()
            .try_into()
            .unwrap();
        let verifier = ed25519_dalek::VerifyingKey::from_bytes(
            &BASE64
                .decode(key.public().public_key)
                .unwrap()
                .try_into()
                .unwrap(),
        )
        .unwrap();
        let signature = ed25519_dalek::Signature::from_bytes(&raw);
        assert!(verifier.verify_strict(&bytes, &signature).is_ok());
        let mut tampered = bytes.clone();
        tampered[10] ^= 1;
        assert!(verifier.verify_strict(&tampered, &signature).is_err());
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
            serde_json::to_value(&signed.receipt).unwrap()
        );
    }
}

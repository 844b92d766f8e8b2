//! The deletion receipt: after a sandbox ends, when each copy of the prospect's files and
//! each Engine object was destroyed. Built from the sandbox record and its lifecycle
//! history, which the teardown writes as each removal happens, and signed with the
//! service's Ed25519 key so anyone holding the public key can check it was not altered.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::pkcs8::EncodePublicKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::{Signer, SigningKey};
use serde::Serialize;

use super::{Lifecycle, LifecycleError, Result};
use crate::domain::{EndReason, SandboxId, Timestamp};
use crate::store::{Event, Sandbox};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Receipt {
    #[schema(value_type = String, format = Uuid)]
    pub sandbox_id: SandboxId,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub ended_at: Timestamp,
    pub end_reason: EndReason,
    pub files: Vec<FileReceipt>,
    /// When the sandbox's container was removed; the teardown's end if it was gone already
    /// (it crashed away, or was never made).
    #[schema(value_type = String, format = DateTime)]
    pub container_removed_at: Timestamp,
    /// When the data volume holding the files was removed (likewise).
    #[schema(value_type = String, format = DateTime)]
    pub volumes_removed_at: Timestamp,
    /// When nothing of the sandbox was left: no container, volume or spooled upload.
    #[schema(value_type = String, format = DateTime)]
    pub data_deleted_at: Timestamp,
}

/// One uploaded file and the two places it was ever kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FileReceipt {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
    /// The upload spool on the service's disk: deleted as soon as the files were in the
    /// sandbox, or at the teardown.
    #[schema(value_type = String, format = DateTime)]
    pub spool_copy_deleted_at: Timestamp,
    /// The sandbox's data volume; `null` when the files never reached it.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub sandbox_copy_deleted_at: Option<Timestamp>,
}

impl Receipt {
    /// The receipt of an ended sandbox whose data is deleted; `None` before that.
    pub fn of(sandbox: &Sandbox, events: &[Event]) -> Option<Receipt> {
        let ended_at = sandbox.ended_at?;
        let end_reason = sandbox.end_reason?;
        let data_deleted_at = sandbox.data_deleted_at?;
        // Teardown may run more than once (a retry, a restart): the first removal counts.
        let first = |kind: &str| events.iter().find(|e| e.kind == kind).map(|e| e.at);
        let placed = first("data_placed");
        let volumes_removed_at = first("volumes_removed").unwrap_or(data_deleted_at);
        let files = sandbox
            .files
            .iter()
            .map(|f| FileReceipt {
                name: f.name.clone(),
                bytes: f.bytes,
                sha256: f.sha256.clone(),
                spool_copy_deleted_at: placed.unwrap_or(data_deleted_at),
                sandbox_copy_deleted_at: placed.map(|_| volumes_removed_at),
            })
            .collect();
        Some(Receipt {
            sandbox_id: sandbox.id,
            created_at: sandbox.created_at,
            ended_at,
            end_reason,
            files,
            container_removed_at: first("container_removed").unwrap_or(data_deleted_at),
            volumes_removed_at,
            data_deleted_at,
        })
    }
}

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
                crate::app::write_secret(path, &hex::encode(secret))?;
                Ok(ReceiptKey {
                    key: SigningKey::from_bytes(&secret),
                })
            }
            Err(e) => Err(e),
        }
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

impl Lifecycle {
    /// The sandbox's deletion receipt; `NotEnded` while any of its data may still exist.
    pub async fn receipt(&self, sandbox: &Sandbox) -> Result<Receipt> {
        let events = self.inner.store.events(sandbox.id).await?;
        Receipt::of(sandbox, &events).ok_or(LifecycleError::NotEnded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::FileRecord;

    fn event(at: i64, kind: &str) -> Event {
        Event {
            at: Timestamp::from_millis(at),
            kind: kind.to_string(),
            detail: None,
        }
    }

    fn ended(sandbox: &mut Sandbox) {
        sandbox.ended_at = Some(Timestamp::from_millis(5_000));
        sandbox.end_reason = Some(EndReason::EndedByProspect);
        sandbox.data_deleted_at = Some(Timestamp::from_millis(5_300));
    }

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
        ended(&mut sandbox);
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

    #[test]
    fn no_receipt_until_the_data_is_deleted() {
        let mut sandbox = Sandbox::example();
        assert_eq!(Receipt::of(&sandbox, &[]), None);
        sandbox.ended_at = Some(Timestamp::from_millis(5_000));
        sandbox.end_reason = Some(EndReason::Expired);
        assert_eq!(
            Receipt::of(&sandbox, &[]),
            None,
            "ended, but not yet deleted"
        );
    }

    #[test]
    fn each_copy_is_dated_by_its_own_removal() {
        let mut sandbox = Sandbox::example();
        sandbox.files = vec![FileRecord {
            name: "a.csv".into(),
            bytes: 3,
            sha256: "ab".into(),
        }];
        ended(&mut sandbox);
        let events = [
            event(1_000, "created"),
            event(1_100, "data_placed"),
            event(5_000, "ended_by_prospect"),
            event(5_100, "container_removed"),
            event(5_200, "volumes_removed"),
            // A second teardown after a restart must not move the dates.
            event(9_000, "container_removed"),
            event(5_300, "data_deleted"),
        ];
        let receipt = Receipt::of(&sandbox, &events).unwrap();
        assert_eq!(receipt.container_removed_at.millis(), 5_100);
        assert_eq!(receipt.volumes_removed_at.millis(), 5_200);
        let file = &receipt.files[0];
        assert_eq!(file.spool_copy_deleted_at.millis(), 1_100);
        assert_eq!(
            file.sandbox_copy_deleted_at.map(|t| t.millis()),
            Some(5_200)
        );
    }

    #[test]
    fn files_that_never_reached_the_sandbox_have_one_copy() {
        let mut sandbox = Sandbox::example();
        sandbox.files = vec![FileRecord {
            name: "a.csv".into(),
            bytes: 3,
            sha256: "ab".into(),
        }];
        ended(&mut sandbox);
        let receipt = Receipt::of(&sandbox, &[event(1_000, "created")]).unwrap();
        let file = &receipt.files[0];
        assert_eq!(file.spool_copy_deleted_at.millis(), 5_300);
        assert_eq!(file.sandbox_copy_deleted_at, None);
        assert_eq!(receipt.container_removed_at.millis(), 5_300);
    }
}

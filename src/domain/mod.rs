//! Domain types. Everything that comes from outside (HTTP bodies, form fields, manifests)
//! becomes one of these only through a `parse` that enforces every rule, so a handler cannot
//! forget a check and the fuzz targets have one door to hit. The records the store keeps
//! (vendor, demo, sandbox, warm member, event, delivery) live here too, with the pure
//! functions over them (the deletion receipt, the trial report): no layer above has to be
//! asked what a sandbox is.

pub mod access;
pub mod conversation;
pub mod demo;
pub mod event;
pub mod ids;
pub mod image;
pub mod manifest;
pub mod node;
pub mod page;
pub mod pool;
pub mod profile;
pub mod receipt;
pub mod report;
pub mod sandbox;
pub mod service_event;
pub mod time;
pub mod token;
pub mod upload;
pub mod vendor;
pub mod webhook;

pub use access::{ImageGrant, RegistryLogin, StoredLogin, given_image};
pub use conversation::{
    Answers, ContactMessage, Funnel, Invitation, InvitationId, InvitationState, ProspectNote,
    Question,
};
pub use demo::{Demo, ImageStatus};
pub use event::{Ending, EventRecord, Failure, SandboxEvent};
pub use ids::{DemoId, SandboxId, VendorId};
pub use image::{ImageRef, RegistryServer};
pub use manifest::{DemoManifest, DemoSlug, DemoSpec, Policy, TrialWindow};
pub use node::{Node, NodeLoad, NodeName, NodeStatus};
pub use sandbox::{
    EndReason, FileRecord, NewSandbox, Prospect, Received, Sandbox, SandboxStatus, Usage,
};
pub use service_event::{ServiceEvent, ServiceEventRecord};
pub use time::Timestamp;
pub use upload::{StagedFile, UploadName, UploadRules};
pub use vendor::{Vendor, VendorName, WebhookUrl};

/// Input that is well-formed but breaks a rule: the API answers `422` with `field` and `reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    pub field: String,
    pub reason: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Text a person typed (titles, names, the information sheet): trimmed, bounded, and free of
/// control characters other than newlines and tabs where `multiline` allows them.
pub(crate) fn parse_text(
    field: &str,
    raw: &str,
    max_chars: usize,
    multiline: bool,
) -> Result<String, Invalid> {
    let text = raw.trim();
    if text.chars().count() > max_chars {
        return Err(Invalid::new(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    let allowed = |c: char| multiline && (c == '\n' || c == '\t' || c == '\r');
    if text.chars().any(|c| c.is_control() && !allowed(c)) {
        return Err(Invalid::new(field, "must not contain control characters"));
    }
    // Embeddings, overrides and isolates reorder how the text around them is shown: on a
    // page, a title could make "by Acme" read as something else. (LRM/RLM, which only
    // mark direction, are fine in right-to-left text.)
    if text
        .chars()
        .any(|c| matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
    {
        return Err(Invalid::new(
            field,
            "must not contain bidirectional embedding, override or isolate characters",
        ));
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_and_bounded() {
        assert_eq!(parse_text("t", "  hi ", 10, false).unwrap(), "hi");
        assert!(parse_text("t", "x".repeat(11).as_str(), 10, false).is_err());
        assert!(parse_text("t", "a\nb", 10, false).is_err());
        assert_eq!(parse_text("t", "a\nb", 10, true).unwrap(), "a\nb");
        assert!(parse_text("t", "a\0b", 10, true).is_err());
        // Found by fuzz/manifest (a title): text that shows reordered on the pages.
        assert!(parse_text("t", "Acme \u{202e}gnp.exe", 20, false).is_err());
        assert!(parse_text("t", "a\u{2066}b\u{2069}", 10, true).is_err());
        assert!(parse_text("t", "\u{5e9}\u{200f}x", 10, false).is_ok());
    }
}

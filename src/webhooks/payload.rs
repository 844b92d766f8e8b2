//! What a vendor's endpoint receives: which sandbox events are announced, the body that
//! announces one (built once, when the event is recorded, and sent as the same bytes on
//! every attempt), and its signature.

use hmac::{Hmac, Mac};
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};
use sha2::Sha256;

use crate::domain::webhook::NewDelivery;
use crate::domain::{Answers, Ending, Sandbox, SandboxEvent, Timestamp};

/// The webhook type announcing `event`, if vendors hear of it.
pub fn announced_as(event: &SandboxEvent) -> Option<&'static str> {
    Some(match event {
        SandboxEvent::Created { .. } => "sandbox.created",
        SandboxEvent::Ready { .. } => "sandbox.ready",
        SandboxEvent::Extended { .. } => "sandbox.extended",
        SandboxEvent::Ended {
            ending: Ending::Failed(_),
            ..
        } => "sandbox.failed",
        SandboxEvent::Ended { .. } => "sandbox.ended",
        SandboxEvent::Feedback { .. } => "sandbox.feedback",
        SandboxEvent::ContactRequested { .. } => "prospect.contact_requested",
        _ => return None,
    })
}

#[derive(Serialize)]
struct Body<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    at: Timestamp,
    sandbox: SandboxPayload<'a>,
    /// `sandbox.feedback`: the answers to the demo's exit questions.
    #[serde(skip_serializing_if = "Option::is_none")]
    feedback: Option<Feedback<'a>>,
    /// `prospect.contact_requested`: what the prospect wrote (their email and company are
    /// in `sandbox.prospect`, when they gave them).
    #[serde(skip_serializing_if = "Option::is_none")]
    contact: Option<Contact<'a>>,
}

#[derive(Serialize)]
struct Feedback<'a> {
    answers: &'a Answers,
}

#[derive(Serialize)]
struct Contact<'a> {
    message: &'a str,
}

/// The sandbox as the vendor sees it: its state and times, the information sheet, the
/// invitation and answers, and the files' names, sizes and hashes; never its token or
/// address.
struct SandboxPayload<'a>(&'a Sandbox);

impl Serialize for SandboxPayload<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let sandbox = self.0;
        let mut out = serializer.serialize_struct("Sandbox", 13)?;
        out.serialize_field("id", &sandbox.id)?;
        out.serialize_field("demo_id", &sandbox.demo_id)?;
        out.serialize_field("status", &sandbox.status)?;
        out.serialize_field("created_at", &sandbox.created_at)?;
        out.serialize_field("ready_at", &sandbox.ready_at)?;
        out.serialize_field("expires_at", &sandbox.expires_at)?;
        out.serialize_field("ended_at", &sandbox.ended_at)?;
        out.serialize_field("end_reason", &sandbox.end_reason)?;
        out.serialize_field("data_deleted_at", &sandbox.data_deleted_at)?;
        out.serialize_field("prospect", &sandbox.prospect)?;
        out.serialize_field("invitation_id", &sandbox.invitation_id)?;
        out.serialize_field("answers", &sandbox.answers)?;
        out.serialize_field("files", &sandbox.files)?;
        out.end()
    }
}

/// The delivery announcing `event` of `sandbox`, as the sandbox is now; `None` for an
/// event vendors do not hear of.
pub fn delivery(event: &SandboxEvent, at: Timestamp, sandbox: &Sandbox) -> Option<NewDelivery> {
    let webhook_type = announced_as(event)?;
    let id = uuid::Uuid::now_v7().to_string();
    let body = Body {
        id: &id,
        kind: webhook_type,
        at,
        sandbox: SandboxPayload(sandbox),
        feedback: match event {
            SandboxEvent::Feedback { answers } => Some(Feedback { answers }),
            _ => None,
        },
        contact: match event {
            SandboxEvent::ContactRequested { message } => Some(Contact {
                message: message.as_str(),
            }),
            _ => None,
        },
    };
    Some(NewDelivery {
        body: serde_json::to_string(&body).expect("a webhook body serialises"),
        id,
        vendor_id: sandbox.vendor_id,
        kind: webhook_type.to_string(),
    })
}

/// `sha256=<hex>` of the HMAC-SHA256 of `body` with `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_of_the_exact_body() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn lifecycle_changes_map_to_webhook_types() {
        let ended = |ending| SandboxEvent::ended(ending);
        assert_eq!(
            announced_as(&SandboxEvent::Ready { after_ms: 1 }),
            Some("sandbox.ready")
        );
        assert_eq!(announced_as(&ended(Ending::Expired)), Some("sandbox.ended"));
        assert_eq!(
            announced_as(&ended(Ending::EndedByAdmin)),
            Some("sandbox.ended")
        );
        assert_eq!(
            announced_as(&ended(Ending::failed("x"))),
            Some("sandbox.failed")
        );
        assert_eq!(announced_as(&SandboxEvent::Slept), None);
        assert_eq!(announced_as(&SandboxEvent::VolumesRemoved), None);
    }

    #[test]
    fn what_the_prospect_says_travels_in_its_own_field() {
        let sandbox = Sandbox::example();
        let at = Timestamp::from_millis(1);
        let answers = serde_json::from_value(serde_json::json!({"fit": "Yes"})).unwrap();
        let d = delivery(&SandboxEvent::Feedback { answers }, at, &sandbox).unwrap();
        let body: serde_json::Value = serde_json::from_str(&d.body).unwrap();
        assert_eq!(body["type"], "sandbox.feedback");
        assert_eq!(body["feedback"]["answers"]["fit"], "Yes");
        assert!(body.get("contact").is_none());
        assert_eq!(body["sandbox"]["answers"], serde_json::json!({}));
        let message = crate::domain::ContactMessage::parse("Call me").unwrap();
        let d = delivery(&SandboxEvent::ContactRequested { message }, at, &sandbox).unwrap();
        let body: serde_json::Value = serde_json::from_str(&d.body).unwrap();
        assert_eq!(body["type"], "prospect.contact_requested");
        assert_eq!(body["contact"]["message"], "Call me");
        assert!(body.get("feedback").is_none());
    }

    #[test]
    fn the_body_names_the_sandbox_and_the_type() {
        let sandbox = Sandbox::example();
        let d = delivery(&SandboxEvent::Loaded, Timestamp::from_millis(1), &sandbox);
        assert!(d.is_none(), "not announced");
        let d = delivery(
            &SandboxEvent::ended(Ending::Expired),
            Timestamp::from_millis(1),
            &sandbox,
        )
        .unwrap();
        let body: serde_json::Value = serde_json::from_str(&d.body).unwrap();
        assert_eq!(body["type"], "sandbox.ended");
        assert_eq!(body["id"], d.id.as_str());
        assert_eq!(body["sandbox"]["id"], sandbox.id.to_string());
        assert_eq!(d.vendor_id, sandbox.vendor_id);
    }
}

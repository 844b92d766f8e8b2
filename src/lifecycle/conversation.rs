//! What a prospect says during and after a trial: answers to the demo's exit questions,
//! and a request to talk to a person. Each is an event in the sandbox's history, announced
//! to the vendor's webhook in the same transaction; the report and the funnel read them
//! back from there.

use super::{Lifecycle, LifecycleError, Result};
use crate::domain::{Answers, ContactMessage, Sandbox, SandboxEvent};

/// Feedback and contact requests one trial may send each: enough to correct an answer or
/// to ask again, not enough to flood a vendor's inbox.
pub const MAX_PER_TRIAL: usize = 5;

impl Lifecycle {
    /// The prospect's answers to the demo's exit questions (checked against them by the
    /// caller); also after the trial ended.
    pub async fn feedback(&self, sandbox: &Sandbox, answers: Answers) -> Result<()> {
        self.say(sandbox, SandboxEvent::Feedback { answers }).await
    }

    /// The prospect asks to talk to a person.
    pub async fn contact(&self, sandbox: &Sandbox, message: ContactMessage) -> Result<()> {
        self.say(sandbox, SandboxEvent::ContactRequested { message })
            .await
    }

    async fn say(&self, sandbox: &Sandbox, event: SandboxEvent) -> Result<()> {
        let kind = event.kind();
        let most = MAX_PER_TRIAL as u32;
        // Counted and written in one statement: requests sent all at once cannot pass the
        // limit together.
        if !self
            .history()
            .record_within(sandbox, self.now(), event, most)
            .await?
        {
            return Err(LifecycleError::Enough(format!(
                "this trial has sent this {MAX_PER_TRIAL} times already"
            )));
        }
        metrics::counter!("testdrive_prospect_messages_total", "kind" => kind).increment(1);
        Ok(())
    }
}

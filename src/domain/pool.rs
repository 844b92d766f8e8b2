//! Warm pool members: containers of a demo started with no data and no owner, waiting for a
//! prospect. A member is not a sandbox (no token, deadline or data) until one claims it.

use super::{DemoId, DemoSpec, SandboxId, Timestamp};

/// A warm pool member about to be made.
#[derive(Clone, Debug)]
pub struct NewWarmMember {
    pub id: SandboxId,
    pub demo_id: DemoId,
    pub spec: DemoSpec,
    pub created_at: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WarmState {
    /// Its container is being made and started.
    Warming,
    /// Started and answering: may be claimed.
    Warm,
    /// Being removed.
    Draining,
}

impl WarmState {
    pub fn as_str(self) -> &'static str {
        match self {
            WarmState::Warming => "warming",
            WarmState::Warm => "warm",
            WarmState::Draining => "draining",
        }
    }

    pub fn parse(raw: &str) -> Option<WarmState> {
        Some(match raw {
            "warming" => WarmState::Warming,
            "warm" => WarmState::Warm,
            "draining" => WarmState::Draining,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug)]
pub struct WarmMember {
    pub id: SandboxId,
    pub demo_id: DemoId,
    /// The demo's spec when the member was made: only a member of the current spec is
    /// handed out.
    pub spec: DemoSpec,
    pub state: WarmState,
    pub addr_slot: u32,
    pub created_at: Timestamp,
}

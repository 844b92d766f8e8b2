//! Identifiers of vendors, demos and sandboxes: UUIDv7, so they sort by creation time.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Invalid;

macro_rules! id_type {
    ($name:ident, $what:literal) => {
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            pub fn new() -> Self {
                $name(Uuid::now_v7())
            }

            pub fn parse(raw: &str) -> Result<Self, Invalid> {
                Uuid::try_parse(raw.trim())
                    .map($name)
                    .map_err(|_| Invalid::new($what, concat!("is not a valid ", $what, " id")))
            }

            /// 32 hex digits without hyphens: used inside tokens and Docker object names.
            pub fn simple(&self) -> String {
                self.0.simple().to_string()
            }

            pub fn from_simple(raw: &str) -> Option<Self> {
                (raw.len() == 32)
                    .then(|| Uuid::try_parse(raw).ok().map($name))
                    .flatten()
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = Invalid;
            fn from_str(s: &str) -> Result<Self, Invalid> {
                Self::parse(s)
            }
        }
    };
}

id_type!(VendorId, "vendor");
id_type!(DemoId, "demo");
id_type!(SandboxId, "sandbox");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_text_and_simple_form() {
        let id = SandboxId::new();
        assert_eq!(SandboxId::parse(&id.to_string()).unwrap(), id);
        assert_eq!(SandboxId::from_simple(&id.simple()).unwrap(), id);
        assert!(SandboxId::parse("not-a-uuid").is_err());
        assert!(SandboxId::from_simple(&id.to_string()).is_none());
    }

    #[test]
    fn later_ids_sort_after_earlier_ones() {
        let a = DemoId::new();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = DemoId::new();
        assert!(a < b);
    }
}

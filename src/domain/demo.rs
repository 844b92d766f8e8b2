//! A demo: a vendor's image plus how to run it for one prospect (`DemoSpec`), as registered.

use super::{DemoId, DemoSpec, Timestamp, VendorId};

#[derive(Clone, Debug, PartialEq)]
pub struct Demo {
    pub id: DemoId,
    pub vendor_id: VendorId,
    pub spec: DemoSpec,
    /// A disabled demo is out of the catalog and takes no new trials.
    pub enabled: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

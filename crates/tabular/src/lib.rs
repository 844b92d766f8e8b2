//! What a prospect's file is, and how its table reads. One set of rules for testdrive (the
//! upload check and the vendor's report) and for the CSV Explorer demo, so the two never
//! disagree about a file: the same fixtures test both.
//!
//! Pure functions over bytes, no I/O and no dependencies.

pub mod cell;
pub mod dialect;
#[cfg(feature = "fixtures")]
pub mod fixtures;
pub mod layout;
pub mod sniff;

pub use cell::CellType;
pub use dialect::Dialect;

//! testdrive: try-before-you-buy sandboxes. A prospect uploads their own data and gets an
//! isolated, hardened copy of a vendor's product loaded with it, which is destroyed — with
//! every copy of the data — at the end of the trial window.
//!
//! The layers, each using only those below it (`scripts/check-layers` enforces this):
//!
//! | layer | modules | what it owns |
//! |---|---|---|
//! | wiring | `app`, `config`, `seed` | settings, start and stop, first-start seeding |
//! | HTTP | `http` (`api`, `pages`, `proxy` as siblings) | routes, callers, errors as problem documents, browser sessions, trial intake |
//! | services | `lifecycle`, `registry` | a sandbox's life (create, provision, sleep, wake, end, reconcile, warm pools); vendors and demos |
//! | outbound | `webhooks` | vendors' webhook URLs and the sender worker |
//! | resources | `store`, `engine`, `spool`, `signing`, `secrets`, `clock` | the database (one trait per aggregate), the runtime (the `Engine` trait), uploads on disk, the receipt key, secret files, time |
//! | domain | `domain` | types made only through `parse`, the records, the sandbox's events, and pure functions over them (receipt, report) |

pub mod app;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod engine;
pub mod http;
pub mod lifecycle;
pub mod registry;
pub mod sandbox_dirs;
pub mod secrets;
pub mod seed;
pub mod signing;
pub mod spool;
pub mod store;
pub mod webhooks;

#[cfg(test)]
mod layers;

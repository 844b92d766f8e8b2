//! testdrive: try-before-you-buy sandboxes. A prospect uploads their own data and gets an
//! isolated, hardened copy of a vendor's product loaded with it, which is destroyed — with
//! every copy of the data — at the end of the trial window.
//!
//! Layers, outermost first: `api` (HTTP), `registry` and `lifecycle` (the domain's
//! operations), `store` (the database) and `engine` (the Docker Engine). `domain` holds the
//! types they share; `spool` holds uploads on their way into a sandbox.

pub mod api;
pub mod app;
pub mod config;
pub mod domain;
pub mod engine;
pub mod lifecycle;
pub mod registry;
pub mod seed;
pub mod spool;
pub mod store;
pub mod web;

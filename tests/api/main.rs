//! Integration tests: the real HTTP server and the real Docker Engine. One test binary, so
//! one compile. The demo images must be built first (`sandbox-images/build`).

mod at_rest;
mod browser;
mod browser_origins;
mod cluster;
mod contract;
mod conversation;
mod conversation_browser;
mod crash;
mod disk_full;
mod engine_restart;
mod failures;
mod flow;
mod healing;
mod helpers;
mod images;
mod intake;
mod isolation;
mod isolation_net;
mod layout;
mod lifecycle;
mod listening;
mod neighbours;
mod origins;
mod ownership;
mod pages;
mod placement;
mod pool;
mod privacy;
mod private_engine;
mod process;
mod pulls;
mod screens;
mod tenancy;
mod test_registry;
mod webhook_ranges;

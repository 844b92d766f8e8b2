//! Integration tests: the real HTTP server and the real Docker Engine. One test binary, so
//! one compile. The demo images must be built first (`sandbox-images/build`).

mod browser;
mod contract;
mod crash;
mod flow;
mod helpers;
mod intake;
mod isolation;
mod lifecycle;
mod listening;
mod pages;
mod pool;
mod process;
mod tenancy;

//! Unit tests of the lifecycle's logic over the fake Engine, with time under the tests'
//! control: provisioning, the one end path, sleep and wake, warm pools, the reconciler,
//! demos' images, and the races between them. (The integration tests in `tests/` prove the
//! same against the real Engine.)

mod disk;
mod ending;
mod harness;
mod images;
mod pools;
mod provisioning;
mod pulls;
mod reconcile;
mod sleep;

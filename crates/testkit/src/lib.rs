//! What testdrive's tests start on one machine beside the service: a real PostgreSQL
//! server in a temporary directory (`postgres`) and a second Docker Engine with its own
//! socket, data root and bridge (`engine`). Each stops and removes what it made when
//! dropped, and dies with the test process if that is killed.

pub mod engine;
pub mod postgres;

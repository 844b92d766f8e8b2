//! A second Docker Engine for tests (to be written).

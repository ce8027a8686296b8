//! The in-process tier: the gateway's parts driven directly, with real plugins built
//! from source but no sockets, so a failure points at one part. The chain runner here;
//! the reload planner, the snapshot and the error map have unit tests in the gateway
//! crate; everything end to end is in `tests/e2e`.

mod chain;
mod kv_redis;

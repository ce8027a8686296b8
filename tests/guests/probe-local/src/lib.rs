//! The probe test plugin (see `probe`'s crate docs for its modes) without the `fetch`
//! mode: it imports nothing that can wait, so the gateway instantiates and calls it
//! directly, not on a fiber. Tests run the same modes through both.

include!("../../probe.rs");

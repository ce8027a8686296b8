//! Version `b` of the hot-swap test plugin.

const VERSION: &str = "b";

include!("../../swap.rs");

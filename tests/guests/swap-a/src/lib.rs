//! Version `a` of the hot-swap test plugin.

const VERSION: &str = "a";

include!("../../swap.rs");

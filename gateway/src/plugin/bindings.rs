//! Host bindings for the `weir:plugin` world, generated from `wit/` by wasmtime's
//! `bindgen!`. Only the items the host needs are re-exported.

mod generated {
    wasmtime::component::bindgen!({
        path: "../plugin-sdk/wit",
        world: "plugin",
        imports: {
            "weir:plugin/http-client.call": async | trappable,
            "weir:plugin/http-client.call-all": async | trappable,
            default: trappable,
        },
        exports: { default: async },
    });
}

/// The same world with the key-value functions `async`: linked over the synchronous
/// ones when the store is in Redis, where each call awaits a round trip. Only its `kv`
/// interface is used.
mod generated_remote_kv {
    wasmtime::component::bindgen!({
        path: "../plugin-sdk/wit",
        world: "plugin",
        imports: {
            "weir:plugin/kv.get": async | trappable,
            "weir:plugin/kv.set": async | trappable,
            "weir:plugin/kv.increment": async | trappable,
            "weir:plugin/kv.compare-and-swap": async | trappable,
            "weir:plugin/kv.delete": async | trappable,
            "weir:plugin/kv.try-set": async | trappable,
            "weir:plugin/kv.try-increment": async | trappable,
            "weir:plugin/kv.try-compare-and-swap": async | trappable,
            "weir:plugin/http-client.call": async | trappable,
            "weir:plugin/http-client.call-all": async | trappable,
            default: trappable,
        },
        exports: { default: async },
    });
}

pub(crate) use generated::Plugin;
pub(crate) use generated::weir::plugin::{host, http_client, kv, metrics, types};
pub(crate) use generated_remote_kv::weir::plugin::kv as remote_kv;

//! Host bindings for the `weir:plugin` world, generated from `wit/` by wasmtime's
//! `bindgen!`. Only the items the host needs are re-exported.

mod generated {
    wasmtime::component::bindgen!({
        path: "../plugin-sdk/wit",
        world: "plugin",
        imports: {
            "weir:plugin/http-client.call": async | trappable,
            default: trappable,
        },
        exports: { default: async },
    });
}

pub(crate) use generated::Plugin;
pub(crate) use generated::weir::plugin::{host, http_client, kv, metrics, types};

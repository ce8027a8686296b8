//! The `wit-bindgen` output for the `weir:plugin` world. Hidden: plugin authors use the
//! crate's own types and the [`export_plugin!`](crate::export_plugin) macro.

wit_bindgen::generate!({
    path: "wit",
    world: "plugin",
    pub_export_macro: true,
    export_macro_name: "__export_weir_plugin",
    default_bindings_module: "weir_plugin_sdk::__bindings",
});

//! The `#[plugin]` attribute of [`weir-plugin-sdk`](https://docs.rs/weir-plugin-sdk):
//! use it through that crate (`#[weir_plugin_sdk::plugin]`), not directly.

use proc_macro::TokenStream;
use quote::quote;
use syn::{ImplItem, ItemImpl, parse_macro_input};

/// Marks the `impl Plugin for X` block of a plugin: the phases the gateway calls are the
/// `on_*` methods written in the block (no list to keep), and `X` is exported as the
/// component's plugin when built for WebAssembly. Use it once per plugin crate.
#[proc_macro_attribute]
pub fn plugin(args: TokenStream, input: TokenStream) -> TokenStream {
    if !args.is_empty() {
        let args = proc_macro2::TokenStream::from(args);
        return syn::Error::new_spanned(args, "`#[plugin]` takes no arguments")
            .to_compile_error()
            .into();
    }
    let mut block = parse_macro_input!(input as ItemImpl);
    let is_plugin = block
        .trait_
        .as_ref()
        .and_then(|(_, path, _)| path.segments.last())
        .is_some_and(|last| last.ident == "Plugin");
    if !is_plugin {
        return syn::Error::new_spanned(
            &block.self_ty,
            "`#[plugin]` goes on the `impl Plugin for YourType` block",
        )
        .to_compile_error()
        .into();
    }
    let methods: Vec<String> = block
        .items
        .iter()
        .filter_map(|item| match item {
            ImplItem::Fn(f) => Some(f.sig.ident.to_string()),
            _ => None,
        })
        .filter(|name| name.starts_with("on_"))
        .collect();
    let phases = methods
        .iter()
        .map(|name| quote! { ::weir_plugin_sdk::__private::phase_of(#name) });
    let item: ImplItem = syn::parse_quote! {
        #[doc(hidden)]
        const __PHASES_FROM_PLUGIN_ATTRIBUTE: &'static [::weir_plugin_sdk::Phase] = &[#(#phases),*];
    };
    block.items.push(item);
    let self_ty = &block.self_ty;
    quote! {
        #block
        #[cfg(target_family = "wasm")]
        ::weir_plugin_sdk::__export_plugin!(#self_ty);
    }
    .into()
}

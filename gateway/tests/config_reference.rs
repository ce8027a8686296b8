//! Every key the config file accepts is documented in `docs/configuration.md`.
//!
//! The keys are read from the schema's source (`gateway/src/config/`): the fields of
//! every struct that derives `Deserialize` or has a hand-written `Deserialize` impl,
//! under their `#[serde(rename = "...")]` names, and the names a hand-written visitor
//! accepts (a `const FIELDS: &[&str]`). A key counts as documented when the reference
//! shows it as code: `` `key` `` in the text, or `key = ` in a TOML example.

use std::collections::BTreeSet;
use std::path::Path;

use syn::{Attribute, Fields, Item, ItemConst, ItemImpl};

/// `rename = "..."` inside a `#[serde(...)]` attribute, if any.
fn serde_rename(attrs: &[Attribute]) -> Option<String> {
    let mut renamed = None;
    for attr in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        let _ = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("rename") {
                let value: syn::LitStr = meta.value()?.parse()?;
                renamed = Some(value.value());
            } else if meta.input.peek(syn::Token![=]) {
                // `with = "..."`, `default = "..."`: skip the value.
                let _: syn::Expr = meta.value()?.parse()?;
            }
            Ok(())
        });
    }
    renamed
}

fn derives_deserialize(attrs: &[Attribute]) -> bool {
    attrs
        .iter()
        .filter(|a| a.path().is_ident("derive"))
        .any(|a| {
            let mut found = false;
            let _ = a.parse_nested_meta(|meta| {
                found |= meta
                    .path
                    .segments
                    .last()
                    .is_some_and(|s| s.ident == "Deserialize");
                Ok(())
            });
            found
        })
}

/// The names of types with a hand-written `impl Deserialize for NAME`.
fn hand_deserialized(items: &[Item]) -> BTreeSet<String> {
    items
        .iter()
        .filter_map(|item| match item {
            Item::Impl(ItemImpl {
                trait_: Some((_, path, _)),
                self_ty,
                ..
            }) if path
                .segments
                .last()
                .is_some_and(|s| s.ident == "Deserialize") =>
            {
                match &**self_ty {
                    syn::Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect()
}

/// The string literals of every `const FIELDS: &[&str] = &[...]`, at any depth.
fn visitor_fields(file: &syn::File) -> Vec<String> {
    struct Collect(Vec<String>);
    impl<'ast> syn::visit::Visit<'ast> for Collect {
        fn visit_item_const(&mut self, item: &'ast ItemConst) {
            if item.ident == "FIELDS" {
                self.0.extend(string_literals(&item.expr));
            }
        }
    }
    let mut collect = Collect(Vec::new());
    syn::visit::visit_file(&mut collect, file);
    collect.0
}

/// The string literals inside an expression like `&["a", "b"]`.
fn string_literals(expr: &syn::Expr) -> Vec<String> {
    match expr {
        syn::Expr::Reference(r) => string_literals(&r.expr),
        syn::Expr::Array(a) => a
            .elems
            .iter()
            .filter_map(|e| match e {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Every key of the config file, by the source of `gateway/src/config/`.
fn schema_keys() -> BTreeSet<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/config");
    let mut keys = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let file = syn::parse_file(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let by_hand = hand_deserialized(&file.items);
        for item in &file.items {
            let Item::Struct(item) = item else { continue };
            if !derives_deserialize(&item.attrs) && !by_hand.contains(&item.ident.to_string()) {
                continue;
            }
            let Fields::Named(fields) = &item.fields else {
                continue;
            };
            for field in &fields.named {
                let name = serde_rename(&field.attrs)
                    .unwrap_or_else(|| field.ident.as_ref().unwrap().to_string());
                keys.insert(name);
            }
        }
        keys.extend(visitor_fields(&file));
    }
    keys
}

/// Whether `doc` shows `key` as code: `` `key` ``, or `key = ` after a non-word
/// character.
fn documented(doc: &str, key: &str) -> bool {
    if doc.contains(&format!("`{key}`")) {
        return true;
    }
    let assignment = format!("{key} = ");
    doc.match_indices(&assignment).any(|(at, _)| {
        doc[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
    })
}

#[test]
fn every_config_key_is_in_the_configuration_reference() {
    let keys = schema_keys();
    // The schema was read: keys from derived, renamed, hand-written and visitor fields.
    for known in ["listen", "upstream", "route", "match", "address", "present"] {
        assert!(
            keys.contains(known),
            "`{known}` not found in the schema: {keys:?}"
        );
    }
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    let missing: Vec<&String> = keys.iter().filter(|k| !documented(&doc, k)).collect();
    assert!(
        missing.is_empty(),
        "keys missing from docs/configuration.md: {missing:?}"
    );
}

#[test]
fn a_key_is_documented_only_as_code() {
    assert!(documented("set `listen` here", "listen"));
    assert!(documented("[server]\nlisten = \"x\"", "listen"));
    assert!(documented("{ weight = 3 }", "weight"));
    assert!(!documented("it will listen on", "listen"));
    assert!(!documented("max_listen = 3", "listen"));
}

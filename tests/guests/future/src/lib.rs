//! Exports `weir:plugin/handler@0.2.0`.

wit_bindgen::generate!({ path: "wit", world: "plugin" });

struct Future;

impl exports::weir::plugin::handler::Guest for Future {
    fn phases() -> Vec<u8> {
        Vec::new()
    }
}

export!(Future);

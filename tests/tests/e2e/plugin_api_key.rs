//! The `api-key` plugin end to end: its real `.wasm` in a real gateway in front of a real upstream.

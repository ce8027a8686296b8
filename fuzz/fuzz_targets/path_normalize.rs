//! Any request path, under each `escaped_slashes` policy: normalising never panics, and
//! what it accepts is idempotent, absolute and free of dot segments; the lenient
//! reading of a normalised path never panics either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weir_gateway::path::{SlashPolicy, lenient_reading, normalize};

fuzz_target!(|path: &str| {
    for policy in [SlashPolicy::Keep, SlashPolicy::Reject, SlashPolicy::Decode] {
        let Ok(normalised) = normalize(path, policy) else {
            continue;
        };
        assert!(normalised.starts_with('/'), "{path:?} -> {normalised:?}");
        assert!(
            !normalised.split('/').any(|s| s == "." || s == ".."),
            "{path:?} -> {normalised:?}"
        );
        let again = normalize(&normalised, policy).expect("a normalised path is accepted");
        assert_eq!(again, normalised, "idempotent for {path:?}");
        let _ = lenient_reading(&normalised);
    }
});

//! Durations written as humans write them in config: `"250ms"`, `"5s"`, `"1m 30s"`.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Deserialize a duration from a string such as `"1s"` or `"500ms"`.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration `{text}`: {e} (write it like \"500ms\", \"5s\" or \"1m\")"
        ))
    })
}

/// Like [`deserialize`], but refuses zero (for timeouts, where zero would fail everything).
pub(crate) mod positive {
    use std::time::Duration;

    use serde::Deserializer;

    /// Deserialize a duration longer than zero.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let value = super::deserialize(d)?;
        if value.is_zero() {
            return Err(serde::de::Error::custom(
                "a timeout must be longer than zero",
            ));
        }
        Ok(value)
    }
}

/// An optional [`positive`] duration.
pub(crate) mod optional_positive {
    use std::time::Duration;

    use serde::Deserializer;

    /// Deserialize a present duration longer than zero.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::positive::deserialize(d).map(Some)
    }
}

//! Config diagnostics: each one names the file, line, column and key, and suggests the
//! nearest valid name when a word looks like a typo.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line, or 0 when the problem has no place in the file (a default value).
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// Dotted path of the key, e.g. `route[2].match.path_prefix`.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// A hint, usually "did you mean `...`?".
    pub help: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(help) = &self.help {
            write!(f, " ({help})")?;
        }
        Ok(())
    }
}

/// Everything wrong with a config file, reported together.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The path that was tried.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
    /// The file was read but is not a valid configuration.
    #[error("{}", DisplayList(.0))]
    Invalid(Vec<Diagnostic>),
}

impl ConfigError {
    /// The individual problems (empty for a read error).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid(list) => list,
        }
    }
}

struct DisplayList<'a>(&'a [Diagnostic]);

impl fmt::Display for DisplayList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "{n} error{} in configuration",
            if n == 1 { "" } else { "s" }
        )?;
        for d in self.0 {
            write!(f, "\n  {d}")?;
        }
        Ok(())
    }
}

/// Maps byte offsets of one config file to line and column, and builds diagnostics.
#[derive(Debug)]
pub(crate) struct Source<'a> {
    pub(crate) file: &'a Path,
    pub(crate) text: &'a str,
}

impl Source<'_> {
    /// 1-based (line, column) of a byte offset; (0, 0) for an empty span (a default).
    pub(crate) fn position(&self, span: &Range<usize>) -> (usize, usize) {
        if span.is_empty() && span.start == 0 {
            return (0, 0);
        }
        let at = span.start.min(self.text.len());
        let before = &self.text[..at];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = self.text[line_start..at].chars().count() + 1;
        (line, column)
    }

    pub(crate) fn diagnostic(
        &self,
        span: &Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Diagnostic {
        let (line, column) = self.position(span);
        Diagnostic {
            file: self.file.to_owned(),
            line,
            column,
            key: key.into(),
            message: message.into(),
            help: None,
        }
    }
}

/// The candidate closest to `word`, if it is close enough to be a likely typo.
pub(crate) fn nearest<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" and "unknown variant"
/// messages: a "did you mean" hint naming the nearest expected word.
pub(crate) fn suggest_from_serde_message(message: &str) -> Option<String> {
    if !(message.starts_with("unknown field") || message.starts_with("unknown variant")) {
        return None;
    }
    let words: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    let (unknown, expected) = words.split_first()?;
    nearest(unknown, expected.iter().copied()).map(|n| format!("did you mean `{n}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_nearest_field() {
        let msg = "unknown field `lisen`, expected one of `listen`, `workers`, `via`";
        assert_eq!(
            suggest_from_serde_message(msg).as_deref(),
            Some("did you mean `listen`?")
        );
        let far = "unknown field `zzz`, expected one of `listen`, `workers`";
        assert_eq!(suggest_from_serde_message(far), None);
    }

    #[test]
    fn positions_are_one_based() {
        let src = Source {
            file: Path::new("w.toml"),
            text: "a = 1\nbé = 2\n",
        };
        assert_eq!(src.position(&(0..1)), (1, 1));
        assert_eq!(src.position(&(11..12)), (2, 5));
    }
}

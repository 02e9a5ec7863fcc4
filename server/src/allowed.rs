//! The `--allowed-keys` file: the WireGuard public keys that may use a closed server.

use std::collections::HashSet;
use std::path::Path;

use wgpunch_common::keys::{KeyError, PublicKey};

/// Why the allowed-keys file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AllowedKeysError {
    /// The file could not be read.
    #[error("reading allowed keys from {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not a public key.
    #[error("{path} line {line}: not a WireGuard public key ({reason})")]
    BadLine {
        /// The file.
        path: String,
        /// The 1-based line number.
        line: usize,
        /// What is wrong.
        reason: KeyError,
    },
}

/// Parses one key per line; blank lines and `#` comments (whole-line or trailing) are ignored.
pub fn parse(text: &str, path: &str) -> Result<HashSet<PublicKey>, AllowedKeysError> {
    let mut keys = HashSet::new();
    for (number, line) in text.lines().enumerate() {
        let key = line.split('#').next().unwrap_or_default().trim();
        if key.is_empty() {
            continue;
        }
        let key = key.parse().map_err(|reason| AllowedKeysError::BadLine {
            path: path.to_owned(),
            line: number + 1,
            reason,
        })?;
        keys.insert(key);
    }
    Ok(keys)
}

/// Reads the allowed-keys file at `path`.
pub fn load(path: &Path) -> Result<HashSet<PublicKey>, AllowedKeysError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| AllowedKeysError::Io {
        path: shown.clone(),
        source,
    })?;
    parse(&text, &shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "DD5yKRfzExcV5+kDnTroDgCU15latdMjiQ59j1hEuk8=";
    const B: &str = "1rwvlEQkF6vL4jA1gRzlTM7I3tuZHtdq8qkLMwBs8Uw=";

    #[test]
    fn reads_keys_skipping_comments_and_blank_lines() {
        let text = format!("# the mesh\n{A}\n\n  {B}   # laptop\n{A}\n");
        let keys = parse(&text, "allowed").unwrap();
        assert_eq!(keys.len(), 2);
        assert!(keys.contains(&A.parse().unwrap()) && keys.contains(&B.parse().unwrap()));
    }

    #[test]
    fn names_the_bad_line() {
        let err = parse(&format!("{A}\nnot-a-key\n"), "allowed")
            .unwrap_err()
            .to_string();
        assert!(err.contains("allowed line 2"), "{err}");
        let zero = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        assert!(
            parse(zero, "allowed").is_err(),
            "the all-zero key is refused"
        );
    }
}

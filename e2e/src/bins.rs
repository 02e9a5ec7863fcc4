//! Locating the binaries under test in the workspace's target directory.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// The server binary's file name.
pub const SERVER: &str = "wgpunch-server";
/// The client binary's file name.
pub const CLIENT: &str = "wgpunch-client";

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// Where the binaries are: `$WGPUNCH_BIN_DIR` if set, else `$CARGO_TARGET_DIR` (relative paths
/// taken from the workspace root) or `<workspace>/target`, then `release` if
/// `WGPUNCH_PROFILE=release`, else `debug`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WGPUNCH_BIN_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let root = workspace_root();
    let target = match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => root.join(dir), // join keeps an absolute `dir` as it is
        None => root.join("target"),
    };
    let profile = match std::env::var("WGPUNCH_PROFILE").as_deref() {
        Ok("release") => "release",
        _ => "debug",
    };
    target.join(profile)
}

/// The path of the binary `name` in [`bin_dir`], or an error saying how to build it.
pub fn binary(name: &str) -> Result<PathBuf> {
    let path = bin_dir().join(name);
    if !path.is_file() {
        bail!(
            "{} not found: run `cargo build --workspace --bins` first \
             (or point WGPUNCH_BIN_DIR at the directory holding {name})",
            path.display()
        );
    }
    Ok(path)
}

/// `wgpunch-server`.
pub fn server_binary() -> Result<PathBuf> {
    binary(SERVER)
}

/// `wgpunch-client`.
pub fn client_binary() -> Result<PathBuf> {
    binary(CLIENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_says_how_to_build_it() {
        let err = binary("no-such-wgpunch-binary").unwrap_err().to_string();
        assert!(err.contains("cargo build --workspace --bins"), "{err}");
    }

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        assert!(workspace_root().join("Cargo.toml").is_file());
        assert!(workspace_root().join("e2e").is_dir());
    }
}

//! Private temporary directories and secret files, removed on drop.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::ids::{unique_suffix, PREFIX};

/// A directory `/tmp/wgpe-<pid>-<n>-<label>` created with mode 0700, removed with its contents
/// on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates the directory.
    pub fn new(label: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("{PREFIX}-{}-{label}", unique_suffix()));
        DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("creating temporary directory {}", path.display()))?;
        Ok(Self { path })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path()/name`.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Hands the directory to `nobody:nogroup` (it stays mode 0700).
    pub fn chown_to_nobody(&self) -> Result<()> {
        chown_to_nobody(&self.path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            eprintln!("e2e cleanup: removing {}: {e}", self.path.display());
        }
    }
}

/// Writes `contents` to a new file with mode 0600 (fails if it exists).
pub fn write_secret_file(path: &Path, contents: &str) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating secret file {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("writing secret file {}", path.display()))
}

/// Changes the owner of `path` to `nobody:nogroup`.
pub fn chown_to_nobody(path: &Path) -> Result<()> {
    let (uid, gid) = nobody_ids()?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown nobody:nogroup {}", path.display()))
}

/// The uid of user `nobody` and gid of group `nogroup`.
pub fn nobody_ids() -> Result<(u32, u32)> {
    use nix::unistd::{Group, User};
    let user = User::from_name("nobody")
        .context("looking up user nobody")?
        .context("user nobody does not exist")?;
    let group = Group::from_name("nogroup")
        .context("looking up group nogroup")?
        .context("group nogroup does not exist")?;
    Ok((user.uid.as_raw(), group.gid.as_raw()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn temp_dir_is_private_and_removed_on_drop() {
        let dir = TempDir::new("unit").unwrap();
        let path = dir.path().to_owned();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let secret = dir.join("key");
        write_secret_file(&secret, "s3cret\n").unwrap();
        assert_eq!(
            fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(write_secret_file(&secret, "again").is_err());
        drop(dir);
        assert!(!path.exists());
    }
}

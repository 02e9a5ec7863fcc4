//! The server's private key file: WireGuard's base64 text form, mode 0600, created if missing.

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use wgpunch_common::keys::{KeyError, PrivateKey};
use zeroize::Zeroizing;

/// Why the key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Reading, creating or inspecting the file failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Group or others may read the file.
    #[error(
        "key file {path} can be read by other users (mode {mode:04o}); run `chmod 600 {path}`"
    )]
    Exposed {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The file does not hold a key.
    #[error("key file {path} does not hold a WireGuard private key: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong with it (never its contents).
        reason: KeyError,
    },
    /// The OS random generator failed.
    #[error("generating a key: the OS random generator failed: {0}")]
    Random(String),
}

fn io_error<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> KeyFileError + 'a {
    move |source| KeyFileError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

/// Reads the key at `path`, creating a new random key there (mode 0600) if there is no file.
/// Returns the key and whether it was created.
pub fn load_or_create(path: &Path) -> Result<(PrivateKey, bool), KeyFileError> {
    match fs::metadata(path) {
        Ok(_) => load(path).map(|key| (key, false)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => create(path).map(|key| (key, true)),
        Err(e) => Err(io_error("reading key file", path)(e)),
    }
}

/// Reads the key at `path`, refusing a file that others can read.
pub fn load(path: &Path) -> Result<PrivateKey, KeyFileError> {
    let meta = fs::metadata(path).map_err(io_error("reading key file", path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Exposed {
            path: path.display().to_string(),
            mode,
        });
    }
    let text =
        Zeroizing::new(fs::read_to_string(path).map_err(io_error("reading key file", path))?);
    PrivateKey::from_base64(&text).map_err(|reason| KeyFileError::Invalid {
        path: path.display().to_string(),
        reason,
    })
}

fn create(path: &Path) -> Result<PrivateKey, KeyFileError> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut bytes[..]).map_err(|e| KeyFileError::Random(e.to_string()))?;
    let key = PrivateKey::from_bytes(*bytes);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error("creating key file", path))?;
    let mut text = key.to_base64();
    text.push('\n');
    file.write_all(text.as_bytes())
        .map_err(io_error("writing key file", path))?;
    file.sync_all()
        .map_err(io_error("writing key file", path))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("wgpunch-keyfile-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn creates_a_private_key_file_once_and_reads_it_back() {
        let dir = temp_dir("create");
        let path = dir.join("server.key");
        let (key, created) = load_or_create(&path).unwrap();
        assert!(created);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (again, created) = load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(key.public_key(), again.public_key());
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim().len(), 44, "WireGuard base64 form");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn refuses_a_key_file_others_can_read() {
        let dir = temp_dir("exposed");
        let path = dir.join("server.key");
        load_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load(&path).unwrap_err();
        assert!(
            matches!(err, KeyFileError::Exposed { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_broken_key_file_is_named_but_not_echoed() {
        let dir = temp_dir("broken");
        let path = dir.join("server.key");
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        f.write_all(b"secret-but-not-a-key").unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(
            err.contains("server.key") && !err.contains("secret-but"),
            "{err}"
        );
        fs::remove_dir_all(dir).unwrap();
    }
}

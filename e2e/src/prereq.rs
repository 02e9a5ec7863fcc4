//! Prerequisites: running as root and the programs the test bed drives.
//!
//! A missing prerequisite is an error naming the Debian package to install, never a silent skip:
//! `scripts/install-deps` installs them all.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Result};

/// Programs the test bed may run and the Debian package providing each.
const TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ss", "iproute2"),
    ("wg", "wireguard-tools"),
    ("wg-quick", "wireguard-tools"),
    ("wireguard-go", "wireguard-go"),
    ("nft", "nftables"),
    ("iptables", "iptables"),
    ("ping", "iputils-ping"),
    ("setpriv", "util-linux"),
    ("unshare", "util-linux"),
    ("mount", "mount"),
    ("conntrack", "conntrack"),
];

/// Directories searched after `PATH`, since a non-login root shell may lack the sbin ones.
const FALLBACK_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// The Debian package that provides `program`, if it is one the test bed knows.
pub fn package_of(program: &str) -> Option<&'static str> {
    TOOLS
        .iter()
        .find(|(p, _)| *p == program)
        .map(|(_, pkg)| *pkg)
}

/// The absolute path of `program`, or an error naming the package to install.
pub fn tool(program: &str) -> Result<PathBuf> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path_var).chain(FALLBACK_DIRS.iter().map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(program);
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    match package_of(program) {
        Some(pkg) => bail!(
            "`{program}` not found: install the Debian package {pkg} \
             (`apt-get install {pkg}`, or run scripts/install-deps)"
        ),
        None => bail!("`{program}` not found on PATH"),
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Checks once per process that we are root and that `ip`, `wg`, `wireguard-go`, `ping`, `ss`,
/// `setpriv` and `conntrack` exist. Called by everything that builds topology.
pub fn require_test_bed() -> Result<()> {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    CHECKED
        .get_or_init(|| check().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn check() -> Result<()> {
    let euid = effective_uid();
    if euid != 0 {
        bail!(
            "the end-to-end tests need root (network namespaces, TUN devices, setpriv); \
             this process runs as uid {euid}: run `sudo scripts/test`"
        );
    }
    let missing: Vec<String> = [
        "ip",
        "ss",
        "wg",
        "wireguard-go",
        "ping",
        "setpriv",
        "conntrack",
    ]
    .iter()
    .filter_map(|p| tool(p).err().map(|e| e.to_string()))
    .collect();
    if !missing.is_empty() {
        bail!("{}", missing.join("; "));
    }
    Ok(())
}

/// The effective user id of this process.
pub fn effective_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_names_its_package() {
        let err = tool("wireguard-go-that-does-not-exist")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not found"), "{err}");
        assert_eq!(package_of("wg"), Some("wireguard-tools"));
        assert_eq!(package_of("wireguard-go"), Some("wireguard-go"));
        assert_eq!(package_of("ip"), Some("iproute2"));
    }

    #[test]
    fn sh_is_found() {
        assert!(tool("sh").unwrap().is_absolute());
    }
}

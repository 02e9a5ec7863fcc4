//! Names unique to this test process, so tests can run in parallel with each other and with
//! other test processes on the same machine.

use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{ensure, Result};

/// Prefix of every namespace, interface and directory the test bed creates.
pub const PREFIX: &str = "wgpe";

/// Longest Linux interface name (`IFNAMSIZ` - 1).
pub const IFNAME_MAX: usize = 15;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `<pid>-<n>`: the process id and a per-process counter.
pub fn unique_suffix() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

/// A network namespace name: `wgpe-<pid>-<n>-<label>`.
pub fn netns_name(label: &str) -> String {
    format!("{PREFIX}-{}-{label}", unique_suffix())
}

/// An interface name unique across namespaces (WireGuard UAPI sockets share
/// `/var/run/wireguard`): `wg<pid>n<n>`, at most 15 characters.
pub fn global_ifname() -> Result<String> {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("wg{}n{n}", std::process::id());
    ensure!(
        name.len() <= IFNAME_MAX,
        "interface name {name} is longer than {IFNAME_MAX} characters"
    );
    Ok(name)
}

/// A random number from the standard library's per-process random hasher keys.
pub fn random_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_short_enough() {
        let a = global_ifname().unwrap();
        let b = global_ifname().unwrap();
        assert_ne!(a, b);
        assert!(a.len() <= IFNAME_MAX);
        assert_ne!(netns_name("x"), netns_name("x"));
        assert!(netns_name("server").ends_with("-server"));
    }
}

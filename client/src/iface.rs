//! Reading a WireGuard interface and setting its peers' endpoints, through `wireguard-control`.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::SystemTime;

use wgpunch_common::agent::snapshot::{InterfaceSnapshot, PeerSnapshot};
use wgpunch_common::keys::{PrivateKey, PublicKey};
use wireguard_control::{Backend, Device, DeviceUpdate, InterfaceName, Key, PeerConfigBuilder};

use crate::cli::BackendChoice;

/// Where userspace implementations put their UAPI sockets.
const UAPI_DIRS: [&str; 2] = ["/var/run/wireguard", "/run/wireguard"];

/// Why the interface could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum IfaceError {
    /// The name is not a valid interface name.
    #[error("{0:?} is not a valid interface name")]
    BadName(String),
    /// No such interface, in the kernel or as a userspace socket.
    #[error("no WireGuard interface named {0} (no network interface of that name, and no userspace socket /var/run/wireguard/{0}.sock)")]
    NotFound(String),
    /// Permission denied.
    #[error("{what} {iface} needs CAP_NET_ADMIN (run as root)")]
    Permission {
        /// What was being done.
        what: &'static str,
        /// The interface.
        iface: String,
    },
    /// Any other failure of the backend.
    #[error("{what} {iface} ({backend}): {source}")]
    Backend {
        /// What was being done.
        what: &'static str,
        /// The interface.
        iface: String,
        /// The backend used.
        backend: Backend,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The interface has no private key.
    #[error("interface {0} has no private key; set one with `wg set {0} private-key FILE`")]
    NoPrivateKey(String),
    /// The interface has no listen port.
    #[error("interface {0} has no listen port; set one with `wg set {0} listen-port PORT` (ListenPort= in its configuration)")]
    NoListenPort(String),
}

/// What the client reads from the interface.
pub struct Interface {
    /// The interface name.
    pub name: InterfaceName,
    /// The backend it was reached through.
    pub backend: Backend,
    /// Its private key: the client's identity towards the server.
    pub private_key: PrivateKey,
    /// The port WireGuard listens on.
    pub listen_port: u16,
    /// Its peers.
    pub peers: Vec<PeerSnapshot>,
}

impl Interface {
    /// What the agent decides on: the peers as read.
    pub fn snapshot(&self) -> InterfaceSnapshot {
        InterfaceSnapshot {
            peers: self.peers.clone(),
        }
    }
}

fn uapi_socket_exists(name: &str) -> bool {
    UAPI_DIRS
        .iter()
        .any(|dir| Path::new(dir).join(format!("{name}.sock")).exists())
}

fn kernel_interface_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Chooses the backend for `name`.
pub fn backend_for(name: &str, choice: BackendChoice) -> Result<Backend, IfaceError> {
    match choice {
        BackendChoice::Kernel => Ok(Backend::Kernel),
        BackendChoice::Userspace => Ok(Backend::Userspace),
        BackendChoice::Auto if uapi_socket_exists(name) => Ok(Backend::Userspace),
        BackendChoice::Auto if kernel_interface_exists(name) => Ok(Backend::Kernel),
        BackendChoice::Auto => Err(IfaceError::NotFound(name.to_owned())),
    }
}

fn classify(what: &'static str, iface: &str, backend: Backend, source: io::Error) -> IfaceError {
    match source.kind() {
        io::ErrorKind::PermissionDenied => IfaceError::Permission {
            what,
            iface: iface.to_owned(),
        },
        io::ErrorKind::NotFound => IfaceError::NotFound(iface.to_owned()),
        _ if source.raw_os_error() == Some(libc::ENODEV) => IfaceError::NotFound(iface.to_owned()),
        _ if source.raw_os_error() == Some(libc::EPERM) => IfaceError::Permission {
            what,
            iface: iface.to_owned(),
        },
        _ => IfaceError::Backend {
            what,
            iface: iface.to_owned(),
            backend,
            source,
        },
    }
}

/// Reads the interface `name`.
pub fn read(name: &str, choice: BackendChoice) -> Result<Interface, IfaceError> {
    let parsed: InterfaceName = name
        .parse()
        .map_err(|_| IfaceError::BadName(name.to_owned()))?;
    let backend = backend_for(name, choice)?;
    if backend == Backend::Userspace && !uapi_socket_exists(name) {
        return Err(IfaceError::NotFound(name.to_owned()));
    }
    let device = Device::get(&parsed, backend)
        .map_err(|e| classify("reading WireGuard interface", name, backend, e))?;
    let private_key = device
        .private_key
        .as_ref()
        .filter(|k| k.0 != [0; 32])
        .map(|k| PrivateKey::from_bytes(k.0))
        .ok_or_else(|| IfaceError::NoPrivateKey(name.to_owned()))?;
    let listen_port = device
        .listen_port
        .filter(|&p| p != 0)
        .ok_or_else(|| IfaceError::NoListenPort(name.to_owned()))?;
    let peers = device
        .peers
        .iter()
        .map(|p| PeerSnapshot {
            key: PublicKey(p.config.public_key.0),
            endpoint: p.config.endpoint,
            keepalive: p.config.persistent_keepalive_interval.filter(|&k| k != 0),
            last_handshake: p
                .stats
                .last_handshake_time
                .filter(|t| *t != SystemTime::UNIX_EPOCH),
            rx_bytes: p.stats.rx_bytes,
            tx_bytes: p.stats.tx_bytes,
            allowed_ips: p
                .config
                .allowed_ips
                .iter()
                .map(|a| (a.address, a.cidr))
                .collect(),
        })
        .collect();
    Ok(Interface {
        name: parsed,
        backend,
        private_key,
        listen_port,
        peers,
    })
}

/// Sets the endpoint and/or persistent keepalive of one peer, touching nothing else of it.
pub fn update_peer(
    iface: &Interface,
    peer: &PublicKey,
    endpoint: Option<SocketAddr>,
    keepalive: Option<u16>,
) -> Result<(), IfaceError> {
    let name = iface.name.as_str_lossy().into_owned();
    // The userspace backend would start a new wireguard-go if the socket were gone; refuse instead.
    if iface.backend == Backend::Userspace && !uapi_socket_exists(&name) {
        return Err(IfaceError::NotFound(name));
    }
    let mut builder = PeerConfigBuilder::new(&Key(peer.0));
    if let Some(keepalive) = keepalive {
        builder = builder.set_persistent_keepalive_interval(keepalive);
    }
    if let Some(endpoint) = endpoint {
        builder = builder.set_endpoint(endpoint);
    }
    DeviceUpdate::new()
        .add_peer(builder)
        .apply(&iface.name, iface.backend)
        .map_err(|e| classify("updating a peer of", &name, iface.backend, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_reports_a_missing_interface() {
        let err = backend_for("wgpunch-none0", BackendChoice::Auto).unwrap_err();
        assert!(err.to_string().contains("wgpunch-none0"));
    }
}

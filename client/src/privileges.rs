//! Giving up privileges the client no longer needs.

use caps::{CapSet, Capability};

/// Drops CAP_NET_RAW from every set of this process: the raw sockets are open, and nothing later
/// needs to open another. CAP_NET_ADMIN stays, for writing the WireGuard interface. Dropping a
/// capability the process does not hold is no error.
pub fn drop_net_raw() -> Result<(), caps::errors::CapsError> {
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        if caps::has_cap(None, set, Capability::CAP_NET_RAW)? {
            caps::drop(None, set, Capability::CAP_NET_RAW)?;
        }
    }
    Ok(())
}

/// True when this process can still use CAP_NET_RAW.
pub fn has_net_raw() -> bool {
    caps::has_cap(None, CapSet::Effective, Capability::CAP_NET_RAW).unwrap_or(false)
        || caps::has_cap(None, CapSet::Permitted, Capability::CAP_NET_RAW).unwrap_or(false)
}

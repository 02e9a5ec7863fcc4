//! What the operator chose for natpunch-go clients: who may find them, and how long their
//! sessions last.

use std::time::Duration;

/// Who may find a natpunch-go client (which declares no peers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyConsent {
    /// Every client the allowed-keys list admits may find a legacy client: the operator vouched
    /// for all of them. Without an allowed-keys list, legacy datagrams are dropped (fail closed).
    AllowedKeys,
    /// Every client that completes a handshake may find any legacy client: natpunch-go's own
    /// behaviour, for an operator who says so explicitly.
    TrustAll,
}

/// How the server serves natpunch-go clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegacyConfig {
    /// Who may find a legacy client.
    pub consent: LegacyConsent,
    /// How long a legacy session may be used after its handshake (natpunch-go clients
    /// re-handshake every 5 minutes, so this is longer than that).
    pub session_lifetime: Duration,
}

impl Default for LegacyConfig {
    fn default() -> Self {
        Self {
            consent: LegacyConsent::AllowedKeys,
            session_lifetime: Duration::from_secs(360),
        }
    }
}

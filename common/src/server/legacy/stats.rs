//! What the server counted of natpunch-go datagrams.

/// Exact counts of what the server did with natpunch-go datagrams.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LegacyStats {
    /// Dropped: a legacy type byte with the wrong length, or a server-to-client type.
    pub malformed: u64,
    /// Dropped: initiation that Noise rejected, or whose static key is of low order.
    pub bad_handshake: u64,
    /// Dropped: a key not on the allowed list, or any legacy datagram when consent needs an
    /// allowed-keys list and there is none.
    pub not_allowed: u64,
    /// Dropped: over the per-key handshake rate, or under load over the per-source rate.
    pub rate_limited: u64,
    /// Dropped: initiation whose timestamp is outside the clock tolerance.
    pub stale_timestamp: u64,
    /// Dropped: initiation whose timestamp is not newer than the last accepted for its key.
    pub replayed_initiation: u64,
    /// Dropped: no room for another session or another key.
    pub sessions_full: u64,
    /// Handshakes answered.
    pub handshakes: u64,
    /// Dropped: lookup for no live session.
    pub unknown_session: u64,
    /// Dropped: lookup that was replayed or did not decrypt.
    pub bad_transport: u64,
    /// Dropped: lookup naming another client key than the session's.
    pub wrong_client_key: u64,
    /// Lookups whose sender could not be recorded: the registration table was full.
    pub registrations_full: u64,
    /// Lookups answered (found or not).
    pub lookups: u64,
    /// Lookups answered with an endpoint.
    pub found: u64,
}

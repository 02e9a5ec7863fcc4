//! A natpunch-go lookup, and the native lookup that may find a natpunch-go client: who may find
//! whom, and the answer.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::Instant;

use tracing::trace;

use crate::keys::PublicKey;
use crate::legacy::packet::Lookup;
use crate::wire::endpoint::canonical;
use crate::wire::Sighting;

use super::super::Server;
use super::LegacyConfig;

impl Server {
    pub(super) fn legacy_lookup(
        &mut self,
        now: Instant,
        from: SocketAddr,
        lookup: &Lookup,
        config: LegacyConfig,
    ) -> Option<Vec<u8>> {
        let Some(entry) = self.legacy.sessions.get_mut(&lookup.index) else {
            self.legacy.stats.unknown_session += 1;
            return None;
        };
        if now.saturating_duration_since(entry.created) >= config.session_lifetime {
            self.legacy.stats.unknown_session += 1;
            return None;
        }
        let Ok(request) = entry.session.open_lookup(lookup) else {
            self.legacy.stats.bad_transport += 1;
            return None;
        };
        let client = entry.client;
        if request.client != client {
            self.legacy.stats.wrong_client_key += 1;
            return None;
        }
        if !entry.confirmed {
            entry.confirmed = true;
            self.legacy_confirm(client, lookup.index);
        }
        self.legacy_record(client, from, now);
        self.legacy.stats.lookups += 1;
        let found = self.legacy_find(&client, &request.target, now);
        let v4 = match found.map(canonical) {
            Some(SocketAddr::V4(v4)) => Some(v4),
            // natpunch-go answers carry IPv4 only: an IPv6 endpoint looks like an unknown one.
            Some(SocketAddr::V6(_)) | None => None::<SocketAddrV4>,
        };
        if let Some(endpoint) = v4 {
            self.legacy.stats.found += 1;
            let max = self.config.max_peers_per_client;
            if let Some(seen) = self.legacy.registrations.get_mut(&client) {
                if seen.told.len() < max || seen.told.contains_key(&request.target) {
                    seen.told.insert(request.target, SocketAddr::V4(endpoint));
                }
            }
        }
        let entry = self.legacy.sessions.get_mut(&lookup.index)?;
        let answer = entry.session.seal_answer(v4).ok()?;
        trace!(peer = %client, found = v4.is_some(), "natpunch-go answer");
        Some(answer)
    }

    /// Where `target` is, for the legacy client `asker`: a native client only if its own peer
    /// list names the asker, a legacy client always (the operator's consent).
    fn legacy_find(
        &self,
        asker: &PublicKey,
        target: &PublicKey,
        now: Instant,
    ) -> Option<SocketAddr> {
        let native = self
            .registry
            .get(target, now)
            .filter(|r| r.peers.contains(asker))
            .map(|r| r.endpoint);
        native.or_else(|| self.legacy_registration(target, now).map(|s| s.endpoint))
    }

    /// A native lookup: the native registry first, then (with compatibility on) a legacy client
    /// that the live native asker lists among its peers.
    pub(in crate::server) fn lookup_any(
        &mut self,
        asker: &PublicKey,
        target: &PublicKey,
        punched: bool,
        now: Instant,
    ) -> Option<Sighting> {
        if let Some(sighting) = self.registry.lookup(asker, target, punched, now) {
            return Some(sighting);
        }
        self.config.natpunch_go?;
        let asking = self.registry.get(asker, now)?;
        if !asking.peers.contains(target) {
            return None;
        }
        let seen = self.legacy_registration(target, now)?;
        let age = now.saturating_duration_since(seen.at).as_secs();
        Some(Sighting {
            endpoint: seen.endpoint,
            age_secs: u32::try_from(age).unwrap_or(u32::MAX),
            // A legacy client never confirms a punch; once it was given the asker's current
            // endpoint it keeps sending WireGuard keepalives there, which opens its NAT the same way.
            peer_has_yours: seen.told.get(asker) == Some(&asking.endpoint),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::LegacyConsent;
    use crate::legacy::packet::ANSWER_EMPTY_LEN;
    use crate::legacy::LookupRequest;

    #[test]
    fn legacy_clients_find_each_other_once_each_has_looked_something_up() {
        let mut w = World::new(LegacyConsent::TrustAll, None);
        let (mut a, mut b) = (Legacy::new(1), Legacy::new(2));
        assert!(a.connect(&mut w, "198.51.100.1:1000"));
        assert!(b.connect(&mut w, "198.51.100.2:2000"));
        assert_eq!(a.lookup(&mut w, "198.51.100.1:51820", 2), Some(None));
        assert_eq!(
            b.lookup(&mut w, "198.51.100.2:51821", 1),
            Some(Some("198.51.100.1:51820".parse().unwrap())),
            "the endpoint is the lookup's source"
        );
        assert_eq!(
            a.lookup(&mut w, "198.51.100.1:51820", 2),
            Some(Some("198.51.100.2:51821".parse().unwrap()))
        );
        let stats = w.server.legacy_stats();
        assert_eq!((stats.handshakes, stats.lookups, stats.found), (2, 3, 2));
    }

    #[test]
    fn the_endpoint_comes_only_from_an_authenticated_lookup() {
        let mut w = World::new(LegacyConsent::TrustAll, None);
        let mut a = Legacy::new(1);
        assert!(a.connect(&mut w, "198.51.100.1:1000"));
        assert_eq!(w.server.legacy_endpoint(&key(1).public_key(), w.now), None);
        let mut forged = a.lookup_datagram(2);
        forged[20] ^= 1;
        assert_eq!(w.send("192.0.2.66:66", &forged), None);
        assert_eq!(w.server.legacy_endpoint(&key(1).public_key(), w.now), None);
        assert!(a.lookup(&mut w, "198.51.100.1:51820", 2).is_some());
        assert_eq!(
            w.server.legacy_endpoint(&key(1).public_key(), w.now),
            Some(addr("198.51.100.1:51820"))
        );
    }

    #[test]
    fn replayed_lookups_and_foreign_client_keys_are_dropped() {
        let mut w = World::new(LegacyConsent::TrustAll, None);
        let mut a = Legacy::new(1);
        assert!(a.connect(&mut w, "198.51.100.1:1000"));
        let lookup = a.lookup_datagram(2);
        assert!(w.send("198.51.100.1:1", &lookup).is_some());
        assert_eq!(w.send("198.51.100.1:2", &lookup), None, "replayed");
        assert_eq!(w.server.legacy_stats().bad_transport, 1);
        assert_eq!(
            w.server.legacy_endpoint(&key(1).public_key(), w.now),
            Some(addr("198.51.100.1:1")),
            "a replay moves nothing"
        );
        // A lookup that names another client key, in a's own session.
        let request = LookupRequest {
            client: key(5).public_key(),
            target: key(2).public_key(),
        };
        let session = a.session.as_mut().unwrap();
        let foreign = session.seal_lookup(&request).unwrap();
        assert_eq!(w.send("198.51.100.1:3", &foreign), None);
        assert_eq!(w.server.legacy_stats().wrong_client_key, 1);
        assert_eq!(w.server.legacy_endpoint(&key(5).public_key(), w.now), None);
        assert_eq!(
            w.server.legacy_endpoint(&key(1).public_key(), w.now),
            Some(addr("198.51.100.1:1"))
        );
        // An unknown index.
        let mut unknown = a.lookup_datagram(2);
        unknown[1] ^= 0xff;
        assert_eq!(w.send("198.51.100.1:4", &unknown), None);
        assert_eq!(w.server.legacy_stats().unknown_session, 1);
    }

    #[test]
    fn ipv6_endpoints_and_unknown_keys_give_the_same_empty_answer() {
        let mut w = World::new(LegacyConsent::TrustAll, None);
        let (mut a, mut b) = (Legacy::new(1), Legacy::new(2));
        assert!(a.connect(&mut w, "198.51.100.1:1000"));
        assert!(b.connect(&mut w, "[2001:db8::2]:2000"));
        assert!(b.lookup(&mut w, "[2001:db8::2]:51820", 1).is_some());
        assert!(w
            .server
            .legacy_endpoint(&key(2).public_key(), w.now)
            .is_some());
        let v6 = w.send("198.51.100.1:1", &a.lookup_datagram(2)).unwrap();
        let unknown = w.send("198.51.100.1:1", &a.lookup_datagram(9)).unwrap();
        assert_eq!(v6.len(), ANSWER_EMPTY_LEN);
        assert_eq!(unknown.len(), ANSWER_EMPTY_LEN);
    }

    #[test]
    fn a_native_client_is_found_by_a_legacy_one_only_if_it_lists_it() {
        let mut w = World::new(LegacyConsent::AllowedKeys, Some(&[1, 2, 3]));
        let _n = native(&mut w, 2, "203.0.113.2:2000", &[1]);
        let _m = native(&mut w, 3, "203.0.113.3:3000", &[]);
        let mut l = Legacy::new(1);
        assert!(l.connect(&mut w, "198.51.100.1:1000"));
        assert_eq!(
            l.lookup(&mut w, "198.51.100.1:51820", 2),
            Some(Some("203.0.113.2:2000".parse().unwrap()))
        );
        assert_eq!(l.lookup(&mut w, "198.51.100.1:51820", 3), Some(None));
    }

    #[test]
    fn a_legacy_client_is_found_by_a_native_one_that_lists_it() {
        let mut w = World::new(LegacyConsent::AllowedKeys, Some(&[1, 2, 3]));
        let mut l = Legacy::new(1);
        assert!(l.connect(&mut w, "198.51.100.1:1000"));
        assert!(l.lookup(&mut w, "198.51.100.1:51820", 2).is_some());
        let mut n = native(&mut w, 2, "203.0.113.2:2000", &[1]);
        n.lookup([key(1).public_key()]);
        let events = exchange(&mut w, &mut n, "203.0.113.2:2000");
        assert_eq!(resolved(&events, 1), Some(addr("198.51.100.1:51820")));
        assert_eq!(
            has_yours(&events, 1),
            Some(false),
            "L has not been told N's endpoint"
        );
        // L learns N's endpoint (natpunch-go then keeps sending keepalives there): N may go.
        assert_eq!(
            l.lookup(&mut w, "198.51.100.1:51820", 2),
            Some(Some("203.0.113.2:2000".parse().unwrap()))
        );
        n.lookup([key(1).public_key()]);
        let events = exchange(&mut w, &mut n, "203.0.113.2:2000");
        assert_eq!(has_yours(&events, 1), Some(true));
        // N moves: what L was told is stale.
        n.lookup([key(1).public_key()]);
        let events = exchange(&mut w, &mut n, "203.0.113.2:2999");
        assert_eq!(has_yours(&events, 1), Some(false));
        // A native client that does not list it learns nothing.
        let mut m = native(&mut w, 3, "203.0.113.3:3000", &[]);
        m.lookup([key(1).public_key()]);
        let events = exchange(&mut w, &mut m, "203.0.113.3:3000");
        assert_eq!(resolved(&events, 1), None, "{events:?}");
    }
}

//! The 20-byte encoding of an optional UDP endpoint (IPv4 or IPv6 address and port).
//!
//! ```text
//! family u8 (0 none, 4 IPv4, 6 IPv6) | reserved u8 (0) | port u16 | address 16
//! ```
//! An IPv4 address fills the first 4 address bytes; the other 12 are zero. "None" is all zeroes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::reader::Reader;

/// Encoded length of an endpoint.
pub const ENDPOINT_LEN: usize = 20;

const FAMILY_NONE: u8 = 0;
const FAMILY_V4: u8 = 4;
const FAMILY_V6: u8 = 6;

/// Appends the encoding of `endpoint` (or of "none") to `out`.
pub fn emit(endpoint: Option<SocketAddr>, out: &mut Vec<u8>) {
    let mut addr = [0u8; 16];
    let (family, port) = match endpoint.map(canonical) {
        None => (FAMILY_NONE, 0),
        Some(SocketAddr::V4(v4)) => {
            addr[..4].copy_from_slice(&v4.ip().octets());
            (FAMILY_V4, v4.port())
        }
        Some(SocketAddr::V6(v6)) => {
            addr = v6.ip().octets();
            (FAMILY_V6, v6.port())
        }
    };
    out.push(family);
    out.push(0);
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&addr);
}

/// Reads one endpoint; `None` inside `Some` is the encoded "none". Fails on unknown families and
/// on non-zero bytes where zeroes are required.
pub fn parse(r: &mut Reader<'_>) -> Option<Option<SocketAddr>> {
    let family = r.u8()?;
    let reserved = r.u8()?;
    let port = r.u16()?;
    let addr: [u8; 16] = r.array()?;
    if reserved != 0 {
        return None;
    }
    match family {
        FAMILY_NONE if port == 0 && addr == [0; 16] => Some(None),
        FAMILY_V4 if addr[4..] == [0; 12] => {
            let ip = Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]);
            Some(Some(SocketAddr::new(IpAddr::V4(ip), port)))
        }
        FAMILY_V6 => {
            let ip = Ipv6Addr::from(addr);
            // A mapped IPv4 address is always sent as IPv4, so the mapped form is not canonical.
            if ip.to_ipv4_mapped().is_some() {
                return None;
            }
            Some(Some(SocketAddr::new(IpAddr::V6(ip), port)))
        }
        _ => None,
    }
}

/// Turns an IPv4-mapped IPv6 address (as a dual-stack socket reports IPv4 peers) into IPv4.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// `ip`, with an IPv4-mapped IPv6 address turned into the IPv4 address it maps.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(endpoint: Option<SocketAddr>) -> Option<Option<SocketAddr>> {
        let mut out = Vec::new();
        emit(endpoint, &mut out);
        assert_eq!(out.len(), ENDPOINT_LEN);
        let mut r = Reader::new(&out);
        let parsed = parse(&mut r);
        assert!(r.is_empty());
        parsed
    }

    #[test]
    fn encodes_both_families_and_none() {
        let v4: SocketAddr = "198.51.100.7:51820".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::7]:51820".parse().unwrap();
        assert_eq!(round_trip(Some(v4)), Some(Some(v4)));
        assert_eq!(round_trip(Some(v6)), Some(Some(v6)));
        assert_eq!(round_trip(None), Some(None));
    }

    #[test]
    fn mapped_addresses_travel_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:198.51.100.7]:9".parse().unwrap();
        let v4: SocketAddr = "198.51.100.7:9".parse().unwrap();
        assert_eq!(round_trip(Some(mapped)), Some(Some(v4)));
    }

    #[test]
    fn rejects_non_canonical_encodings() {
        let mut bytes = Vec::new();
        emit(Some("198.51.100.7:9".parse().unwrap()), &mut bytes);
        for (index, value) in [(0, 5), (1, 1), (10, 1)] {
            let mut bad = bytes.clone();
            bad[index] = value;
            assert_eq!(
                parse(&mut Reader::new(&bad)),
                None,
                "byte {index} = {value}"
            );
        }
        let mut none_with_port = vec![0u8; ENDPOINT_LEN];
        none_with_port[3] = 1;
        assert_eq!(parse(&mut Reader::new(&none_with_port)), None);
    }

    proptest! {
        #[test]
        fn any_endpoint_round_trips(ip in any::<IpAddr>(), port in any::<u16>()) {
            let addr = canonical(SocketAddr::new(ip, port));
            prop_assert_eq!(round_trip(Some(addr)), Some(Some(addr)));
        }

        #[test]
        fn parse_accepts_only_what_emit_produces(bytes in proptest::collection::vec(any::<u8>(), 0..24)) {
            if let Some(parsed) = parse(&mut Reader::new(&bytes)) {
                let mut again = Vec::new();
                emit(parsed, &mut again);
                prop_assert_eq!(&again[..], &bytes[..ENDPOINT_LEN]);
            }
        }
    }
}

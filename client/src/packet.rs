//! UDP datagrams as raw sockets send and receive them.
//!
//! [`emit_udp`] builds the UDP header and payload that a raw socket without `IP_HDRINCL` sends (the
//! kernel writes the IP header), with the checksum over the IPv4 or IPv6 pseudo-header.
//! [`parse_ipv4_udp`] reads what a raw IPv4 socket receives (IPv4 header, options included, then
//! UDP) and [`parse_udp`] what a raw IPv6 socket receives (the UDP header onwards). Received bytes
//! are untrusted: every field is read through a length check and bad input is an error value.
//!
//! Parsing does not verify the UDP checksum: raw sockets get packets before UDP does, and locally
//! generated packets (loopback, veth) often carry only a partial checksum that the kernel would
//! accept as offloaded. The IPv4 header checksum has already been verified by the kernel.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use pnet_packet::udp::{ipv4_checksum, ipv6_checksum, MutableUdpPacket};

/// Length of the UDP header.
pub const UDP_HEADER_LEN: usize = 8;
/// Length of an IPv4 header without options.
pub const IPV4_MIN_HEADER_LEN: usize = 20;
/// Longest UDP payload whose length fits the 16-bit UDP length field.
pub const MAX_UDP_PAYLOAD_LEN: usize = u16::MAX as usize - UDP_HEADER_LEN;

/// The IP protocol number of UDP.
const IPPROTO_UDP: u8 = 17;
/// The more-fragments flag and the fragment offset in the IPv4 flags half word.
const IPV4_FRAGMENT_MASK: u16 = 0x3fff;

/// Why a datagram could not be built or a received packet was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// The payload does not fit the UDP length field.
    #[error("UDP payload longer than {MAX_UDP_PAYLOAD_LEN} bytes")]
    PayloadTooLong,
    /// Source and destination are not both IPv4 or both IPv6.
    #[error("source and destination address families differ")]
    MixedFamilies,
    /// The data ends before the headers or lengths it announces.
    #[error("packet truncated")]
    Truncated,
    /// The IP version field is not 4.
    #[error("not an IPv4 packet")]
    NotIpv4,
    /// The IPv4 header length field is below the minimum of 5 words.
    #[error("invalid IPv4 header length")]
    BadHeaderLength,
    /// The IPv4 protocol is not UDP.
    #[error("not a UDP packet")]
    NotUdp,
    /// The IPv4 packet is a fragment (more-fragments set or a non-zero offset).
    #[error("IPv4 fragment")]
    Fragment,
    /// The IPv4 total length or the UDP length does not match the data.
    #[error("length fields do not match the packet")]
    LengthMismatch,
}

/// A received UDP datagram: the header fields that matter and the payload, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpDatagram<'a> {
    /// The UDP source port.
    pub source_port: u16,
    /// The UDP destination port.
    pub destination_port: u16,
    /// The UDP payload.
    pub payload: &'a [u8],
}

/// A received IPv4 packet carrying a UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4UdpDatagram<'a> {
    /// The IPv4 source address.
    pub source: Ipv4Addr,
    /// The IPv4 destination address.
    pub destination: Ipv4Addr,
    /// The UDP datagram inside.
    pub udp: UdpDatagram<'a>,
}

/// Builds the UDP header and `payload` of a datagram from `source` to `destination`, with the
/// checksum over the IPv4 or IPv6 pseudo-header (a computed 0 is sent as `0xffff`, as UDP requires).
pub fn emit_udp(
    source: SocketAddr,
    destination: SocketAddr,
    payload: &[u8],
) -> Result<Vec<u8>, PacketError> {
    if payload.len() > MAX_UDP_PAYLOAD_LEN {
        return Err(PacketError::PayloadTooLong);
    }
    let total = UDP_HEADER_LEN + payload.len();
    let length = u16::try_from(total).map_err(|_| PacketError::PayloadTooLong)?;
    let mut buf = vec![0u8; total];
    // `buf` holds at least a UDP header, so this only fails if that invariant is broken.
    let mut udp = MutableUdpPacket::new(&mut buf).ok_or(PacketError::Truncated)?;
    udp.set_source(source.port());
    udp.set_destination(destination.port());
    udp.set_length(length);
    udp.set_checksum(0);
    udp.set_payload(payload);
    let checksum = match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ipv4_checksum(&udp.to_immutable(), &s, &d),
        (IpAddr::V6(s), IpAddr::V6(d)) => ipv6_checksum(&udp.to_immutable(), &s, &d),
        _ => return Err(PacketError::MixedFamilies),
    };
    udp.set_checksum(if checksum == 0 { 0xffff } else { checksum });
    Ok(buf)
}

/// Parses a UDP header and payload, as a raw IPv6 `IPPROTO_UDP` socket delivers them. The UDP
/// length field must equal the length of `data`.
pub fn parse_udp(data: &[u8]) -> Result<UdpDatagram<'_>, PacketError> {
    let (header, payload) = data
        .split_first_chunk::<UDP_HEADER_LEN>()
        .ok_or(PacketError::Truncated)?;
    let length = usize::from(u16::from_be_bytes([header[4], header[5]]));
    if length > data.len() {
        return Err(PacketError::Truncated);
    }
    if length != data.len() {
        return Err(PacketError::LengthMismatch);
    }
    Ok(UdpDatagram {
        source_port: u16::from_be_bytes([header[0], header[1]]),
        destination_port: u16::from_be_bytes([header[2], header[3]]),
        payload,
    })
}

/// Parses an IPv4 packet carrying UDP, as a raw IPv4 `IPPROTO_UDP` socket delivers it: the IPv4
/// header (options skipped by its IHL field), then UDP. Rejects fragments, other protocols and
/// packets whose total length or UDP length do not match `data` exactly.
pub fn parse_ipv4_udp(data: &[u8]) -> Result<Ipv4UdpDatagram<'_>, PacketError> {
    let (header, _) = data
        .split_first_chunk::<IPV4_MIN_HEADER_LEN>()
        .ok_or(PacketError::Truncated)?;
    if header[0] >> 4 != 4 {
        return Err(PacketError::NotIpv4);
    }
    let header_len = usize::from(header[0] & 0x0f) * 4;
    if header_len < IPV4_MIN_HEADER_LEN {
        return Err(PacketError::BadHeaderLength);
    }
    let total_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if total_len > data.len() {
        return Err(PacketError::Truncated);
    }
    if total_len != data.len() || total_len < header_len {
        return Err(PacketError::LengthMismatch);
    }
    if u16::from_be_bytes([header[6], header[7]]) & IPV4_FRAGMENT_MASK != 0 {
        return Err(PacketError::Fragment);
    }
    if header[9] != IPPROTO_UDP {
        return Err(PacketError::NotUdp);
    }
    let udp = parse_udp(data.get(header_len..).ok_or(PacketError::Truncated)?)?;
    Ok(Ipv4UdpDatagram {
        source: Ipv4Addr::new(header[12], header[13], header[14], header[15]),
        destination: Ipv4Addr::new(header[16], header[17], header[18], header[19]),
        udp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv6Addr, SocketAddrV4, SocketAddrV6};

    use proptest::prelude::*;

    /// RFC 1071 one's complement sum of `data`, folded to 16 bits.
    fn ones_complement_sum(data: &[u8]) -> u16 {
        let mut sum: u64 = data
            .chunks(2)
            .map(|c| u64::from(c[0]) << 8 | u64::from(c.get(1).copied().unwrap_or(0)))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    /// Whether `udp` (header and payload) carries a valid checksum for these addresses.
    fn checksum_is_valid(source: IpAddr, destination: IpAddr, udp: &[u8]) -> bool {
        let mut pseudo = Vec::new();
        match (source, destination) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                pseudo.extend_from_slice(&s.octets());
                pseudo.extend_from_slice(&d.octets());
                pseudo.extend_from_slice(&[0, 17]);
                pseudo.extend_from_slice(&(udp.len() as u16).to_be_bytes());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                pseudo.extend_from_slice(&s.octets());
                pseudo.extend_from_slice(&d.octets());
                pseudo.extend_from_slice(&(udp.len() as u32).to_be_bytes());
                pseudo.extend_from_slice(&[0, 0, 0, 17]);
            }
            _ => return false,
        }
        pseudo.extend_from_slice(udp);
        if pseudo.len() % 2 == 1 {
            pseudo.push(0);
        }
        udp[6..8] != [0, 0] && ones_complement_sum(&pseudo) == 0xffff
    }

    /// An IPv4 header with `options` (a multiple of 4 bytes) in front of `udp`.
    fn ipv4_packet(source: Ipv4Addr, destination: Ipv4Addr, options: &[u8], udp: &[u8]) -> Vec<u8> {
        assert_eq!(options.len() % 4, 0);
        let header_len = IPV4_MIN_HEADER_LEN + options.len();
        let total = (header_len + udp.len()) as u16;
        let mut p = vec![0x40 | (header_len / 4) as u8, 0];
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, 17, 0, 0]); // id, DF, TTL, UDP
        p.extend_from_slice(&source.octets());
        p.extend_from_slice(&destination.octets());
        p.extend_from_slice(options);
        let checksum = !ones_complement_sum(&p);
        p[10..12].copy_from_slice(&checksum.to_be_bytes());
        p.extend_from_slice(udp);
        p
    }

    fn v4(a: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(a), port))
    }

    fn v6(a: Ipv6Addr, port: u16) -> SocketAddr {
        SocketAddr::V6(SocketAddrV6::new(a, port, 0, 0))
    }

    const DOC6_1: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    const DOC6_2: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);

    #[test]
    fn emit_udp_matches_known_ipv4_vector() {
        let got = emit_udp(
            v4([192, 0, 2, 1], 51820),
            v4([198, 51, 100, 2], 3478),
            b"hello",
        );
        let expected = [
            0xca, 0x6c, 0x0d, 0x96, 0x00, 0x0d, 0xf7, 0xc7, b'h', b'e', b'l', b'l', b'o',
        ];
        assert_eq!(got.as_deref(), Ok(&expected[..]));
    }

    #[test]
    fn emit_udp_matches_known_ipv6_vector() {
        let got = emit_udp(v6(DOC6_1, 51820), v6(DOC6_2, 3478), b"hello");
        let expected = [
            0xca, 0x6c, 0x0d, 0x96, 0x00, 0x0d, 0x88, 0x8a, b'h', b'e', b'l', b'l', b'o',
        ];
        assert_eq!(got.as_deref(), Ok(&expected[..]));
    }

    #[test]
    fn emit_udp_sends_a_zero_checksum_as_all_ones() {
        // This payload makes the one's complement sum 0xffff, so the computed checksum is 0.
        let got = emit_udp(
            v4([192, 0, 2, 1], 51820),
            v4([198, 51, 100, 2], 3478),
            &[0x3b, 0xa0],
        );
        assert_eq!(got.map(|d| [d[6], d[7]]), Ok([0xff, 0xff]));
    }

    #[test]
    fn emit_udp_rejects_mixed_families_and_oversized_payloads() {
        assert_eq!(
            emit_udp(v4([192, 0, 2, 1], 1), v6(DOC6_1, 2), b"x"),
            Err(PacketError::MixedFamilies)
        );
        let big = vec![0u8; MAX_UDP_PAYLOAD_LEN + 1];
        assert_eq!(
            emit_udp(v4([192, 0, 2, 1], 1), v4([192, 0, 2, 2], 2), &big),
            Err(PacketError::PayloadTooLong)
        );
        let max = vec![0xa5u8; MAX_UDP_PAYLOAD_LEN];
        let udp = emit_udp(v4([192, 0, 2, 1], 1), v4([192, 0, 2, 2], 2), &max);
        assert_eq!(udp.map(|d| d.len()), Ok(usize::from(u16::MAX)));
    }

    #[test]
    fn parse_ipv4_udp_skips_ip_options() {
        let udp = emit_udp(v4([192, 0, 2, 1], 3478), v4([10, 0, 0, 2], 51820), b"reply");
        let udp = udp.unwrap_or_default();
        // Router alert (4 bytes), a timestamp-ish option padded with NOPs and an end marker.
        let options = [
            0x94, 0x04, 0x00, 0x00, 0x44, 0x08, 0x05, 0x00, 1, 2, 3, 4, 1, 1, 1, 0,
        ];
        let packet = ipv4_packet([192, 0, 2, 1].into(), [10, 0, 0, 2].into(), &options, &udp);
        assert_eq!(packet[0], 0x49);
        let parsed = parse_ipv4_udp(&packet);
        assert_eq!(
            parsed,
            Ok(Ipv4UdpDatagram {
                source: [192, 0, 2, 1].into(),
                destination: [10, 0, 0, 2].into(),
                udp: UdpDatagram {
                    source_port: 3478,
                    destination_port: 51820,
                    payload: b"reply",
                },
            })
        );
    }

    #[test]
    fn parse_ipv4_udp_handles_maximum_options() {
        let udp = emit_udp(v4([192, 0, 2, 1], 1), v4([10, 0, 0, 2], 2), b"").unwrap_or_default();
        let packet = ipv4_packet([192, 0, 2, 1].into(), [10, 0, 0, 2].into(), &[1; 40], &udp);
        assert_eq!(packet[0], 0x4f);
        let parsed = parse_ipv4_udp(&packet).map(|p| p.udp);
        assert_eq!(
            parsed,
            Ok(UdpDatagram {
                source_port: 1,
                destination_port: 2,
                payload: b"",
            })
        );
    }

    fn good_ipv4() -> Vec<u8> {
        let udp = emit_udp(v4([192, 0, 2, 1], 3478), v4([10, 0, 0, 2], 51820), b"reply");
        ipv4_packet(
            [192, 0, 2, 1].into(),
            [10, 0, 0, 2].into(),
            &[],
            &udp.unwrap_or_default(),
        )
    }

    #[test]
    fn parse_ipv4_udp_rejects_fragments() {
        for flags in [[0x20, 0x00], [0x00, 0x01], [0x40, 0x10], [0x3f, 0xff]] {
            let mut p = good_ipv4();
            p[6..8].copy_from_slice(&flags);
            assert_eq!(parse_ipv4_udp(&p), Err(PacketError::Fragment), "{flags:?}");
        }
    }

    #[test]
    fn parse_ipv4_udp_rejects_other_protocols_and_versions() {
        let mut p = good_ipv4();
        p[9] = 6;
        assert_eq!(parse_ipv4_udp(&p), Err(PacketError::NotUdp));
        let mut p = good_ipv4();
        p[0] = 0x65;
        assert_eq!(parse_ipv4_udp(&p), Err(PacketError::NotIpv4));
        let mut p = good_ipv4();
        p[0] = 0x44;
        assert_eq!(parse_ipv4_udp(&p), Err(PacketError::BadHeaderLength));
    }

    #[test]
    fn parse_ipv4_udp_rejects_truncated_input() {
        let p = good_ipv4();
        for len in 0..p.len() {
            assert_eq!(
                parse_ipv4_udp(&p[..len]),
                Err(PacketError::Truncated),
                "len {len}"
            );
        }
    }

    #[test]
    fn parse_ipv4_udp_rejects_lengths_that_do_not_add_up() {
        // Trailing bytes beyond the total length.
        let mut p = good_ipv4();
        p.push(0);
        assert_eq!(parse_ipv4_udp(&p), Err(PacketError::LengthMismatch));
        // UDP length shorter than the IP payload.
        let mut p = good_ipv4();
        p[25] -= 1;
        assert_eq!(parse_ipv4_udp(&p), Err(PacketError::LengthMismatch));
        // UDP length longer than the IP payload.
        let mut p = good_ipv4();
        p[25] += 1;
        assert_eq!(parse_ipv4_udp(&p), Err(PacketError::Truncated));
        // IHL pointing past the end of a packet whose total length is just the base header.
        let mut p = good_ipv4();
        p.truncate(IPV4_MIN_HEADER_LEN);
        p[0] = 0x4f;
        p[2..4].copy_from_slice(&20u16.to_be_bytes());
        assert_eq!(parse_ipv4_udp(&p), Err(PacketError::LengthMismatch));
        // IHL leaving fewer than 8 bytes for UDP.
        let mut p = good_ipv4();
        p[0] = 0x47;
        assert_eq!(parse_ipv4_udp(&p), Err(PacketError::Truncated));
    }

    #[test]
    fn parse_udp_rejects_truncated_and_mismatched_lengths() {
        let udp = emit_udp(v6(DOC6_1, 1), v6(DOC6_2, 2), b"abc").unwrap_or_default();
        for len in 0..udp.len() {
            assert_eq!(parse_udp(&udp[..len]), Err(PacketError::Truncated));
        }
        let mut longer = udp.clone();
        longer.push(0);
        assert_eq!(parse_udp(&longer), Err(PacketError::LengthMismatch));
        let mut jumbo = udp.clone();
        jumbo[4..6].copy_from_slice(&[0, 0]);
        assert_eq!(parse_udp(&jumbo), Err(PacketError::LengthMismatch));
    }

    fn any_ipv4() -> impl Strategy<Value = Ipv4Addr> {
        any::<[u8; 4]>().prop_map(Ipv4Addr::from)
    }

    fn any_ipv6() -> impl Strategy<Value = Ipv6Addr> {
        any::<[u8; 16]>().prop_map(Ipv6Addr::from)
    }

    proptest! {
        #[test]
        fn ipv4_emit_then_parse_round_trips(
            source in any_ipv4(),
            destination in any_ipv4(),
            ports in any::<(u16, u16)>(),
            option_words in 0usize..=10,
            payload in proptest::collection::vec(any::<u8>(), 0..1600),
        ) {
            let (s, d) = (SocketAddr::from((source, ports.0)), SocketAddr::from((destination, ports.1)));
            let udp = emit_udp(s, d, &payload).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(checksum_is_valid(s.ip(), d.ip(), &udp));
            let packet = ipv4_packet(source, destination, &vec![1; option_words * 4], &udp);
            let parsed = parse_ipv4_udp(&packet);
            prop_assert_eq!(parsed, Ok(Ipv4UdpDatagram {
                source,
                destination,
                udp: UdpDatagram { source_port: ports.0, destination_port: ports.1, payload: &payload },
            }));
        }

        #[test]
        fn ipv6_emit_then_parse_round_trips(
            source in any_ipv6(),
            destination in any_ipv6(),
            ports in any::<(u16, u16)>(),
            payload in proptest::collection::vec(any::<u8>(), 0..1600),
        ) {
            let (s, d) = (SocketAddr::from((source, ports.0)), SocketAddr::from((destination, ports.1)));
            let udp = emit_udp(s, d, &payload).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(checksum_is_valid(s.ip(), d.ip(), &udp));
            prop_assert_eq!(parse_udp(&udp), Ok(UdpDatagram {
                source_port: ports.0,
                destination_port: ports.1,
                payload: &payload,
            }));
        }

        #[test]
        fn parsers_never_panic_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_ipv4_udp(&data);
            let _ = parse_udp(&data);
        }

        #[test]
        fn parse_ipv4_udp_never_panics_on_mutated_packets(
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            option_words in 0usize..=10,
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let udp = emit_udp(v4([192, 0, 2, 1], 1), v4([10, 0, 0, 2], 2), &payload)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut packet = ipv4_packet([192, 0, 2, 1].into(), [10, 0, 0, 2].into(), &vec![1; option_words * 4], &udp);
            for (at, byte) in edits {
                let i = at.index(packet.len());
                packet[i] = byte;
            }
            let len = cut.index(packet.len() + 1);
            if let Ok(parsed) = parse_ipv4_udp(&packet[..len]) {
                // Anything accepted has lengths that add up.
                let header_len = usize::from(packet[0] & 0x0f) * 4;
                prop_assert_eq!(header_len + UDP_HEADER_LEN + parsed.udp.payload.len(), len);
            }
        }
    }
}

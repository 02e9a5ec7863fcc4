//! Classic BPF programs that let through only the server's replies, and peers' probes, to the
//! WireGuard port.
//!
//! A raw `IPPROTO_UDP` socket receives a copy of every UDP datagram the host gets; these filters run
//! in the kernel and drop everything that is not from the server to `local_port`, so the process is
//! not woken for, and never copies, the host's other UDP traffic. They are plain data here and are
//! attached by [`crate::sys::attach_filter`]; userspace checks the same fields again after parsing.
//!
//! What the filter sees differs by family. For IPv4 raw sockets the data starts at the IP header,
//! so the program reads the protocol, source address and fragment fields from it, then loads the
//! header length from IHL (`ldxb 4*([0]&0xf)`) to find the UDP ports behind any IP options. For IPv6
//! raw sockets the data starts at the UDP header (the kernel has already pulled the IPv6 header and
//! any extension headers), so the ports are at offsets 0 and 2; the source address is still reachable
//! through the kernel's negative "network header" offset [`SKF_NET_OFF`], where the IPv6 source
//! address sits at bytes 8 to 23.

use std::net::{Ipv4Addr, Ipv6Addr};

/// One classic BPF instruction, laid out like the kernel's `struct sock_filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode: class, size, mode and source bits or-ed together.
    pub code: u16,
    /// Instructions to skip forward when a conditional jump is taken.
    pub jt: u8,
    /// Instructions to skip forward when a conditional jump is not taken.
    pub jf: u8,
    /// The constant operand (offset, value or return length).
    pub k: u32,
}

/// Instruction class: load into the accumulator.
pub const BPF_LD: u16 = 0x00;
/// Instruction class: load into the index register X.
pub const BPF_LDX: u16 = 0x01;
/// Instruction class: jump.
pub const BPF_JMP: u16 = 0x05;
/// Instruction class: return.
pub const BPF_RET: u16 = 0x06;
/// Load size: 32-bit word.
pub const BPF_W: u16 = 0x00;
/// Load size: 16-bit half word.
pub const BPF_H: u16 = 0x08;
/// Load size: byte.
pub const BPF_B: u16 = 0x10;
/// Load mode: absolute offset `k`.
pub const BPF_ABS: u16 = 0x20;
/// Load mode: offset `X + k`.
pub const BPF_IND: u16 = 0x40;
/// Load mode: `X = 4 * (packet[k] & 0xf)`, the IPv4 header length idiom.
pub const BPF_MSH: u16 = 0xa0;
/// Jump if the accumulator equals the operand.
pub const BPF_JEQ: u16 = 0x10;
/// Jump if the accumulator and the operand have a bit in common.
pub const BPF_JSET: u16 = 0x40;
/// Operand source: the constant `k`.
pub const BPF_K: u16 = 0x00;

/// Offset base that makes an absolute load read from the network (IP) header instead of the start
/// of the data the socket sees (Linux `SKF_NET_OFF`, `-0x100000` as an unsigned 32-bit value).
pub const SKF_NET_OFF: u32 = 0xfff0_0000;

/// Return value that accepts the whole packet.
pub const ACCEPT: u32 = u32::MAX;
/// Return value that drops the packet.
pub const DROP: u32 = 0;

/// The UDP protocol number in the IPv4 header.
const IPPROTO_UDP: u32 = 17;
/// Offset of the protocol byte in the IPv4 header.
const IPV4_PROTOCOL_OFFSET: u32 = 9;
/// Offset of the flags and fragment offset half word in the IPv4 header.
const IPV4_FRAGMENT_OFFSET: u32 = 6;
/// Offset of the source address in the IPv4 header.
const IPV4_SOURCE_OFFSET: u32 = 12;
/// Bits of the flags and fragment offset half word that mark a fragment: more-fragments (0x2000)
/// and the 13-bit offset (0x1fff).
const IPV4_FRAGMENT_MASK: u32 = 0x3fff;
/// Offset of the source address in the IPv6 header.
const IPV6_SOURCE_OFFSET: u32 = 8;
/// Offset of the source port in the UDP header.
const UDP_SOURCE_PORT_OFFSET: u32 = 0;
/// Offset of the destination port in the UDP header.
const UDP_DESTINATION_PORT_OFFSET: u32 = 2;

impl Insn {
    /// A statement (no jump targets).
    pub const fn stmt(code: u16, k: u32) -> Insn {
        Insn {
            code,
            jt: 0,
            jf: 0,
            k,
        }
    }

    /// A conditional jump.
    pub const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
        Insn { code, jt, jf, k }
    }
}

/// `ldb [k]`
const fn load_byte(k: u32) -> Insn {
    Insn::stmt(BPF_LD | BPF_B | BPF_ABS, k)
}

/// `ldh [k]`
const fn load_half(k: u32) -> Insn {
    Insn::stmt(BPF_LD | BPF_H | BPF_ABS, k)
}

/// `ld [k]`
const fn load_word(k: u32) -> Insn {
    Insn::stmt(BPF_LD | BPF_W | BPF_ABS, k)
}

/// `ldh [x + k]`
const fn load_half_indexed(k: u32) -> Insn {
    Insn::stmt(BPF_LD | BPF_H | BPF_IND, k)
}

/// `ret #k`
const fn ret(k: u32) -> Insn {
    Insn::stmt(BPF_RET | BPF_K, k)
}

/// Appends `jeq #value` that falls through on equality and otherwise jumps to the final drop. The
/// jump distance is patched by [`finish`].
fn require_eq(prog: &mut Vec<Insn>, value: u32) {
    prog.push(Insn::jump(BPF_JMP | BPF_JEQ | BPF_K, value, 0, 0));
}

/// Appends `jset #mask` that jumps to the final drop when any bit is set. Patched by [`finish`].
fn require_clear(prog: &mut Vec<Insn>, mask: u32) {
    prog.push(Insn::jump(BPF_JMP | BPF_JSET | BPF_K, mask, 0, 0));
}

/// Appends `ret #ACCEPT; ret #DROP` and points every conditional jump's failing branch at the drop.
fn finish(mut prog: Vec<Insn>) -> Vec<Insn> {
    prog.push(ret(ACCEPT));
    let drop_at = prog.len();
    prog.push(ret(DROP));
    for (at, insn) in prog.iter_mut().enumerate() {
        if insn.code & 0x07 != BPF_JMP {
            continue;
        }
        // The programs are a few dozen instructions long, far below the 255 a jump can skip.
        let distance = u8::try_from(drop_at - at - 1).unwrap_or(u8::MAX);
        if insn.code & 0xf0 == BPF_JSET {
            insn.jt = distance;
        } else {
            insn.jf = distance;
        }
    }
    prog
}

/// A program that accepts nothing, for a raw socket that only sends.
pub fn drop_all_program() -> Vec<Insn> {
    vec![Insn::stmt(BPF_RET | BPF_K, DROP)]
}

/// The filter for a raw IPv4 `IPPROTO_UDP` socket: accepts only unfragmented UDP from
/// `server`:`server_port` to `local_port`. The data starts at the IPv4 header.
pub fn ipv4_program(server: Ipv4Addr, server_port: u16, local_port: u16) -> Vec<Insn> {
    let mut prog = Vec::with_capacity(13);
    prog.push(load_byte(IPV4_PROTOCOL_OFFSET));
    require_eq(&mut prog, IPPROTO_UDP);
    prog.push(load_word(IPV4_SOURCE_OFFSET));
    require_eq(&mut prog, u32::from(server));
    prog.push(load_half(IPV4_FRAGMENT_OFFSET));
    require_clear(&mut prog, IPV4_FRAGMENT_MASK);
    prog.push(Insn::stmt(BPF_LDX | BPF_B | BPF_MSH, 0));
    prog.push(load_half_indexed(UDP_SOURCE_PORT_OFFSET));
    require_eq(&mut prog, u32::from(server_port));
    prog.push(load_half_indexed(UDP_DESTINATION_PORT_OFFSET));
    require_eq(&mut prog, u32::from(local_port));
    finish(prog)
}

/// The filter for a raw IPv6 `IPPROTO_UDP` socket: accepts only UDP from `server`:`server_port` to
/// `local_port`. The data starts at the UDP header; the source address is read through
/// [`SKF_NET_OFF`].
pub fn ipv6_program(server: Ipv6Addr, server_port: u16, local_port: u16) -> Vec<Insn> {
    let mut prog = Vec::with_capacity(14);
    let octets = server.octets();
    for (index, chunk) in (0u32..).zip(octets.chunks_exact(4)) {
        let word = chunk
            .iter()
            .fold(0u32, |acc, byte| (acc << 8) | u32::from(*byte));
        prog.push(load_word(SKF_NET_OFF + IPV6_SOURCE_OFFSET + 4 * index));
        require_eq(&mut prog, word);
    }
    prog.push(load_half(UDP_SOURCE_PORT_OFFSET));
    require_eq(&mut prog, u32::from(server_port));
    prog.push(load_half(UDP_DESTINATION_PORT_OFFSET));
    require_eq(&mut prog, u32::from(local_port));
    finish(prog)
}

/// Most sources a [`ipv4_sources_program`] or [`ipv6_sources_program`] takes: the server's main
/// address and its mapping addresses.
pub const MAX_SOURCES: usize = 4;

/// A jump offset from the instruction at `at` to the one at `target` (both inside a program far
/// shorter than the 255 instructions a jump can skip).
fn offset(at: usize, target: usize) -> u8 {
    u8::try_from(target.saturating_sub(at + 1)).unwrap_or(u8::MAX)
}

/// Like [`ipv4_program`], for several sources: accepts unfragmented UDP to `local_port` from any
/// one of `sources` (address and port together; at most [`MAX_SOURCES`] are used).
pub fn ipv4_sources_program(sources: &[(Ipv4Addr, u16)], local_port: u16) -> Vec<Insn> {
    let sources = sources
        .get(..sources.len().min(MAX_SOURCES))
        .unwrap_or_default();
    // Header checks (7 instructions), 4 per source, then drop and accept.
    let drop_at = 7 + 4 * sources.len();
    let accept_at = drop_at + 1;
    let mut prog = Vec::with_capacity(accept_at + 1);
    prog.push(load_byte(IPV4_PROTOCOL_OFFSET));
    prog.push(Insn::jump(
        BPF_JMP | BPF_JEQ | BPF_K,
        IPPROTO_UDP,
        0,
        offset(1, drop_at),
    ));
    prog.push(load_half(IPV4_FRAGMENT_OFFSET));
    prog.push(Insn::jump(
        BPF_JMP | BPF_JSET | BPF_K,
        IPV4_FRAGMENT_MASK,
        offset(3, drop_at),
        0,
    ));
    prog.push(Insn::stmt(BPF_LDX | BPF_B | BPF_MSH, 0));
    prog.push(load_half_indexed(UDP_DESTINATION_PORT_OFFSET));
    prog.push(Insn::jump(
        BPF_JMP | BPF_JEQ | BPF_K,
        u32::from(local_port),
        0,
        offset(6, drop_at),
    ));
    for (ip, port) in sources {
        let at = prog.len();
        prog.push(load_word(IPV4_SOURCE_OFFSET));
        prog.push(Insn::jump(BPF_JMP | BPF_JEQ | BPF_K, u32::from(*ip), 0, 2));
        prog.push(load_half_indexed(UDP_SOURCE_PORT_OFFSET));
        prog.push(Insn::jump(
            BPF_JMP | BPF_JEQ | BPF_K,
            u32::from(*port),
            offset(at + 3, accept_at),
            0,
        ));
    }
    prog.push(ret(DROP));
    prog.push(ret(ACCEPT));
    prog
}

/// Like [`ipv6_program`], for several sources: accepts UDP to `local_port` from any one of
/// `sources` (address and port together; at most [`MAX_SOURCES`] are used).
pub fn ipv6_sources_program(sources: &[(Ipv6Addr, u16)], local_port: u16) -> Vec<Insn> {
    let sources = sources
        .get(..sources.len().min(MAX_SOURCES))
        .unwrap_or_default();
    // The destination port (2 instructions), 10 per source, then drop and accept.
    let drop_at = 2 + 10 * sources.len();
    let accept_at = drop_at + 1;
    let mut prog = Vec::with_capacity(accept_at + 1);
    prog.push(load_half(UDP_DESTINATION_PORT_OFFSET));
    prog.push(Insn::jump(
        BPF_JMP | BPF_JEQ | BPF_K,
        u32::from(local_port),
        0,
        offset(1, drop_at),
    ));
    for (ip, port) in sources {
        let next = prog.len() + 10;
        for (index, chunk) in (0u32..).zip(ip.octets().chunks_exact(4)) {
            let word = chunk
                .iter()
                .fold(0u32, |acc, byte| (acc << 8) | u32::from(*byte));
            prog.push(load_word(SKF_NET_OFF + IPV6_SOURCE_OFFSET + 4 * index));
            let at = prog.len();
            prog.push(Insn::jump(
                BPF_JMP | BPF_JEQ | BPF_K,
                word,
                0,
                offset(at, next),
            ));
        }
        prog.push(load_half(UDP_SOURCE_PORT_OFFSET));
        let at = prog.len();
        prog.push(Insn::jump(
            BPF_JMP | BPF_JEQ | BPF_K,
            u32::from(*port),
            offset(at, accept_at),
            0,
        ));
    }
    prog.push(ret(DROP));
    prog.push(ret(ACCEPT));
    prog
}

/// Offset of the payload behind the UDP header.
const UDP_PAYLOAD_OFFSET: u32 = 8;

/// The filter for a raw IPv4 `IPPROTO_UDP` socket that hears peers' probes: accepts only
/// unfragmented UDP to `local_port` whose payload starts with the 4-byte `magic`.
pub fn ipv4_probe_program(local_port: u16, magic: [u8; 4]) -> Vec<Insn> {
    let mut prog = Vec::with_capacity(11);
    prog.push(load_byte(IPV4_PROTOCOL_OFFSET));
    require_eq(&mut prog, IPPROTO_UDP);
    prog.push(load_half(IPV4_FRAGMENT_OFFSET));
    require_clear(&mut prog, IPV4_FRAGMENT_MASK);
    prog.push(Insn::stmt(BPF_LDX | BPF_B | BPF_MSH, 0));
    prog.push(load_half_indexed(UDP_DESTINATION_PORT_OFFSET));
    require_eq(&mut prog, u32::from(local_port));
    prog.push(Insn::stmt(BPF_LD | BPF_W | BPF_IND, UDP_PAYLOAD_OFFSET));
    require_eq(&mut prog, u32::from_be_bytes(magic));
    finish(prog)
}

/// The filter for a raw IPv6 `IPPROTO_UDP` socket that hears peers' probes: accepts only UDP to
/// `local_port` whose payload starts with `magic`. The data starts at the UDP header.
pub fn ipv6_probe_program(local_port: u16, magic: [u8; 4]) -> Vec<Insn> {
    let mut prog = Vec::with_capacity(6);
    prog.push(load_half(UDP_DESTINATION_PORT_OFFSET));
    require_eq(&mut prog, u32::from(local_port));
    prog.push(load_word(UDP_PAYLOAD_OFFSET));
    require_eq(&mut prog, u32::from_be_bytes(magic));
    finish(prog)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Interprets `prog` over `data` the way the kernel would for the parts these programs use,
    /// with `net` as the bytes at the network header for `SKF_NET_OFF` loads. Returns the verdict,
    /// or 0 for an out-of-bounds load (the kernel drops the packet then).
    fn run(prog: &[Insn], data: &[u8], net: &[u8]) -> u32 {
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        let load = |offset: u32, size: usize| -> Option<u32> {
            let (bytes, at) = if offset >= SKF_NET_OFF {
                (net, offset - SKF_NET_OFF)
            } else {
                (data, offset)
            };
            let at = usize::try_from(at).ok()?;
            let slice = bytes.get(at..at.checked_add(size)?)?;
            Some(slice.iter().fold(0, |acc, b| (acc << 8) | u32::from(*b)))
        };
        loop {
            let Some(insn) = prog.get(pc) else {
                return 0;
            };
            pc += 1;
            let size = match insn.code & 0x18 {
                BPF_W => 4,
                BPF_H => 2,
                _ => 1,
            };
            match insn.code {
                c if c & 0x07 == BPF_LD && c & 0xe0 == BPF_ABS => match load(insn.k, size) {
                    Some(v) => a = v,
                    None => return 0,
                },
                c if c & 0x07 == BPF_LD && c & 0xe0 == BPF_IND => match load(x + insn.k, size) {
                    Some(v) => a = v,
                    None => return 0,
                },
                c if c == BPF_LDX | BPF_B | BPF_MSH => match load(insn.k, 1) {
                    Some(v) => x = 4 * (v & 0xf),
                    None => return 0,
                },
                c if c == BPF_JMP | BPF_JEQ | BPF_K => {
                    pc += usize::from(if a == insn.k { insn.jt } else { insn.jf });
                }
                c if c == BPF_JMP | BPF_JSET | BPF_K => {
                    pc += usize::from(if a & insn.k != 0 { insn.jt } else { insn.jf });
                }
                c if c == BPF_RET | BPF_K => return insn.k,
                other => panic!("unexpected opcode {other:#x}"),
            }
        }
    }

    const SERVER4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
    const SERVER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);

    /// An IPv4 header with `options` extra words, followed by a UDP header.
    fn ipv4_packet(
        source: Ipv4Addr,
        protocol: u8,
        frag: u16,
        options: usize,
        sport: u16,
        dport: u16,
    ) -> Vec<u8> {
        let ihl = 5 + options;
        let mut p = vec![0u8; ihl * 4 + 8];
        p[0] = 0x40 | ihl as u8;
        p[6..8].copy_from_slice(&frag.to_be_bytes());
        p[9] = protocol;
        p[12..16].copy_from_slice(&source.octets());
        p[16..20].copy_from_slice(&[10, 0, 0, 1]);
        for option in 0..options * 4 {
            p[20 + option] = 1; // NOP options
        }
        p[ihl * 4..ihl * 4 + 2].copy_from_slice(&sport.to_be_bytes());
        p[ihl * 4 + 2..ihl * 4 + 4].copy_from_slice(&dport.to_be_bytes());
        p
    }

    #[test]
    fn ipv4_program_has_the_expected_instructions() {
        let prog = ipv4_program(SERVER4, 0x1234, 51820);
        let expected = vec![
            Insn::stmt(0x30, 9),                 // ldb [9]
            Insn::jump(0x15, 17, 0, 10),         // jeq #17 else drop
            Insn::stmt(0x20, 12),                // ld [12]
            Insn::jump(0x15, 0xc000_0207, 0, 8), // jeq #192.0.2.7 else drop
            Insn::stmt(0x28, 6),                 // ldh [6]
            Insn::jump(0x45, 0x3fff, 6, 0),      // jset #0x3fff drop
            Insn::stmt(0xb1, 0),                 // ldxb 4*([0]&0xf)
            Insn::stmt(0x48, 0),                 // ldh [x+0]
            Insn::jump(0x15, 0x1234, 0, 3),      // jeq #server_port else drop
            Insn::stmt(0x48, 2),                 // ldh [x+2]
            Insn::jump(0x15, 51820, 0, 1),       // jeq #local_port else drop
            Insn::stmt(0x06, u32::MAX),          // ret #-1
            Insn::stmt(0x06, 0),                 // ret #0
        ];
        assert_eq!(prog, expected);
    }

    #[test]
    fn ipv6_program_has_the_expected_instructions() {
        let prog = ipv6_program(SERVER6, 443, 51820);
        let expected = vec![
            Insn::stmt(0x20, 0xfff0_0008),
            Insn::jump(0x15, 0x2001_0db8, 0, 11),
            Insn::stmt(0x20, 0xfff0_000c),
            Insn::jump(0x15, 0, 0, 9),
            Insn::stmt(0x20, 0xfff0_0010),
            Insn::jump(0x15, 0, 0, 7),
            Insn::stmt(0x20, 0xfff0_0014),
            Insn::jump(0x15, 7, 0, 5),
            Insn::stmt(0x28, 0),
            Insn::jump(0x15, 443, 0, 3),
            Insn::stmt(0x28, 2),
            Insn::jump(0x15, 51820, 0, 1),
            Insn::stmt(0x06, u32::MAX),
            Insn::stmt(0x06, 0),
        ];
        assert_eq!(prog, expected);
    }

    #[test]
    fn sources_programs_accept_each_source_and_nothing_in_between() {
        let second = Ipv4Addr::new(192, 0, 2, 9);
        let prog = ipv4_sources_program(&[(SERVER4, 443), (SERVER4, 444), (second, 53)], 51820);
        for (ip, port) in [(SERVER4, 443), (SERVER4, 444), (second, 53)] {
            let p = ipv4_packet(ip, 17, 0, 1, port, 51820);
            assert_eq!(run(&prog, &p, &p), ACCEPT, "{ip}:{port}");
        }
        for (ip, port, proto, frag, dport) in [
            (second, 443, 17, 0, 51820),
            (SERVER4, 53, 17, 0, 51820),
            (Ipv4Addr::new(192, 0, 2, 8), 443, 17, 0, 51820),
            (SERVER4, 443, 6, 0, 51820),
            (SERVER4, 443, 17, 0x2000, 51820),
            (SERVER4, 443, 17, 0, 51821),
        ] {
            let p = ipv4_packet(ip, proto, frag, 0, port, dport);
            assert_eq!(
                run(&prog, &p, &p),
                DROP,
                "{ip}:{port} proto {proto} frag {frag}"
            );
        }
        let other6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 9);
        let prog6 = ipv6_sources_program(&[(SERVER6, 443), (other6, 444)], 51820);
        let net = |ip: Ipv6Addr| {
            let mut net = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
            net.extend_from_slice(&ip.octets());
            net.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
            net
        };
        let udp = |s: u16, d: u16| [s.to_be_bytes(), d.to_be_bytes(), [0, 8], [0, 0]].concat();
        assert_eq!(run(&prog6, &udp(443, 51820), &net(SERVER6)), ACCEPT);
        assert_eq!(run(&prog6, &udp(444, 51820), &net(other6)), ACCEPT);
        assert_eq!(run(&prog6, &udp(444, 51820), &net(SERVER6)), DROP);
        assert_eq!(run(&prog6, &udp(443, 51820), &net(other6)), DROP);
        assert_eq!(run(&prog6, &udp(443, 51821), &net(SERVER6)), DROP);
        assert_eq!(run(&ipv4_sources_program(&[], 1), &[0; 40], &[0; 40]), DROP);
    }

    #[test]
    fn every_jump_stays_inside_the_program() {
        for prog in [
            ipv4_program(SERVER4, 1, 2),
            ipv6_program(SERVER6, 1, 2),
            ipv4_sources_program(&[(SERVER4, 1); MAX_SOURCES + 1], 2),
            ipv6_sources_program(&[(SERVER6, 1); MAX_SOURCES + 1], 2),
            ipv4_probe_program(2, MAGIC),
            ipv6_probe_program(2, MAGIC),
        ] {
            for (at, insn) in prog.iter().enumerate() {
                if insn.code & 0x07 == BPF_JMP {
                    assert!(at + 1 + usize::from(insn.jt) < prog.len());
                    assert!(at + 1 + usize::from(insn.jf) < prog.len());
                }
            }
            assert_eq!(prog.last().map(|i| i.code), Some(BPF_RET | BPF_K));
        }
    }

    #[test]
    fn ipv4_program_accepts_the_servers_reply_with_and_without_options() {
        let prog = ipv4_program(SERVER4, 443, 51820);
        for options in [0, 1, 10] {
            let p = ipv4_packet(SERVER4, 17, 0x4000, options, 443, 51820);
            assert_eq!(run(&prog, &p, &p), ACCEPT, "options {options}");
        }
    }

    #[test]
    fn ipv4_program_drops_everything_else() {
        let prog = ipv4_program(SERVER4, 443, 51820);
        let other = Ipv4Addr::new(192, 0, 2, 8);
        let cases = [
            ipv4_packet(other, 17, 0, 0, 443, 51820),
            ipv4_packet(SERVER4, 6, 0, 0, 443, 51820),
            ipv4_packet(SERVER4, 17, 0, 0, 444, 51820),
            ipv4_packet(SERVER4, 17, 0, 0, 443, 51821),
            ipv4_packet(SERVER4, 17, 0, 2, 51820, 443),
            ipv4_packet(SERVER4, 17, 0x2000, 0, 443, 51820), // first fragment, more follow
            ipv4_packet(SERVER4, 17, 0x0001, 0, 443, 51820), // later fragment
        ];
        for (i, p) in cases.iter().enumerate() {
            assert_eq!(run(&prog, p, p), DROP, "case {i}");
        }
        let good = ipv4_packet(SERVER4, 17, 0, 0, 443, 51820);
        assert_eq!(run(&prog, &good[..good.len() - 5], &good), DROP);
    }

    #[test]
    fn ipv6_program_checks_source_address_and_ports() {
        let prog = ipv6_program(SERVER6, 443, 51820);
        let mut net = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
        net.extend_from_slice(&SERVER6.octets());
        net.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        let udp = |s: u16, d: u16| [s.to_be_bytes(), d.to_be_bytes(), [0, 8], [0, 0]].concat();
        assert_eq!(run(&prog, &udp(443, 51820), &net), ACCEPT);
        assert_eq!(run(&prog, &udp(444, 51820), &net), DROP);
        assert_eq!(run(&prog, &udp(443, 51821), &net), DROP);
        assert_eq!(run(&prog, &udp(443, 51820)[..3], &net), DROP);
        let mut other = net.clone();
        other[23] ^= 1;
        assert_eq!(run(&prog, &udp(443, 51820), &other), DROP);
    }

    const MAGIC: [u8; 4] = [0xf7, b'w', b'g', b'p'];

    #[test]
    fn ipv4_probe_program_accepts_only_probes_to_the_port() {
        let prog = ipv4_probe_program(51820, MAGIC);
        for options in [0, 3] {
            let mut p = ipv4_packet(SERVER4, 17, 0x4000, options, 40000, 51820);
            p.extend_from_slice(&MAGIC);
            p.extend_from_slice(&[0; 76]);
            assert_eq!(run(&prog, &p, &p), ACCEPT, "options {options}");
            let mut other_port = p.clone();
            other_port[(5 + options) * 4 + 3] ^= 1;
            assert_eq!(run(&prog, &other_port, &other_port), DROP);
            let mut not_probe = p.clone();
            not_probe[(5 + options) * 4 + 8] = 1; // a WireGuard handshake initiation
            assert_eq!(run(&prog, &not_probe, &not_probe), DROP);
            let mut fragment = p.clone();
            fragment[7] = 1;
            assert_eq!(run(&prog, &fragment, &fragment), DROP);
        }
        let mut short = ipv4_packet(SERVER4, 17, 0, 0, 40000, 51820);
        short.extend_from_slice(&MAGIC[..3]);
        assert_eq!(run(&prog, &short, &short), DROP, "a truncated magic");
    }

    #[test]
    fn ipv6_probe_program_accepts_only_probes_to_the_port() {
        let prog = ipv6_probe_program(51820, MAGIC);
        let probe = |d: u16, first: u8| {
            let mut p = [40000u16.to_be_bytes(), d.to_be_bytes(), [0, 88], [0, 0]].concat();
            p.push(first);
            p.extend_from_slice(&MAGIC[1..]);
            p
        };
        assert_eq!(run(&prog, &probe(51820, 0xf7), &[]), ACCEPT);
        assert_eq!(run(&prog, &probe(51821, 0xf7), &[]), DROP);
        assert_eq!(run(&prog, &probe(51820, 4), &[]), DROP);
        assert_eq!(run(&prog, &probe(51820, 0xf7)[..10], &[]), DROP);
    }
}

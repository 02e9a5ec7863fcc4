//! A NAT router's connection tracking table, as `conntrack -L -p udp` prints it.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

use anyhow::{anyhow, bail, ensure, Context, Result};

/// One UDP conntrack entry (`conntrack -L` line): the original and the reply tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// Original source (for an outbound flow: the LAN host).
    pub src: SocketAddrV4,
    /// Original destination.
    pub dst: SocketAddrV4,
    /// Reply source (the original destination, unless DNAT).
    pub reply_src: SocketAddrV4,
    /// Reply destination: where the source appears to be from outside.
    pub reply_dst: SocketAddrV4,
    /// No packet came back yet.
    pub unreplied: bool,
    /// Seen both ways often enough to be kept longer.
    pub assured: bool,
    /// Seconds until it expires.
    pub timeout_secs: u32,
}

impl Flow {
    /// The public address the flow's source appears as (the reply's destination).
    pub fn public_source(&self) -> SocketAddrV4 {
        self.reply_dst
    }

    /// Whether the NAT rewrote the source.
    pub fn is_translated(&self) -> bool {
        self.reply_dst != self.src
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.src, self.dst)?;
        if self.is_translated() {
            write!(f, " appears as {}", self.reply_dst)?;
        }
        if self.unreplied {
            f.write_str(" [unreplied]")?;
        }
        if self.assured {
            f.write_str(" [assured]")?;
        }
        Ok(())
    }
}

/// Parses `conntrack -L -p udp` output (IPv4).
pub fn parse_conntrack(text: &str) -> Result<Vec<Flow>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| parse_flow(line).with_context(|| format!("conntrack line {line:?}")))
        .collect()
}

fn parse_flow(line: &str) -> Result<Flow> {
    let mut tokens = line.split_whitespace();
    let proto = tokens.next().unwrap_or_default();
    ensure!(proto == "udp", "not a UDP entry");
    let _number = tokens.next();
    let timeout_secs = tokens
        .next()
        .ok_or_else(|| anyhow!("no timeout"))?
        .parse()
        .context("timeout")?;
    let (mut ips, mut ports) = (Vec::new(), Vec::new());
    let (mut unreplied, mut assured) = (false, false);
    for token in tokens {
        match token.split_once('=') {
            Some(("src" | "dst", v)) => ips.push(v.parse::<Ipv4Addr>().context("address")?),
            Some(("sport" | "dport", v)) => ports.push(v.parse::<u16>().context("port")?),
            Some(_) => {}
            None if token == "[UNREPLIED]" => unreplied = true,
            None if token == "[ASSURED]" => assured = true,
            None => {}
        }
    }
    let [src, dst, reply_src, reply_dst] = ips[..] else {
        bail!("expected 4 addresses, found {}", ips.len());
    };
    let [sport, dport, reply_sport, reply_dport] = ports[..] else {
        bail!("expected 4 ports, found {}", ports.len());
    };
    Ok(Flow {
        src: SocketAddrV4::new(src, sport),
        dst: SocketAddrV4::new(dst, dport),
        reply_src: SocketAddrV4::new(reply_src, reply_sport),
        reply_dst: SocketAddrV4::new(reply_dst, reply_dport),
        unreplied,
        assured,
        timeout_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conntrack_lines_parse_into_flows() {
        let text = "\
udp      17 29 src=203.0.113.2 dst=198.51.100.18 sport=51821 dport=51820 [UNREPLIED] src=198.51.100.18 dst=198.51.100.10 sport=51820 dport=40068 mark=0 use=1
udp      17 117 src=203.0.113.66 dst=198.51.100.2 sport=23456 dport=51818 src=198.51.100.2 dst=198.51.100.18 sport=51818 dport=23456 [ASSURED] mark=0 use=1
";
        let flows = parse_conntrack(text).unwrap();
        assert_eq!(flows.len(), 2);
        assert_eq!(flows[0].src, "203.0.113.2:51821".parse().unwrap());
        assert_eq!(flows[0].dst, "198.51.100.18:51820".parse().unwrap());
        assert_eq!(
            flows[0].public_source(),
            "198.51.100.10:40068".parse().unwrap()
        );
        assert!(flows[0].unreplied && !flows[0].assured);
        assert_eq!(flows[0].timeout_secs, 29);
        assert!(flows[1].assured && !flows[1].unreplied);
        assert_eq!(
            flows[1].to_string(),
            "203.0.113.66:23456 -> 198.51.100.2:51818 appears as 198.51.100.18:23456 [assured]"
        );
        assert!(parse_conntrack("").unwrap().is_empty());
    }

    #[test]
    fn malformed_conntrack_lines_are_errors() {
        assert!(parse_conntrack("tcp 6 10 src=1.2.3.4").is_err());
        assert!(parse_conntrack("udp 17 29 src=203.0.113.2 dst=198.51.100.18 sport=1").is_err());
        assert!(parse_conntrack("udp 17 soon src=203.0.113.2").is_err());
    }
}

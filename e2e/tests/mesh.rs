//! `scripts/mesh`: the files it generates, what a second run changes, the input it refuses, and a
//! generated 3-node mesh coming up behind NATs with nothing but those files and the client.
//!
//! The files are checked through WireGuard itself: every configuration goes through
//! `wg-quick strip` and `wg setconf` on a real (userspace) interface, whose `wg show` must then
//! report the node's public key, the listen port and every other node as a peer with its /32.
//! The mesh test brings each node up with `wg-quick up <generated file>` inside its own namespace
//! behind a masquerading NAT, runs `wgpunch-client` with the settings of the generated env file,
//! and pings every node from every other one through the tunnel.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use wgpunch_e2e::{
    client_binary, client_cmd, env_vars, expect_ok, global_ifname, mesh_ok, parse_endpoints,
    run_mesh, sections, server_addr, socket_path, wait_until, wireguard_go_pids, Cmd, Host,
    Internet, MeshDir, MeshNode, NatKind, Netns, Output, Process, Section, Server, TempDir,
    WgInterface, WgKeys, WgQuick, HOST_IF, SERVER_IP,
};

/// The script's defaults.
const DEFAULT_SUBNET: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 77, 0, 0), 24);
const DEFAULT_PORT: u16 = 51820;

/// A server address for the tests that only generate files.
const SOME_SERVER: &str = "discovery.example.net:51818";

/// The one-shot client's default `--timeout` (the generated env file leaves it alone).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// The client's default wait for a handshake, plus slack for the test.
const CLIENT_SLACK: Duration = Duration::from_secs(25);
/// Budget for a ping through the tunnel once the clients are done.
const PING_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// Checking a generated mesh.

fn mode(path: &Path) -> Result<u32> {
    Ok(fs::metadata(path)
        .with_context(|| format!("stat {}", path.display()))?
        .permissions()
        .mode()
        & 0o777)
}

fn ensure_mode(path: &Path, expected: u32) -> Result<()> {
    let actual = mode(path)?;
    ensure!(
        actual == expected,
        "{} has mode {actual:o}, expected {expected:o}",
        path.display()
    );
    Ok(())
}

/// Whether `ip` is a host address of `net/prefix` (not the network or broadcast address).
fn is_host_of(ip: Ipv4Addr, (net, prefix): (Ipv4Addr, u8)) -> bool {
    let mask = u32::MAX << (32 - u32::from(prefix));
    let (ip, net) = (u32::from(ip), u32::from(net));
    ip & mask == net && ip != net && ip != net | !mask
}

/// What every node's files must say, beyond the mesh's own `nodes` file.
struct Expected<'a> {
    names: &'a [&'a str],
    subnet: (Ipv4Addr, u8),
    port: u16,
    server: &'a str,
    server_key: &'a str,
}

/// Checks every file of the mesh in `dir`, running each configuration through `wg-quick strip`
/// and `wg setconf` on `wg`. Returns the nodes.
fn check_mesh(dir: &MeshDir, expected: &Expected, wg: &WgInterface) -> Result<Vec<MeshNode>> {
    let nodes = dir.nodes()?;
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    ensure!(
        names == expected.names,
        "nodes {names:?}, expected {:?}",
        expected.names
    );
    let addresses: BTreeSet<Ipv4Addr> = nodes.iter().map(|n| n.address).collect();
    ensure!(
        addresses.len() == nodes.len(),
        "addresses overlap: {nodes:?}"
    );
    let keys: BTreeSet<&str> = nodes.iter().map(|n| n.public_key.as_str()).collect();
    ensure!(keys.len() == nodes.len(), "public keys repeat: {nodes:?}");

    for dir_path in [dir.root().to_owned(), dir.root().join("keys")] {
        ensure_mode(&dir_path, 0o700)?;
    }
    for file in ["mesh.conf", "nodes", "allowed-keys"] {
        ensure_mode(&dir.root().join(file), 0o600)?;
    }
    let allowed_keys = dir.read("allowed-keys")?;
    let allowed: BTreeSet<&str> = allowed_keys.lines().collect();
    for node in &nodes {
        ensure!(
            is_host_of(node.address, expected.subnet),
            "{} has {}, not a host address of {:?}",
            node.name,
            node.address,
            expected.subnet
        );
        ensure!(
            allowed.contains(node.public_key.as_str()),
            "allowed-keys lacks {}'s key",
            node.name
        );
        check_node(dir, node, &nodes, expected, wg)
            .with_context(|| format!("node {} of {}", node.name, dir.arg()))?;
    }
    Ok(nodes)
}

fn check_node(
    dir: &MeshDir,
    node: &MeshNode,
    nodes: &[MeshNode],
    expected: &Expected,
    wg: &WgInterface,
) -> Result<()> {
    let conf = dir.conf(node);
    let env = dir.env(node);
    ensure_mode(&dir.root().join(&node.name), 0o700)?;
    for file in [
        conf.clone(),
        env.clone(),
        dir.root().join(&node.name).join("INSTALL"),
        dir.root().join("keys").join(format!("{}.key", node.name)),
        dir.root().join("keys").join(format!("{}.pub", node.name)),
    ] {
        ensure_mode(&file, 0o600)?;
    }
    let others: Vec<&MeshNode> = nodes.iter().filter(|n| n.name != node.name).collect();

    // The configuration as written: one [Interface] with the address, one [Peer] per other node.
    let text = fs::read_to_string(&conf).with_context(|| format!("reading {}", conf.display()))?;
    let sections = sections(&text)?;
    let interfaces: Vec<&Section> = sections.iter().filter(|s| s.0 == "Interface").collect();
    ensure!(
        interfaces.len() == 1,
        "{} [Interface] sections",
        interfaces.len()
    );
    let address = format!("{}/{}", node.address, expected.subnet.1);
    ensure!(
        interfaces[0]
            .1
            .contains(&("Address".into(), address.clone())),
        "[Interface] lacks Address = {address}"
    );
    let mut listed: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (_, lines) in sections.iter().filter(|s| s.0 == "Peer") {
        ensure!(
            !lines.iter().any(|(k, _)| k == "Endpoint"),
            "a peer has an Endpoint"
        );
        let key = lines
            .iter()
            .find(|(k, _)| k == "PublicKey")
            .map(|(_, v)| v.clone())
            .context("a [Peer] without PublicKey")?;
        let ips = lines
            .iter()
            .filter(|(k, _)| k == "AllowedIPs")
            .map(|(_, v)| v.clone())
            .collect();
        ensure!(!listed.contains_key(&key), "peer {key} listed twice");
        listed.insert(key, ips);
    }
    let wanted: BTreeMap<String, Vec<String>> = others
        .iter()
        .map(|o| (o.public_key.clone(), vec![format!("{}/32", o.address)]))
        .collect();
    ensure!(
        listed == wanted,
        "peers (key -> AllowedIPs) {listed:?}, expected every other node once: {wanted:?}"
    );

    // The configuration as WireGuard reads it.
    let strip = Cmd::new("wg-quick")?
        .args([OsStr::new("strip"), conf.as_os_str()])
        .run_ok()?;
    ensure!(
        !strip.stderr.contains("accessible"),
        "wg-quick warns about the file's permissions: {strip}"
    );
    wg.netns()
        .cmd("wg")?
        .args(["setconf", wg.name(), "/dev/stdin"])
        .stdin(strip.stdout)
        .run_ok()
        .context("wg setconf with the stripped configuration")?;
    let public = wg.show(Some("public-key"))?;
    ensure!(
        public.trim() == node.public_key,
        "the configuration's private key belongs to {}, keys/{}.pub says {}",
        public.trim(),
        node.name,
        node.public_key
    );
    let port = wg.show(Some("listen-port"))?;
    ensure!(
        port.trim() == expected.port.to_string(),
        "listen port {port:?}, expected {}",
        expected.port
    );
    let mut applied: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in wg.show(Some("allowed-ips"))?.lines() {
        let (key, ips) = line
            .split_once('\t')
            .context("`wg show allowed-ips` line")?;
        applied.insert(key.to_owned(), ips.split(' ').map(str::to_owned).collect());
    }
    ensure!(
        applied == wanted,
        "wg show allowed-ips {applied:?}, expected {wanted:?}"
    );
    let endpoints = wg.endpoints()?;
    ensure!(
        endpoints.values().all(Option::is_none),
        "endpoints set from the configuration: {endpoints:?}"
    );

    // The client's settings.
    let vars = env_vars(&fs::read_to_string(&env)?)?;
    ensure!(
        vars == [
            ("WGPUNCH_SERVER".to_owned(), expected.server.to_owned()),
            (
                "WGPUNCH_SERVER_KEY".to_owned(),
                expected.server_key.to_owned()
            )
        ],
        "{} sets {vars:?}",
        env.display()
    );
    let install = dir.read(&format!("{}/INSTALL", node.name))?;
    for needle in [
        format!("/etc/wireguard/{}.conf", node.iface),
        format!("/etc/wgpunch/{}.env", node.iface),
        format!("wg-quick@{}", node.iface),
        format!("wgpunch-client@{}.timer", node.iface),
    ] {
        ensure!(
            install.contains(&needle),
            "INSTALL does not mention {needle}"
        );
    }
    Ok(())
}

/// Fails if `out` shows any of the mesh's private keys.
fn ensure_no_private_key(out: &Output, dir: &MeshDir, nodes: &[MeshNode]) -> Result<()> {
    for node in nodes {
        let private = dir.private_key(&node.name)?;
        ensure!(
            !out.stdout.contains(&private) && !out.stderr.contains(&private),
            "`{}` printed {}'s private key",
            out.command,
            node.name
        );
    }
    Ok(())
}

/// The env file must name (active or commented out) exactly the variables `wgpunch-client
/// --help` lists, but for WGPUNCH_CONTINUOUS (the unit picks the mode) and plus the two the
/// units put on the command line.
fn ensure_env_matches_client(env_text: &str) -> Result<()> {
    let help = Cmd::new(client_binary()?)?.arg("--help").run_ok()?.stdout;
    let mut client: BTreeSet<&str> = help
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split_once('=').map(|(name, _)| name))
        .collect();
    ensure!(
        client.remove("WGPUNCH_CONTINUOUS"),
        "wgpunch-client --help lists no WGPUNCH_CONTINUOUS: {help}"
    );
    client.extend(["WGPUNCH_SERVER", "WGPUNCH_SERVER_KEY"]);
    let named: BTreeSet<&str> = env_text
        .lines()
        .filter_map(|l| l.trim_start_matches('#').split_once('='))
        .map(|(name, _)| name)
        .filter(|name| name.starts_with("WGPUNCH_"))
        .collect();
    ensure!(
        named == client,
        "the env file names {named:?}, wgpunch-client reads {client:?}"
    );
    Ok(())
}

/// A namespace with a `wireguard-go` interface to feed configurations to.
fn setconf_bed() -> Result<(Netns, WgInterface)> {
    let ns = Netns::new("setconf")?;
    let wg = WgInterface::start(&ns, "192.0.2.1/24", None)?;
    Ok((ns, wg))
}

// ---------------------------------------------------------------------------------------------
// File tests.

fn check_generated_files() -> Result<()> {
    let (ns, wg) = setconf_bed()?;
    let tmp = TempDir::new("mesh")?;
    let dir = MeshDir::new(tmp.join("mesh"));
    let server_key = WgKeys::generate()?;
    let names = ["alpha", "beta", "gamma", "delta"];
    let mut args = vec![
        "--server",
        SOME_SERVER,
        "--server-key",
        server_key.public(),
        dir.arg(),
    ];
    args.extend(names);
    let out = mesh_ok(&args)?;
    let expected = Expected {
        names: &names,
        subnet: DEFAULT_SUBNET,
        port: DEFAULT_PORT,
        server: SOME_SERVER,
        server_key: server_key.public(),
    };
    let nodes = check_mesh(&dir, &expected, &wg)?;
    ensure_no_private_key(&out, &dir, &nodes)?;
    for node in &nodes {
        ensure!(
            node.iface == "wg0",
            "{} has interface {}",
            node.name,
            node.iface
        );
        ensure!(
            out.stdout.contains(&node.public_key),
            "the summary lacks {}'s public key: {out}",
            node.name
        );
    }
    let env_text = fs::read_to_string(dir.env(&nodes[0]))?;
    ensure_env_matches_client(&env_text)?;
    ensure_defaults_parse(&env_text, &ns)?;
    eprintln!("mesh: {out}");
    Ok(())
}

/// The commented-out options, uncommented, must be values the client accepts: with them it gets
/// past its command line and fails only on the interface, which does not exist (exit 1, not 2).
fn ensure_defaults_parse(env_text: &str, ns: &Netns) -> Result<()> {
    let missing = global_ifname()?;
    let server: SocketAddr = "192.0.2.1:51818".parse()?;
    let key = WgKeys::generate()?;
    let mut cmd = client_cmd(ns, &[], &missing, server, key.public())?;
    for line in env_text.lines() {
        if let Some((name, value)) = line.strip_prefix('#').and_then(|l| l.split_once('=')) {
            if name.starts_with("WGPUNCH_") {
                cmd = cmd.env(name, value);
            }
        }
    }
    let out = cmd.run()?;
    out.ensure_code(1)
        .context("the env file's commented-out defaults")?;
    ensure!(out.stderr.contains(&missing), "{out}");
    Ok(())
}

#[test]
fn generated_configurations_parse_and_list_every_other_node_once() {
    expect_ok(check_generated_files());
}

fn check_rerun() -> Result<()> {
    let (_ns, wg) = setconf_bed()?;
    let tmp = TempDir::new("mesh")?;
    let dir = MeshDir::new(tmp.join("mesh"));
    let server_key = WgKeys::generate()?;
    let subnet = "10.99.8.0/29";
    let first = mesh_ok(&[
        "--server",
        SOME_SERVER,
        "--server-key",
        server_key.public(),
        "--subnet",
        subnet,
        "--port",
        "51000",
        dir.arg(),
        "a",
        "b",
        "c",
    ])?;
    let expected = Expected {
        names: &["a", "b", "c"],
        subnet: (Ipv4Addr::new(10, 99, 8, 0), 29),
        port: 51000,
        server: SOME_SERVER,
        server_key: server_key.public(),
    };
    let before = check_mesh(&dir, &expected, &wg)?;
    ensure_no_private_key(&first, &dir, &before)?;
    let private_before: Vec<String> = before
        .iter()
        .map(|n| dir.private_key(&n.name))
        .collect::<Result<_>>()?;

    // The same command again changes nothing at all.
    let snapshot = dir.snapshot()?;
    mesh_ok(&["--subnet", subnet, dir.arg(), "a", "b", "c"])?;
    ensure!(
        dir.snapshot()? == snapshot,
        "rerunning the same command changed files"
    );

    // Adding d (settings come from mesh.conf) keeps a, b and c and adds d everywhere.
    let second = mesh_ok(&[dir.arg(), "d"])?;
    let expected = Expected {
        names: &["a", "b", "c", "d"],
        ..expected
    };
    let after = check_mesh(&dir, &expected, &wg)?;
    ensure_no_private_key(&second, &dir, &after)?;
    ensure!(
        after[..3] == before[..],
        "a, b or c changed: {before:?} -> {after:?}"
    );
    for (node, old) in before.iter().zip(&private_before) {
        ensure!(
            dir.private_key(&node.name)? == *old,
            "{}'s private key changed",
            node.name
        );
    }
    ensure!(
        second.stdout.contains("(new)") && first.stdout.matches("(new)").count() == 3,
        "the summaries do not mark the new nodes: {first}\n{second}"
    );

    // A subnet too small for one more node changes nothing.
    let snapshot = dir.snapshot()?;
    let full = run_mesh(&[dir.arg(), "e", "f", "g"])?;
    full.ensure_code(2)?;
    ensure!(full.stderr.contains("too small"), "{full}");
    ensure!(dir.snapshot()? == snapshot, "a refused run changed files");

    // A changed server rewrites every env file and nothing else of the mesh.
    let moved = "[2001:db8::1]:51818";
    mesh_ok(&["--server", moved, dir.arg()])?;
    let expected = Expected {
        server: moved,
        ..expected
    };
    let moved_nodes = check_mesh(&dir, &expected, &wg)?;
    ensure!(moved_nodes == after, "moving the server changed the nodes");

    // Another interface name: every node's files move to it, the old ones go, keys stay.
    mesh_ok(&["--interface", "wgmesh", dir.arg(), "b:wgb"])?;
    let renamed = check_mesh(&dir, &expected, &wg)?;
    for (node, old) in renamed.iter().zip(&after) {
        let iface = if node.name == "b" { "wgb" } else { "wgmesh" };
        ensure!(
            node.iface == iface,
            "{} has interface {}",
            node.name,
            node.iface
        );
        ensure!(
            node.address == old.address && node.public_key == old.public_key,
            "renaming the interface changed {}",
            node.name
        );
        let stale = dir.node_dir(node).join("wg0.conf");
        ensure!(!stale.exists(), "{} is left behind", stale.display());
    }
    Ok(())
}

#[test]
fn rerunning_keeps_keys_and_addresses_and_adds_new_nodes_everywhere() {
    expect_ok(check_rerun());
}

fn check_bad_input() -> Result<()> {
    let tmp = TempDir::new("mesh")?;
    let out_dir = tmp.join("mesh");
    let out = out_dir.to_str().context("non-UTF-8 temporary path")?;
    let key = WgKeys::generate()?;
    let good_key = key.public();
    let cases: &[(&[&str], &str)] = &[
        (
            &[out, "alpha", "../evil"],
            "node name '../evil' is not allowed",
        ),
        (&[out, "a b"], "node name 'a b' is not allowed"),
        (&[out, "-rf"], "unknown option '-rf'"),
        (&[out, "keys"], "node name 'keys' is taken"),
        (&[out, "a", "a"], "node 'a' is named twice"),
        (
            &["--subnet", "10.1.2.0/30", out, "a", "b", "c"],
            "subnet 10.1.2.0/30 is too small",
        ),
        (
            &["--subnet", "10.1.2.0/31", out, "a"],
            "the prefix must be /8 to /30",
        ),
        (
            &["--subnet", "10.1.2.3/24", out, "a"],
            "did you mean 10.1.2.0/24",
        ),
        (
            &["--subnet", "2001:db8::/64", out, "a"],
            "is not an IPv4 CIDR",
        ),
        (
            &["--interface", "much-too-long-name", out, "a"],
            "interface name",
        ),
        (
            &["--port", "70000", out, "a"],
            "port '70000' is not a UDP port",
        ),
    ];
    for (args, message) in cases {
        let mut full = vec!["--server", SOME_SERVER, "--server-key", good_key];
        full.extend_from_slice(args);
        expect_refusal(&full, message, &out_dir)?;
    }
    let short_key = &good_key[..20];
    expect_refusal(
        &["--server", SOME_SERVER, "--server-key", short_key, out, "a"],
        "is not a WireGuard public key",
        &out_dir,
    )?;
    expect_refusal(
        &[
            "--server",
            "198.51.100.2",
            "--server-key",
            good_key,
            out,
            "a",
        ],
        "is not HOST:PORT",
        &out_dir,
    )?;
    expect_refusal(
        &["--server-key", good_key, out, "a"],
        "give --server",
        &out_dir,
    )?;
    expect_refusal(
        &["--server", SOME_SERVER, out, "a"],
        "give --server-key",
        &out_dir,
    )?;

    // A directory that holds something else is left alone.
    let other = tmp.join("other");
    fs::create_dir(&other)?;
    fs::write(other.join("notes.txt"), "mine\n")?;
    let refused = run_mesh(&[
        "--server",
        SOME_SERVER,
        "--server-key",
        good_key,
        other.to_str().context("non-UTF-8 temporary path")?,
        "a",
    ])?;
    refused.ensure_code(2)?;
    ensure!(refused.stderr.contains("holds no mesh.conf"), "{refused}");
    let left: Vec<_> = fs::read_dir(&other)?.collect::<std::io::Result<_>>()?;
    ensure!(
        left.len() == 1,
        "the refused run wrote into {}",
        other.display()
    );
    Ok(())
}

/// Runs the script and expects exit 2, `message` on stderr and no output directory.
fn expect_refusal(args: &[&str], message: &str, out_dir: &Path) -> Result<()> {
    let out = run_mesh(args)?;
    out.ensure_code(2)?;
    ensure!(
        out.stderr.contains(message),
        "stderr lacks {message:?}: {out}"
    );
    ensure!(
        !out_dir.exists(),
        "a refused run left {} behind: {out}",
        out_dir.display()
    );
    Ok(())
}

#[test]
fn bad_input_fails_with_a_clear_message_and_writes_nothing() {
    expect_ok(check_bad_input());
}

// ---------------------------------------------------------------------------------------------
// The mesh in the test bed.

/// A mesh node: a host behind a NAT with its generated interface up.
struct BedNode {
    node: MeshNode,
    host: Host,
    wg: WgQuick,
}

/// Three nodes behind masquerading NATs, the server, and the generated files.
struct MeshBed {
    // Field order is drop order: interfaces, then the server, then the network, then the files.
    nodes: Vec<BedNode>,
    server: Server,
    _server_ns: Netns,
    _internet: Internet,
    dir: MeshDir,
    _tmp: TempDir,
}

fn mesh_bed(names: &[&str]) -> Result<MeshBed> {
    let internet = Internet::new()?;
    let server_ns = Netns::new("server")?;
    let server_ip = internet.attach(&server_ns, HOST_IF)?;
    ensure!(server_ip == SERVER_IP, "the server is the first site");
    let server = Server::start(&server_ns, &[server_addr()])?;

    // The mesh, generated for the server's real address and key; one interface name per node
    // (WireGuard's UAPI sockets are shared by every namespace).
    let tmp = TempDir::new("mesh")?;
    let dir = MeshDir::new(tmp.join("mesh"));
    let server_arg = server_addr().to_string();
    let mut args = vec![
        "--server".to_owned(),
        server_arg,
        "--server-key".to_owned(),
        server.public_key().to_owned(),
        "--subnet".to_owned(),
        "192.0.2.0/24".to_owned(),
        dir.arg().to_owned(),
    ];
    for name in names {
        args.push(format!("{name}:{}", global_ifname()?));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    mesh_ok(&args)?;

    let mut nodes = Vec::new();
    for node in dir.nodes()? {
        let host = internet.nat_host(&node.name, NatKind::Masquerade)?;
        let wg = WgQuick::up(host.netns(), &dir.conf(&node))?;
        nodes.push(BedNode { node, host, wg });
    }
    Ok(MeshBed {
        nodes,
        server,
        _server_ns: server_ns,
        _internet: internet,
        dir,
        _tmp: tmp,
    })
}

/// `wgpunch-client IFACE $WGPUNCH_SERVER $WGPUNCH_SERVER_KEY` with every other variable of the
/// node's env file in its environment, as the systemd units run it.
fn start_client(bed: &MeshBed, node: &BedNode) -> Result<Process> {
    let env = fs::read_to_string(bed.dir.env(&node.node))?;
    let vars = env_vars(&env)?;
    let get = |name: &str| {
        vars.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .with_context(|| format!("{} sets no {name}", bed.dir.env(&node.node).display()))
    };
    let server: SocketAddr = get("WGPUNCH_SERVER")?.parse()?;
    let mut cmd = client_cmd(
        node.host.netns(),
        &[],
        &node.node.iface,
        server,
        &get("WGPUNCH_SERVER_KEY")?,
    )?;
    for (key, value) in vars
        .iter()
        .filter(|(k, _)| k != "WGPUNCH_SERVER" && k != "WGPUNCH_SERVER_KEY")
    {
        cmd = cmd.env(key, value);
    }
    cmd.spawn(&format!("wgpunch-client on {}", node.node.name))
}

/// `wg show` of every node and the server's log, for failure messages.
fn diagnostics(bed: &MeshBed) -> String {
    let mut text = bed.server.log_tail();
    for node in &bed.nodes {
        let show = node.wg.show("dump").map_or_else(
            |e| format!("wg show failed: {e:#}"),
            // Drop the interface line: it holds the private key.
            |s| s.lines().skip(1).collect::<Vec<_>>().join("\n"),
        );
        text.push_str(&format!(
            "\n{} ({}), {}:\n{show}",
            node.node.name,
            node.host.describe(),
            node.node.iface
        ));
    }
    text
}

fn check_mesh_comes_up(bed: &MeshBed) -> Result<()> {
    let started = Instant::now();
    let mut clients = bed
        .nodes
        .iter()
        .map(|n| start_client(bed, n))
        .collect::<Result<Vec<_>>>()?;
    for client in &mut clients {
        let budget = (CLIENT_TIMEOUT + CLIENT_SLACK).saturating_sub(started.elapsed());
        let out = client.wait_timeout(budget)?;
        out.ensure_code(0).with_context(|| diagnostics(bed))?;
    }
    let resolved = started.elapsed();

    for node in &bed.nodes {
        let endpoints = parse_endpoints(&node.wg.show("endpoints")?)?;
        for other in bed.nodes.iter().filter(|o| o.node.name != node.node.name) {
            let endpoint = endpoints
                .get(&other.node.public_key)
                .copied()
                .flatten()
                .with_context(|| {
                    format!(
                        "{} has no endpoint for {}\n{}",
                        node.node.name,
                        other.node.name,
                        diagnostics(bed)
                    )
                })?;
            ensure!(
                endpoint.ip() == IpAddr::V4(other.host.public_ip()),
                "{} has {} at {endpoint}, but its NAT is {}",
                node.node.name,
                other.node.name,
                other.host.public_ip()
            );
        }
    }
    for node in &bed.nodes {
        for other in bed.nodes.iter().filter(|o| o.node.name != node.node.name) {
            node.host
                .netns()
                .ping_until(&other.node.address.to_string(), PING_TIMEOUT)
                .with_context(|| {
                    format!(
                        "ping {} -> {} through the tunnel\n{}",
                        node.node.name,
                        other.node.name,
                        diagnostics(bed)
                    )
                })?;
        }
    }
    eprintln!(
        "mesh: {} one-shot clients exited 0 after {resolved:.1?}; every node pinged every \
         other through the tunnel {:.1?} after starting them",
        bed.nodes.len(),
        started.elapsed()
    );
    Ok(())
}

/// Waits until no `wireguard-go` of the bed's interfaces is left.
fn check_cleanup(ifaces: &[String]) -> Result<()> {
    wait_until(
        "the mesh's wireguard-go daemons to exit",
        Duration::from_secs(5),
        || {
            Ok(ifaces
                .iter()
                .all(|i| wireguard_go_pids(i).is_empty() && !socket_path(i).exists())
                .then_some(()))
        },
    )
}

#[test]
fn a_generated_three_node_mesh_comes_up_behind_nats() {
    let bed = expect_ok(mesh_bed(&["alpha", "beta", "gamma"]));
    let ifaces: Vec<String> = bed.nodes.iter().map(|n| n.node.iface.clone()).collect();
    expect_ok(check_mesh_comes_up(&bed));
    drop(bed);
    expect_ok(check_cleanup(&ifaces));
}

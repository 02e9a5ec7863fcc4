//! `scripts/mesh`: the files it generates, what a second run changes, and the input it refuses.
//!
//! The files are checked through WireGuard itself: every configuration goes through
//! `wg-quick strip` and `wg setconf` on a real (userspace) interface, whose `wg show` must then
//! report the node's public key, the listen port and every other node as a peer with its /32
//! (see `wgpunch_e2e::check_mesh`). `mesh_up.rs` brings a generated mesh up behind NATs.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use anyhow::{ensure, Context, Result};
use wgpunch_e2e::{
    check_mesh, client_cmd, ensure_env_matches_client, ensure_no_private_key, expect_ok,
    global_ifname, mesh_ok, run_mesh, ExpectedMesh, MeshDir, Netns, TempDir, WgInterface, WgKeys,
};

/// The script's defaults.
const DEFAULT_SUBNET: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 77, 0, 0), 24);
const DEFAULT_PORT: u16 = 51820;

/// A server address for the tests that only generate files.
const SOME_SERVER: &str = "discovery.example.net:51818";

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
    let expected = ExpectedMesh {
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
    let expected = ExpectedMesh {
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
    let expected = ExpectedMesh {
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
    let expected = ExpectedMesh {
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

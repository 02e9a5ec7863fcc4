//! The systemd units in `systemd/`: `systemd-analyze verify` accepts every one, each
//! `ExecStart=` parses with the binary's real command-line parser, the environment-file templates
//! name only real options with valid values, and the sandbox does not loosen (exposure scores).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context as _, Result};
use clap::{CommandFactory as _, Parser as _};
use wgpunch_client::cli::{EXIT_UNRESOLVED, EXIT_USAGE};
use wgpunch_deploy::unit::{env_assignments, exec_argv, Unit};
use wgpunch_e2e::{binary, tool, workspace_root, Cmd, TempDir, CLIENT, SERVER};

/// Every unit file shipped.
const UNITS: [&str; 4] = [
    "wgpunch-server.service",
    "wgpunch-client@.service",
    "wgpunch-client@.timer",
    "wgpunch-client-continuous@.service",
];

/// The instance (interface) the template units are checked with.
const INSTANCE: &str = "wg0";

/// The directory the units' `ExecStart=` lines point into.
const UNIT_BIN_DIR: &str = "/usr/local/bin/";

/// Each unit's exposure ceiling from `systemd-analyze security --offline=true` (systemd 252), as
/// measured when the units were written, and the checks it may still fail (the exposure the README
/// explains). A change that loosens a sandbox fails here; one that tightens it should lower the
/// number. The score is rounded to a tenth, so a single loosening (an extra address family, say)
/// can leave it unchanged: a failed check that is not listed fails the test too.
const SANDBOXES: [(&str, f64, &[&str]); 3] = [
    ("wgpunch-server.service", 1.1, SERVER_FINDINGS),
    ("wgpunch-client@.service", 2.0, CLIENT_FINDINGS),
    ("wgpunch-client-continuous@.service", 2.0, CLIENT_FINDINGS),
];

/// A public UDP service on the host's network, in the host's root directory.
const SERVER_FINDINGS: &[&str] = &[
    "RootDirectory=/RootImage=",
    "RestrictAddressFamilies=~AF_(INET|INET6)",
    "PrivateNetwork=",
    "DeviceAllow=",
    "IPAddressDeny=",
];

/// The server's, plus root with two network capabilities, capset, netlink and local sockets.
const CLIENT_FINDINGS: &[&str] = &[
    "RootDirectory=/RootImage=",
    "RestrictAddressFamilies=~AF_(INET|INET6)",
    "PrivateNetwork=",
    "DeviceAllow=",
    "IPAddressDeny=",
    "SystemCallFilter=~@privileged",
    "User=/DynamicUser=",
    "RestrictAddressFamilies=~AF_NETLINK",
    "RestrictAddressFamilies=~AF_UNIX",
    "CapabilityBoundingSet=~CAP_NET_ADMIN",
    "CapabilityBoundingSet=~CAP_NET_(BIND_SERVICE|BROADCAST|RAW)",
    "PrivateUsers=",
];

/// A program from the Debian package `package`, or an error naming that package.
fn require(program: &str, package: &str) -> Result<PathBuf> {
    tool(program).with_context(|| {
        format!(
            "`{program}` is needed to check the systemd units: install the Debian package \
             {package} (`apt-get install {package}`, or run scripts/install-deps)"
        )
    })
}

fn units_dir() -> PathBuf {
    workspace_root().join("systemd")
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn unit(name: &str) -> Result<Unit> {
    let path = units_dir().join(name);
    Unit::parse(&read(&path)?).with_context(|| format!("parsing {}", path.display()))
}

/// The file name systemd-analyze is given for `unit`: templates get the instance.
fn instance_name(unit: &str) -> String {
    unit.replace("@.", &format!("@{INSTANCE}."))
}

#[test]
fn every_unit_passes_systemd_analyze_verify() -> Result<()> {
    let analyze = require("systemd-analyze", "systemd")?;
    require("man", "man-db")?;
    let dir = TempDir::new("units")?;

    // The man pages the units' Documentation= names, where `man` will find them.
    let share = dir.join("share");
    Cmd::new(env!("CARGO_BIN_EXE_wgpunch-docgen"))?
        .arg("--out")
        .arg(&share)
        .run_ok()?;

    // The units, with ExecStart= pointing at the binaries under test (verify checks they exist).
    let bins = binary(CLIENT)?
        .parent()
        .context("binary without a directory")?
        .to_path_buf();
    binary(SERVER)?;
    for name in UNITS {
        let text = read(&units_dir().join(name))?;
        let rewritten = text.replace(
            &format!("ExecStart={UNIT_BIN_DIR}"),
            &format!("ExecStart={}/", bins.display()),
        );
        std::fs::write(dir.join(name), rewritten)?;
    }

    for name in UNITS {
        let output = Cmd::new(&analyze)?
            .args(["verify", "--man=yes"])
            .arg(dir.join(instance_name(name).as_str()))
            .env("MANPATH", share.join("man"))
            .run()?;
        // Unknown keys and bad values are only warnings (exit 0): any output fails too.
        ensure!(
            output.status.success() && output.stderr.trim().is_empty(),
            "systemd-analyze verify {name}: {output}"
        );
    }
    Ok(())
}

/// A well-formed server key standing in for the template's placeholder.
const EXAMPLE_KEY: &str = "1rwvlEQkF6vL4jA1gRzlTM7I3tuZHtdq8qkLMwBs8Uw=";

/// The client's settings as the example environment file gives them, with a well-formed key in
/// place of its placeholder, which must be one the client refuses as a usage error (exit 2, so
/// the continuous unit does not restart a client that was never configured).
fn client_env() -> Result<BTreeMap<String, String>> {
    let text = read(&units_dir().join("wgpunch-client.env.example"))?;
    let mut env: BTreeMap<String, String> = env_assignments(&text, false).into_iter().collect();
    let placeholder = env
        .insert("WGPUNCH_SERVER_KEY".to_owned(), EXAMPLE_KEY.to_owned())
        .context("the client template sets no WGPUNCH_SERVER_KEY")?;
    let refused = wgpunch_client::cli::Cli::try_parse_from([
        CLIENT,
        INSTANCE,
        "discovery.example.net:51818",
        &placeholder,
    ]);
    ensure!(
        refused.is_err_and(|e| e.exit_code() == 2),
        "the template's placeholder key {placeholder:?} is not refused as a usage error"
    );
    Ok(env)
}

/// The argument vector of `unit`'s single ExecStart=, for the example settings.
fn exec_start(name: &str, env: &BTreeMap<String, String>) -> Result<Vec<String>> {
    let unit = unit(name)?;
    let lines = unit.all("Service", "ExecStart");
    let [line] = lines.as_slice() else {
        bail!("{name}: expected one ExecStart=, found {}", lines.len());
    };
    let argv = exec_argv(line, INSTANCE, env).with_context(|| format!("{name}: {line}"))?;
    Ok(argv)
}

fn ensure_program(name: &str, argv: &[String], binary: &str) -> Result<()> {
    let expected = format!("{UNIT_BIN_DIR}{binary}");
    ensure!(
        argv.first() == Some(&expected),
        "{name}: ExecStart= runs {:?}, expected {expected}",
        argv.first()
    );
    Ok(())
}

#[test]
fn client_units_run_a_command_line_the_client_accepts() -> Result<()> {
    let env = client_env()?;
    for (name, continuous) in [
        ("wgpunch-client@.service", false),
        ("wgpunch-client-continuous@.service", true),
    ] {
        let argv = exec_start(name, &env)?;
        ensure_program(name, &argv, CLIENT)?;
        let cli = wgpunch_client::cli::Cli::try_parse_from(&argv)
            .map_err(|e| anyhow::anyhow!("{name}: {argv:?} is refused by the client:\n{e}"))?;
        ensure!(
            cli.interface == INSTANCE,
            "{name}: interface {}",
            cli.interface
        );
        ensure!(
            Some(&cli.server) == env.get("WGPUNCH_SERVER"),
            "{name}: server"
        );
        ensure!(
            Some(&cli.server_key) == env.get("WGPUNCH_SERVER_KEY"),
            "{name}: server key"
        );
        ensure!(cli.continuous == continuous, "{name}: continuous mode");
        let unit = unit(name)?;
        ensure!(
            unit.get("Service", "EnvironmentFile") == Some("/etc/wgpunch/%i.env"),
            "{name}: settings not from /etc/wgpunch/%i.env"
        );
        ensure!(
            unit.get("Service", "CapabilityBoundingSet") == Some("CAP_NET_RAW CAP_NET_ADMIN"),
            "{name}: capabilities"
        );
    }

    // The one-shot unit's exit-status policy names the client's real codes.
    let oneshot = unit("wgpunch-client@.service")?;
    ensure!(oneshot.get("Service", "Type") == Some("oneshot"));
    ensure!(oneshot.get("Service", "SuccessExitStatus") == Some(&*EXIT_UNRESOLVED.to_string()));
    let unset = oneshot.get("Service", "UnsetEnvironment").unwrap_or("");
    ensure!(
        client_env_vars().contains(&unset.to_owned()),
        "UnsetEnvironment={unset} is not one of the client's variables"
    );
    let continuous = unit("wgpunch-client-continuous@.service")?;
    ensure!(
        continuous.get("Service", "RestartPreventExitStatus") == Some(&*EXIT_USAGE.to_string())
    );
    let timer = unit("wgpunch-client@.timer")?;
    ensure!(timer.get("Install", "WantedBy") == Some("timers.target"));
    Ok(())
}

#[test]
fn server_unit_runs_a_command_line_the_server_accepts() -> Result<()> {
    let name = "wgpunch-server.service";
    let argv = exec_start(name, &BTreeMap::new())?;
    ensure_program(name, &argv, SERVER)?;
    wgpunch_server::cli::Cli::try_parse_from(&argv)
        .map_err(|e| anyhow::anyhow!("{name}: {argv:?} is refused by the server:\n{e}"))?;
    let unit = unit(name)?;
    ensure!(unit.get("Service", "EnvironmentFile") == Some("-/etc/wgpunch/server.env"));
    ensure!(unit.get("Service", "DynamicUser") == Some("yes"));
    ensure!(unit.get("Service", "CapabilityBoundingSet") == Some(""));
    // The server's key defaults to $STATE_DIRECTORY/server.key.
    ensure!(unit.get("Service", "StateDirectory").is_some());
    Ok(())
}

fn client_env_vars() -> Vec<String> {
    env_vars(&wgpunch_client::cli::Cli::command())
}

fn env_vars(cmd: &clap::Command) -> Vec<String> {
    cmd.get_arguments()
        .filter_map(|a| a.get_env())
        .map(|v| v.to_string_lossy().into_owned())
        .collect()
}

/// Checks every `VAR=value` of `template` (commented examples too) against `cmd`: the variable
/// belongs to an option (or is one of `unit_vars`) and the value is valid for it, parsed with
/// `required` as the required arguments; and every variable of `cmd` is described in the
/// template.
fn check_template(
    template: &str,
    cmd: &clap::Command,
    required: &[&str],
    unit_vars: &[&str],
) -> Result<()> {
    let text = read(&units_dir().join(template))?;
    let assignments = env_assignments(&text, true);
    ensure!(!assignments.is_empty(), "{template}: no settings");
    for (var, value) in &assignments {
        if unit_vars.contains(&var.as_str()) {
            continue;
        }
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_env() == Some(OsStr::new(var)))
            .with_context(|| format!("{template}: {var} is no option of {}", cmd.get_name()))?;
        if !arg.get_action().takes_values() {
            // A flag: systemd passes the text, clap reads it as a boolean.
            ensure!(
                ["1", "0", "true", "false", "yes", "no", "on", "off"].contains(&value.as_str()),
                "{template}: {var}={value} is not a boolean"
            );
            continue;
        }
        // The value as the option's own argument, with the full parser (ranges, enums).
        let mut argv = vec![cmd.get_name().to_owned()];
        argv.extend(required.iter().map(|s| s.to_string()));
        match arg.get_long() {
            Some(long) => argv.push(format!("--{long}={value}")),
            None => argv.push(value.clone()),
        }
        cmd.clone()
            .try_get_matches_from(&argv)
            .map_err(|e| anyhow::anyhow!("{template}: {var}={value}: {e}"))?;
    }
    for var in env_vars(cmd) {
        ensure!(
            text.contains(&var),
            "{template} does not describe {var} of {}",
            cmd.get_name()
        );
    }
    Ok(())
}

#[test]
fn env_templates_name_real_options_with_valid_values() -> Result<()> {
    check_template(
        "wgpunch-client.env.example",
        &wgpunch_client::cli::Cli::command(),
        &[INSTANCE, "discovery.example.net:51818", EXAMPLE_KEY],
        &["WGPUNCH_SERVER", "WGPUNCH_SERVER_KEY"],
    )?;
    check_template(
        "wgpunch-server.env.example",
        &wgpunch_server::cli::Cli::command(),
        &[],
        &[],
    )
}

/// The settings of the checks `systemd-analyze security` marks as failed (`✗ Setting= ...`).
fn failed_checks(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix('✗'))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect()
}

/// The overall exposure `systemd-analyze security` prints on its last line.
fn parse_exposure(output: &str) -> Option<f64> {
    let line = output
        .lines()
        .find(|l| l.contains("Overall exposure level"))?;
    let (_, rest) = line.split_once("service: ")?;
    rest.split_whitespace().next()?.parse().ok()
}

#[test]
fn exposure_scores_do_not_regress() -> Result<()> {
    let analyze = require("systemd-analyze", "systemd")?;
    let mut report = Vec::new();
    for (name, ceiling, accepted) in SANDBOXES {
        let output = Cmd::new(&analyze)?
            .args(["security", "--offline=true", "--no-pager"])
            .arg(units_dir().join(name))
            .run_ok()?;
        let score = parse_exposure(&output.stdout)
            .with_context(|| format!("{name}: no exposure level in {output}"))?;
        ensure!(
            score <= ceiling,
            "{name}: exposure {score} is above its recorded {ceiling}; the sandbox loosened:\n{}",
            output.stdout
        );
        let failed = failed_checks(&output.stdout);
        ensure!(
            !failed.is_empty(),
            "{name}: no failed checks read from {output}"
        );
        let new: Vec<&str> = failed
            .into_iter()
            .filter(|f| !accepted.contains(f))
            .collect();
        ensure!(
            new.is_empty(),
            "{name}: systemd-analyze security now fails {new:?}; the sandbox loosened:\n{}",
            output.stdout
        );
        report.push(format!("{name}: {score}"));
    }
    eprintln!("exposure: {}", report.join(", "));
    Ok(())
}

#[test]
fn exposure_line_is_read() {
    let line = "→ Overall exposure level for wgpunch-client@i.service: 2.0 OK 🙂";
    assert_eq!(parse_exposure(line), Some(2.0));
    assert_eq!(parse_exposure("nothing"), None);
}

#[test]
fn failed_checks_are_read() {
    let output = "\
  NAME                 DESCRIPTION          EXPOSURE
✗ PrivateNetwork=      Service has access to the host's network      0.5
✓ PrivateTmp=          Service has no access to other software's temporary files
✗ CapabilityBoundingSet=~CAP_NET_(BIND_SERVICE|BROADCAST|RAW) Service has elevated networking privileges 0.1
";
    assert_eq!(
        failed_checks(output),
        [
            "PrivateNetwork=",
            "CapabilityBoundingSet=~CAP_NET_(BIND_SERVICE|BROADCAST|RAW)"
        ]
    );
}

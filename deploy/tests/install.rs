//! `scripts/install` into a DESTDIR puts every file in place with the right mode, keeps an
//! existing environment file, and `scripts/uninstall` then removes exactly what it installed:
//! settings and the server's state stay unless `--purge`.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use wgpunch_e2e::{binary, tool, workspace_root, Cmd, TempDir, CLIENT, SERVER};

/// Installing copies a few megabytes and generates the docs: seconds, even on a busy machine.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// Every file a default install (PREFIX=/usr/local) puts under DESTDIR, with its mode.
const INSTALLED: &[(&str, u32)] = &[
    ("usr/local/bin/wgpunch-client", 0o755),
    ("usr/local/bin/wgpunch-server", 0o755),
    ("usr/local/share/man/man1/wgpunch-client.1", 0o644),
    ("usr/local/share/man/man1/wgpunch-server.1", 0o644),
    (
        "usr/local/share/bash-completion/completions/wgpunch-client",
        0o644,
    ),
    (
        "usr/local/share/bash-completion/completions/wgpunch-server",
        0o644,
    ),
    ("usr/local/share/zsh/site-functions/_wgpunch-client", 0o644),
    ("usr/local/share/zsh/site-functions/_wgpunch-server", 0o644),
    (
        "usr/local/share/fish/vendor_completions.d/wgpunch-client.fish",
        0o644,
    ),
    (
        "usr/local/share/fish/vendor_completions.d/wgpunch-server.fish",
        0o644,
    ),
    ("usr/local/share/wgpunch/installed-files", 0o644),
    ("etc/systemd/system/wgpunch-server.service", 0o644),
    ("etc/systemd/system/wgpunch-client@.service", 0o644),
    ("etc/systemd/system/wgpunch-client@.timer", 0o644),
    (
        "etc/systemd/system/wgpunch-client-continuous@.service",
        0o644,
    ),
    ("etc/wgpunch/wgpunch-client.env.example", 0o644),
    ("etc/wgpunch/wgpunch-server.env.example", 0o644),
    // From --env wg0=FILE.
    ("etc/wgpunch/wg0.env", 0o600),
];

/// Settings the administrator wrote before the install (kept by everything but --purge).
const OWN_ENV: &str = "etc/wgpunch/wg1.env";
/// The server's key, as systemd's DynamicUser= keeps it (kept by everything but --purge).
const SERVER_KEY: &str = "var/lib/private/wgpunch/server.key";

/// Every file and directory under `root`, relative, with their permission bits.
fn tree(root: &Path) -> Result<Vec<(PathBuf, u32, bool)>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let entry = entry?;
            let meta = fs::symlink_metadata(entry.path())?;
            let relative = entry.path().strip_prefix(root)?.to_path_buf();
            out.push((relative, meta.permissions().mode() & 0o7777, meta.is_dir()));
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

fn files(root: &Path) -> Result<BTreeSet<String>> {
    Ok(tree(root)?
        .into_iter()
        .filter(|(_, _, dir)| !dir)
        .map(|(path, _, _)| path.display().to_string())
        .collect())
}

fn script(name: &str) -> Result<Cmd> {
    Ok(Cmd::new(workspace_root().join("scripts").join(name))?.timeout(SCRIPT_TIMEOUT))
}

/// A directory holding the binaries under test and wgpunch-docgen, as --bin-dir wants it.
fn bin_dir(tmp: &TempDir) -> Result<PathBuf> {
    let dir = tmp.join("bin");
    fs::create_dir(&dir)?;
    symlink(binary(CLIENT)?, dir.join(CLIENT))?;
    symlink(binary(SERVER)?, dir.join(SERVER))?;
    symlink(
        env!("CARGO_BIN_EXE_wgpunch-docgen"),
        dir.join("wgpunch-docgen"),
    )?;
    Ok(dir)
}

#[test]
fn install_then_uninstall_leaves_only_settings_and_state() -> Result<()> {
    let systemctl = tool("systemctl").context(
        "`systemctl` is needed to enable units in the test root: install the Debian package \
         systemd (`apt-get install systemd`, or run scripts/install-deps)",
    )?;
    let tmp = TempDir::new("install")?;
    let bins = bin_dir(&tmp)?;
    let root = tmp.join("root");
    fs::create_dir_all(root.join("etc/wgpunch"))?;
    fs::write(root.join(OWN_ENV), "WGPUNCH_SERVER=mine:1\n")?;
    fs::create_dir_all(root.join(SERVER_KEY).parent().context("no parent")?)?;
    fs::write(root.join(SERVER_KEY), "key\n")?;
    let new_env = tmp.join("new.env");
    fs::write(&new_env, "WGPUNCH_SERVER=h:1\nWGPUNCH_SERVER_KEY=k\n")?;

    let install = || -> Result<()> {
        let output = script("install")?
            .arg("--bin-dir")
            .arg(&bins)
            .arg("--destdir")
            .arg(&root)
            .arg("--env")
            .arg(format!("wg0={}", new_env.display()))
            .arg("--env")
            .arg(format!("wg1={}", new_env.display()))
            .run_ok()?;
        ensure!(
            output.stdout.contains("keeping the existing"),
            "install did not say it kept {OWN_ENV}: {output}"
        );
        Ok(())
    };
    install()?;
    // Again, as an upgrade: the same files, the manifest without duplicates.
    install()?;

    let mut expected: BTreeSet<String> = INSTALLED.iter().map(|(p, _)| p.to_string()).collect();
    expected.insert(OWN_ENV.to_owned());
    expected.insert(SERVER_KEY.to_owned());
    ensure!(
        files(&root)? == expected,
        "installed files differ:\n got {:?}\nwant {:?}",
        files(&root)?,
        expected
    );
    for (path, mode) in INSTALLED {
        let actual = fs::metadata(root.join(path))?.permissions().mode() & 0o7777;
        ensure!(actual == *mode, "{path}: mode {actual:o}, want {mode:o}");
    }
    for (path, mode, dir) in tree(&root)? {
        ensure!(
            !dir || mode == 0o755,
            "{}: directory mode {mode:o}",
            path.display()
        );
    }
    ensure!(
        fs::read_to_string(root.join(OWN_ENV))? == "WGPUNCH_SERVER=mine:1\n",
        "install replaced {OWN_ENV}"
    );
    let manifest = fs::read_to_string(root.join("usr/local/share/wgpunch/installed-files"))?;
    let lines: Vec<&str> = manifest.lines().collect();
    let unique: BTreeSet<&str> = lines.iter().copied().collect();
    ensure!(
        lines.len() == unique.len(),
        "manifest repeats lines:\n{manifest}"
    );
    let unit = fs::read_to_string(root.join("etc/systemd/system/wgpunch-server.service"))?;
    ensure!(unit.contains("\nExecStart=/usr/local/bin/wgpunch-server"));

    // The administrator enables units; uninstall must take the links along.
    Cmd::new(&systemctl)?
        .arg(format!("--root={}", root.display()))
        .args([
            "enable",
            "wgpunch-server.service",
            "wgpunch-client@wg0.timer",
            "wgpunch-client-continuous@wg1.service",
        ])
        .run_ok()?;
    ensure!(
        files(&root)?.len() > expected.len(),
        "systemctl enabled nothing"
    );

    script("uninstall")?.arg("--destdir").arg(&root).run_ok()?;
    let kept: BTreeSet<String> = ["etc/wgpunch/wg0.env", OWN_ENV, SERVER_KEY]
        .iter()
        .map(|s| s.to_string())
        .collect();
    ensure!(
        files(&root)? == kept,
        "after uninstall: {:?}, want only {kept:?}",
        files(&root)?
    );
    let dirs: Vec<String> = tree(&root)?
        .into_iter()
        .filter(|(_, _, dir)| *dir)
        .map(|(p, _, _)| p.display().to_string())
        .collect();
    ensure!(
        dirs == [
            "etc",
            "etc/wgpunch",
            "var",
            "var/lib",
            "var/lib/private",
            "var/lib/private/wgpunch"
        ],
        "directories left: {dirs:?}"
    );

    script("uninstall")?
        .arg("--destdir")
        .arg(&root)
        .arg("--purge")
        .run_ok()?;
    ensure!(
        files(&root)?.is_empty(),
        "after --purge: {:?}",
        files(&root)?
    );
    Ok(())
}

#[test]
fn scripts_explain_themselves_and_refuse_bad_arguments() -> Result<()> {
    for name in ["install", "uninstall"] {
        let help = script(name)?.arg("--help").run_ok()?;
        ensure!(
            help.stdout.starts_with("Usage: scripts/"),
            "{name} --help: {help}"
        );
        script(name)?
            .arg("--no-such-option")
            .run()?
            .ensure_code(2)?;
        script(name)?
            .args(["--prefix", "relative/path", "--destdir", "/nonexistent"])
            .run()?
            .ensure_code(2)?;
    }
    Ok(())
}

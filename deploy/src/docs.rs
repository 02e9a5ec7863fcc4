//! Man pages and shell completions, generated from the clap definitions so they never drift
//! from `--help`.
//!
//! [`generate`] writes a tree that mirrors `PREFIX/share`, so an installer copies it as it is:
//!
//! ```text
//! man/man1/wgpunch-client.1
//! man/man1/wgpunch-server.1
//! bash-completion/completions/wgpunch-client
//! zsh/site-functions/_wgpunch-client
//! fish/vendor_completions.d/wgpunch-client.fish
//! (and the same three for wgpunch-server)
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use clap::CommandFactory as _;
use clap_complete::Shell;

/// The binaries documented, with their commands.
pub fn commands() -> [(&'static str, clap::Command); 2] {
    [
        ("wgpunch-client", wgpunch_client::cli::Cli::command()),
        ("wgpunch-server", wgpunch_server::cli::Cli::command()),
    ]
}

/// The shells completions are generated for, with where each looks for them under
/// `PREFIX/share` and the file name it expects for a binary.
const SHELLS: [(Shell, &str); 3] = [
    (Shell::Bash, "bash-completion/completions"),
    (Shell::Zsh, "zsh/site-functions"),
    (Shell::Fish, "fish/vendor_completions.d"),
];

/// Why the documentation could not be written.
#[derive(Debug, thiserror::Error)]
pub enum DocError {
    /// Creating a directory or writing a file failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Rendering a man page failed.
    #[error("rendering the man page of {name}: {source}")]
    Render {
        /// The binary.
        name: &'static str,
        /// The error from the renderer.
        #[source]
        source: io::Error,
    },
}

/// The file a shell's completion for `name` goes to, relative to `PREFIX/share`.
pub fn completion_path(shell: Shell, name: &str) -> Option<PathBuf> {
    let (_, dir) = SHELLS.iter().find(|(s, _)| *s == shell)?;
    let file = match shell {
        Shell::Zsh => format!("_{name}"),
        Shell::Fish => format!("{name}.fish"),
        _ => name.to_owned(),
    };
    Some(Path::new(dir).join(file))
}

/// The man page of `name`, relative to `PREFIX/share`.
pub fn man_path(name: &str) -> PathBuf {
    Path::new("man/man1").join(format!("{name}.1"))
}

/// Renders the man page of `cmd` (as section 1), with an ENVIRONMENT section listing the
/// variables that stand in for options and a SEE ALSO section naming the other binary and the
/// systemd units.
pub fn man_page(name: &'static str, cmd: clap::Command) -> Result<Vec<u8>, DocError> {
    let mut page = Vec::new();
    let environment = environment(&cmd);
    clap_mangen::Man::new(cmd)
        .section("1")
        .manual("wgpunch")
        .render(&mut page)
        .map_err(|source| DocError::Render { name, source })?;
    page.extend_from_slice(environment.as_bytes());
    page.extend_from_slice(see_also(name).as_bytes());
    Ok(page)
}

/// The roff text of the ENVIRONMENT section: each variable and the option it sets.
fn environment(cmd: &clap::Command) -> String {
    let mut text = String::from(".SH ENVIRONMENT\n");
    for arg in cmd.get_arguments() {
        let Some(var) = arg.get_env() else { continue };
        let option = match (arg.get_long(), arg.get_value_names()) {
            (Some(long), _) => format!("\\-\\-{}", long.replace('-', "\\-")),
            (None, Some([value, ..])) => value.to_string(),
            (None, _) => arg.get_id().to_string(),
        };
        text.push_str(&format!(
            ".TP\n\\fB{}\\fR\nSets {option}; the command line takes precedence.\n",
            var.to_string_lossy()
        ));
    }
    text
}

/// The roff text of the SEE ALSO section.
fn see_also(name: &str) -> String {
    let (other, units) = if name == "wgpunch-server" {
        ("wgpunch-client", "wgpunch-server.service")
    } else {
        (
            "wgpunch-server",
            "wgpunch-client@.service, wgpunch-client@.timer, wgpunch-client-continuous@.service",
        )
    };
    format!(
        ".SH \"SEE ALSO\"\n\\fB{other}\\fR(1), \\fBwg\\fR(8), \\fBwg-quick\\fR(8), \
         \\fBsystemd.exec\\fR(5)\n.PP\nsystemd units: {units}; settings in /etc/wgpunch/\n"
    )
}

/// Renders the completion script of `cmd` for `shell`.
pub fn completion(shell: Shell, name: &str, mut cmd: clap::Command) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut script);
    script
}

/// Writes every man page and completion under `out` (see the module documentation for the
/// layout) and returns the files written, relative to `out`.
pub fn generate(out: &Path) -> Result<Vec<PathBuf>, DocError> {
    let mut written = Vec::new();
    for (name, cmd) in commands() {
        let page = man_page(name, cmd.clone())?;
        write(out, &man_path(name), &page)?;
        written.push(man_path(name));
        for (shell, _) in SHELLS {
            let Some(path) = completion_path(shell, name) else {
                continue;
            };
            write(out, &path, &completion(shell, name, cmd.clone()))?;
            written.push(path);
        }
    }
    Ok(written)
}

fn write(out: &Path, relative: &Path, contents: &[u8]) -> Result<(), DocError> {
    let path = out.join(relative);
    let error = |source| DocError::Write {
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(error)?;
    }
    fs::write(&path, contents).map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_pages_carry_every_option_and_its_default() {
        for (name, cmd) in commands() {
            let page = String::from_utf8(man_page(name, cmd.clone()).unwrap()).unwrap();
            assert!(page.contains(".TH"), "{name}: no title");
            assert!(page.contains("SEE ALSO"), "{name}: no SEE ALSO");
            for arg in cmd.get_arguments() {
                if let Some(long) = arg.get_long() {
                    // roff escapes the dashes of option names.
                    assert!(
                        page.contains(&format!("\\-\\-{}", long.replace('-', "\\-"))),
                        "{name}: --{long} missing from the man page"
                    );
                }
            }
            assert!(page.contains("default"), "{name}: no defaults shown");
            assert!(
                page.contains("WGPUNCH_LOG"),
                "{name}: no environment section"
            );
        }
    }

    #[test]
    fn every_option_explains_itself_and_its_default() {
        for (name, cmd) in commands() {
            assert!(cmd.get_version().is_some(), "{name}: no --version");
            for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                let help = arg
                    .get_long_help()
                    .or(arg.get_help())
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                assert!(!help.is_empty(), "{name}: {id} has no help");
                let optional_value = arg.get_action().takes_values() && !arg.is_required_set();
                if optional_value && arg.get_default_values().is_empty() {
                    assert!(
                        help.contains("Default"),
                        "{name}: {id} neither has a default value nor says what happens without it"
                    );
                }
            }
        }
    }

    #[test]
    fn completions_name_the_options() {
        for (name, cmd) in commands() {
            for (shell, _) in SHELLS {
                let script = String::from_utf8(completion(shell, name, cmd.clone())).unwrap();
                assert!(
                    script.contains("registration-ttl") || script.contains("handshake-timeout"),
                    "{name} {shell}: options missing"
                );
            }
        }
    }

    #[test]
    fn completion_files_are_where_the_shells_look() {
        assert_eq!(
            completion_path(Shell::Zsh, "wgpunch-client").unwrap(),
            Path::new("zsh/site-functions/_wgpunch-client")
        );
        assert_eq!(
            completion_path(Shell::Bash, "wgpunch-server").unwrap(),
            Path::new("bash-completion/completions/wgpunch-server")
        );
        assert!(completion_path(Shell::Elvish, "wgpunch-server").is_none());
    }
}

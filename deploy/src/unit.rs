//! Just enough of systemd's unit-file and environment-file syntax to read the project's own
//! units: sections and keys, continuation lines, `%i` specifiers, quoting, and `$VAR` /
//! `${VAR}` expansion in command lines. The tests use it to run each unit's `ExecStart=`
//! through the binaries' real command-line parsers.

use std::collections::BTreeMap;

/// A unit file: its sections in order, each with its assignments in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unit {
    sections: Vec<(String, Vec<(String, String)>)>,
}

/// Why a unit file or a command line in it could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// A line is neither a section header, an assignment, a comment nor blank.
    #[error("line {0}: neither a [Section], a Key=value, a comment nor blank")]
    BadLine(usize),
    /// An assignment comes before the first section header.
    #[error("line {0}: assignment outside any section")]
    OutsideSection(usize),
    /// A `%` specifier this reader does not expand.
    #[error("unsupported specifier %{0}")]
    Specifier(char),
    /// A quote is not closed.
    #[error("unterminated quote in command line")]
    Quote,
    /// The command line is empty.
    #[error("empty command line")]
    Empty,
}

impl Unit {
    /// Parses the text of a unit file.
    pub fn parse(text: &str) -> Result<Self, UnitError> {
        let mut unit = Unit::default();
        let mut pending = String::new();
        let mut pending_line = 0;
        for (index, raw) in text.lines().enumerate() {
            let number = index + 1;
            if pending.is_empty() {
                let trimmed = raw.trim();
                if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
                    continue;
                }
                pending_line = number;
            } else if raw.trim_start().starts_with('#') || raw.trim_start().starts_with(';') {
                // Comments inside a continued line are skipped, as systemd does.
                continue;
            }
            match raw.strip_suffix('\\') {
                Some(head) => {
                    pending.push_str(head);
                    pending.push(' ');
                    continue;
                }
                None => pending.push_str(raw),
            }
            let line = std::mem::take(&mut pending);
            unit.add_line(line.trim(), pending_line)?;
        }
        if !pending.is_empty() {
            unit.add_line(pending.trim(), pending_line)?;
        }
        Ok(unit)
    }

    fn add_line(&mut self, line: &str, number: usize) -> Result<(), UnitError> {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            self.sections.push((name.to_owned(), Vec::new()));
            return Ok(());
        }
        let (key, value) = line.split_once('=').ok_or(UnitError::BadLine(number))?;
        let (_, entries) = self
            .sections
            .last_mut()
            .ok_or(UnitError::OutsideSection(number))?;
        entries.push((key.trim().to_owned(), value.trim().to_owned()));
        Ok(())
    }

    /// The section names, in order.
    pub fn sections(&self) -> impl Iterator<Item = &str> {
        self.sections.iter().map(|(name, _)| name.as_str())
    }

    /// Every value assigned to `key` in `section`, in order.
    pub fn all(&self, section: &str, key: &str) -> Vec<&str> {
        self.sections
            .iter()
            .filter(|(name, _)| name == section)
            .flat_map(|(_, entries)| entries.iter())
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The last value assigned to `key` in `section` (the one systemd uses for single-valued
    /// settings).
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.all(section, key).last().copied()
    }
}

/// Replaces the specifiers `%i` and `%I` with `instance` and `%%` with `%`.
pub fn expand_specifiers(text: &str, instance: &str) -> Result<String, UnitError> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('i') | Some('I') => out.push_str(instance),
            Some('%') => out.push('%'),
            Some(other) => return Err(UnitError::Specifier(other)),
            None => return Err(UnitError::Specifier(' ')),
        }
    }
    Ok(out)
}

/// Turns the value of an `ExecStart=` line into the argument vector systemd would run: the
/// prefixes `@-:+!|` dropped, specifiers expanded for `instance`, words split with quoting, a
/// word that is exactly `$VAR` replaced by the value's whitespace-separated words, and `${VAR}`
/// replaced in place (unset variables expand to nothing).
pub fn exec_argv(
    value: &str,
    instance: &str,
    env: &BTreeMap<String, String>,
) -> Result<Vec<String>, UnitError> {
    let value = value.trim_start_matches(['@', '-', ':', '+', '!', '|']);
    let expanded = expand_specifiers(value, instance)?;
    let mut argv = Vec::new();
    for word in split_words(&expanded)? {
        if let Some(name) = word.strip_prefix('$').filter(|n| is_var_name(n)) {
            let value = env.get(name).map(String::as_str).unwrap_or("");
            argv.extend(value.split_whitespace().map(str::to_owned));
        } else {
            argv.push(expand_braced(&word, env));
        }
    }
    if argv.is_empty() {
        return Err(UnitError::Empty);
    }
    Ok(argv)
}

fn is_var_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn expand_braced(word: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = word;
    while let Some(start) = rest.find("${") {
        let (head, tail) = rest.split_at(start);
        out.push_str(head);
        let body = tail.get(2..).unwrap_or("");
        match body.find('}') {
            Some(end) => {
                let name = body.get(..end).unwrap_or("");
                out.push_str(env.get(name).map(String::as_str).unwrap_or(""));
                rest = body.get(end + 1..).unwrap_or("");
            }
            None => {
                out.push_str(tail);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Splits a command line into words at unquoted whitespace; double and single quotes group.
fn split_words(line: &str) -> Result<Vec<String>, UnitError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), '\\') | (None, '\\') => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
                in_word = true;
            }
            (Some(_), c) => word.push(c),
            (None, '"') | (None, '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(UnitError::Quote);
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// The `VAR=value` assignments of an environment file, in order. With `commented`, lines of the
/// form `#VAR=value` (an example left commented out) count too. Surrounding quotes are removed.
pub fn env_assignments(text: &str, commented: bool) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let line = match line.strip_prefix('#') {
                Some(rest) if commented => rest,
                Some(_) => return None,
                None => line,
            };
            let (name, value) = line.split_once('=')?;
            if !is_var_name(name) || !name.starts_with(|c: char| c.is_ascii_uppercase()) {
                return None;
            }
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            Some((name.to_owned(), value.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# comment
[Unit]
Description=x %i
After=a.service \\
  b.service

[Service]
ExecStart=/bin/x --flag %i ${SERVER} \"two words\" $ARGS
SystemCallFilter=@system-service
SystemCallFilter=~@privileged
";

    fn env() -> BTreeMap<String, String> {
        [("SERVER", "h:1"), ("ARGS", "-a  -b")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn sections_continuations_and_repeated_keys() {
        let unit = Unit::parse(SAMPLE).unwrap();
        assert_eq!(unit.sections().collect::<Vec<_>>(), ["Unit", "Service"]);
        assert_eq!(unit.get("Unit", "After"), Some("a.service    b.service"));
        assert_eq!(
            unit.all("Service", "SystemCallFilter"),
            ["@system-service", "~@privileged"]
        );
        assert_eq!(unit.get("Service", "Nope"), None);
    }

    #[test]
    fn exec_start_expands_like_systemd() {
        let unit = Unit::parse(SAMPLE).unwrap();
        let line = unit.get("Service", "ExecStart").unwrap();
        let argv = exec_argv(line, "wg0", &env()).unwrap();
        assert_eq!(
            argv,
            ["/bin/x", "--flag", "wg0", "h:1", "two words", "-a", "-b"]
        );
    }

    #[test]
    fn prefixes_and_unset_variables() {
        let argv = exec_argv("-/bin/x $UNSET pre${SERVER}post", "i", &env()).unwrap();
        assert_eq!(argv, ["/bin/x", "preh:1post"]);
        assert_eq!(exec_argv("", "i", &env()), Err(UnitError::Empty));
        assert_eq!(
            exec_argv("/bin/x \"open", "i", &env()),
            Err(UnitError::Quote)
        );
        assert_eq!(
            exec_argv("/bin/x %n", "i", &env()),
            Err(UnitError::Specifier('n'))
        );
    }

    #[test]
    fn bad_lines_are_reported() {
        assert_eq!(Unit::parse("Key=1"), Err(UnitError::OutsideSection(1)));
        assert_eq!(Unit::parse("[A]\njunk"), Err(UnitError::BadLine(2)));
    }

    #[test]
    fn environment_files_with_and_without_examples() {
        let text = "# A comment = not a variable\nA=1\n#B=\"2\"\n  # lower=3\n";
        assert_eq!(env_assignments(text, false), [("A".into(), "1".into())]);
        assert_eq!(
            env_assignments(text, true),
            [("A".into(), "1".into()), ("B".into(), "2".into())]
        );
    }
}

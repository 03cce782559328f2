//! `izhub user …`: console users in the configuration file, password
//! hashes and bearer tokens.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};

use super::args::UserCommand;
use crate::admin::auth::{hash_password, new_token};
use crate::config;

/// Shortest password accepted.
const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password accepted (the engine looks no further).
const MAX_PASSWORD_BYTES: usize = 1024;

/// What a configuration file created by `user add` starts with.
const NEW_FILE: &str = "[admin]\nlisten = \"127.0.0.1:9480\"\n";

pub(super) fn user_command(cmd: UserCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        UserCommand::Add {
            name,
            role,
            config,
            routes,
            destinations,
            password_stdin,
            token,
        } => {
            config::check_user_name(&name).map_err(anyhow::Error::msg)?;
            // Refuse a duplicate before asking for a password.
            if let Some(text) = read_existing(&config)? {
                let entry = Entry {
                    name: &name,
                    role: &role,
                    password_hash: "",
                    routes: &routes,
                    destinations: &destinations,
                    token_sha256: None,
                };
                refuse_duplicate(&text, &entry, &config)?;
            }
            let password = read_password(password_stdin, &name)?;
            let phc = hash_password(&password).map_err(anyhow::Error::msg)?;
            let token = if token {
                Some(new_token().map_err(anyhow::Error::msg)?)
            } else {
                None
            };
            let entry = Entry {
                name: &name,
                role: &role,
                password_hash: &phc,
                routes: &routes,
                destinations: &destinations,
                token_sha256: token.as_ref().map(|(_, digest)| digest.as_str()),
            };
            add(&config, &entry)?;
            println!(
                "added {role} '{name}' to {}; a running engine lets it log in after its next reload",
                config.display()
            );
            if let Some((token, _)) = token {
                println!("bearer token for '{name}' (shown only now; the file keeps its SHA-256):");
                println!("{token}");
            }
            Ok(ExitCode::SUCCESS)
        }
        UserCommand::Hash { password_stdin } => {
            let password = read_password(password_stdin, "the hash")?;
            println!("{}", hash_password(&password).map_err(anyhow::Error::msg)?);
            Ok(ExitCode::SUCCESS)
        }
        UserCommand::Token => {
            let (token, digest) = new_token().map_err(anyhow::Error::msg)?;
            println!("token:  {token}");
            println!("sha256: {digest}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A password from standard input's first line, or asked twice on the
/// terminal without echo.
fn read_password(from_stdin: bool, whose: &str) -> anyhow::Result<String> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        if !std::io::stdin().is_terminal() {
            bail!(
                "standard input is not a terminal: give the password on it with --password-stdin"
            );
        }
        let first = rpassword::prompt_password(format!("Password for {whose}: "))
            .context("cannot read the password from the terminal")?;
        let again = rpassword::prompt_password("The same password again: ")
            .context("cannot read the password from the terminal")?;
        if first != again {
            bail!("the two passwords differ; nothing was changed");
        }
        first
    };
    if password.chars().count() < MIN_PASSWORD_CHARS {
        bail!("the password is shorter than {MIN_PASSWORD_CHARS} characters");
    }
    if password.len() > MAX_PASSWORD_BYTES {
        bail!("the password is longer than {MAX_PASSWORD_BYTES} bytes");
    }
    Ok(password)
}

/// One `[[admin.users]]` entry to write.
struct Entry<'a> {
    name: &'a str,
    role: &'a str,
    password_hash: &'a str,
    routes: &'a [String],
    destinations: &'a [String],
    token_sha256: Option<&'a str>,
}

impl Entry<'_> {
    fn toml(&self) -> String {
        let mut out = format!(
            "\n[[admin.users]]\nname = {}\nrole = {}\npassword_hash = {}\n",
            toml_string(self.name),
            toml_string(self.role),
            toml_string(self.password_hash)
        );
        let list = |items: &[String]| {
            let quoted: Vec<String> = items.iter().map(|s| toml_string(s)).collect();
            format!("[{}]", quoted.join(", "))
        };
        if !self.routes.is_empty() {
            out += &format!("routes = {}\n", list(self.routes));
        }
        if !self.destinations.is_empty() {
            out += &format!("destinations = {}\n", list(self.destinations));
        }
        if let Some(t) = self.token_sha256 {
            out += &format!("token_sha256 = {}\n", toml_string(t));
        }
        out
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn read_existing(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The users `[[admin.users]]` already names in `text`.
fn user_names(text: &str, path: &Path) -> anyhow::Result<Vec<String>> {
    let table: toml::Table = toml::from_str(text)
        .map_err(|e| anyhow::anyhow!("{} is not valid TOML: {}", path.display(), e.message()))?;
    let users = table
        .get("admin")
        .and_then(|a| a.get("users"))
        .and_then(|u| u.as_array())
        .map(|users| {
            users
                .iter()
                .filter_map(|u| u.get("name").and_then(|n| n.as_str()))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Ok(users)
}

fn refuse_duplicate(text: &str, entry: &Entry<'_>, path: &Path) -> anyhow::Result<()> {
    if user_names(text, path)?.iter().any(|n| n == entry.name) {
        bail!(
            "{} already has a user '{}': remove its [[admin.users]] entry first to replace it",
            path.display(),
            entry.name
        );
    }
    Ok(())
}

/// Appends `entry` to the configuration at `path` (creating the file,
/// readable by its owner only, when missing) once the result checks: the
/// entry itself must be valid; other problems of the file are reported,
/// not fixed.
fn add(path: &Path, entry: &Entry<'_>) -> anyhow::Result<()> {
    let existing = read_existing(path)?;
    let before = existing.clone().unwrap_or_else(|| NEW_FILE.to_string());
    if existing.is_some() {
        refuse_duplicate(&before, entry, path)?;
    }
    let index = user_names(&before, path)?.len();
    let separator = if before.is_empty() || before.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    let addition = format!("{separator}{}", entry.toml());
    let after = format!("{before}{addition}");
    if let Err(e) = toml::from_str::<toml::Table>(&after) {
        bail!(
            "the user cannot be appended to {} ({}): is [admin] written as an inline table?",
            path.display(),
            e.message()
        );
    }
    if let Err(errors) = config::load_str(&after, path) {
        let key = format!("admin.users[{index}]");
        let (ours, others): (Vec<_>, Vec<_>) =
            errors.0.into_iter().partition(|e| e.key.starts_with(&key));
        if !ours.is_empty() {
            bail!("{}", config::ConfigErrors(ours).to_string().trim_end());
        }
        eprint!(
            "note: the configuration has problems besides the new user (izhub check lists them):\n{}",
            config::ConfigErrors(others)
        );
    }
    match existing {
        Some(_) => {
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            file.write_all(addition.as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        None => {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options
                .open(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            file.write_all(after.as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_strings_round_trip() {
        for s in [
            "plain",
            "with \"quotes\"",
            "back\\slash",
            "tab\tand\u{7f}",
            "é ✓",
        ] {
            let doc = format!("v = {}", toml_string(s));
            let table: toml::Table = toml::from_str(&doc).unwrap();
            assert_eq!(table["v"].as_str(), Some(s), "{doc}");
        }
    }
}

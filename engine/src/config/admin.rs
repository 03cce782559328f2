//! `[admin]` access: console users (`[[admin.users]]`), the `/metrics`
//! token, session length and HTTPS (`[admin.tls]`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::compile::Errors;
use super::file::{AdminUserFile, FileConfig};
use super::spec::{AdminAccessSpec, AdminUserSpec, ListenerTlsSpec, Role};

/// Longest session a configuration may ask for: 30 days.
const MAX_SESSION_MINUTES: u64 = 30 * 24 * 60;

/// Largest argon2 memory cost accepted in a password hash, in KiB (1 GiB):
/// every login attempt for the user costs that much memory.
const MAX_M_COST_KIB: u32 = 1 << 20;

/// Checks `[admin]`'s users, tokens, session length and TLS files (named,
/// not read).
pub(super) fn compile(errs: &mut Errors<'_>, base: &Path, file: &FileConfig) -> AdminAccessSpec {
    let Some(admin) = &file.admin else {
        return AdminAccessSpec::default();
    };
    let routes: BTreeSet<&str> = file
        .routes
        .iter()
        .map(|r| r.get_ref().name.as_str())
        .collect();
    let destinations: BTreeSet<&str> = file.destinations.keys().map(String::as_str).collect();
    let mut users = Vec::new();
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    let mut tokens: BTreeMap<[u8; 32], String> = BTreeMap::new();
    for (i, entry) in admin.users.iter().enumerate() {
        let key = format!("admin.users[{i}]");
        let Some(user) = user(errs, &key, entry.get_ref(), &routes, &destinations) else {
            continue;
        };
        if names.insert(user.name.clone(), i).is_some() {
            errs.push(
                Some(entry.get_ref().name.span()),
                format!("{key}.name"),
                format!("user '{}' is defined more than once", user.name),
            );
            continue;
        }
        if let (Some(token), Some(written)) = (user.token_sha256, &entry.get_ref().token_sha256) {
            if let Some(other) = tokens.get(&token) {
                errs.push(
                    Some(written.span()),
                    format!("{key}.token_sha256"),
                    format!("user '{other}' has the same token; give each user its own"),
                );
                continue;
            }
            tokens.insert(token, user.name.clone());
        }
        users.push(user);
    }
    let metrics_token_sha256 = admin
        .metrics_token_sha256
        .as_ref()
        .and_then(|t| sha256_hex(errs, t, "admin.metrics_token_sha256"));
    let session = match &admin.session_minutes {
        None => Duration::from_secs(480 * 60),
        Some(m) => {
            let minutes = *m.get_ref();
            if !(1..=MAX_SESSION_MINUTES).contains(&minutes) {
                errs.push(
                    Some(m.span()),
                    "admin.session_minutes",
                    format!("must be from 1 to {MAX_SESSION_MINUTES} (30 days)"),
                );
            }
            Duration::from_secs(minutes.clamp(1, MAX_SESSION_MINUTES) * 60)
        }
    };
    let tls = admin.tls.as_ref().map(|t| {
        let span = t.span();
        let t = t.get_ref();
        ListenerTlsSpec {
            cert: base.join(&t.cert),
            key: base.join(&t.key),
            client_ca: t.client_ca.as_ref().map(|c| base.join(c)),
            identities: Default::default(),
            at: errs.origin(span, "admin.tls"),
        }
    });
    let oidc = admin
        .oidc
        .as_ref()
        .map(|o| super::oidc::compile(errs, base, o, &routes, &destinations));
    AdminAccessSpec {
        users,
        oidc,
        metrics_token_sha256,
        session,
        tls,
        peer_token_env: admin.peer_token_env.clone(),
    }
}

/// One `[[admin.users]]` entry, or `None` (with its errors pushed) when it
/// cannot be used.
fn user(
    errs: &mut Errors<'_>,
    key: &str,
    u: &AdminUserFile,
    routes: &BTreeSet<&str>,
    destinations: &BTreeSet<&str>,
) -> Option<AdminUserSpec> {
    let before = errs.len();
    let name = u.name.get_ref().clone();
    if let Err(why) = check_user_name(&name) {
        errs.push(Some(u.name.span()), format!("{key}.name"), why);
    }
    let role = match u.role.get_ref().parse::<Role>() {
        Ok(role) => Some(role),
        Err(why) => {
            errs.push(Some(u.role.span()), format!("{key}.role"), why);
            None
        }
    };
    if let Err(why) = check_password_hash(u.password_hash.get_ref()) {
        errs.push(
            Some(u.password_hash.span()),
            format!("{key}.password_hash"),
            why,
        );
    }
    let routes = u
        .routes
        .as_ref()
        .map(|r| names_in(errs, &format!("{key}.routes"), r, "route", routes));
    let destinations = u.destinations.as_ref().map(|d| {
        names_in(
            errs,
            &format!("{key}.destinations"),
            d,
            "destination",
            destinations,
        )
    });
    let token_sha256 = u
        .token_sha256
        .as_ref()
        .and_then(|t| sha256_hex(errs, t, &format!("{key}.token_sha256")));
    if errs.len() != before {
        return None;
    }
    Some(AdminUserSpec {
        name,
        role: role?,
        password_hash: u.password_hash.get_ref().clone(),
        routes,
        destinations,
        token_sha256,
    })
}

/// A user name: 1 to 64 letters, digits and `.`, `_`, `-`, `@`.
pub fn check_user_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{name}' is not a user name: 1 to 64 letters, digits, '.', '_', '-' or '@'"
        ))
    }
}

/// An argon2id PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`)
/// with usable parameters.
pub fn check_password_hash(phc: &str) -> Result<(), String> {
    let refuse = |why: &str| {
        Err(format!(
            "{why}: give the argon2id PHC string `izhub user hash --password-stdin` prints"
        ))
    };
    let Ok(hash) = argon2::PasswordHash::new(phc) else {
        return refuse("not a PHC password hash string");
    };
    if hash.algorithm != argon2::ARGON2ID_IDENT {
        return refuse(&format!("the hash is {}, not argon2id", hash.algorithm));
    }
    if hash.salt.is_none() || hash.hash.is_none() {
        return refuse("the hash has no salt or no output");
    }
    match argon2::Params::try_from(&hash) {
        Ok(params) if params.m_cost() > MAX_M_COST_KIB => Err(format!(
            "the hash asks for {} KiB of memory per login; at most {MAX_M_COST_KIB}",
            params.m_cost()
        )),
        Ok(_) => Ok(()),
        Err(e) => refuse(&format!("its parameters are not usable ({e})")),
    }
}

/// A list of route or destination names, each defined and the list not empty.
pub(super) fn names_in(
    errs: &mut Errors<'_>,
    key: &str,
    written: &Spanned<Vec<Spanned<String>>>,
    what: &str,
    defined: &BTreeSet<&str>,
) -> Vec<String> {
    if written.get_ref().is_empty() {
        errs.push(
            Some(written.span()),
            key,
            format!("is empty: leave it out to allow every {what}"),
        );
    }
    super::routes::known(errs, written.get_ref(), defined, key, what);
    written
        .get_ref()
        .iter()
        .map(|n| n.get_ref().clone())
        .collect()
}

/// A hex SHA-256 digest (64 hex digits, either case).
fn sha256_hex(errs: &mut Errors<'_>, written: &Spanned<String>, key: &str) -> Option<[u8; 32]> {
    let parsed = parse_sha256_hex(written.get_ref());
    if parsed.is_none() {
        errs.push(
            Some(written.span()),
            key,
            "is not a hex SHA-256 digest (64 hex digits; `izhub user token` makes a token and its digest)",
        );
    }
    parsed
}

/// Parses 64 hex digits into the 32 bytes of a SHA-256 digest.
pub fn parse_sha256_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim().as_bytes();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let digit = |c: u8| (c as char).to_digit(16);
        let (hi, lo) = match pair {
            [hi, lo] => (digit(*hi)?, digit(*lo)?),
            _ => return None,
        };
        *byte = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    /// A well-formed argon2id PHC string with the default parameters.
    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$cvOMr8S9fDMBlL0uiEC7Pl2MsOgdlm6p4Wr5cGnRjcE";

    fn config(users: &str) -> String {
        format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n{users}\n[destinations.wa]\nmllp = \"127.0.0.1:1\"\n\n[[routes]]\nname = \"vxu\"\ndestinations = [\"wa\"]\n"
        )
    }

    #[test]
    fn users_tokens_and_sessions_are_read() {
        let token = "AB".repeat(32);
        let src = config(&format!(
            "metrics_token_sha256 = \"{}\"\nsession_minutes = 60\n\n[[admin.users]]\nname = \"ana\"\nrole = \"operator\"\npassword_hash = \"{HASH}\"\nroutes = [\"vxu\"]\n\n[[admin.users]]\nname = \"feed@hie\"\nrole = \"viewer\"\npassword_hash = \"{HASH}\"\ndestinations = [\"wa\"]\ntoken_sha256 = \"{token}\"\n",
            "0f".repeat(32)
        ));
        let cfg = load_str(&src, Path::new("x.toml")).unwrap();
        let a = &cfg.admin_access;
        assert_eq!(a.session, Duration::from_secs(3600));
        assert_eq!(a.metrics_token_sha256, Some([0x0f; 32]));
        assert_eq!(a.users.len(), 2);
        assert_eq!(a.users[0].name, "ana");
        assert_eq!(a.users[0].role, Role::Operator);
        assert_eq!(a.users[0].routes, Some(vec!["vxu".to_string()]));
        assert_eq!(a.users[0].destinations, None);
        assert_eq!(a.users[1].token_sha256, Some([0xab; 32]));
        assert_eq!(a.users[1].destinations, Some(vec!["wa".to_string()]));
        assert!(!format!("{:?}", a.users[0]).contains("argon2"));
        // No users: the default session length, nothing else.
        let cfg = load_str(&config(""), Path::new("x.toml")).unwrap();
        assert_eq!(cfg.admin_access, AdminAccessSpec::default());
    }

    #[test]
    fn bad_users_are_reported_with_key_and_line() {
        let bcrypt = "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW";
        let argon2i = HASH.replace("argon2id", "argon2i");
        let src = config(&format!(
            r#"session_minutes = 0
metrics_token_sha256 = "abc"

[[admin.users]]
name = "ana"
role = "superuser"
password_hash = "{HASH}"

[[admin.users]]
name = "bo"
role = "viewer"
password_hash = "{bcrypt}"

[[admin.users]]
name = "cy"
role = "viewer"
password_hash = "{argon2i}"
routes = ["vxu", "nowhere"]
destinations = []

[[admin.users]]
name = "dee"
role = "admin"
password_hash = "{HASH}"

[[admin.users]]
name = "dee"
role = "admin"
password_hash = "{HASH}"

[[admin.users]]
name = "bad name"
role = "admin"
password_hash = "plain-password"
"#
        ));
        let errs = load_str(&src, Path::new("x.toml")).unwrap_err();
        let text = errs.to_string();
        for expected in [
            ":3:19: admin.session_minutes: must be from 1 to 43200",
            ":4:24: admin.metrics_token_sha256: is not a hex SHA-256 digest",
            ":8:8: admin.users[0].role: unknown role 'superuser' (viewer, operator, admin)",
            ":14:17: admin.users[1].password_hash: not a PHC password hash string",
            ":19:17: admin.users[2].password_hash: the hash is argon2i, not argon2id",
            ":20:18: admin.users[2].routes: unknown route 'nowhere' (defined: vxu)",
            ":21:16: admin.users[2].destinations: is empty: leave it out to allow every destination",
            ":29:8: admin.users[4].name: user 'dee' is defined more than once",
            ":34:8: admin.users[5].name: 'bad name' is not a user name",
            ":36:17: admin.users[5].password_hash: not a PHC password hash string",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        assert!(text.starts_with("10 errors"), "{text}");
        // No error repeats the hash it refuses.
        assert!(!text.contains(bcrypt), "{text}");
    }

    #[test]
    fn two_users_may_not_share_a_token() {
        let token = "12".repeat(32);
        let src = config(&format!(
            "[[admin.users]]\nname = \"a\"\nrole = \"viewer\"\npassword_hash = \"{HASH}\"\ntoken_sha256 = \"{token}\"\n[[admin.users]]\nname = \"b\"\nrole = \"viewer\"\npassword_hash = \"{HASH}\"\ntoken_sha256 = \"{token}\"\n"
        ));
        let text = load_str(&src, Path::new("x.toml")).unwrap_err().to_string();
        assert!(
            text.contains(":12:16: admin.users[1].token_sha256: user 'a' has the same token"),
            "{text}"
        );
    }

    #[test]
    fn parses_hex_digests() {
        assert_eq!(parse_sha256_hex(&"fF".repeat(32)), Some([0xff; 32]));
        assert_eq!(parse_sha256_hex(&"0".repeat(63)), None);
        assert_eq!(parse_sha256_hex(&"g0".repeat(32)), None);
        assert_eq!(parse_sha256_hex(&"é".repeat(32)), None);
    }
}

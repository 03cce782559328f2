//! `[admin.oidc]`: console sign-in through an OpenID Connect provider
//! (authorization code with PKCE), and `[[admin.oidc.roles]]`, which maps
//! the groups in a claim of the ID token to a role and the routes and
//! destinations its holder sees.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::compile::Errors;
use super::spec::Role;

/// The path of the engine's callback: `redirect_url` must end with it.
pub const OIDC_CALLBACK_PATH: &str = "/api/oidc/callback";

/// `[admin.oidc]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcFile {
    /// The provider's issuer URL, exactly as its ID tokens name it
    /// (`iss`); its discovery document is `<issuer>/.well-known/openid-configuration`.
    pub issuer: Spanned<String>,
    /// The client ID the provider gave the console.
    pub client_id: Spanned<String>,
    /// The environment variable holding the client secret (unset: a public
    /// client, PKCE only).
    pub client_secret_env: Option<Spanned<String>>,
    /// Where the provider sends the browser back: this address's
    /// `/api/oidc/callback`, as the browser reaches it.
    pub redirect_url: Spanned<String>,
    /// Scopes asked for (default `openid profile email`; `openid` is always asked).
    pub scopes: Option<Vec<String>>,
    /// The ID token claim holding the user's groups (default `groups`).
    pub groups_claim: Option<Spanned<String>>,
    /// The ID token claim holding the user's name (default `preferred_username`).
    pub name_claim: Option<Spanned<String>>,
    /// The login page's button text (default "Sign in with single sign-on").
    pub label: Option<Spanned<String>>,
    /// PEM CA the provider's HTTPS certificate must chain to (default: the
    /// system's roots).
    pub ca: Option<String>,
    /// Which groups get which role; a user in none of them is refused.
    #[serde(default)]
    pub roles: Vec<Spanned<OidcRoleFile>>,
}

/// `[[admin.oidc.roles]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcRoleFile {
    /// A value of the groups claim.
    pub group: Spanned<String>,
    /// `viewer`, `operator` or `admin`.
    pub role: Spanned<String>,
    /// Routes its members see (default: all).
    pub routes: Option<Spanned<Vec<Spanned<String>>>>,
    /// Destinations its members see (default: all).
    pub destinations: Option<Spanned<Vec<Spanned<String>>>>,
}

/// Console sign-in through an OpenID Connect provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcSpec {
    pub issuer: String,
    pub client_id: String,
    pub client_secret_env: Option<String>,
    pub redirect_url: String,
    pub scopes: Vec<String>,
    pub groups_claim: String,
    pub name_claim: String,
    pub label: String,
    pub ca: Option<PathBuf>,
    pub roles: Vec<OidcRoleSpec>,
}

/// One group's role and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcRoleSpec {
    pub group: String,
    pub role: Role,
    pub routes: Option<Vec<String>>,
    pub destinations: Option<Vec<String>>,
}

/// What a signed-in user may do: the highest role among their groups'
/// mappings, seeing what any of them sees (all, when one has no limit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoGrant {
    pub role: Role,
    /// Routes the user sees; `None`: all.
    pub routes: Option<Vec<String>>,
    /// Destinations the user sees; `None`: all.
    pub destinations: Option<Vec<String>>,
}

impl OidcSpec {
    /// The role and limits `groups` map to; `None`: no mapped group.
    pub fn grant(&self, groups: &[String]) -> Option<SsoGrant> {
        let matched: Vec<&OidcRoleSpec> = self
            .roles
            .iter()
            .filter(|r| groups.contains(&r.group))
            .collect();
        let role = matched.iter().map(|r| r.role).max()?;
        let union = |pick: fn(&OidcRoleSpec) -> &Option<Vec<String>>| {
            let mut all = BTreeSet::new();
            for r in &matched {
                all.extend(pick(r).as_ref()?.iter().cloned());
            }
            Some(all.into_iter().collect::<Vec<_>>())
        };
        Some(SsoGrant {
            role,
            routes: union(|r| &r.routes),
            destinations: union(|r| &r.destinations),
        })
    }
}

/// Whether `url` is `https://`, or `http://` to a loopback host.
fn secure_or_loopback(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    };
    matches!(host, "localhost" | "[::1]")
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A URL that may be written into a redirect: printable ASCII, no spaces,
/// no quotes, at most 2,000 bytes.
fn plain_url(url: &str) -> bool {
    url.len() <= 2000
        && url
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\'')
}

/// Checks `[admin.oidc]` against the defined routes and destinations.
pub(super) fn compile(
    errs: &mut Errors<'_>,
    base: &Path,
    written: &Spanned<OidcFile>,
    routes: &BTreeSet<&str>,
    destinations: &BTreeSet<&str>,
) -> OidcSpec {
    let o = written.get_ref();
    let issuer = o.issuer.get_ref().trim_end_matches('/').to_string();
    if !plain_url(&issuer) || !secure_or_loopback(&issuer) {
        errs.push(
            Some(o.issuer.span()),
            "admin.oidc.issuer",
            "must be an https:// URL (http:// only to this machine, for tests)",
        );
    }
    let client_id = o.client_id.get_ref().clone();
    if client_id.is_empty() || client_id.len() > 256 || !plain_url(&client_id) {
        errs.push(
            Some(o.client_id.span()),
            "admin.oidc.client_id",
            "must be 1 to 256 printable characters without spaces or quotes",
        );
    }
    let redirect_url = o.redirect_url.get_ref().clone();
    let path_ok = redirect_url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').and_then(|i| rest.get(i..)))
        .is_some_and(|path| path == OIDC_CALLBACK_PATH);
    if !plain_url(&redirect_url) || !secure_or_loopback(&redirect_url) || !path_ok {
        errs.push(
            Some(o.redirect_url.span()),
            "admin.oidc.redirect_url",
            format!(
                "must be this admin address's https:// URL ending in {OIDC_CALLBACK_PATH} (http:// only to this machine)"
            ),
        );
    }
    let mut scopes = vec!["openid".to_string()];
    for s in o.scopes.iter().flatten() {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic() && b != b'"') {
            errs.push(
                Some(written.span()),
                "admin.oidc.scopes",
                format!("'{s}' is not a scope"),
            );
        } else if !scopes.contains(s) {
            scopes.push(s.clone());
        }
    }
    if o.scopes.is_none() {
        scopes.extend(["profile".to_string(), "email".to_string()]);
    }
    let mut claim = |w: &Option<Spanned<String>>, key: &str, default: &str| match w {
        Some(c) if c.get_ref().is_empty() || c.get_ref().len() > 128 => {
            errs.push(Some(c.span()), key, "must be a claim name");
            default.to_string()
        }
        Some(c) => c.get_ref().clone(),
        None => default.to_string(),
    };
    let groups_claim = claim(&o.groups_claim, "admin.oidc.groups_claim", "groups");
    let name_claim = claim(&o.name_claim, "admin.oidc.name_claim", "preferred_username");
    let label = o.label.as_ref().map_or_else(
        || "Sign in with single sign-on".to_string(),
        |l| l.get_ref().clone(),
    );
    if let Some(env) = &o.client_secret_env
        && env.get_ref().is_empty()
    {
        errs.push(
            Some(env.span()),
            "admin.oidc.client_secret_env",
            "must name an environment variable",
        );
    }
    if o.roles.is_empty() {
        errs.push(
            Some(written.span()),
            "admin.oidc.roles",
            "no [[admin.oidc.roles]]: map at least one group to a role, or nobody can sign in",
        );
    }
    let mut roles = Vec::new();
    for (i, r) in o.roles.iter().enumerate() {
        let key = format!("admin.oidc.roles[{i}]");
        let r = r.get_ref();
        let role = match r.role.get_ref().parse::<Role>() {
            Ok(role) => role,
            Err(why) => {
                errs.push(Some(r.role.span()), format!("{key}.role"), why);
                continue;
            }
        };
        if r.group.get_ref().is_empty() {
            errs.push(Some(r.group.span()), format!("{key}.group"), "is empty");
        }
        let names = |errs: &mut Errors<'_>, w: &Spanned<Vec<Spanned<String>>>, what, set| {
            super::admin::names_in(errs, &format!("{key}.{what}s"), w, what, set)
        };
        roles.push(OidcRoleSpec {
            group: r.group.get_ref().clone(),
            role,
            routes: r.routes.as_ref().map(|w| names(errs, w, "route", routes)),
            destinations: r
                .destinations
                .as_ref()
                .map(|w| names(errs, w, "destination", destinations)),
        });
    }
    OidcSpec {
        issuer,
        client_id,
        client_secret_env: o.client_secret_env.as_ref().map(|e| e.get_ref().clone()),
        redirect_url,
        scopes,
        groups_claim,
        name_claim,
        label,
        ca: o.ca.as_ref().map(|c| base.join(c)),
        roles,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(group: &str, role: Role, routes: Option<&[&str]>) -> OidcRoleSpec {
        OidcRoleSpec {
            group: group.into(),
            role,
            routes: routes.map(|r| r.iter().map(|s| s.to_string()).collect()),
            destinations: None,
        }
    }

    #[test]
    fn groups_map_to_the_highest_role_and_the_union_of_limits() {
        let spec = OidcSpec {
            issuer: "https://idp".into(),
            client_id: "c".into(),
            client_secret_env: None,
            redirect_url: "https://x/api/oidc/callback".into(),
            scopes: vec!["openid".into()],
            groups_claim: "groups".into(),
            name_claim: "preferred_username".into(),
            label: "SSO".into(),
            ca: None,
            roles: vec![
                role("ops-ma", Role::Operator, Some(&["ma"])),
                role("ops-pa", Role::Operator, Some(&["pa"])),
                role("watch", Role::Viewer, None),
                role("admins", Role::Admin, Some(&["ma"])),
            ],
        };
        let g = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(spec.grant(&g(&["other"])), None);
        assert_eq!(spec.grant(&[]), None);
        let both = spec.grant(&g(&["ops-pa", "ops-ma"])).unwrap();
        assert_eq!(both.role, Role::Operator);
        assert_eq!(both.routes, Some(g(&["ma", "pa"])));
        // One group without limits: all routes; the role is the highest.
        let wide = spec.grant(&g(&["ops-ma", "watch"])).unwrap();
        assert_eq!(
            (wide.role, wide.routes, wide.destinations),
            (Role::Operator, None, None)
        );
        assert_eq!(spec.grant(&g(&["admins"])).unwrap().role, Role::Admin);
    }

    fn config(oidc: &str) -> String {
        format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n{oidc}\n[destinations.wa]\nmllp = \"127.0.0.1:1\"\n\n[[routes]]\nname = \"vxu\"\ndestinations = [\"wa\"]\n"
        )
    }

    #[test]
    fn read_with_defaults() {
        let src = config(
            r#"[admin.oidc]
issuer = "https://login.example.org/realms/hie/"
client_id = "izhub"
client_secret_env = "IZHUB_OIDC_SECRET"
redirect_url = "https://izhub.example.org:9480/api/oidc/callback"

[[admin.oidc.roles]]
group = "iis-ops"
role = "operator"
routes = ["vxu"]
"#,
        );
        let cfg = crate::config::load_str(&src, Path::new("x.toml")).unwrap();
        let o = cfg.admin_access.oidc.unwrap();
        assert_eq!(o.issuer, "https://login.example.org/realms/hie");
        assert_eq!(o.scopes, ["openid", "profile", "email"]);
        assert_eq!(
            (o.groups_claim.as_str(), o.name_claim.as_str()),
            ("groups", "preferred_username")
        );
        assert_eq!(o.roles[0].routes, Some(vec!["vxu".to_string()]));
        assert_eq!(o.client_secret_env.as_deref(), Some("IZHUB_OIDC_SECRET"));
    }

    #[test]
    fn bad_settings_are_reported_with_their_keys() {
        let src = config(
            r#"[admin.oidc]
issuer = "http://login.example.org"
client_id = "izhub console"
redirect_url = "https://izhub.example.org/callback"

[[admin.oidc.roles]]
group = "iis-ops"
role = "root"

[[admin.oidc.roles]]
group = "x"
role = "viewer"
routes = ["nowhere"]
"#,
        );
        let errs = crate::config::load_str(&src, Path::new("x.toml")).unwrap_err();
        let text = errs.to_string();
        for key in [
            "admin.oidc.issuer",
            "admin.oidc.client_id",
            "admin.oidc.redirect_url",
            "admin.oidc.roles[0].role",
            "admin.oidc.roles[1].routes",
        ] {
            assert!(text.contains(key), "{key} in {text}");
        }
        let none = config(
            "[admin.oidc]\nissuer = \"https://idp\"\nclient_id = \"c\"\nredirect_url = \"https://x/api/oidc/callback\"\n",
        );
        let text = crate::config::load_str(&none, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(text.contains("admin.oidc.roles"), "{text}");
    }

    #[test]
    fn only_https_or_loopback_http() {
        assert!(secure_or_loopback("https://login.example.org/realms/hie"));
        assert!(secure_or_loopback("http://127.0.0.1:4000"));
        assert!(secure_or_loopback("http://localhost/x"));
        assert!(secure_or_loopback("http://[::1]:80"));
        assert!(!secure_or_loopback("http://idp.example.org"));
        assert!(!secure_or_loopback("http://127.0.0.1.evil.example"));
        assert!(!secure_or_loopback("ftp://127.0.0.1"));
        assert!(!plain_url("https://a b"));
    }
}

//! What the configuration says about who may sign in: the configured
//! users, tokens and secrets, and the single sign-on provider, swapped
//! whole on reload.

use super::*;

/// The configured users, by name.
#[derive(Debug, Default)]
pub struct Users {
    pub(super) by_name: BTreeMap<String, AdminUserSpec>,
}

impl Users {
    /// The users a configuration names.
    pub fn from_spec(users: &[AdminUserSpec]) -> Users {
        Users {
            by_name: users.iter().map(|u| (u.name.clone(), u.clone())).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub(super) fn get(&self, name: &str) -> Option<&AdminUserSpec> {
        self.by_name.get(name)
    }

    /// The user whose token has this SHA-256 (every configured digest is
    /// compared, each in constant time).
    pub(super) fn by_token(&self, digest: &[u8; 32]) -> Option<&AdminUserSpec> {
        let mut found = None;
        for user in self.by_name.values() {
            if let Some(t) = &user.token_sha256
                && bool::from(t.ct_eq(digest))
            {
                found = Some(user);
            }
        }
        found
    }
}

/// What the configuration says, swapped whole on reload.
pub(super) struct Settings {
    pub(super) users: Users,
    pub(super) metrics_token: Option<[u8; 32]>,
    pub(super) session: Duration,
    /// SHA-256 of the secret other nodes of the cluster present.
    pub(super) peer: Option<[u8; 32]>,
    /// Sign-in through an OpenID provider, when configured and usable.
    pub(super) oidc: Option<Arc<oidc::Oidc>>,
}

impl Settings {
    /// The settings `access` gives; the provider (and its sign-ins in
    /// progress) is kept from `before` when its configuration is the same.
    pub(super) fn from_spec(access: &AdminAccessSpec, before: Option<&Settings>) -> Settings {
        let kept = before
            .and_then(|b| b.oidc.clone())
            .filter(|o| access.oidc.as_ref() == Some(&o.spec));
        let oidc = kept.or_else(|| {
            let spec = access.oidc.as_ref()?;
            match oidc::Oidc::new(spec) {
                Ok(o) => Some(Arc::new(o)),
                Err(e) => {
                    tracing::error!(error = %e, "single sign-on is off: its configuration cannot be used");
                    None
                }
            }
        });
        Settings {
            oidc,
            users: Users::from_spec(&access.users),
            metrics_token: access.metrics_token_sha256,
            session: access.session,
            peer: peer_token(access).map(|t| sha256(t.as_bytes())),
        }
    }

    /// Who a session is for under these settings: a configured user whose
    /// password is unchanged, or a single sign-on user of the same provider
    /// whose groups still map to a role. `None`: the session has ended. (The
    /// caller sets how the request proved itself.)
    pub(super) fn account(&self, session: &Session) -> Option<CurrentUser> {
        let Some(groups) = &session.sso else {
            return self
                .users
                .get(&session.user)
                .filter(|u| sha256(u.password_hash.as_bytes()) == session.credential)
                .map(|u| CurrentUser::new(u, Via::Token));
        };
        let oidc = self.oidc.as_ref()?;
        if oidc::fingerprint(&oidc.spec) != session.credential {
            return None;
        }
        self.sso_user(&session.user, groups)
    }

    /// A single sign-on user with these groups, when this node's provider
    /// settings map one of them to a role. (The caller sets how the request
    /// proved itself.)
    pub(super) fn sso_user(&self, name: &str, groups: &[String]) -> Option<CurrentUser> {
        let grant = self.oidc.as_ref()?.spec.grant(groups)?;
        Some(CurrentUser {
            name: name.to_string(),
            role: grant.role,
            routes: grant.routes,
            destinations: grant.destinations,
            via: Via::Token,
        })
    }
}

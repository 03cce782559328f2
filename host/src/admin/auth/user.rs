//! Who is asking: the current user (by session, bearer token or peer
//! node), what they may see, and the extractors that check a role before a
//! handler runs.

use super::*;

/// The user a request is made by, as the configuration says now. Take it as
/// a handler argument: requests without a valid session or token are
/// answered 401 before the handler runs.
#[derive(Clone)]
pub struct CurrentUser {
    pub name: String,
    pub role: Role,
    /// Routes whose messages the user sees and acts on; `None`: all.
    pub routes: Option<Vec<String>>,
    /// Destinations whose messages the user sees and acts on; `None`: all.
    pub destinations: Option<Vec<String>>,
    pub(super) via: Via,
}

impl std::fmt::Debug for CurrentUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CurrentUser")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("routes", &self.routes)
            .field("destinations", &self.destinations)
            .field("by_token", &self.by_token())
            .finish()
    }
}

impl CurrentUser {
    pub(super) fn new(user: &AdminUserSpec, via: Via) -> Self {
        CurrentUser {
            name: user.name.clone(),
            role: user.role,
            routes: user.routes.clone(),
            destinations: user.destinations.clone(),
            via,
        }
    }

    /// Whether the user may see and act on messages of route `route`.
    pub fn may_see_route(&self, route: &str) -> bool {
        self.routes
            .as_ref()
            .is_none_or(|r| r.iter().any(|x| x == route))
    }

    /// Whether the user may see and act on messages for destination `destination`.
    pub fn may_see_destination(&self, destination: &str) -> bool {
        self.destinations
            .as_ref()
            .is_none_or(|d| d.iter().any(|x| x == destination))
    }

    /// Whether the user may see a message taken by `route` for
    /// `destination`: a user limited to some routes (destinations) does not
    /// see a message with no route (destination).
    pub fn may_see_message(&self, route: Option<&str>, destination: Option<&str>) -> bool {
        let route_ok = match route {
            Some(r) => self.may_see_route(r),
            None => self.routes.is_none(),
        };
        let destination_ok = match destination {
            Some(d) => self.may_see_destination(d),
            None => self.destinations.is_none(),
        };
        route_ok && destination_ok
    }

    /// `Ok` when the user's role is `role` or above; else a 403 refusal.
    pub fn require(&self, role: Role) -> Result<(), Refusal> {
        if self.role >= role {
            Ok(())
        } else {
            Err(Refusal::forbidden(format!(
                "this needs the {role} role; {} is {}",
                self.name, self.role
            )))
        }
    }

    /// The session's CSRF token (`None` for a bearer token).
    pub fn csrf(&self) -> Option<&str> {
        match &self.via {
            Via::Session { csrf, .. } => Some(csrf),
            Via::Token | Via::Peer => None,
        }
    }

    /// Who another node of the cluster is asked for: the name, and for a
    /// single sign-on user the groups the other node maps to a role.
    pub fn on_behalf(&self) -> OnBehalf {
        OnBehalf {
            name: self.name.clone(),
            groups: match &self.via {
                Via::Session { sso, .. } => sso.clone(),
                Via::Token | Via::Peer => None,
            },
        }
    }

    /// Whether the request came with a bearer token rather than a session.
    pub fn by_token(&self) -> bool {
        matches!(self.via, Via::Token)
    }

    /// Whether another node of the cluster asked, for this user.
    pub fn by_peer(&self) -> bool {
        matches!(self.via, Via::Peer)
    }
}

impl<S> FromRequestParts<S> for CurrentUser
where
    Auth: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Auth::from_ref(state).authenticate(&parts.method, &parts.headers)
    }
}

/// The user a request to another node is made for.
#[derive(Debug, Clone)]
pub struct OnBehalf {
    pub name: String,
    /// A single sign-on user's groups; `None` for a configured user.
    pub groups: Option<Vec<String>>,
}

/// A handler argument for a user who holds at least a role: the role is
/// checked (403) before the handler runs, so no handler can forget it.
macro_rules! role_extractor {
    ($name:ident, $role:expr, $what:literal) => {
        #[doc = concat!("The current user, who is ", $what, " or more.")]
        #[derive(Debug)]
        pub struct $name(pub CurrentUser);

        impl<S> FromRequestParts<S> for $name
        where
            Auth: FromRef<S>,
            S: Send + Sync,
        {
            type Rejection = Refusal;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &S,
            ) -> Result<Self, Self::Rejection> {
                let user = CurrentUser::from_request_parts(parts, state).await?;
                user.require($role)?;
                Ok($name(user))
            }
        }
    };
}

role_extractor!(Viewer, Role::Viewer, "a viewer");
role_extractor!(Operator, Role::Operator, "an operator");
role_extractor!(Admin, Role::Admin, "an administrator");

/// The client's IP address, when the server recorded it (the admin
/// endpoint serves with [`ClientAddr`] connect info).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

/// The peer address of an admin connection, recorded for every request.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let ext = &parts.extensions;
        let ip = ext
            .get::<ConnectInfo<ClientAddr>>()
            .map(|c| c.0.0.ip())
            .or_else(|| ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()));
        Ok(ClientIp(ip))
    }
}

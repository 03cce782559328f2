//! `izhub.toml`: what the file may say ([`file`]), the one step that turns
//! it into a checked [`Config`] of plain specs ([`compile`], [`listeners`],
//! [`routes`], [`admin`]),
//! collecting every error with its line, and the specs themselves ([`spec`]).

mod admin;
mod compile;
mod destinations;
mod file;
mod listeners;
mod oidc;
pub mod plugin_id;
mod routes;
mod spec;

pub use admin::{check_password_hash, check_user_name, parse_sha256_hex};
pub use compile::{load, load_all, load_str};
pub use oidc::{OIDC_CALLBACK_PATH, OidcRoleSpec, OidcSpec, SsoGrant};
pub use routes::parse_grant;
pub use spec::*;

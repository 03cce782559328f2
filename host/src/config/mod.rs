//! `izhub.toml`: what the file may say ([`file`]) and the one step that turns
//! it into a checked [`Config`], collecting every error with its line.

mod compile;
mod file;

pub use compile::{
    AckMode, Config, ConfigError, ConfigErrors, DestinationSpec, Grant, ListenerSpec, PluginSpec,
    RouteSpec, SoapListener, load, load_str, parse_grant,
};

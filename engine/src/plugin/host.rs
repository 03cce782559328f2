//! The `host` interface plugins import: log, config and lookup, each answered
//! only as far as the plugin's grants allow.

use super::CallState;
use super::bindings::izhub::plugin::host::{Host, LogLevel, LookupError};
use super::bindings::izhub::plugin::types;

/// Log lines one call may write; more are dropped.
const MAX_LOG_LINES: u32 = 100;
/// Longest log line kept.
const MAX_LOG_LEN: usize = 1024;

impl types::Host for CallState {}

impl Host for CallState {
    fn log(&mut self, level: LogLevel, message: String) {
        if !self.grants.log || self.log_lines >= MAX_LOG_LINES {
            return;
        }
        self.log_lines += 1;
        let mut msg = message;
        if msg.len() > MAX_LOG_LEN {
            let mut cut = MAX_LOG_LEN;
            while !msg.is_char_boundary(cut) {
                cut -= 1;
            }
            msg.truncate(cut);
        }
        let plugin = self.grants.plugin.as_str();
        match level {
            LogLevel::Trace => tracing::trace!(plugin, "{msg}"),
            LogLevel::Debug => tracing::debug!(plugin, "{msg}"),
            LogLevel::Info => tracing::info!(plugin, "{msg}"),
            LogLevel::Warn => tracing::warn!(plugin, "{msg}"),
            LogLevel::Error => tracing::error!(plugin, "{msg}"),
        }
    }

    fn config(&mut self, key: String) -> Option<String> {
        self.grants.config.as_ref()?.get(&key).cloned()
    }

    fn lookup(&mut self, table: String, key: String) -> Result<Option<String>, LookupError> {
        if !self.grants.tables.contains(&table) {
            return Err(LookupError::AccessDenied);
        }
        let t = self
            .grants
            .all_tables
            .get(&table)
            .ok_or(LookupError::NoSuchTable)?;
        Ok(t.get(&key).cloned())
    }
}

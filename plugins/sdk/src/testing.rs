//! Running a plugin natively in its own unit tests, with a fake host.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use crate::{Host, Input, LogLevel, LookupError, Outcome, Plugin};

/// A host for tests: config values, lookup tables (granted or not), and the
/// log lines the plugin wrote.
#[derive(Debug, Default)]
pub struct TestHost {
    config: BTreeMap<String, String>,
    tables: BTreeMap<String, BTreeMap<String, String>>,
    granted: BTreeSet<String>,
    logs: RefCell<Vec<(LogLevel, String)>>,
}

impl TestHost {
    /// An empty host: no config, no tables.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a config value (`states.WA` for a nested key).
    pub fn config(mut self, key: &str, value: &str) -> Self {
        self.config.insert(key.to_string(), value.to_string());
        self
    }
    /// Adds a granted lookup table.
    pub fn table(mut self, name: &str, entries: &[(&str, &str)]) -> Self {
        self.tables.insert(
            name.to_string(),
            entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        self.granted.insert(name.to_string());
        self
    }
    /// Adds a table the plugin is not granted (lookups get access-denied).
    pub fn table_not_granted(mut self, name: &str) -> Self {
        self.tables.insert(name.to_string(), BTreeMap::new());
        self
    }
    /// The log lines written so far.
    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        self.logs.borrow().clone()
    }
    /// Runs plugin `P` on a message text.
    pub fn run<P: Plugin>(&self, hl7: &str) -> Result<Outcome, String> {
        crate::run::<P>(
            Input {
                hl7: hl7.to_string(),
                ..Input::default()
            },
            self,
        )
    }
}

impl Host for TestHost {
    fn log(&self, level: LogLevel, message: &str) {
        self.logs.borrow_mut().push((level, message.to_string()));
    }
    fn config(&self, key: &str) -> Option<String> {
        self.config.get(key).cloned()
    }
    fn lookup(&self, table: &str, key: &str) -> Result<Option<String>, LookupError> {
        let t = self.tables.get(table).ok_or(LookupError::NoSuchTable)?;
        if !self.granted.contains(table) {
            return Err(LookupError::AccessDenied);
        }
        Ok(t.get(key).cloned())
    }
}

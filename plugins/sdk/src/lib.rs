//! The izhub plugin SDK.
//!
//! A plugin is a type implementing [`Plugin`], exported with [`plugin!`]:
//!
//! ```ignore
//! use izhub_plugin::{Context, Issue, Message, Plugin, Verdict};
//!
//! struct RequireBirthDate;
//!
//! impl Plugin for RequireBirthDate {
//!     fn process(msg: &mut Message, ctx: &mut Context) -> Result<Verdict, String> {
//!         if msg.get("PID-7").is_empty() {
//!             return Ok(Verdict::reject(Issue::error("101").at("PID-7").text("Birth date is required")));
//!         }
//!         Ok(Verdict::Continue)
//!     }
//! }
//!
//! izhub_plugin::plugin!(RequireBirthDate);
//! ```
//!
//! Changes made with [`Message::set`] are sent back to the engine; untouched
//! segments stay byte for byte as they came. The same code runs natively in
//! unit tests through [`testing`], with a fake host for config and lookups.

mod message;
pub mod ndc;
pub mod testing;

pub use message::{Delimiters, Message, Path, Segment, SegmentName};

/// Generated bindings for the `izhub:plugin` world (used by [`plugin!`]).
#[doc(hidden)]
#[allow(clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "plugin-split",
        pub_export_macro: true,
        export_macro_name: "export_plugin",
        default_bindings_module: "izhub_plugin::bindings",
    });
}

pub use izhub_hl7::{Issue, Severity};

/// The HL7 pieces the engine and the SDK share (issues, escaping, dates).
pub use izhub_hl7 as hl7;

/// What happens to the message next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go on to the next plugin (with the message as changed, if it was).
    Continue,
    /// Stop and answer the sender with these issues; nothing is delivered.
    Reject(Vec<Issue>),
    /// Deliver to these destinations instead of the route's defaults.
    RouteTo(Vec<String>),
}

impl Verdict {
    /// Rejects with one issue.
    pub fn reject(issue: Issue) -> Verdict {
        Verdict::Reject(vec![issue])
    }
    /// Routes to one destination.
    pub fn route_to(destination: impl Into<String>) -> Verdict {
        Verdict::RouteTo(vec![destination.into()])
    }
}

/// Log levels for [`Context::log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Why a lookup gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupError {
    /// The plugin's configuration does not grant this table.
    AccessDenied,
    /// No table of that name is loaded.
    NoSuchTable,
}

/// What the engine offers a plugin; [`testing::TestHost`] offers the same natively.
pub trait Host {
    fn log(&self, level: LogLevel, message: &str);
    fn config(&self, key: &str) -> Option<String>;
    fn lookup(&self, table: &str, key: &str) -> Result<Option<String>, LookupError>;
}

/// Everything about the message besides its text, and the way to talk to the host.
pub struct Context<'a> {
    /// Engine-assigned message id.
    pub id: String,
    /// Route name.
    pub route: String,
    /// Listener name.
    pub source: String,
    /// When the engine received the message (RFC 3339).
    pub received_at: String,
    attributes: Vec<(String, String)>,
    new_attributes: Vec<(String, String)>,
    issues: Vec<Issue>,
    host: &'a dyn Host,
}

impl Context<'_> {
    /// A value from the plugin's configuration (`states.WA` for nested tables).
    pub fn config(&self, key: &str) -> Option<String> {
        self.host.config(key)
    }
    /// Looks a key up in a table the plugin was granted.
    pub fn lookup(&self, table: &str, key: &str) -> Result<Option<String>, LookupError> {
        self.host.lookup(table, key)
    }
    /// Writes a log line; keep PHI out of anything above debug.
    pub fn log(&self, level: LogLevel, message: &str) {
        self.host.log(level, message)
    }
    /// An attribute set by an earlier plugin (or by this one).
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.new_attributes
            .iter()
            .chain(self.attributes.iter())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    /// Sets an attribute for later plugins and the journal.
    pub fn set_attribute(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        self.new_attributes.retain(|(k, _)| *k != key);
        self.new_attributes.push((key, value.into()));
    }
    /// Adds a warning or note to the answer; the message goes on.
    pub fn report(&mut self, issue: Issue) {
        self.issues.push(issue);
    }
}

/// A plugin: one function from a message to a verdict.
pub trait Plugin {
    /// Processes one message. An `Err` fails the message (AE, ERR 207) with its text.
    fn process(msg: &mut Message, ctx: &mut Context) -> Result<Verdict, String>;
}

/// The input the engine passes, without the host.
#[derive(Debug, Clone, Default)]
pub struct Input {
    pub id: String,
    pub route: String,
    pub source: String,
    pub received_at: String,
    pub hl7: String,
    pub attributes: Vec<(String, String)>,
    /// Where the fields and segments of `hl7` are, when the engine sent it
    /// (see [`Message::with_layout`]); empty: the text is parsed.
    pub layout: Vec<u32>,
}

/// What a plugin call produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    /// The changed message, when it was changed.
    pub hl7: Option<String>,
    pub issues: Vec<Issue>,
    pub attributes: Vec<(String, String)>,
}

/// Runs a plugin on one input with a host: what the engine does, natively.
pub fn run<P: Plugin>(input: Input, host: &dyn Host) -> Result<Outcome, String> {
    let mut msg = if input.layout.is_empty() {
        Message::parse(&input.hl7)?
    } else {
        match Message::with_layout(input.hl7, &input.layout) {
            Ok(msg) => msg,
            Err(text) => Message::parse(&text)?,
        }
    };
    let mut ctx = Context {
        id: input.id,
        route: input.route,
        source: input.source,
        received_at: input.received_at,
        attributes: input.attributes,
        new_attributes: Vec::new(),
        issues: Vec::new(),
        host,
    };
    let verdict = P::process(&mut msg, &mut ctx)?;
    let hl7 = msg.is_modified().then(|| msg.to_string());
    if hl7.is_some() && matches!(verdict, Verdict::RouteTo(_)) {
        return Err(
            "a plugin cannot both change the message and route it; split it into two plugins"
                .into(),
        );
    }
    Ok(Outcome {
        verdict,
        hl7,
        issues: ctx.issues,
        attributes: ctx.new_attributes,
    })
}

/// Glue between the generated bindings and [`run`]; used by [`plugin!`].
#[doc(hidden)]
pub mod glue {
    use super::bindings::izhub::plugin::{host, types};
    use super::*;

    struct WasmHost;

    impl Host for WasmHost {
        fn log(&self, level: LogLevel, message: &str) {
            let level = match level {
                LogLevel::Trace => host::LogLevel::Trace,
                LogLevel::Debug => host::LogLevel::Debug,
                LogLevel::Info => host::LogLevel::Info,
                LogLevel::Warn => host::LogLevel::Warn,
                LogLevel::Error => host::LogLevel::Error,
            };
            host::log(level, message)
        }
        fn config(&self, key: &str) -> Option<String> {
            host::config(key)
        }
        fn lookup(&self, table: &str, key: &str) -> Result<Option<String>, LookupError> {
            host::lookup(table, key).map_err(|e| match e {
                host::LookupError::AccessDenied => LookupError::AccessDenied,
                host::LookupError::NoSuchTable => LookupError::NoSuchTable,
            })
        }
    }

    fn issue(i: Issue) -> types::Issue {
        types::Issue {
            severity: match i.severity {
                Severity::Error => types::Severity::Error,
                Severity::Warning => types::Severity::Warning,
                Severity::Info => types::Severity::Info,
            },
            code: i.code,
            app_code: i.app_code,
            location: i.location,
            text: i.text,
        }
    }

    /// Runs plugin `P` for one call from the engine.
    pub fn process<P: Plugin>(env: types::Envelope) -> Result<types::Outcome, String> {
        process_split::<P>(env, Vec::new())
    }

    /// Runs plugin `P` for one call from the engine that came with the
    /// message's layout.
    pub fn process_split<P: Plugin>(
        env: types::Envelope,
        layout: Vec<u32>,
    ) -> Result<types::Outcome, String> {
        let input = Input {
            id: env.id,
            route: env.route,
            source: env.source,
            received_at: env.received_at,
            hl7: env.hl7,
            attributes: env.attributes,
            layout,
        };
        let out = run::<P>(input, &WasmHost)?;
        let verdict = match out.verdict {
            Verdict::Continue => types::Verdict::Continue(out.hl7),
            Verdict::Reject(issues) => {
                types::Verdict::Reject(issues.into_iter().map(issue).collect())
            }
            Verdict::RouteTo(dests) => types::Verdict::RouteTo(dests),
        };
        Ok(types::Outcome {
            verdict,
            issues: out.issues.into_iter().map(issue).collect(),
            attributes: out.attributes,
        })
    }
}

/// Exports a [`Plugin`] type as the component's `process` function.
#[macro_export]
macro_rules! plugin {
    ($plugin:ty) => {
        struct IzhubPluginExport;

        impl $crate::bindings::Guest for IzhubPluginExport {
            fn process(
                msg: $crate::bindings::Envelope,
            ) -> ::core::result::Result<$crate::bindings::Outcome, ::std::string::String> {
                $crate::glue::process::<$plugin>(msg)
            }

            fn process_split(
                msg: $crate::bindings::Envelope,
                layout: ::std::vec::Vec<u32>,
            ) -> ::core::result::Result<$crate::bindings::Outcome, ::std::string::String> {
                $crate::glue::process_split::<$plugin>(msg, layout)
            }
        }

        $crate::bindings::export_plugin!(IzhubPluginExport with_types_in $crate::bindings);
    };
}

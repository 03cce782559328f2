//! HL7 v2 pieces the engine and the plugin SDK both need, kept once: an
//! issue as it becomes an ERR segment, escaping free text, and calendar
//! date arithmetic. No dependencies, so it builds for `wasm32-wasip2` too.

mod dates;
mod issue;
mod text;

pub use dates::{civil_from_days, days_from_civil, days_in_month, is_leap, ymd_from_unix_secs};
pub use issue::{Issue, Severity};
pub use text::{escape, escape_into, has_control};

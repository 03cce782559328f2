//! One finding, answered to the sender as an ERR segment.

/// How serious an issue is: ERR-4 E, W or I (HL7 table 0516).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
    Info,
}

impl Severity {
    /// The ERR-4 code.
    pub fn code(self) -> &'static str {
        match self {
            Severity::Error => "E",
            Severity::Warning => "W",
            Severity::Info => "I",
        }
    }
}

/// One finding, answered to the sender as an ERR segment. Build it with
/// [`Issue::error`], [`Issue::warning`] or [`Issue::info`] and the setters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub severity: Severity,
    /// HL7 table 0357 code (ERR-3).
    pub code: String,
    /// CDC table 0533 code (ERR-5), or empty.
    pub app_code: String,
    /// `PID-7`, `RXA[2]-5.1`, or empty.
    pub location: String,
    /// A sentence a clinic's staff can act on (ERR-8).
    pub text: String,
}

impl Issue {
    fn new(severity: Severity, code: &str) -> Issue {
        Issue {
            severity,
            code: code.to_string(),
            app_code: String::new(),
            location: String::new(),
            text: String::new(),
        }
    }

    /// An error with an HL7 0357 code (101 required field missing, 102 data
    /// type error, 103 table value not found, 207 application error...).
    pub fn error(code: &str) -> Issue {
        Issue::new(Severity::Error, code)
    }

    /// A warning: the message goes on, the sender is told.
    pub fn warning(code: &str) -> Issue {
        Issue::new(Severity::Warning, code)
    }

    /// A note for the sender.
    pub fn info(code: &str) -> Issue {
        Issue::new(Severity::Info, code)
    }

    /// Where: `PID-7`, `RXA[2]-5`.
    pub fn at(mut self, location: impl Into<String>) -> Issue {
        self.location = location.into();
        self
    }

    /// The CDC 0533 code: 1 illogical date, 2 invalid date, 3 illogical value,
    /// 4 invalid value, 5 table value not found, 6 required observation
    /// missing, 7 required data missing, 8 data was ignored.
    pub fn app_code(mut self, code: &str) -> Issue {
        self.app_code = code.to_string();
        self
    }

    /// The sentence for a person.
    pub fn text(mut self, text: impl Into<String>) -> Issue {
        self.text = text.into();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issue_is_built_with_its_setters() {
        let i = Issue::warning("103")
            .at("RXA-5")
            .app_code("5")
            .text("Unknown vaccine code");
        assert_eq!(i.severity, Severity::Warning);
        assert_eq!(
            (i.code.as_str(), i.location.as_str(), i.app_code.as_str()),
            ("103", "RXA-5", "5")
        );
        assert_eq!(i.text, "Unknown vaccine code");
        assert_eq!(Issue::info("0").severity.code(), "I");
        assert!(Severity::Error < Severity::Warning);
    }
}

//! HL7 date/time (DTM) parsing and the few date comparisons the checks need.

use izhub_plugin::hl7::days_in_month;

/// A calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    /// Four-digit year.
    pub year: u32,
    /// Month, 1–12.
    pub month: u32,
    /// Day of the month, 1–31.
    pub day: u32,
}

impl Date {
    /// A date when the parts make a real calendar day.
    pub fn new(year: u32, month: u32, day: u32) -> Option<Date> {
        let valid = (1..=12).contains(&month) && day >= 1 && day <= days_in_month(year, month);
        valid.then_some(Date { year, month, day })
    }

    /// The same day `years` years earlier (29 February becomes 28 February).
    pub fn years_before(self, years: u32) -> Date {
        let year = self.year.saturating_sub(years);
        let day = self.day.min(days_in_month(year, self.month));
        Date {
            year,
            month: self.month,
            day,
        }
    }

    /// The next calendar day.
    pub fn next_day(self) -> Date {
        if self.day < days_in_month(self.year, self.month) {
            Date {
                day: self.day + 1,
                ..self
            }
        } else if self.month < 12 {
            Date {
                month: self.month + 1,
                day: 1,
                ..self
            }
        } else {
            Date {
                year: self.year + 1,
                month: 1,
                day: 1,
            }
        }
    }
}

/// A parsed HL7 DTM value: `YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dtm {
    /// The year.
    pub year: u32,
    /// The month, when given.
    pub month: Option<u32>,
    /// The date, when the value carries at least a full day.
    pub date: Option<Date>,
    /// How many digits of the date/time part were given (4, 6, 8, 10, 12 or 14).
    pub digits: usize,
    /// Whether a `+ZZZZ`/`-ZZZZ` time zone offset was given.
    pub has_zone: bool,
}

fn number(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses a DTM value; `None` when it is not a valid DTM.
pub fn parse_dtm(raw: &str) -> Option<Dtm> {
    let text = raw.trim();
    let (main, zone) = match text.find(['+', '-']) {
        Some(i) => (text.get(..i)?, Some(text.get(i + 1..)?)),
        None => (text, None),
    };
    if let Some(z) = zone {
        let zn = number(z)?;
        if z.len() != 4 || zn / 100 > 14 || zn % 100 > 59 {
            return None;
        }
    }
    let (whole, fraction) = match main.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (main, None),
    };
    if let Some(f) = fraction
        && (whole.len() != 14
            || f.is_empty()
            || f.len() > 4
            || !f.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let digits = whole.len();
    if ![4, 6, 8, 10, 12, 14].contains(&digits) || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let part = |from: usize, to: usize| whole.get(from..to).and_then(number);
    let year = part(0, 4)?;
    if year < 1000 {
        return None;
    }
    let month = if digits >= 6 {
        let month = part(4, 6)?;
        if !(1..=12).contains(&month) {
            return None;
        }
        Some(month)
    } else {
        None
    };
    let date = if digits >= 8 {
        Some(Date::new(year, part(4, 6)?, part(6, 8)?)?)
    } else {
        None
    };
    if digits >= 10 && part(8, 10)? > 23 {
        return None;
    }
    if digits >= 12 && part(10, 12)? > 59 {
        return None;
    }
    if digits >= 14 && part(12, 14)? > 59 {
        return None;
    }
    Some(Dtm {
        year,
        month,
        date,
        digits,
        has_zone: zone.is_some(),
    })
}

impl Dtm {
    /// Compares two values at the precision both have, down to the day:
    /// times of day are never compared, so `201311011105` and `20131101`
    /// are the same day, and `201512` (a lot expiring in December 2015) is
    /// the same month as `20151231`.
    pub fn compare(&self, other: &Dtm) -> std::cmp::Ordering {
        let day = |d: &Dtm| d.date.map(|d| d.day);
        let key = |d: &Dtm, month: bool, day_too: bool| {
            (
                d.year,
                if month { d.month } else { None },
                if day_too { day(d) } else { None },
            )
        };
        let month = self.month.is_some() && other.month.is_some();
        let day_too = month && self.date.is_some() && other.date.is_some();
        key(self, month, day_too).cmp(&key(other, month, day_too))
    }

    /// Whether this value is before `other` at the precision both have.
    pub fn is_before(&self, other: &Dtm) -> bool {
        self.compare(other) == std::cmp::Ordering::Less
    }

    /// Whether this value is after `other` at the precision both have.
    pub fn is_after(&self, other: &Dtm) -> bool {
        self.compare(other) == std::cmp::Ordering::Greater
    }

    /// A full date as a DTM of day precision.
    pub fn of_date(date: Date) -> Dtm {
        Dtm {
            year: date.year,
            month: Some(date.month),
            date: Some(date),
            digits: 8,
            has_zone: false,
        }
    }
}

/// What a date field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateValue {
    /// Nothing.
    Empty,
    /// Something that is not a DTM, or a DTM without a full day.
    Invalid,
    /// A date with at least year, month and day.
    Valid(Date),
}

/// Reads a field that must hold a full date (at least `YYYYMMDD`).
pub fn full_date(raw: &str) -> DateValue {
    if raw.trim().is_empty() {
        return DateValue::Empty;
    }
    match parse_dtm(raw).and_then(|d| d.date) {
        Some(d) => DateValue::Valid(d),
        None => DateValue::Invalid,
    }
}

/// The date part of an RFC 3339 timestamp (`2026-11-25T10:00:00.000Z`).
pub fn rfc3339_date(text: &str) -> Option<Date> {
    let t = text.trim();
    let year = t.get(0..4).and_then(number)?;
    let month = t.get(5..7).and_then(number)?;
    let day = t.get(8..10).and_then(number)?;
    if t.get(4..5) != Some("-") || t.get(7..8) != Some("-") {
        return None;
    }
    Date::new(year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtm_forms() {
        assert_eq!(parse_dtm("2012").map(|d| d.date), Some(None));
        assert!(parse_dtm("201207010822").is_some());
        let full = parse_dtm("20201105213053.805-0500").unwrap();
        assert!(full.has_zone);
        assert_eq!(full.date, Date::new(2020, 11, 5));
        assert!(parse_dtm("20201105213053.805").is_some());
        assert!(parse_dtm("20201301").is_none());
        assert!(parse_dtm("20210229").is_none());
        assert!(parse_dtm("20200229").is_some());
        assert!(parse_dtm("2020-01-01").is_none());
        assert!(parse_dtm("2020010").is_none());
        assert!(parse_dtm("20200101+05").is_none());
        assert!(parse_dtm("").is_none());
        assert!(parse_dtm("abcd").is_none());
        assert_eq!(full_date("201508"), DateValue::Invalid);
        assert_eq!(full_date(""), DateValue::Empty);
    }

    #[test]
    fn compared_at_the_precision_both_have() {
        let p = |s: &str| parse_dtm(s).unwrap();
        // A birth date with a time and a dose given that day: the same day.
        assert_eq!(
            p("201311011105").compare(&p("20131101")),
            std::cmp::Ordering::Equal
        );
        assert!(!p("20131101").is_before(&p("201311011105")));
        assert!(p("20131031").is_before(&p("201311010000")));
        // A lot expiring in a month is good through that month.
        assert!(!p("201512").is_before(&p("20151231")));
        assert!(p("201511").is_before(&p("20151201")));
        assert!(p("2015").is_before(&p("20160101")));
        assert!(!p("2015").is_before(&p("20151231")));
        assert!(p("20151231235959-0500").is_after(&p("20151230")));
        let d = Date::new(2013, 11, 1).unwrap();
        assert_eq!(
            Dtm::of_date(d).compare(&p("201311011105")),
            std::cmp::Ordering::Equal
        );
    }

    #[test]
    fn rfc3339() {
        assert_eq!(
            rfc3339_date("2026-11-25T10:00:00.000Z"),
            Date::new(2026, 11, 25)
        );
        assert_eq!(rfc3339_date(""), None);
        assert_eq!(rfc3339_date("2026-13-25"), None);
    }

    #[test]
    fn arithmetic() {
        let d = Date::new(2020, 2, 29).unwrap();
        assert_eq!(d.years_before(1), Date::new(2019, 2, 28).unwrap());
        assert_eq!(
            Date::new(2020, 12, 31).unwrap().next_day(),
            Date::new(2021, 1, 1).unwrap()
        );
    }
}

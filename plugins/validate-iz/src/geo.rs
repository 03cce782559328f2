//! US postal state codes and their FIPS state numbers.

const STATES: &[(&str, &str)] = &[
    ("AL", "01"),
    ("AK", "02"),
    ("AZ", "04"),
    ("AR", "05"),
    ("CA", "06"),
    ("CO", "08"),
    ("CT", "09"),
    ("DE", "10"),
    ("DC", "11"),
    ("FL", "12"),
    ("GA", "13"),
    ("HI", "15"),
    ("ID", "16"),
    ("IL", "17"),
    ("IN", "18"),
    ("IA", "19"),
    ("KS", "20"),
    ("KY", "21"),
    ("LA", "22"),
    ("ME", "23"),
    ("MD", "24"),
    ("MA", "25"),
    ("MI", "26"),
    ("MN", "27"),
    ("MS", "28"),
    ("MO", "29"),
    ("MT", "30"),
    ("NE", "31"),
    ("NV", "32"),
    ("NH", "33"),
    ("NJ", "34"),
    ("NM", "35"),
    ("NY", "36"),
    ("NC", "37"),
    ("ND", "38"),
    ("OH", "39"),
    ("OK", "40"),
    ("OR", "41"),
    ("PA", "42"),
    ("RI", "44"),
    ("SC", "45"),
    ("SD", "46"),
    ("TN", "47"),
    ("TX", "48"),
    ("UT", "49"),
    ("VT", "50"),
    ("VA", "51"),
    ("WA", "53"),
    ("WV", "54"),
    ("WI", "55"),
    ("WY", "56"),
    ("AS", "60"),
    ("FM", "64"),
    ("GU", "66"),
    ("MH", "68"),
    ("MP", "69"),
    ("PW", "70"),
    ("PR", "72"),
    ("UM", "74"),
    ("VI", "78"),
    ("AA", ""),
    ("AE", ""),
    ("AP", ""),
];

/// True when `code` is a US postal state, territory or military code.
pub fn is_state(code: &str) -> bool {
    STATES.iter().any(|(s, _)| *s == code)
}

/// The two-digit FIPS number of a postal state code, when it has one.
pub fn fips(code: &str) -> Option<&'static str> {
    STATES
        .iter()
        .find(|(s, _)| *s == code)
        .map(|(_, f)| *f)
        .filter(|f| !f.is_empty())
}

/// True for `12345`, `12345-6789` and `123456789`.
pub fn is_zip(zip: &str) -> bool {
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    match zip.split_once('-') {
        Some((a, b)) => digits(a, 5) && digits(b, 4),
        None => digits(zip, 5) || digits(zip, 9),
    }
}

/// True for a 5-digit FIPS county code.
pub fn is_county(code: &str) -> bool {
    code.len() == 5 && code.bytes().all(|b| b.is_ascii_digit())
}

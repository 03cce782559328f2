//! Hiding PHI in what the console shows: an HL7 v2 message keeps its
//! segments, fields and separators, so it stays readable, while the
//! values that identify a patient (or a relative, insured or guarantor)
//! become `***` (dates `********`), whatever their length.
//!
//! Masked, per segment (repetitions each):
//! - PID: 2, 3, 4, 18, 21 identifiers (the id and its check digit; type,
//!   authority and facility are kept), 5, 6, 9 names, 7 birth date, 11
//!   address (state, country and address type kept), 12 county, 13, 14
//!   phones (use and equipment codes kept), 19 SSN, 20 driver's licence,
//!   23 birth place, 29 death date.
//! - NK1: 2, 30 names, 4, 32 addresses, 5, 6, 31 phones, 16 birth date,
//!   33 identifiers, 37 SSN.
//! - QPD (a QBP query's patient): 3 identifiers, 4 name, 5 mother's maiden
//!   name, 6 birth date, 8 address, 9 phone.
//! - IN1: 16 insured's name, 18 insured's birth date, 19 insured's address,
//!   36 policy number, 49 insured's id.
//! - GT1: 2 guarantor number, 3, 4 names, 5 address, 6, 7 phones, 8 birth
//!   date, 12 SSN, 16 employer name, 17 employer address, 18 employer
//!   phone, 19 employee id.
//! - NTE: 3 comment (free text may name anyone).
//! - ERR: 7 diagnostic information and 8 user message, and MSA: 3 text
//!   message (an answer's sentences, which may quote what was sent): each
//!   quoted value and each run of three or more digits is masked, the rest
//!   of the sentence and a detection id at its end (`[patient-…]`) kept.
//!
//! The separators are read from each MSH (or FHS, BHS) header, never
//! assumed; text before any header is masked whole but for its segment names.

/// How a field's values are masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Every value (component and subcomponent).
    All,
    /// A date: the whole repetition becomes `********`.
    Date,
    /// An identifier (CX and the like): the id and its check digit; the
    /// rest (check digit scheme, authority, type, facility) is kept.
    Id,
    /// An address (XAD): all but the state, country and address type.
    Address,
    /// A phone (XTN): all but the use and equipment type codes.
    Phone,
    /// A sentence: its quoted values and digit runs.
    Text,
}

use Kind::*;

/// The fields masked in segment `name`, by field number.
fn rules(name: &str) -> &'static [(usize, Kind)] {
    match name {
        "PID" => &[
            (2, Id),
            (3, Id),
            (4, Id),
            (5, All),
            (6, All),
            (7, Date),
            (9, All),
            (11, Address),
            (12, All),
            (13, Phone),
            (14, Phone),
            (18, Id),
            (19, All),
            (20, Id),
            (21, Id),
            (23, All),
            (29, Date),
        ],
        "NK1" => &[
            (2, All),
            (4, Address),
            (5, Phone),
            (6, Phone),
            (16, Date),
            (30, All),
            (31, Phone),
            (32, Address),
            (33, Id),
            (37, All),
        ],
        "QPD" => &[
            (3, Id),
            (4, All),
            (5, All),
            (6, Date),
            (8, Address),
            (9, Phone),
        ],
        "IN1" => &[(16, All), (18, Date), (19, Address), (36, All), (49, Id)],
        "GT1" => &[
            (2, Id),
            (3, All),
            (4, All),
            (5, Address),
            (6, Phone),
            (7, Phone),
            (8, Date),
            (12, All),
            (16, All),
            (17, Address),
            (18, Phone),
            (19, Id),
        ],
        "NTE" => &[(3, All)],
        "ERR" => &[(7, Text), (8, Text)],
        "MSA" => &[(3, Text)],
        _ => &[],
    }
}

/// The separators a header declares.
#[derive(Debug, Clone, Copy)]
struct Delimiters {
    field: char,
    component: Option<char>,
    repetition: Option<char>,
    subcomponent: Option<char>,
    /// What a masked value is written with: `*`, unless `*` is a separator.
    mask: char,
}

impl Delimiters {
    /// The separators of a header segment (`MSH|^~\&`), if `segment` is one.
    fn of_header(segment: &str) -> Option<Delimiters> {
        let name = segment.get(..3)?;
        if !matches!(name, "MSH" | "FHS" | "BHS") {
            return None;
        }
        let mut rest = segment.get(3..)?.chars();
        let field = rest.next()?;
        if field.is_alphanumeric() || field == '\r' || field == '\n' {
            return None;
        }
        let encoding: Vec<char> = rest.take_while(|c| *c != field).take(4).collect();
        let at = |i: usize| encoding.get(i).copied();
        let (component, repetition, subcomponent) = (at(0), at(1), at(3));
        let used = [Some(field), component, repetition, at(2), subcomponent];
        let mask = ['*', '#', 'X']
            .into_iter()
            .find(|m| !used.contains(&Some(*m)))
            .unwrap_or('X');
        Some(Delimiters {
            field,
            component,
            repetition,
            subcomponent,
            mask,
        })
    }

    fn masked(&self) -> String {
        std::iter::repeat_n(self.mask, 3).collect()
    }

    fn masked_date(&self) -> String {
        std::iter::repeat_n(self.mask, 8).collect()
    }
}

/// Splits on `sep` when there is one; else the whole text is one part.
fn parts(text: &str, sep: Option<char>) -> Vec<&str> {
    match sep {
        Some(c) => text.split(c).collect(),
        None => vec![text],
    }
}

fn join(parts: Vec<String>, sep: Option<char>) -> String {
    match sep {
        Some(c) => parts.join(c.encode_utf8(&mut [0u8; 4])),
        None => parts.concat(),
    }
}

/// A value masked: empty and HL7's explicit null (`""`) stay as they are.
fn mask_value(value: &str, d: &Delimiters) -> String {
    if value.is_empty() || value == "\"\"" {
        value.to_string()
    } else {
        d.masked()
    }
}

/// A component masked value by value (its subcomponents each).
fn mask_component(component: &str, d: &Delimiters) -> String {
    join(
        parts(component, d.subcomponent)
            .into_iter()
            .map(|s| mask_value(s, d))
            .collect(),
        d.subcomponent,
    )
}

/// One repetition of a field, masked as `kind` says.
fn mask_repetition(rep: &str, kind: Kind, d: &Delimiters) -> String {
    if rep.is_empty() || rep == "\"\"" {
        return rep.to_string();
    }
    // Components kept, by 0-based index; every other one is masked.
    let kept: &[usize] = match kind {
        Date => return d.masked_date(),
        Text => return mask_sentence(rep, d),
        All => &[],
        Id => &[2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
        Address => &[3, 5, 6],
        Phone => &[1, 2],
    };
    let components = parts(rep, d.component)
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            if kept.contains(&i) {
                c.to_string()
            } else {
                mask_component(c, d)
            }
        })
        .collect();
    join(components, d.component)
}

/// A sentence with what may identify a patient masked: every quoted value
/// (`'…'` or `"…"`) and every run of three or more digits. A detection id
/// in brackets at the end is kept as it is.
fn mask_sentence(text: &str, d: &Delimiters) -> String {
    let (body, id) = match text.rfind(" [") {
        Some(at) if text.ends_with(']') => text.split_at(at),
        _ => (text, ""),
    };
    let chars: Vec<char> = body.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        if (c == '\'' || c == '"')
            && let Some(len) = chars
                .get(i + 1..)
                .and_then(|r| r.iter().position(|x| *x == c))
        {
            out.push(c);
            if len > 0 {
                out.push_str(&d.masked());
            }
            out.push(c);
            i += len + 2;
            continue;
        }
        if c.is_ascii_digit() {
            let run = chars
                .get(i..)
                .map_or(0, |r| r.iter().take_while(|x| x.is_ascii_digit()).count());
            if run >= 3 {
                out.push_str(&d.masked());
            } else {
                out.extend(chars.get(i..i + run).unwrap_or_default());
            }
            i += run;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out.push_str(id);
    out
}

fn mask_field(field: &str, kind: Kind, d: &Delimiters) -> String {
    join(
        parts(field, d.repetition)
            .into_iter()
            .map(|r| mask_repetition(r, kind, d))
            .collect(),
        d.repetition,
    )
}

/// One segment with the separators in force.
fn mask_segment(segment: &str, d: &Delimiters) -> String {
    let mut fields: Vec<&str> = segment.split(d.field).collect();
    let name = fields.first().copied().unwrap_or_default();
    let rules = rules(name);
    if rules.is_empty() {
        return segment.to_string();
    }
    let mut out: Vec<String> = Vec::with_capacity(fields.len());
    for (i, field) in fields.drain(..).enumerate() {
        match rules.iter().find(|(n, _)| *n == i) {
            Some((_, kind)) => out.push(mask_field(field, *kind, d)),
            None => out.push(field.to_string()),
        }
    }
    join(out, Some(d.field))
}

/// A segment met before any header: its separators are unknown, so all
/// but a segment name is masked.
fn mask_unknown(segment: &str) -> String {
    if segment.is_empty() {
        return String::new();
    }
    let name: String = segment.chars().take(3).collect();
    let looks_like_name = name.chars().count() == 3
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    match (looks_like_name, segment.len() > name.len()) {
        (true, true) => format!("{name}***"),
        (true, false) => name,
        (false, _) => "***".to_string(),
    }
}

/// The message with its PHI masked (see the module documentation), its
/// segments, separators and line ends as they were.
pub fn mask_hl7(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut delimiters: Option<Delimiters> = None;
    let mut rest = text;
    loop {
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
        let (segment, tail) = rest.split_at(end);
        // A header sets the separators for what follows (and for itself,
        // which has nothing to mask).
        if let Some(d) = Delimiters::of_header(segment) {
            delimiters = Some(d);
            out.push_str(segment);
        } else {
            match &delimiters {
                Some(d) => out.push_str(&mask_segment(segment, d)),
                None => out.push_str(&mask_unknown(segment)),
            }
        }
        let mut chars = tail.chars();
        match chars.next() {
            Some(line_end) => {
                out.push(line_end);
                rest = chars.as_str();
            }
            None => break,
        }
    }
    out
}

/// A patient id as a list shows it: masked whole (an empty id stays empty).
pub fn mask_id(id: &str) -> String {
    if id.trim().is_empty() {
        String::new()
    } else {
        "•••".to_string()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const VXU: &str = "MSH|^~\\&|EHR|CLINIC-A|IZHUB|HIE|20240101120000||VXU^V04^VXU_V04|CTRL1|P|2.5.1\r\
PID|1||MRN12345^^^CLINIC-A^MR~987654321^^^SSA^SS||DOE^JANE^Q^^^^L|SMITH^MARY|20150304|F||2106-3^White^CDCREC|123 MAIN ST^APT 4^SPRINGFIELD^IL^62704^USA^H||^PRN^PH^^1^217^5551234||||||||||||||||20991231\r\
NK1|1|DOE^JOHN|MTH^Mother^HL70063|9 ELM RD^^SPRINGFIELD^IL^62701^USA^H|^PRN^PH^^1^217^5550000\r\
ORC|RE||197023^CMC\r\
RXA|0|1|20240101|20240101|08^HepB^CVX|0.5|mL\r\
NTE|1||Mother Jane called 555-1234\r";

    #[test]
    fn masks_a_vxu_keeping_its_structure() {
        let masked = mask_hl7(VXU);
        let lines: Vec<&str> = masked.split('\r').collect();
        assert_eq!(lines[0], VXU.split('\r').next().unwrap());
        assert_eq!(
            lines[1],
            "PID|1||***^^^CLINIC-A^MR~***^^^SSA^SS||***^***^***^^^^***|***^***|********|F||2106-3^White^CDCREC|***^***^***^IL^***^USA^H||^PRN^PH^^***^***^***||||||||||||||||********"
        );
        assert_eq!(
            lines[2],
            "NK1|1|***^***|MTH^Mother^HL70063|***^^***^IL^***^USA^H|^PRN^PH^^***^***^***"
        );
        assert_eq!(lines[3], "ORC|RE||197023^CMC");
        assert_eq!(lines[4], "RXA|0|1|20240101|20240101|08^HepB^CVX|0.5|mL");
        assert_eq!(lines[5], "NTE|1||***");
        assert_eq!(lines[6], "");
        for phi in [
            "MRN12345",
            "987654321",
            "JANE",
            "SMITH",
            "20150304",
            "MAIN",
            "62704",
            "5551234",
            "JOHN",
            "ELM",
        ] {
            assert!(!masked.contains(phi), "{phi} in {masked}");
        }
    }

    #[test]
    fn reads_the_separators_from_the_header() {
        let msg = "MSH#$%!@#EHR#CLINIC\nPID#1##MRN1$$$AUTH$MR%MRN2$$$AUTH$PI##DOE$JANE#MAIDEN#20150304\nPID|1||MRN3\n";
        let masked = mask_hl7(msg);
        assert_eq!(
            masked,
            "MSH#$%!@#EHR#CLINIC\nPID#1##***$$$AUTH$MR%***$$$AUTH$PI##***$***#***#********\nPID|1||MRN3\n"
        );
        // A separator that is '*' makes masks of '#'.
        let msg = "MSH|*~\\&|\rPID|1||ID1*2*M10||DOE*JANE\r";
        assert_eq!(mask_hl7(msg), "MSH|*~\\&|\rPID|1||###*###*M10||###*###\r");
        // Subcomponents are masked one by one.
        let msg = "MSH|^~\\&|\rPID|1||||||||||1 MAIN ST&MAIN ST&1^^CITY^WA\r";
        assert_eq!(
            mask_hl7(msg),
            "MSH|^~\\&|\rPID|1||||||||||***&***&***^^***^WA\r"
        );
    }

    #[test]
    fn masks_a_query_and_text_without_a_header() {
        let qbp = "MSH|^~\\&|EHR|C|||||QBP^Q11^QBP_Q11|Q1|P|2.5.1|||ER|AL|||||Z44^CDCPHINVS\rQPD|Z44^Request Evaluated History and Forecast^CDCPHINVS|Q1|MRN9^^^C^MR|DOE^JOHN^^^^^L|ROE^ANN|20200101|M|1 A ST^^TOWN^WA^98000|^PRN^PH^^^360^5550101|Y|1\rRCP|I|5^RD&Records&HL70126\r";
        let masked = mask_hl7(qbp);
        assert!(masked.contains(
            "\rQPD|Z44^Request Evaluated History and Forecast^CDCPHINVS|Q1|***^^^C^MR|***^***^^^^^***|***^***|********|M|***^^***^WA^***|^PRN^PH^^^***^***|Y|1\r"
        ), "{masked}");
        assert!(masked.ends_with("RCP|I|5^RD&Records&HL70126\r"));
        assert_eq!(mask_hl7("PID|1||MRN1||DOE^JANE"), "PID***");
        assert_eq!(mask_hl7("jane doe 1970"), "***");
        assert_eq!(mask_hl7(""), "");
        assert_eq!(mask_hl7("MSH"), "MSH");
        // HL7's explicit null is not a value.
        assert_eq!(
            mask_hl7("MSH|^~\\&\rPID|1||\"\"||\"\"\r"),
            "MSH|^~\\&\rPID|1||\"\"||\"\"\r"
        );
    }

    /// An answer's sentences keep their words and detection id; the values
    /// they quote and their digits are masked.
    #[test]
    fn masks_the_values_an_answer_quotes() {
        let ack = "MSH|^~\\&|IIS\rMSA|AE|C1|Zip 02458 is wrong\r\
                   ERR||PID^1^11^5|102^Data type error^HL70357|W||||The ZIP code is not valid. Value sent: '0245877'. [patient-address-zip-invalid]\r\
                   ERR||PID^1^7|101|E|||Born \"20150304\", id 987654321|The birth date is missing. [patient-birth-date-missing]\r";
        let masked = mask_hl7(ack);
        for phi in ["0245877", "02458", "20150304", "987654321"] {
            assert!(!masked.contains(phi), "{phi} in {masked}");
        }
        assert!(
            masked.contains(
                "The ZIP code is not valid. Value sent: '***'. [patient-address-zip-invalid]"
            ),
            "{masked}"
        );
        assert!(
            masked.contains(
                "Born \"***\", id ***|The birth date is missing. [patient-birth-date-missing]"
            ),
            "{masked}"
        );
        assert!(masked.contains("MSA|AE|C1|Zip *** is wrong"), "{masked}");
        // Two digits stay (a dose number, a day); an unclosed quote is kept.
        let d = Delimiters::of_header("MSH|^~\\&").unwrap();
        assert_eq!(
            mask_sentence("dose 2 of 3, it's 12 days early", &d),
            "dose 2 of 3, it's 12 days early"
        );
    }

    #[test]
    fn masks_ids_whole() {
        assert_eq!(mask_id("MRN12345"), "•••");
        assert_eq!(mask_id("1"), "•••");
        assert_eq!(mask_id(""), "");
        assert_eq!(mask_id("  "), "");
    }

    /// A separator set: five distinct punctuation characters.
    fn delimiters() -> impl Strategy<Value = Vec<char>> {
        proptest::sample::subsequence(
            vec![
                '|', '^', '~', '\\', '&', '#', '$', '%', '!', '@', '*', '+', ';', '/', '=', '?',
            ],
            5,
        )
        .prop_shuffle()
    }

    /// A PHI value: lowercase letters and digits, which nothing kept contains.
    fn phi() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9]{5,11}"
    }

    proptest! {
        #[test]
        fn never_panics(text in any::<String>()) {
            let _ = mask_hl7(&text);
        }

        #[test]
        fn never_panics_on_hl7_like_text(text in "(MSH|FHS|PID|NK1|QPD)?[|^~\\\\&#\r\nA-Z0-9é\"*]{0,200}") {
            let masked = mask_hl7(&text);
            // Line ends are kept one for one.
            prop_assert_eq!(
                masked.matches(['\r', '\n']).count(),
                text.matches(['\r', '\n']).count()
            );
        }

        #[test]
        fn no_generated_phi_survives(
            d in delimiters(),
            ids in proptest::collection::vec(phi(), 1..4),
            names in proptest::collection::vec(phi(), 5),
            birth in "[0-9]{8}",
            street in phi(),
            city in phi(),
            zip in phi(),
            phone in phi(),
            ssn in phi(),
            nk1_name in phi(),
            nk1_phone in phi(),
            crlf in any::<bool>(),
        ) {
            let (f, c, r, e, s) = (d[0], d[1], d[2], d[3], d[4]);
            let eol = if crlf { "\r\n" } else { "\r" };
            let pid3: Vec<String> = ids.iter().map(|id| format!("{id}{c}{c}{c}AUTH{c}MR")).collect();
            let pid3 = pid3.join(&r.to_string());
            let birth = format!("b{birth}");
            let msg = format!(
                "MSH{f}{c}{r}{e}{s}{f}EHR{f}CLINIC{eol}\
    PID{f}1{f}{f}{pid3}{f}{f}{n0}{c}{n1}{c}{n2}{f}{n3}{f}{birth}{f}F{f}{n4}{f}{f}{street}{s}X{c}{c}{city}{c}WA{c}{zip}{c}USA{f}{f}{c}PRN{c}PH{c}{c}{c}{c}{phone}{f}{f}{f}{f}{f}{ssn}{eol}\
    NK1{f}1{f}{nk1_name}{f}MTH{f}{f}{c}PRN{c}PH{c}{c}{c}{c}{nk1_phone}{eol}",
                n0 = names[0], n1 = names[1], n2 = names[2], n3 = names[3], n4 = names[4],
            );
            let masked = mask_hl7(&msg);
            let secrets = ids.iter().chain(&names).chain([&birth, &street, &city, &zip, &phone, &ssn, &nk1_name, &nk1_phone]);
            for secret in secrets {
                prop_assert!(!masked.contains(secret.as_str()), "{} in {}", secret, masked);
            }
            for kept in ["AUTH", "MR", "WA", "USA", "PRN", "PH", "MTH", "EHR", "CLINIC"] {
                prop_assert!(masked.contains(kept), "{} missing in {}", kept, masked);
            }
            prop_assert_eq!(masked.matches(f).count(), msg.matches(f).count());
            prop_assert_eq!(masked.matches(eol).count(), 3);
        }
    }
}

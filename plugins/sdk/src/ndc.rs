//! National Drug Codes as vaccines are labelled and coded.
//!
//! The FDA assigns 10-digit NDCs in three segment layouts (labeler-product-
//! package): 4-4-2, 5-3-2 and 5-4-1. HIPAA transactions and the CDC
//! crosswalks use the 11-digit 5-4-2 form, made by padding the short segment
//! with a leading zero. [`normalize`] turns every form into that one, so a
//! vial's `0006-4681-00` (Merck's MMR II) and the crosswalk's `00006-4681-00`
//! are the same code.

/// The 11-digit 5-4-2 hyphenated form (`00006-4681-00`) of an NDC written
/// as 4-4-2, 5-3-2, 5-4-1 or 5-4-2 with hyphens, or as 11 bare digits.
///
/// `None` for anything else, including 10 bare digits: without the hyphens
/// there is no telling which segment is short, so guessing could name
/// another product.
pub fn normalize(ndc: &str) -> Option<String> {
    let ndc = ndc.trim();
    if ndc.len() == 11 && ndc.bytes().all(|b| b.is_ascii_digit()) {
        let (a, rest) = ndc.split_at(5);
        let (b, c) = rest.split_at(4);
        return Some(format!("{a}-{b}-{c}"));
    }
    let mut parts = ndc.split('-');
    let (Some(a), Some(b), Some(c), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    if ![a, b, c]
        .iter()
        .all(|p| !p.is_empty() && p.bytes().all(|d| d.is_ascii_digit()))
    {
        return None;
    }
    match (a.len(), b.len(), c.len()) {
        (5, 4, 2) | (4, 4, 2) | (5, 3, 2) | (5, 4, 1) => Some(format!("{a:0>5}-{b:0>4}-{c:0>2}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn every_fda_and_cdc_form_becomes_5_4_2() {
        for (given, want) in [
            ("49281-0425-50", "49281-0425-50"),
            ("49281042550", "49281-0425-50"),
            ("0006-4681-00", "00006-4681-00"),
            ("58160-842-11", "58160-0842-11"),
            ("49281-0425-5", "49281-0425-05"),
            (" 00006-4681-00 ", "00006-4681-00"),
        ] {
            assert_eq!(normalize(given).as_deref(), Some(want), "{given}");
        }
    }

    #[test]
    fn anything_else_is_not_an_ndc() {
        for bad in [
            "",
            "0006468100",
            "1-1-1",
            "49281-0425-500",
            "492810-425-50",
            "49281--50",
            "4928a-0425-50",
            "49281-0425-50-1",
            "49281 0425 50",
            "４9281-0425-50",
        ] {
            assert_eq!(normalize(bad), None, "{bad:?}");
        }
    }
}

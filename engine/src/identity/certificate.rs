//! A client certificate as a sender's identity: its subject common name,
//! read with an X.509 parser, and the facilities (MSH-4.1) that
//! `[listeners.X.tls.identities]` lets it send for.

use std::collections::{BTreeMap, BTreeSet};

use super::Peer;

/// The most characters a common name may have (X.520's ub-common-name).
pub const MAX_CN_CHARS: usize = 64;

/// Why a client certificate cannot identify a sender. Each message reads
/// after "the client certificate cannot identify a sender: " and never
/// quotes the certificate's contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The bytes are not one DER X.509 certificate.
    #[error("it cannot be read as an X.509 certificate ({0})")]
    Unparseable(String),
    /// The subject has no CN attribute.
    #[error(
        "its subject has no common name (CN); the issuer's and the subjectAltName's do not name the sender"
    )]
    NoCommonName,
    /// The subject has this many CN attributes.
    #[error("its subject has {0} common names (CN) where exactly one is needed")]
    SeveralCommonNames(usize),
    /// The CN is a BMPString (UCS-2).
    #[error(
        "its subject common name is a BMPString (UCS-2), which is not accepted; issue it as a UTF8String or PrintableString"
    )]
    BmpString,
    /// The CN is of this ASN.1 type, not a string type accepted here.
    #[error(
        "its subject common name is a {0}, not a text string; issue it as a UTF8String or PrintableString"
    )]
    NotText(String),
    /// The CN is of this ASCII-only string type but holds other bytes.
    #[error("its subject common name is a {0} with bytes outside ASCII; issue it as a UTF8String")]
    NotAscii(&'static str),
    /// The CN is a UTF8String that is not UTF-8.
    #[error("its subject common name is a UTF8String that is not valid UTF-8")]
    InvalidUtf8,
    /// The CN is empty.
    #[error("its subject common name is empty")]
    EmptyCommonName,
    /// The CN holds control characters.
    #[error("its subject common name holds control characters")]
    ControlCharacters,
    /// The CN has this many characters, more than [`MAX_CN_CHARS`].
    #[error("its subject common name is {0} characters long; at most {MAX_CN_CHARS} are allowed")]
    TooLong(usize),
}

/// The subject common name (CN) of a DER certificate: the one CN attribute
/// of its subject, never the issuer's nor one in an extension such as
/// subjectAltName. It must be a UTF8String, or a PrintableString,
/// IA5String or TeletexString of ASCII; not empty, at most
/// [`MAX_CN_CHARS`] characters, without control characters.
pub fn subject_cn(der: &[u8]) -> Result<String, IdentityError> {
    use x509_parser::asn1_rs::{Class, Tag};
    use x509_parser::prelude::{FromDer, X509Certificate};

    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| IdentityError::Unparseable(e.to_string()))?;
    if !rest.is_empty() {
        return Err(IdentityError::Unparseable(format!(
            "{} bytes follow the certificate",
            rest.len()
        )));
    }
    let mut names = cert.subject().iter_common_name();
    let cn = names.next().ok_or(IdentityError::NoCommonName)?;
    let more = names.count();
    if more > 0 {
        return Err(IdentityError::SeveralCommonNames(more + 1));
    }
    let value = cn.attr_value();
    let bytes = value.data;
    let ascii = |kind: &'static str| {
        if bytes.is_ascii() {
            // ASCII is valid UTF-8.
            std::str::from_utf8(bytes).map_err(|_| IdentityError::NotAscii(kind))
        } else {
            Err(IdentityError::NotAscii(kind))
        }
    };
    let text = match (value.class(), value.tag()) {
        (Class::Universal, Tag::Utf8String) => {
            std::str::from_utf8(bytes).map_err(|_| IdentityError::InvalidUtf8)?
        }
        (Class::Universal, Tag::PrintableString) => ascii("PrintableString")?,
        (Class::Universal, Tag::Ia5String) => ascii("IA5String")?,
        (Class::Universal, Tag::TeletexString) => ascii("TeletexString")?,
        (Class::Universal, Tag::BmpString) => return Err(IdentityError::BmpString),
        (Class::Universal, tag) => return Err(IdentityError::NotText(asn1_type_name(tag))),
        (class, tag) => {
            return Err(IdentityError::NotText(format!(
                "{class:?}-class value with tag {}",
                tag.0
            )));
        }
    };
    check_common_name(text)?;
    Ok(text.to_string())
}

/// Whether `cn` may name a sender: not empty, not too long, no control
/// characters.
pub fn check_common_name(cn: &str) -> Result<(), IdentityError> {
    let chars = cn.chars().count();
    if chars == 0 {
        Err(IdentityError::EmptyCommonName)
    } else if cn.chars().any(char::is_control) {
        Err(IdentityError::ControlCharacters)
    } else if chars > MAX_CN_CHARS {
        Err(IdentityError::TooLong(chars))
    } else {
        Ok(())
    }
}

/// ASN.1's name for a universal tag, for error messages.
fn asn1_type_name(tag: x509_parser::asn1_rs::Tag) -> String {
    use x509_parser::asn1_rs::Tag;
    let name = match tag {
        Tag::NumericString => "NumericString",
        Tag::VideotexString => "VideotexString",
        Tag::GraphicString => "GraphicString",
        Tag::VisibleString => "VisibleString",
        Tag::GeneralString => "GeneralString",
        Tag::UniversalString => "UniversalString",
        Tag::CharacterString => "CHARACTER STRING",
        Tag::OctetString => "OCTET STRING",
        Tag::BitString => "BIT STRING",
        Tag::Integer => "INTEGER",
        Tag::Boolean => "BOOLEAN",
        Tag::Null => "NULL",
        Tag::Oid => "OBJECT IDENTIFIER",
        Tag::Sequence => "SEQUENCE",
        Tag::Set => "SET",
        other => return format!("value with universal tag {}", other.0),
    };
    name.to_string()
}

/// The SHA-256 fingerprint of a DER certificate.
pub fn fingerprint(der: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(der).into()
}

/// How `[listeners.X.tls.identities]` names a certificate.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum CertKey {
    /// `sha256:<hex>`: the SHA-256 fingerprint of the certificate's DER.
    Fingerprint([u8; 32]),
    /// `CN=<name>`: the certificate's subject common name.
    SubjectCn(String),
}

impl CertKey {
    /// Reads `CN=NAME` or `sha256:HEX` (64 hex digits, colons between
    /// bytes allowed).
    pub fn parse(key: &str) -> Result<CertKey, String> {
        if let Some(cn) = key.strip_prefix("CN=") {
            check_common_name(cn)
                .map(|()| CertKey::SubjectCn(cn.to_string()))
                .map_err(|_| {
                    format!(
                        "'{key}' can never match a certificate: a subject common name has 1 to {MAX_CN_CHARS} characters and no control characters"
                    )
                })
        } else if let Some(hex) = key.strip_prefix("sha256:") {
            let digits: Vec<u8> = hex.bytes().filter(|b| *b != b':').collect();
            let mut out = [0u8; 32];
            let ok = digits.len() == 64
                && digits.chunks(2).zip(out.iter_mut()).all(|(pair, byte)| {
                    match (pair.first(), pair.get(1)) {
                        (Some(&hi), Some(&lo)) => match (hex_value(hi), hex_value(lo)) {
                            (Some(hi), Some(lo)) => {
                                *byte = hi << 4 | lo;
                                true
                            }
                            _ => false,
                        },
                        _ => false,
                    }
                });
            if ok {
                Ok(CertKey::Fingerprint(out))
            } else {
                Err(format!(
                    "'{key}' is not a SHA-256 fingerprint: after 'sha256:' give 64 hex digits (colons between bytes allowed)"
                ))
            }
        } else {
            Err(format!(
                "'{key}' names no certificate: write \"CN=<subject common name>\" or \"sha256:<hex SHA-256 of the certificate's DER>\""
            ))
        }
    }
}

impl std::fmt::Display for CertKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CertKey::SubjectCn(cn) => write!(f, "CN={cn}"),
            CertKey::Fingerprint(bytes) => {
                write!(f, "sha256:")?;
                bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// The facilities (MSH-4.1) that certificates named in
/// `[listeners.X.tls.identities]` may send for. A certificate not named
/// there may send for its subject CN only.
pub type CertIdentities = BTreeMap<CertKey, BTreeSet<String>>;

/// The sender a verified client certificate (DER) proves, and the
/// facilities it may send for: those `identities` maps to its fingerprint,
/// else those mapped to its subject CN, else its subject CN alone.
pub fn identify(identities: &CertIdentities, der: &[u8]) -> Result<Peer, IdentityError> {
    let pinned = CertKey::Fingerprint(fingerprint(der));
    if let Some(facilities) = identities.get(&pinned) {
        // A pinned fingerprint names the certificate by itself.
        return Ok(Peer {
            name: format!("client certificate {pinned}"),
            facilities: facilities.clone(),
        });
    }
    let cn = subject_cn(der)?;
    let name = format!("client certificate '{cn}'");
    Ok(match identities.get(&CertKey::SubjectCn(cn.clone())) {
        Some(facilities) => Peer {
            name,
            facilities: facilities.clone(),
        },
        None => Peer::single(name, cn),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, CustomExtension, DistinguishedName,
        DnType, DnValue, IsCa, KeyPair,
    };

    fn issuer() -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "TEST-CA");
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    }

    /// The DER of a certificate, issued by a CA named TEST-CA, whose subject
    /// is exactly `attributes`, with `extensions`.
    fn cert(attributes: Vec<(DnType, DnValue)>, extensions: Vec<CustomExtension>) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        for (ty, value) in attributes {
            params.distinguished_name.push(ty, value);
        }
        params.custom_extensions = extensions;
        let key = KeyPair::generate().unwrap();
        params.signed_by(&key, &issuer()).unwrap().der().to_vec()
    }

    fn cn(value: DnValue) -> Vec<u8> {
        cert(vec![(DnType::CommonName, value)], Vec::new())
    }

    /// Replaces the only occurrence of `from` in `der` with `to` (same length).
    fn patch(mut der: Vec<u8>, from: &[u8], to: &[u8]) -> Vec<u8> {
        let at: Vec<usize> = der
            .windows(from.len())
            .enumerate()
            .filter(|(_, w)| *w == from)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(at.len(), 1, "{from:?} must occur once");
        der[at[0]..at[0] + to.len()].copy_from_slice(to);
        der
    }

    #[test]
    fn reads_the_subject_common_name() {
        assert_eq!(
            subject_cn(&cn("CLINIC-A".into())),
            Ok("CLINIC-A".to_string())
        );
        let with_others = cert(
            vec![
                (DnType::CountryName, "US".into()),
                (DnType::OrganizationName, "Clinic".into()),
                (DnType::CommonName, "Clínica Ñ 1".into()),
            ],
            Vec::new(),
        );
        assert_eq!(subject_cn(&with_others), Ok("Clínica Ñ 1".to_string()));
        for value in [
            DnValue::PrintableString("CLINIC A".try_into().unwrap()),
            DnValue::Ia5String("CLINIC A".try_into().unwrap()),
            DnValue::TeletexString("CLINIC A".try_into().unwrap()),
        ] {
            assert_eq!(
                subject_cn(&cn(value.clone())),
                Ok("CLINIC A".to_string()),
                "{value:?}"
            );
        }
        let longest = "A".repeat(MAX_CN_CHARS);
        assert_eq!(subject_cn(&cn(longest.as_str().into())), Ok(longest));
    }

    #[test]
    fn a_directory_name_in_subject_alt_name_is_not_the_subject() {
        // GeneralNames { [4] Name { RDN { CN = CLINIC-B } } }
        let mut attribute = vec![0x30, 0x0f, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x08];
        attribute.extend_from_slice(b"CLINIC-B");
        let mut san = vec![0x30, 0x17, 0xa4, 0x15, 0x30, 0x13, 0x31, 0x11];
        san.extend(attribute);
        let der = cert(
            vec![(DnType::CommonName, "CLINIC-A".into())],
            vec![CustomExtension::from_oid_content(&[2, 5, 29, 17], san)],
        );
        assert_eq!(subject_cn(&der), Ok("CLINIC-A".to_string()));
    }

    #[test]
    fn refuses_a_subject_without_exactly_one_common_name() {
        let none = cert(
            vec![(DnType::OrganizationName, "Clinic".into())],
            Vec::new(),
        );
        assert_eq!(subject_cn(&none), Err(IdentityError::NoCommonName));
        let empty = cert(Vec::new(), Vec::new());
        assert_eq!(subject_cn(&empty), Err(IdentityError::NoCommonName));
        let two = cert(
            vec![
                (DnType::CommonName, "CLINIC-A".into()),
                (DnType::CustomDnType(vec![2, 5, 4, 3]), "CLINIC-B".into()),
            ],
            Vec::new(),
        );
        assert_eq!(subject_cn(&two), Err(IdentityError::SeveralCommonNames(2)));
    }

    #[test]
    fn refuses_a_common_name_that_is_not_plain_text() {
        let bmp = cn(DnValue::BmpString("CLINIC-A".try_into().unwrap()));
        assert_eq!(subject_cn(&bmp), Err(IdentityError::BmpString));
        assert!(IdentityError::BmpString.to_string().contains("BMPString"));
        let universal = cn(DnValue::UniversalString("CLINIC-A".try_into().unwrap()));
        assert_eq!(
            subject_cn(&universal),
            Err(IdentityError::NotText("UniversalString".into()))
        );
        // A PrintableString or TeletexString with a byte outside ASCII.
        let printable = patch(
            cn(DnValue::PrintableString("CLINIC-Z".try_into().unwrap())),
            b"CLINIC-Z",
            b"CLINIC-\xe9",
        );
        assert_eq!(
            subject_cn(&printable),
            Err(IdentityError::NotAscii("PrintableString"))
        );
        let teletex = patch(
            cn(DnValue::TeletexString("CLINIC-Z".try_into().unwrap())),
            b"CLINIC-Z",
            b"CLINIC-\xe9",
        );
        assert_eq!(
            subject_cn(&teletex),
            Err(IdentityError::NotAscii("TeletexString"))
        );
        let bad_utf8 = patch(cn("CLINIC-Z".into()), b"CLINIC-Z", b"CLINIC-\xff");
        assert_eq!(subject_cn(&bad_utf8), Err(IdentityError::InvalidUtf8));
        // An OCTET STRING where a string belongs: tag 0x0c (UTF8String) becomes 0x04.
        let octets = patch(
            cn("CLINIC-Z".into()),
            b"\x0c\x08CLINIC-Z",
            b"\x04\x08CLINIC-Z",
        );
        assert_eq!(
            subject_cn(&octets),
            Err(IdentityError::NotText("OCTET STRING".into()))
        );
    }

    #[test]
    fn refuses_control_characters_and_overlong_or_empty_names() {
        for bad in ["CLINIC\u{7}A", "CLINIC-A\n", "CLINIC\u{0}", "CLINIC\u{85}A"] {
            assert_eq!(
                subject_cn(&cn(bad.into())),
                Err(IdentityError::ControlCharacters),
                "{bad:?}"
            );
        }
        let long = "A".repeat(MAX_CN_CHARS + 1);
        assert_eq!(
            subject_cn(&cn(long.as_str().into())),
            Err(IdentityError::TooLong(MAX_CN_CHARS + 1))
        );
        assert_eq!(
            subject_cn(&cn("".into())),
            Err(IdentityError::EmptyCommonName)
        );
    }

    #[test]
    fn refuses_what_is_not_a_certificate() {
        for junk in [&b""[..], b"\x30\x03\x02\x01", b"not a certificate"] {
            assert!(
                matches!(subject_cn(junk), Err(IdentityError::Unparseable(_))),
                "{junk:?}"
            );
        }
        let mut trailing = cn("CLINIC-A".into());
        trailing.push(0);
        assert_eq!(
            subject_cn(&trailing),
            Err(IdentityError::Unparseable(
                "1 bytes follow the certificate".into()
            ))
        );
    }

    #[test]
    fn reads_certificate_keys() {
        assert_eq!(
            CertKey::parse("CN=HIE-MEMBER-1"),
            Ok(CertKey::SubjectCn("HIE-MEMBER-1".into()))
        );
        let hex = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        for text in [format!("sha256:{hex}"), format!("sha256:{colons}")] {
            assert_eq!(
                CertKey::parse(&text),
                Ok(CertKey::Fingerprint([0xab; 32])),
                "{text}"
            );
        }
        assert_eq!(
            CertKey::Fingerprint([0xab; 32]).to_string(),
            format!("sha256:{hex}")
        );
        for bad in [
            "HIE-MEMBER-1",
            "cn=HIE-MEMBER-1",
            "O=HIE",
            "sha1:abcd",
            "CN=",
        ] {
            assert!(CertKey::parse(bad).is_err(), "{bad}");
        }
        for bad in [
            format!("sha256:{}", &hex[1..]),
            format!("sha256:{hex}00"),
            format!("sha256:{}zz", &hex[2..]),
            "sha256:".to_string(),
        ] {
            let err = CertKey::parse(&bad).unwrap_err();
            assert!(err.contains("64 hex digits") && err.contains(&bad), "{err}");
        }
        let long = format!("CN={}", "A".repeat(MAX_CN_CHARS + 1));
        assert!(
            CertKey::parse(&long)
                .unwrap_err()
                .contains("can never match")
        );
    }

    #[test]
    fn identifies_by_fingerprint_then_subject_then_cn() {
        let hie = cn("HIE-MEMBER-1".into());
        let clinic = cn("CLINIC-A".into());
        let no_cn = cert(
            vec![(DnType::OrganizationName, "Clinic C".into())],
            Vec::new(),
        );
        let facilities =
            |list: &[&str]| list.iter().map(|f| f.to_string()).collect::<BTreeSet<_>>();
        let identities = CertIdentities::from([
            (
                CertKey::SubjectCn("HIE-MEMBER-1".into()),
                facilities(&["CLINIC-A", "CLINIC-B"]),
            ),
            (
                CertKey::Fingerprint(fingerprint(&no_cn)),
                facilities(&["CLINIC-C"]),
            ),
        ]);
        let peer = identify(&identities, &hie).unwrap();
        assert_eq!(peer.facilities, facilities(&["CLINIC-A", "CLINIC-B"]));
        assert_eq!(peer.name, "client certificate 'HIE-MEMBER-1'");
        let peer = identify(&identities, &clinic).unwrap();
        assert_eq!(
            peer,
            Peer::single("client certificate 'CLINIC-A'", "CLINIC-A")
        );
        let peer = identify(&identities, &no_cn).unwrap();
        assert_eq!(peer.facilities, facilities(&["CLINIC-C"]));
        assert!(
            peer.name.starts_with("client certificate sha256:"),
            "{}",
            peer.name
        );
        // The fingerprint wins over the subject CN.
        let pinned_hie = CertIdentities::from([
            (
                CertKey::SubjectCn("HIE-MEMBER-1".into()),
                facilities(&["CLINIC-A"]),
            ),
            (
                CertKey::Fingerprint(fingerprint(&hie)),
                facilities(&["CLINIC-Z"]),
            ),
        ]);
        assert_eq!(
            identify(&pinned_hie, &hie).unwrap().facilities,
            facilities(&["CLINIC-Z"])
        );
        // Without a mapping, a certificate with no subject CN names no one.
        assert_eq!(
            identify(&CertIdentities::new(), &no_cn),
            Err(IdentityError::NoCommonName)
        );
    }
}

//! AWS Signature Version 4 verification, written independently of `aws-sigv4` so that a bug in
//! the signer the clients use cannot hide itself behind the same bug here.
//!
//! Pure and synchronous: the clock comes in as an argument. The server module feeds it the
//! request parts; the fuzz target feeds it arbitrary bytes.
//!
//! docs/protocol.md §1.4: "The emulator must accept all three forms [sha256 of the empty string,
//! `UNSIGNED-PAYLOAD`, `STREAMING-AWS4-HMAC-SHA256-PAYLOAD`] and still verify the signature over
//! the headers." docs/protocol.md §1.6: "Clock skew over 5 minutes: `403 {"message":"Signature expired:
//! ..."}`".

use std::fmt;

use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::{Digest, Sha256};

/// The only signing algorithm AWS SigV4 defines.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// Payload hash of the empty string: what the official C producer signs for PutMedia.
pub const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// Payload hash placeholder the Node sample sends for PutMedia.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// Payload hash placeholder the Java v1 client declares for PutMedia (it never signs chunks).
pub const STREAMING_PAYLOAD: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
/// Longest Authorization header or query string we agree to parse, so hostile input stays cheap.
pub const MAX_AUTH_LEN: usize = 16 * 1024;

/// Why a request's signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SigV4Error {
    /// Neither an `Authorization` header nor presigned query parameters.
    #[error("request is not signed: missing Authorization header or X-Amz-Credential")]
    Missing,
    /// The Authorization header or presigned query could not be parsed.
    #[error("malformed SigV4 authorization: {reason}")]
    Malformed {
        /// What was wrong.
        reason: String,
    },
    /// Not `AWS4-HMAC-SHA256`.
    #[error("unsupported signature algorithm {algorithm:?}")]
    UnsupportedAlgorithm {
        /// The algorithm the request named.
        algorithm: String,
    },
    /// `x-amz-date` (or `X-Amz-Date`) is missing or not `YYYYMMDD'T'HHMMSS'Z'`.
    #[error("missing or malformed x-amz-date {value:?}")]
    BadDate {
        /// The value seen, if any.
        value: Option<String>,
    },
    /// The credential scope date does not match the request date.
    #[error("credential scope date {scope_date} does not match x-amz-date {amz_date}")]
    ScopeDateMismatch {
        /// Date in the credential scope.
        scope_date: String,
        /// The request's `x-amz-date`.
        amz_date: String,
    },
    /// The request time is further from the server clock than allowed.
    #[error(
        "Signature expired: {amz_date} is now earlier than {earliest} ({skew_secs} s of skew, at most {max_skew_secs} s allowed)"
    )]
    Expired {
        /// The request's `x-amz-date`.
        amz_date: String,
        /// The earliest acceptable date, in the same format.
        earliest: String,
        /// Observed skew in seconds (absolute).
        skew_secs: u64,
        /// The configured maximum.
        max_skew_secs: u64,
    },
    /// A presigned URL past its `X-Amz-Expires`.
    #[error("presigned request expired at {expired_at_epoch}")]
    PresignExpired {
        /// Epoch seconds at which it expired.
        expired_at_epoch: i64,
    },
    /// A header listed in SignedHeaders is absent from the request.
    #[error("signed header {name:?} is missing from the request")]
    MissingSignedHeader {
        /// The header name.
        name: String,
    },
    /// `host` is not among the signed headers (SigV4 requires it).
    #[error("host must be a signed header")]
    HostNotSigned,
    /// The computed signature differs from the one sent.
    #[error(
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method."
    )]
    SignatureMismatch,
}

/// The parsed `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`.
#[derive(Clone, PartialEq, Eq)]
pub struct Authorization {
    /// Access key id (first element of the credential).
    pub access_key_id: String,
    /// Scope date `YYYYMMDD`.
    pub date: String,
    /// Scope region.
    pub region: String,
    /// Scope service (`kinesisvideo`, `s3`, `sts`): what the emulator routes on.
    pub service: String,
    /// Lower-case signed header names, in the order sent.
    pub signed_headers: Vec<String>,
    /// Hex signature.
    pub signature: String,
}

impl fmt::Debug for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The signature is a credential-derived secret for the request's lifetime: keep it out of logs.
        f.debug_struct("Authorization")
            .field("access_key_id", &self.access_key_id)
            .field("date", &self.date)
            .field("region", &self.region)
            .field("service", &self.service)
            .field("signed_headers", &self.signed_headers)
            .field("signature", &"** redacted **")
            .finish()
    }
}

impl Authorization {
    /// The credential scope `date/region/service/aws4_request`.
    pub fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
}

fn malformed(reason: impl Into<String>) -> SigV4Error {
    SigV4Error::Malformed {
        reason: reason.into(),
    }
}

/// Parses `Credential=AKID/20240101/us-east-1/kinesisvideo/aws4_request`'s value.
fn parse_credential(value: &str) -> Result<(String, String, String, String), SigV4Error> {
    let mut parts = value.split('/');
    let (Some(akid), Some(date), Some(region), Some(service), Some(term), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(malformed(
            "Credential must be AKID/DATE/REGION/SERVICE/aws4_request",
        ));
    };
    if term != "aws4_request" {
        return Err(malformed("credential scope must end with aws4_request"));
    }
    if akid.is_empty() || region.is_empty() || service.is_empty() {
        return Err(malformed("empty credential scope element"));
    }
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("credential scope date must be YYYYMMDD"));
    }
    Ok((
        akid.to_owned(),
        date.to_owned(),
        region.to_owned(),
        service.to_owned(),
    ))
}

fn parse_signed_headers(value: &str) -> Result<Vec<String>, SigV4Error> {
    if value.is_empty() {
        return Err(malformed("SignedHeaders is empty"));
    }
    let names: Vec<String> = value.split(';').map(str::to_ascii_lowercase).collect();
    if names.iter().any(String::is_empty) {
        return Err(malformed("empty name in SignedHeaders"));
    }
    Ok(names)
}

fn check_signature_hex(sig: &str) -> Result<(), SigV4Error> {
    if sig.len() != 64 || !sig.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed("Signature must be 64 hex digits"));
    }
    Ok(())
}

/// Parses an `Authorization` header value.
pub fn parse_authorization(value: &str) -> Result<Authorization, SigV4Error> {
    if value.len() > MAX_AUTH_LEN {
        return Err(malformed("Authorization header too long"));
    }
    let value = value.trim();
    let (algorithm, rest) = value
        .split_once(' ')
        .ok_or_else(|| malformed("expected 'AWS4-HMAC-SHA256 Credential=...'"))?;
    if algorithm != ALGORITHM {
        return Err(SigV4Error::UnsupportedAlgorithm {
            algorithm: algorithm.chars().take(64).collect(),
        });
    }
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        let Some((k, v)) = part.split_once('=') else {
            return Err(malformed("expected key=value pairs"));
        };
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => signature = Some(v),
            _ => return Err(malformed(format!("unknown component {:?}", trunc(k)))),
        }
    }
    let (akid, date, region, service) =
        parse_credential(credential.ok_or_else(|| malformed("missing Credential"))?)?;
    let signed_headers =
        parse_signed_headers(signed.ok_or_else(|| malformed("missing SignedHeaders"))?)?;
    let signature = signature.ok_or_else(|| malformed("missing Signature"))?;
    check_signature_hex(signature)?;
    Ok(Authorization {
        access_key_id: akid,
        date,
        region,
        service,
        signed_headers,
        signature: signature.to_ascii_lowercase(),
    })
}

fn trunc(s: &str) -> String {
    s.chars().take(64).collect()
}

/// A presigned request's SigV4 query parameters.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Presigned {
    /// The credential, signed headers and signature, as in a header.
    pub authorization: Authorization,
    /// `X-Amz-Date`.
    pub amz_date: String,
    /// `X-Amz-Expires` in seconds.
    pub expires_secs: u64,
    /// `X-Amz-Security-Token`, when the credentials are temporary.
    pub security_token: Option<String>,
}

/// Decoded query pairs (`+` is a literal plus in SigV4, not a space).
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                percent_decode_str(k).decode_utf8_lossy().into_owned(),
                percent_decode_str(v).decode_utf8_lossy().into_owned(),
            )
        })
        .collect()
}

/// Parses presigned-URL parameters; `Ok(None)` when the query has no `X-Amz-Credential`.
pub fn parse_presigned(query: &str) -> Result<Option<Presigned>, SigV4Error> {
    if query.len() > MAX_AUTH_LEN * 4 {
        return Err(malformed("query string too long"));
    }
    let pairs = query_pairs(query);
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let Some(credential) = get("X-Amz-Credential") else {
        return Ok(None);
    };
    let algorithm = get("X-Amz-Algorithm").unwrap_or_default();
    if algorithm != ALGORITHM {
        return Err(SigV4Error::UnsupportedAlgorithm {
            algorithm: trunc(algorithm),
        });
    }
    let (akid, date, region, service) = parse_credential(credential)?;
    let signed_headers = parse_signed_headers(
        get("X-Amz-SignedHeaders").ok_or_else(|| malformed("missing X-Amz-SignedHeaders"))?,
    )?;
    let signature = get("X-Amz-Signature").ok_or_else(|| malformed("missing X-Amz-Signature"))?;
    check_signature_hex(signature)?;
    let amz_date = get("X-Amz-Date").ok_or(SigV4Error::BadDate { value: None })?;
    let expires_secs = get("X-Amz-Expires")
        .ok_or_else(|| malformed("missing X-Amz-Expires"))?
        .parse::<u64>()
        .map_err(|_| malformed("X-Amz-Expires must be an integer"))?;
    if expires_secs > 604_800 {
        return Err(malformed("X-Amz-Expires must be at most 604800 seconds"));
    }
    Ok(Some(Presigned {
        authorization: Authorization {
            access_key_id: akid,
            date,
            region,
            service,
            signed_headers,
            signature: signature.to_ascii_lowercase(),
        },
        amz_date: amz_date.to_owned(),
        expires_secs,
        security_token: get("X-Amz-Security-Token").map(str::to_owned),
    }))
}

/// The service named by a request's credential scope, from its `Authorization` header or its
/// presigned `X-Amz-Credential`. This is how the emulator routes one port to several services.
///
/// Signature Version 2 exists only for S3 (still accepted there, and what boto3's
/// `generate_presigned_url` produces by default), so a SigV2-signed request is routed to `s3`.
pub fn scope_service(authorization: Option<&str>, query: Option<&str>) -> Option<String> {
    if sigv2_access_key(authorization, query).is_some() {
        return Some("s3".to_owned());
    }
    if let Some(a) = authorization {
        let a = a.get(..a.len().min(MAX_AUTH_LEN))?;
        let cred = a.split("Credential=").nth(1)?;
        let cred = cred.split([',', ' ']).next()?;
        return cred.split('/').nth(3).map(str::to_owned);
    }
    let q = query?;
    query_pairs(q)
        .into_iter()
        .find(|(k, _)| k == "X-Amz-Credential")
        .and_then(|(_, v)| v.split('/').nth(3).map(str::to_owned))
}

/// How an S3 request is signed with Signature Version 2
/// (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/RESTAuthentication.html>).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigV2 {
    /// `Authorization: AWS AKID:signature`; the `Date` (or `x-amz-date`) header is signed.
    Header {
        /// The access key id.
        access_key_id: String,
    },
    /// A presigned URL: `AWSAccessKeyId`, `Expires` (epoch seconds) and `Signature`.
    Query {
        /// The access key id.
        access_key_id: String,
        /// `Expires`, epoch seconds (`None` when it is not an integer).
        expires: Option<i64>,
        /// `x-amz-security-token`, for temporary credentials.
        security_token: Option<String>,
    },
}

impl SigV2 {
    /// The access key id that signed.
    pub fn access_key_id(&self) -> &str {
        match self {
            Self::Header { access_key_id } | Self::Query { access_key_id, .. } => access_key_id,
        }
    }
}

/// The Signature Version 2 form of a request, if it is signed that way. The signature itself
/// is verified by the S3 implementation, which has the canonical resource rules.
pub fn sigv2(authorization: Option<&str>, query: Option<&str>) -> Option<SigV2> {
    if let Some(a) = authorization {
        let rest = a.strip_prefix("AWS ")?;
        let (akid, signature) = rest.split_once(':')?;
        if akid.is_empty() || signature.is_empty() || akid.len() > 128 {
            return None;
        }
        return Some(SigV2::Header {
            access_key_id: akid.trim().to_owned(),
        });
    }
    let q = query?;
    if q.len() > MAX_AUTH_LEN * 4 {
        return None;
    }
    let pairs = query_pairs(q);
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let akid = get("AWSAccessKeyId")?;
    get("Signature")?;
    Some(SigV2::Query {
        access_key_id: akid.to_owned(),
        expires: get("Expires").and_then(|e| e.parse().ok()),
        security_token: get("x-amz-security-token").map(str::to_owned),
    })
}

fn sigv2_access_key(authorization: Option<&str>, query: Option<&str>) -> Option<String> {
    sigv2(authorization, query).map(|s| s.access_key_id().to_owned())
}

/// Unreserved characters per SigV4: everything else is percent-encoded (upper-case hex).
const SIGV4_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes everything but SigV4's unreserved characters.
pub fn uri_encode(s: &str) -> String {
    utf8_percent_encode(s, SIGV4_ENCODE).to_string()
}

/// Canonical URI for every service except S3: the path as sent, each segment encoded again
/// (SigV4 double-encodes non-S3 paths).
pub fn canonical_uri(path: &str) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    path.split('/')
        .map(uri_encode)
        .collect::<Vec<_>>()
        .join("/")
}

/// Canonical query string: decoded, re-encoded, sorted; `X-Amz-Signature` excluded.
pub fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query_pairs(query)
        .into_iter()
        .filter(|(k, _)| k != "X-Amz-Signature")
        .map(|(k, v)| (uri_encode(&k), uri_encode(&v)))
        .collect();
    pairs.sort();
    pairs
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn canonical_header_value(v: &str) -> String {
    // Trim, and collapse runs of spaces to one (SigV4 rule).
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The request parts the canonical request is built from.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Raw path as sent (still percent-encoded).
    pub path: &'a str,
    /// Raw query string (without `?`).
    pub query: &'a str,
    /// Every header (name, value), names in any case.
    pub headers: &'a [(String, String)],
    /// How the path enters the canonical request.
    pub uri_encoding: UriEncoding,
}

/// SigV4 canonical URI rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriEncoding {
    /// Every service but S3: encode the (already encoded) path again.
    Double,
    /// S3: the path as sent.
    AsSent,
}

/// Builds the canonical request. Fails when a signed header is missing.
pub fn canonical_request(
    parts: &RequestParts<'_>,
    signed_headers: &[String],
    payload_hash: &str,
) -> Result<String, SigV4Error> {
    let mut out = String::with_capacity(256);
    out.push_str(parts.method);
    out.push('\n');
    match parts.uri_encoding {
        UriEncoding::Double => out.push_str(&canonical_uri(parts.path)),
        UriEncoding::AsSent if parts.path.is_empty() => out.push('/'),
        UriEncoding::AsSent => out.push_str(parts.path),
    }
    out.push('\n');
    out.push_str(&canonical_query(parts.query));
    out.push('\n');
    for name in signed_headers {
        let values: Vec<String> = parts
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| canonical_header_value(v))
            .collect();
        if values.is_empty() {
            return Err(SigV4Error::MissingSignedHeader { name: trunc(name) });
        }
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&signed_headers.join(";"));
    out.push('\n');
    out.push_str(payload_hash);
    Ok(out)
}

/// Hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The hex signature of `canonical` under `secret` for the given date and scope.
pub fn sign(secret: &str, amz_date: &str, auth: &Authorization, canonical: &str) -> String {
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{}\n{}",
        auth.scope(),
        sha256_hex(canonical.as_bytes())
    );
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), auth.date.as_bytes());
    let k_region = hmac(&k_date, auth.region.as_bytes());
    let k_service = hmac(&k_region, auth.service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    hex::encode(hmac(&k_signing, string_to_sign.as_bytes()))
}

/// Parses `YYYYMMDD'T'HHMMSS'Z'` into epoch seconds.
pub fn parse_amz_date(value: &str) -> Result<i64, SigV4Error> {
    let bad = || SigV4Error::BadDate {
        value: Some(trunc(value)),
    };
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    time::PrimitiveDateTime::parse(value, &fmt)
        .map(|dt| dt.assume_utc().unix_timestamp())
        .map_err(|_| bad())
}

/// Formats epoch seconds as `YYYYMMDD'T'HHMMSS'Z'`.
pub fn format_amz_date(epoch_secs: i64) -> String {
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    time::OffsetDateTime::from_unix_timestamp(epoch_secs)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_default()
}

/// Constant-time comparison, so timing does not leak how much of a guessed signature matched.
fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Checks a header-signed request: the date against the clock, then the signature over the
/// canonical request for each candidate payload hash (a streaming request may have been
/// signed with any of the three forms of docs/protocol.md §1.4, and does not always say which).
pub fn verify_header_signed(
    parts: &RequestParts<'_>,
    auth: &Authorization,
    secret: &str,
    payload_hashes: &[&str],
    now_epoch_secs: i64,
    max_skew_secs: u64,
) -> Result<(), SigV4Error> {
    let amz_date =
        header(parts.headers, "x-amz-date").ok_or(SigV4Error::BadDate { value: None })?;
    let t = parse_amz_date(amz_date)?;
    if !amz_date.starts_with(&auth.date) {
        return Err(SigV4Error::ScopeDateMismatch {
            scope_date: auth.date.clone(),
            amz_date: trunc(amz_date),
        });
    }
    let skew = t.abs_diff(now_epoch_secs);
    if skew > max_skew_secs {
        return Err(SigV4Error::Expired {
            amz_date: amz_date.to_owned(),
            earliest: format_amz_date(now_epoch_secs.saturating_sub(max_skew_secs as i64)),
            skew_secs: skew,
            max_skew_secs,
        });
    }
    if !auth.signed_headers.iter().any(|h| h == "host") {
        return Err(SigV4Error::HostNotSigned);
    }
    for hash in payload_hashes {
        let canonical = canonical_request(parts, &auth.signed_headers, hash)?;
        if ct_eq(&sign(secret, amz_date, auth, &canonical), &auth.signature) {
            return Ok(());
        }
    }
    Err(SigV4Error::SignatureMismatch)
}

/// First value of a header, case-insensitively.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdrs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    /// AWS's published "get-vanilla" test vector (sigv4 test suite, service `service`).
    #[test]
    fn aws_get_vanilla_vector() {
        let headers = hdrs(&[
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", "20150830T123600Z"),
        ]);
        let auth = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        )
        .unwrap();
        let parts = RequestParts {
            method: "GET",
            path: "/",
            query: "",
            headers: &headers,
            uri_encoding: UriEncoding::Double,
        };
        let canonical =
            canonical_request(&parts, &auth.signed_headers, EMPTY_PAYLOAD_SHA256).unwrap();
        assert_eq!(
            canonical,
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let now = parse_amz_date("20150830T123600Z").unwrap();
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        verify_header_signed(&parts, &auth, secret, &[EMPTY_PAYLOAD_SHA256], now, 300).unwrap();
        assert_eq!(
            verify_header_signed(&parts, &auth, "wrong", &[EMPTY_PAYLOAD_SHA256], now, 300),
            Err(SigV4Error::SignatureMismatch)
        );
        // Six minutes later the same request is refused as expired (docs/protocol.md §1.6).
        let err = verify_header_signed(
            &parts,
            &auth,
            secret,
            &[EMPTY_PAYLOAD_SHA256],
            now + 360,
            300,
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("Signature expired"), "{err}");
    }

    /// AWS vector "get-vanilla-query-order-key-case": query sorted by key.
    #[test]
    fn aws_query_order_vector() {
        assert_eq!(
            canonical_query("Param2=value2&Param1=value1"),
            "Param1=value1&Param2=value2"
        );
        assert_eq!(canonical_query("a=b c&x=%2F"), "a=b%20c&x=%2F");
    }

    #[test]
    fn non_s3_paths_are_double_encoded() {
        assert_eq!(canonical_uri("/putMedia"), "/putMedia");
        assert_eq!(canonical_uri("/a%20b"), "/a%2520b");
    }

    #[test]
    fn authorization_parsing_rejects_garbage() {
        for bad in [
            "",
            "AWS4-HMAC-SHA256",
            "AWS4-HMAC-SHA256 Credential=a/b/c",
            "AWS4-HMAC-SHA256 Credential=AK/20200101/r/s/aws4_request, SignedHeaders=host, Signature=zz",
            "AWS4-HMAC-SHA1 Credential=x",
        ] {
            assert!(parse_authorization(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn scope_service_from_header_and_query() {
        assert_eq!(
            scope_service(
                Some("AWS4-HMAC-SHA256 Credential=AK/20200101/us-east-1/kinesisvideo/aws4_request, SignedHeaders=host, Signature=00"),
                None
            )
            .as_deref(),
            Some("kinesisvideo")
        );
        assert_eq!(
            scope_service(
                None,
                Some("X-Amz-Credential=AK%2F20200101%2Fus-east-1%2Fs3%2Faws4_request")
            )
            .as_deref(),
            Some("s3")
        );
        assert_eq!(scope_service(None, Some("a=b")), None);
    }

    #[test]
    fn debug_redacts_signature() {
        let auth = parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AK/20200101/r/s/aws4_request, SignedHeaders=host, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        )
        .unwrap();
        assert!(!format!("{auth:?}").contains("5fa00fa3"));
    }
}

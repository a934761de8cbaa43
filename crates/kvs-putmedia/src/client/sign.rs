//! SigV4 signing of the PutMedia request: a pure function of the request parts, the credentials
//! and the time.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use http::HeaderValue;

use super::error::{Error, Result};

/// The SigV4 service name of Kinesis Video Streams (docs/protocol.md §1.2).
pub const SIGNING_SERVICE: &str = "kinesisvideo";

/// What the signature says about the streamed body (docs/protocol.md §1.4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PayloadHash {
    /// Sign the SHA-256 of the empty string, as the official C producer does: the service does not
    /// check the hash of a streamed body. No `x-amz-content-sha256` header is sent.
    #[default]
    EmptyStringSha256,
    /// Send and sign `x-amz-content-sha256: UNSIGNED-PAYLOAD`, as the Node sample does.
    Unsigned,
}

/// Signs `req` in place: adds `x-amz-date`, `authorization` (marked sensitive so `Debug` redacts
/// it), `x-amz-security-token` when the credentials carry one, and `x-amz-content-sha256` in
/// [`PayloadHash::Unsigned`] mode.
///
/// docs/protocol.md §1.5: only `host` and the `x-amzn-*` headers are signed, never hop-by-hop headers
/// (`transfer-encoding`, `connection`), which proxies and HTTP stacks rewrite. `host` is taken
/// from the request's `host` header, which must be set.
pub(crate) fn sign_request<B>(
    req: &mut http::Request<B>,
    credentials: &Credentials,
    region: &str,
    time: SystemTime,
    payload: PayloadHash,
) -> Result<()> {
    let signed: Vec<(&str, &str)> = req
        .headers()
        .iter()
        .filter(|(name, _)| *name == http::header::HOST || name.as_str().starts_with("x-amzn-"))
        .map(|(name, value)| {
            value
                .to_str()
                .map(|v| (name.as_str(), v))
                .map_err(|_| Error::config(format!("header {name} is not visible ASCII")))
        })
        .collect::<Result<_>>()?;
    let (body, checksum) = match payload {
        PayloadHash::EmptyStringSha256 => (SignableBody::Bytes(&[]), PayloadChecksumKind::NoHeader),
        PayloadHash::Unsigned => (
            SignableBody::UnsignedPayload,
            PayloadChecksumKind::XAmzSha256,
        ),
    };
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = checksum;
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SIGNING_SERVICE)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| Error::config(format!("signing parameters: {e}")))?
        .into();
    let uri = req.uri().to_string();
    let signable = SignableRequest::new(req.method().as_str(), uri, signed.into_iter(), body)
        .map_err(|e| Error::config(format!("cannot sign the request: {e}")))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| Error::config(format!("cannot sign the request: {e}")))?
        .into_parts();
    instructions.apply_to_request_http1x(req);
    // Secrets must not reach `Debug` output or logs.
    for name in ["authorization", "x-amz-security-token"] {
        if let Some(v) = req.headers_mut().get_mut(name) {
            v.set_sensitive(true);
        }
    }
    Ok(())
}

/// `x-amzn-producer-start-timestamp`: epoch seconds with a zero-padded millisecond fraction,
/// `1700000000.005` (docs/protocol.md §1.3).
pub(crate) fn producer_timestamp(t: SystemTime) -> HeaderValue {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let s = format!("{}.{:03}", ms / 1000, ms % 1000);
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("0.000"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn request() -> http::Request<()> {
        http::Request::post("https://s-1a2b3c4d.kinesisvideo.us-east-1.amazonaws.com/putMedia")
            .header("host", "s-1a2b3c4d.kinesisvideo.us-east-1.amazonaws.com")
            .header("x-amzn-stream-name", "my-stream")
            .header("x-amzn-fragment-timecode-type", "RELATIVE")
            .header("x-amzn-producer-start-timestamp", "1700000000.005")
            .header("x-amzn-fragment-acknowledgment-required", "1")
            .header("transfer-encoding", "chunked")
            .header("connection", "keep-alive")
            .body(())
            .unwrap()
    }

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn signed_headers(req: &http::Request<()>) -> String {
        let auth = req.headers()["authorization"].to_str().unwrap();
        let start = auth.find("SignedHeaders=").unwrap() + "SignedHeaders=".len();
        auth[start..].split(',').next().unwrap().to_owned()
    }

    #[test]
    fn signs_host_date_and_amzn_headers_only() {
        let mut req = request();
        let creds = Credentials::new("AKID", "SECRET", None, None, "test");
        sign_request(&mut req, &creds, "us-east-1", t0(), PayloadHash::default()).unwrap();
        assert_eq!(
            signed_headers(&req),
            "host;x-amz-date;x-amzn-fragment-acknowledgment-required;\
             x-amzn-fragment-timecode-type;x-amzn-producer-start-timestamp;x-amzn-stream-name"
        );
        assert_eq!(req.headers()["x-amz-date"], "20231114T221320Z");
        assert!(req.headers().get("x-amz-content-sha256").is_none());
        assert!(req.headers().get("x-amz-security-token").is_none());
        let auth = req.headers()["authorization"].to_str().unwrap();
        assert!(auth.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKID/20231114/us-east-1/kinesisvideo/aws4_request"
        ));
        assert!(req.headers()["authorization"].is_sensitive());
    }

    #[test]
    fn session_token_is_signed_and_sensitive() {
        let mut req = request();
        let creds = Credentials::new("AKID", "SECRET", Some("TOKEN".into()), None, "test");
        sign_request(&mut req, &creds, "us-east-1", t0(), PayloadHash::Unsigned).unwrap();
        assert!(signed_headers(&req).contains("x-amz-security-token"));
        assert!(signed_headers(&req).contains("x-amz-content-sha256"));
        assert_eq!(req.headers()["x-amz-content-sha256"], "UNSIGNED-PAYLOAD");
        assert!(req.headers()["x-amz-security-token"].is_sensitive());
        assert!(!format!("{req:?}").contains("TOKEN"));
    }

    #[test]
    fn signature_is_a_pure_function_of_inputs() {
        let creds = Credentials::new("AKID", "SECRET", None, None, "test");
        let sig = |t| {
            let mut r = request();
            sign_request(&mut r, &creds, "us-east-1", t, PayloadHash::default()).unwrap();
            r.headers()["authorization"].clone()
        };
        assert_eq!(sig(t0()), sig(t0()));
        assert_ne!(sig(t0()), sig(t0() + Duration::from_secs(1)));
    }

    #[test]
    fn producer_timestamp_is_zero_padded() {
        assert_eq!(
            producer_timestamp(t0() + Duration::from_millis(5)),
            "1700000000.005"
        );
        assert_eq!(producer_timestamp(t0()), "1700000000.000");
    }
}

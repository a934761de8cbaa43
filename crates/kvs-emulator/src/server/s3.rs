//! S3 through `s3s` + `s3s-fs`, authenticated by s3s's own SigV4 against the emulator's
//! credential store; session tokens of STS-issued keys are checked here first, since s3s does
//! not look at them.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use s3s::auth::{S3Auth, SecretKey};
use s3s::service::{S3Service, S3ServiceBuilder};

use super::state::Shared;
use super::{EmulatorCredentials, RespBody, Router, full, request_id};
use crate::api::ApiError;
use crate::sigv4::{self, RequestParts, UriEncoding};

struct EmulatorAuth(Arc<Shared>);

#[async_trait::async_trait]
impl S3Auth for EmulatorAuth {
    async fn get_secret_key(&self, access_key: &str) -> s3s::S3Result<SecretKey> {
        let creds = self.0.creds.lock().expect("creds lock");
        match creds.get(access_key) {
            Some(c) => Ok(SecretKey::from(c.secret.clone())),
            None => Err(s3s::s3_error!(InvalidAccessKeyId)),
        }
    }
}

pub(crate) fn build(root: &Path, shared: Arc<Shared>) -> std::io::Result<Arc<S3Service>> {
    let fs = s3s_fs::FileSystem::new(root).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    let mut b = S3ServiceBuilder::new(fs);
    b.set_auth(EmulatorAuth(shared));
    Ok(Arc::new(b.build()))
}

/// An S3-style XML error.
pub(crate) fn xml_error(status: u16, code: &str, message: &str) -> Response<RespBody> {
    let rid = request_id();
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message><RequestId>{rid}</RequestId></Error>",
        xml_escape(code),
        xml_escape(message)
    );
    let mut resp = Response::new(full(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/xml"));
    if let Ok(v) = HeaderValue::from_str(&rid) {
        resp.headers_mut().insert("x-amz-request-id", v);
    }
    resp
}

pub(crate) fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

fn s3_auth_error(e: &ApiError, key_known: bool) -> Response<RespBody> {
    let code = match e.status {
        401 => "ExpiredToken",
        _ if key_known => "InvalidToken",
        _ => "InvalidAccessKeyId",
    };
    let status = if e.status == 401 { 400 } else { 403 };
    xml_error(status, code, &e.message)
}

pub(crate) async fn handle(router: &Router, req: Request<Incoming>) -> Response<RespBody> {
    let headers = req.headers();
    let query = req.uri().query().unwrap_or("");
    let auth_value = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let (akid, token) = if let Some(v2) = sigv4::sigv2(auth_value, req.uri().query()) {
        if let Some(resp) = check_sigv2_time(&router.shared, headers, &v2) {
            return resp;
        }
        let token = match &v2 {
            sigv4::SigV2::Query { security_token, .. } => security_token.clone(),
            sigv4::SigV2::Header { .. } => None,
        }
        .or_else(|| {
            headers
                .get("x-amz-security-token")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
        (v2.access_key_id().to_owned(), token)
    } else if let Some(a) = headers.get(http::header::AUTHORIZATION) {
        let parsed = a.to_str().ok().map(sigv4::parse_authorization);
        match parsed {
            Some(Ok(a)) => (
                a.access_key_id,
                headers
                    .get("x-amz-security-token")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            ),
            _ => {
                return xml_error(
                    400,
                    "AuthorizationHeaderMalformed",
                    "malformed Authorization header",
                );
            }
        }
    } else {
        match sigv4::parse_presigned(query) {
            Ok(Some(p)) => (p.authorization.access_key_id, p.security_token),
            Ok(None) => return xml_error(403, "AccessDenied", "anonymous access is not allowed"),
            Err(e) => return xml_error(400, "AuthorizationQueryParametersError", &e.to_string()),
        }
    };
    if let Err(e) = router.shared.credential_for(&akid, token.as_deref()) {
        let key_known = router
            .shared
            .creds
            .lock()
            .expect("creds lock")
            .contains_key(&akid);
        return s3_auth_error(&e, key_known);
    }
    if super::notify::is_configuration_request(&req) {
        return super::notify::handle_configuration(router, req).await;
    }
    let created = super::notify::created_kind(req.method(), req.uri(), req.headers());
    let resp = call(&router.s3, req.map(s3s::Body::from)).await;
    if let Some((bucket, key, event)) = created
        && resp.status().is_success()
    {
        let shared = &router.shared;
        super::notify::object_created(shared, &router.s3, &akid, &bucket, &key, event, "127.0.0.1")
            .await;
    }
    resp
}

/// Real S3's time rules for Signature Version 2, checked on the emulator's clock (so the
/// `ClockSkew` fault applies); returns the refusal, if any. A presigned URL past its `Expires` is 403 `AccessDenied`
/// "Request has expired"; a header-signed request needs a `Date` or `x-amz-date` within the
/// allowed skew, else 403 `RequestTimeTooSkewed` (the signature itself is checked by s3s).
fn check_sigv2_time(
    shared: &Shared,
    headers: &http::HeaderMap,
    v2: &sigv4::SigV2,
) -> Option<Response<RespBody>> {
    let now_s = (shared.now_ms() / 1000) as i64;
    match v2 {
        sigv4::SigV2::Query { expires, .. } => match expires {
            None => Some(xml_error(
                400,
                "AuthorizationQueryParametersError",
                "Expires must be an integer number of seconds since the epoch",
            )),
            Some(e) if now_s > *e => Some(xml_error(403, "AccessDenied", "Request has expired")),
            Some(_) => None,
        },
        sigv4::SigV2::Header { .. } => {
            let date = headers
                .get("x-amz-date")
                .or_else(|| headers.get(http::header::DATE))
                .and_then(|v| v.to_str().ok())
                .and_then(|d| httpdate::parse_http_date(d).ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            let Some(date) = date else {
                return Some(xml_error(
                    403,
                    "AccessDenied",
                    "AWS authentication requires a valid Date or x-amz-date header",
                ));
            };
            let skew = now_s.abs_diff(date.as_secs() as i64);
            (skew > shared.cfg.max_clock_skew.as_secs()).then(|| {
                xml_error(
                    403,
                    "RequestTimeTooSkewed",
                    "The difference between the request time and the current time is too large.",
                )
            })
        }
    }
}

pub(crate) async fn call(s3: &S3Service, req: Request<s3s::Body>) -> Response<RespBody> {
    match s3.call(req).await {
        Ok(resp) => resp.map(|b| b.boxed()),
        Err(e) => {
            tracing::warn!(error = ?e, "s3s failed");
            xml_error(500, "InternalError", "internal error")
        }
    }
}

/// A request signed with the emulator's own signer, for the library's `create_bucket` and
/// `put_object` (so they go through exactly the path a client request takes).
#[allow(clippy::too_many_arguments)]
pub(crate) fn signed_request(
    addr: &SocketAddr,
    region: &str,
    creds: &EmulatorCredentials,
    method: http::Method,
    bucket: &str,
    key: &str,
    body: Bytes,
    now_epoch_secs: i64,
) -> Request<s3s::Body> {
    let mut path = format!("/{}", sigv4::uri_encode(bucket));
    if !key.is_empty() {
        path.push('/');
        path.push_str(
            &key.split('/')
                .map(sigv4::uri_encode)
                .collect::<Vec<_>>()
                .join("/"),
        );
    }
    let amz_date = sigv4::format_amz_date(now_epoch_secs);
    let payload_hash = sigv4::sha256_hex(&body);
    let host = addr.to_string();
    let headers = vec![
        ("host".to_owned(), host.clone()),
        ("x-amz-content-sha256".to_owned(), payload_hash.clone()),
        ("x-amz-date".to_owned(), amz_date.clone()),
    ];
    let auth = sigv4::Authorization {
        access_key_id: creds.access_key_id.clone(),
        date: amz_date[..8].to_owned(),
        region: region.to_owned(),
        service: "s3".to_owned(),
        signed_headers: vec![
            "host".into(),
            "x-amz-content-sha256".into(),
            "x-amz-date".into(),
        ],
        signature: String::new(),
    };
    let parts = RequestParts {
        method: method.as_str(),
        path: &path,
        query: "",
        headers: &headers,
        uri_encoding: UriEncoding::AsSent,
    };
    let canonical = sigv4::canonical_request(&parts, &auth.signed_headers, &payload_hash)
        .expect("every signed header is present");
    let signature = sigv4::sign(&creds.secret_access_key, &amz_date, &auth, &canonical);
    let authorization = format!(
        "{} Credential={}/{}, SignedHeaders={}, Signature={signature}",
        sigv4::ALGORITHM,
        auth.access_key_id,
        auth.scope(),
        auth.signed_headers.join(";")
    );
    Request::builder()
        .method(method)
        .uri(format!("http://{host}{path}"))
        .header("host", host)
        .header("x-amz-content-sha256", payload_hash)
        .header("x-amz-date", amz_date)
        .header("content-length", body.len())
        .header("authorization", authorization)
        .body(s3s::Body::from(body))
        .expect("request parts are valid")
}

//! STS `AssumeRole` and `GetCallerIdentity` (awsQuery protocol: form body in, XML out).
//! Issued credentials go into the same store every service authenticates against.

use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::s3::xml_escape;
use super::state::{ACCOUNT_ID, Credential};
use super::{RespBody, Router, full, read_body_limited, request_id};
use crate::api::ApiError;
use crate::sigv4::{self, RequestParts, UriEncoding};

const NS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";
const UPPER_ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn xml_response(status: u16, body: String, rid: &str) -> Response<RespBody> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("text/xml"));
    if let Ok(v) = HeaderValue::from_str(rid) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    resp
}

fn sts_error(e: &ApiError) -> Response<RespBody> {
    let rid = request_id();
    let (kind, code) = match e.error_type {
        "UnrecognizedClientException" => ("Sender", "InvalidClientTokenId"),
        "NotAuthorizedException" => ("Sender", "ExpiredToken"),
        "InvalidSignatureException" | "IncompleteSignatureException" => {
            ("Sender", "SignatureDoesNotMatch")
        }
        "MissingAuthenticationTokenException" => ("Sender", "MissingAuthenticationToken"),
        other if e.status >= 500 => ("Receiver", other),
        other => ("Sender", other),
    };
    let status = if e.status == 401 { 403 } else { e.status };
    let body = format!(
        "<ErrorResponse xmlns=\"{NS}\"><Error><Type>{kind}</Type><Code>{code}</Code><Message>{}</Message></Error><RequestId>{rid}</RequestId></ErrorResponse>",
        xml_escape(&e.message)
    );
    xml_response(status, body, &rid)
}

fn iso8601(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

pub(crate) async fn handle(router: &Router, req: Request<Incoming>) -> Response<RespBody> {
    match handle_inner(router, req).await {
        Ok(r) => r,
        Err(e) => sts_error(&e),
    }
}

async fn handle_inner(
    router: &Router,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, ApiError> {
    let shared = &router.shared;
    let (parts, body) = req.into_parts();
    let body = read_body_limited(&parts.headers, body, 64 * 1024, shared.cfg.idle_timeout).await?;
    let headers = super::header_pairs(&parts.headers);
    let hash = sigv4::sha256_hex(&body);
    let rp = RequestParts {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &headers,
        uri_encoding: UriEncoding::Double,
    };
    let principal = shared.authenticate(&rp, "sts", &[hash.as_str()])?;
    let mut form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    form.extend(url::form_urlencoded::parse(rp.query.as_bytes()).into_owned());
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let rid = request_id();
    match get("Action") {
        Some("GetCallerIdentity") => Ok(xml_response(
            200,
            format!(
                "<GetCallerIdentityResponse xmlns=\"{NS}\"><GetCallerIdentityResult><Arn>{}</Arn><UserId>{}</UserId><Account>{ACCOUNT_ID}</Account></GetCallerIdentityResult><ResponseMetadata><RequestId>{rid}</RequestId></ResponseMetadata></GetCallerIdentityResponse>",
                xml_escape(&principal.arn),
                xml_escape(&principal.user_id)
            ),
            &rid,
        )),
        Some("AssumeRole") => {
            let role_arn = get("RoleArn").ok_or_else(|| validation("RoleArn is required"))?;
            let session =
                get("RoleSessionName").ok_or_else(|| validation("RoleSessionName is required"))?;
            if role_arn.len() < 20 || role_arn.len() > 2048 || !role_arn.starts_with("arn:") {
                return Err(validation("RoleArn must be an ARN of 20-2048 characters"));
            }
            if session.len() < 2
                || session.len() > 64
                || !session
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "=,.@-_".contains(c))
            {
                return Err(validation("RoleSessionName must match [\\w+=,.@-]{2,64}"));
            }
            let duration: u64 = match get("DurationSeconds") {
                None => 3600,
                Some(d) => d
                    .parse()
                    .ok()
                    .filter(|d| (900..=43_200).contains(d))
                    .ok_or_else(|| validation("DurationSeconds must be 900-43200"))?,
            };
            let role_name = role_arn.rsplit('/').next().unwrap_or("role");
            let akid = format!("ASIA{}", shared.faults.random_string(16, UPPER_ALNUM));
            let secret = shared.faults.random_string(40, SECRET_ALPHABET);
            let token = format!("EMU{}", shared.faults.random_string(120, SECRET_ALPHABET));
            let expires_ms = shared.now_ms() + duration * 1000;
            let role_id = format!("AROA{}", shared.faults.random_string(16, UPPER_ALNUM));
            let arn = format!("arn:aws:sts::{ACCOUNT_ID}:assumed-role/{role_name}/{session}");
            let user_id = format!("{role_id}:{session}");
            shared.creds.lock().expect("creds lock").insert(
                akid.clone(),
                Credential {
                    secret: secret.clone(),
                    session_token: Some(token.clone()),
                    expires_ms: Some(expires_ms),
                    arn: arn.clone(),
                    user_id: user_id.clone(),
                },
            );
            tracing::debug!(caller = %principal.access_key_id, %akid, "issued temporary credentials");
            Ok(xml_response(
                200,
                format!(
                    "<AssumeRoleResponse xmlns=\"{NS}\"><AssumeRoleResult><Credentials><AccessKeyId>{akid}</AccessKeyId><SecretAccessKey>{}</SecretAccessKey><SessionToken>{}</SessionToken><Expiration>{}</Expiration></Credentials><AssumedRoleUser><AssumedRoleId>{}</AssumedRoleId><Arn>{}</Arn></AssumedRoleUser><PackedPolicySize>0</PackedPolicySize></AssumeRoleResult><ResponseMetadata><RequestId>{rid}</RequestId></ResponseMetadata></AssumeRoleResponse>",
                    xml_escape(&secret),
                    xml_escape(&token),
                    iso8601(expires_ms),
                    xml_escape(&user_id),
                    xml_escape(&arn),
                ),
                &rid,
            ))
        }
        Some(other) => Err(ApiError::new(
            400,
            "InvalidAction",
            format!(
                "Could not find operation {} for version 2011-06-15",
                other.chars().take(64).collect::<String>()
            ),
        )),
        None => Err(ApiError::new(400, "MissingAction", "Action is required")),
    }
}

fn validation(msg: &str) -> ApiError {
    ApiError::new(400, "ValidationError", msg)
}

//! STS `AssumeRole`, `AssumeRoleWithWebIdentity` and `GetCallerIdentity` (awsQuery protocol:
//! form body in, XML out). Issued credentials go into the same store every service
//! authenticates against.
//!
//! `AssumeRoleWithWebIdentity` is unsigned, as on AWS (the token is the proof): it is what the
//! SDKs' web-identity providers call with `AWS_WEB_IDENTITY_TOKEN_FILE` and `AWS_ROLE_ARN`
//! (EKS/IRSA). The token must be a JWT (`header.payload.signature`, base64url) whose payload has
//! `sub` and, if present, an `exp` in the future; its signature is not checked, since the
//! emulator has no OIDC provider to fetch keys from.

use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::s3::xml_escape;
use super::state::{ACCOUNT_ID, Credential, Shared};
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
        // Signed although it need not be: answered the same way.
        Some("AssumeRoleWithWebIdentity") => assume_role_with_web_identity(shared, &get),
        Some("AssumeRole") => {
            let (role_arn, session, duration) = role_params(&get)?;
            let issued = issue(shared, role_arn, session, duration);
            tracing::debug!(caller = %principal.access_key_id, akid = %issued.akid, "issued temporary credentials");
            Ok(role_response("AssumeRole", &issued, "", &rid))
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

/// RoleArn, RoleSessionName and DurationSeconds, validated as STS does.
fn role_params<'a>(
    get: &impl Fn(&str) -> Option<&'a str>,
) -> Result<(&'a str, &'a str, u64), ApiError> {
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
    Ok((role_arn, session, duration))
}

/// Temporary credentials issued for a role session.
struct Issued {
    akid: String,
    secret: String,
    token: String,
    expires_ms: u64,
    user_id: String,
    arn: String,
}

/// Issues temporary credentials for `role_arn` and puts them in the credential store.
fn issue(shared: &Shared, role_arn: &str, session: &str, duration_secs: u64) -> Issued {
    let role_name = role_arn.rsplit('/').next().unwrap_or("role");
    let akid = format!("ASIA{}", shared.faults.random_string(16, UPPER_ALNUM));
    let secret = shared.faults.random_string(40, SECRET_ALPHABET);
    let token = format!("EMU{}", shared.faults.random_string(120, SECRET_ALPHABET));
    let expires_ms = shared.now_ms() + duration_secs * 1000;
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
    Issued {
        akid,
        secret,
        token,
        expires_ms,
        user_id,
        arn,
    }
}

/// An unsigned request that may be STS: `AssumeRoleWithWebIdentity` needs no signature.
/// Anything else unsigned is refused as `MissingAuthenticationToken`.
pub(crate) async fn handle_unsigned(router: &Router, req: Request<Incoming>) -> Response<RespBody> {
    match unsigned_inner(router, req).await {
        Ok(r) => r,
        Err(e) => sts_error(&e),
    }
}

async fn unsigned_inner(
    router: &Router,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, ApiError> {
    let shared = &router.shared;
    let (parts, body) = req.into_parts();
    let body = read_body_limited(&parts.headers, body, 64 * 1024, shared.cfg.idle_timeout).await?;
    let mut form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    form.extend(
        url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()).into_owned(),
    );
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if get("Action") != Some("AssumeRoleWithWebIdentity") {
        return Err(crate::server::auth::sigv4_error(sigv4::SigV4Error::Missing));
    }
    assume_role_with_web_identity(shared, &get)
}

fn assume_role_with_web_identity<'a>(
    shared: &Shared,
    get: &impl Fn(&str) -> Option<&'a str>,
) -> Result<Response<RespBody>, ApiError> {
    let (role_arn, session, duration) = role_params(get)?;
    let token =
        get("WebIdentityToken").ok_or_else(|| validation("WebIdentityToken is required"))?;
    let identity = crate::api::parse_web_identity_token(token, shared.now_ms())?;
    let issued = issue(shared, role_arn, session, duration);
    tracing::debug!(subject = %identity.subject, akid = %issued.akid, "issued web identity credentials");
    let extra = format!(
        "<SubjectFromWebIdentityToken>{}</SubjectFromWebIdentityToken><Audience>{}</Audience><Provider>{}</Provider>",
        xml_escape(&identity.subject),
        xml_escape(&identity.audience),
        xml_escape(&identity.provider),
    );
    Ok(role_response(
        "AssumeRoleWithWebIdentity",
        &issued,
        &extra,
        &request_id(),
    ))
}

/// The response of `action` (`AssumeRole` or `AssumeRoleWithWebIdentity`): both carry the same
/// Credentials, AssumedRoleUser and PackedPolicySize
/// (<https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRoleWithWebIdentity.html>),
/// plus the action's own `extra` result elements (XML, already escaped).
fn role_response(action: &str, issued: &Issued, extra: &str, rid: &str) -> Response<RespBody> {
    xml_response(
        200,
        format!(
            "<{action}Response xmlns=\"{NS}\"><{action}Result><Credentials><AccessKeyId>{}</AccessKeyId><SecretAccessKey>{}</SecretAccessKey><SessionToken>{}</SessionToken><Expiration>{}</Expiration></Credentials><AssumedRoleUser><AssumedRoleId>{}</AssumedRoleId><Arn>{}</Arn></AssumedRoleUser><PackedPolicySize>0</PackedPolicySize>{extra}</{action}Result><ResponseMetadata><RequestId>{rid}</RequestId></ResponseMetadata></{action}Response>",
            xml_escape(&issued.akid),
            xml_escape(&issued.secret),
            xml_escape(&issued.token),
            iso8601(issued.expires_ms),
            xml_escape(&issued.user_id),
            xml_escape(&issued.arn),
        ),
        rid,
    )
}

fn validation(msg: &str) -> ApiError {
    ApiError::new(400, "ValidationError", msg)
}

//! Request authentication against the emulator's credential store (long-term and STS-issued).

use super::state::{Credential, Shared};
use crate::api::ApiError;
use crate::sigv4::{self, RequestParts, SigV4Error};

/// Who signed a request.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    pub(crate) access_key_id: String,
    pub(crate) arn: String,
    pub(crate) user_id: String,
}

/// Maps a SigV4 failure to the error the services answer with.
pub(crate) fn sigv4_error(e: SigV4Error) -> ApiError {
    match e {
        SigV4Error::Missing => ApiError::new(
            403,
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        ),
        SigV4Error::Malformed { .. }
        | SigV4Error::UnsupportedAlgorithm { .. }
        | SigV4Error::BadDate { .. }
        | SigV4Error::MissingSignedHeader { .. }
        | SigV4Error::HostNotSigned
        | SigV4Error::ScopeDateMismatch { .. } => {
            ApiError::new(403, "IncompleteSignatureException", e.to_string())
        }
        // docs/protocol.md §1.6: 403 with a message starting "Signature expired".
        SigV4Error::Expired { .. }
        | SigV4Error::PresignExpired { .. }
        | SigV4Error::SignatureMismatch => {
            ApiError::new(403, "InvalidSignatureException", e.to_string())
        }
    }
}

impl Shared {
    /// Looks a key up and checks its session token and expiry.
    pub(crate) fn credential_for(
        &self,
        access_key_id: &str,
        security_token: Option<&str>,
    ) -> Result<Credential, ApiError> {
        let cred = self
            .creds
            .lock()
            .expect("creds lock")
            .get(access_key_id)
            .cloned()
            .ok_or_else(|| {
                ApiError::new(
                    403,
                    "UnrecognizedClientException",
                    "The security token included in the request is invalid.",
                )
            })?;
        match (&cred.session_token, security_token) {
            (Some(expected), Some(got)) if expected == got => {}
            (None, None) => {}
            (None, Some(_)) | (Some(_), Some(_)) => {
                return Err(ApiError::new(
                    403,
                    "UnrecognizedClientException",
                    "The security token included in the request is invalid.",
                ));
            }
            (Some(_), None) => {
                return Err(ApiError::new(
                    403,
                    "UnrecognizedClientException",
                    "Temporary credentials need x-amz-security-token.",
                ));
            }
        }
        if let Some(exp) = cred.expires_ms
            && self.now_ms() >= exp
        {
            // docs/protocol.md §2: "401 NotAuthorizedException (also: token expired)".
            return Err(ApiError::new(
                401,
                "NotAuthorizedException",
                "The security token included in the request is expired",
            ));
        }
        Ok(cred)
    }

    /// Verifies a header-signed request for `service`, trying each payload hash in turn.
    pub(crate) fn authenticate(
        &self,
        parts: &RequestParts<'_>,
        service: &str,
        payload_hashes: &[&str],
    ) -> Result<Principal, ApiError> {
        let Some(value) = sigv4::header(parts.headers, "authorization") else {
            return Err(sigv4_error(SigV4Error::Missing));
        };
        let auth = sigv4::parse_authorization(value).map_err(sigv4_error)?;
        if auth.service != service {
            return Err(ApiError::new(
                403,
                "InvalidSignatureException",
                format!("Credential should be scoped to correct service: '{service}'."),
            ));
        }
        if service == "kinesisvideo" && auth.region != self.cfg.region {
            return Err(ApiError::new(
                403,
                "InvalidSignatureException",
                format!(
                    "Credential should be scoped to a valid region, not '{}'; this emulator serves '{}'.",
                    auth.region.chars().take(32).collect::<String>(),
                    self.cfg.region
                ),
            ));
        }
        let token = sigv4::header(parts.headers, "x-amz-security-token");
        let cred = self.credential_for(&auth.access_key_id, token)?;
        let now_s = (self.now_ms() / 1000) as i64;
        sigv4::verify_header_signed(
            parts,
            &auth,
            &cred.secret,
            payload_hashes,
            now_s,
            self.cfg.max_clock_skew.as_secs(),
        )
        .map_err(sigv4_error)?;
        Ok(Principal {
            access_key_id: auth.access_key_id,
            arn: cred.arn,
            user_id: cred.user_id,
        })
    }
}

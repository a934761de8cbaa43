//! Fuzzes the emulator's pure request parsing: SigV4 Authorization and presigned-query parsing,
//! SigV2 detection (header and presigned query), canonical request building and verification,
//! KVS JSON request validation, PutMedia header validation and web identity tokens. None may
//! panic, whatever the bytes.
#![no_main]

use kvs_emulator::{api, sigv4};
use libfuzzer_sys::fuzz_target;

const PATHS: &[&str] = &[
    "/createStream",
    "/describeStream",
    "/listStreams",
    "/deleteStream",
    "/updateDataRetention",
    "/getDataEndpoint",
    "/getMedia",
    "/listFragments",
    "/getMediaForFragmentList",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match selector % 4 {
        0 => {
            let _ = sigv4::scope_service(Some(&text), None);
            let _ = sigv4::sigv2(Some(&text), None);
            if let Ok(auth) = sigv4::parse_authorization(&text) {
                // Headers built from the input itself, so signed-header lookups hit and miss.
                let headers: Vec<(String, String)> = text
                    .split('\n')
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .chain([("host".to_owned(), "127.0.0.1:1".to_owned())])
                    .collect();
                let parts = sigv4::RequestParts {
                    method: "POST",
                    path: "/putMedia",
                    query: &text,
                    headers: &headers,
                    uri_encoding: sigv4::UriEncoding::Double,
                };
                let _ = sigv4::verify_header_signed(
                    &parts,
                    &auth,
                    "secret",
                    &[sigv4::EMPTY_PAYLOAD_SHA256, sigv4::UNSIGNED_PAYLOAD],
                    1_700_000_000,
                    300,
                );
            }
        }
        1 => {
            let _ = sigv4::scope_service(None, Some(&text));
            let _ = sigv4::sigv2(None, Some(&text));
            let _ = sigv4::parse_presigned(&text);
            let _ = sigv4::canonical_query(&text);
            let _ = sigv4::canonical_uri(&text);
            let _ = sigv4::parse_amz_date(&text);
        }
        2 => {
            let path = PATHS[usize::from(selector / 4) % PATHS.len()];
            let _ = api::parse_kvs_request(path, rest);
        }
        _ => {
            let headers: Vec<(String, String)> = text
                .split('\n')
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect();
            let _ = api::parse_put_media_headers(&headers);
            let _ = api::parse_producer_timestamp(&text);
            let _ = api::stream_name_from_arn(&text);
            let _ = api::parse_web_identity_token(&text, 1_700_000_000_000);
        }
    }
});

//! Where the media comes from.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use tokio::io::AsyncRead;

use crate::error::{Error, Result};

/// An input for ffmpeg.
///
/// `Debug` and [`Input::name`] never show a URL's query string: a presigned S3 GET URL carries
/// its credentials (`X-Amz-Credential`, `X-Amz-Signature`, `X-Amz-Security-Token`) there.
pub enum Input {
    /// A local file; ffmpeg can seek, so MP4 files with the index at the end work.
    Path(PathBuf),
    /// An `http(s)://` URL, typically a presigned S3 GET URL; ffmpeg seeks with Range requests.
    Url(UrlInput),
    /// Bytes fed to ffmpeg's stdin. Only formats that can be read without seeking work (MKV,
    /// WebM, MPEG-TS, MP4 with the index first); an MP4 with its index at the end is refused
    /// with [`Error::NeedsSeekableInput`].
    Reader {
        /// A name for messages, e.g. `s3://bucket/key` or `stdin`.
        name: String,
        /// The bytes.
        reader: Box<dyn AsyncRead + Send + Sync + Unpin>,
    },
}

/// A validated URL input; see [`Input::url`].
#[derive(Clone)]
pub struct UrlInput {
    url: String,
    redacted: String,
}

impl UrlInput {
    /// The full URL, credentials included: give it only to ffmpeg.
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// The URL with its query string replaced by `?<redacted>`.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// The query string (without `?`), if any; used to scrub ffmpeg's stderr.
    pub(crate) fn query(&self) -> Option<&str> {
        self.url
            .split_once('?')
            .map(|(_, q)| q)
            .filter(|q| !q.is_empty())
    }
}

impl fmt::Debug for UrlInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("UrlInput").field(&self.redacted).finish()
    }
}

impl Input {
    /// A local file.
    pub fn path(path: impl Into<PathBuf>) -> Self {
        Input::Path(path.into())
    }

    /// An `https://` URL. Plain `http://` is refused: use [`Input::url_allow_http`] for local
    /// test servers. ffmpeg is told to verify the server certificate (`-tls_verify 1`), which it
    /// does not do by default.
    pub fn url(url: impl Into<String>) -> Result<Self> {
        Self::url_with(url, false)
    }

    /// Like [`Input::url`] but also accepts plain `http://`, for the emulator and tests.
    pub fn url_allow_http(url: impl Into<String>) -> Result<Self> {
        Self::url_with(url, true)
    }

    /// [`Input::url`], or [`Input::url_allow_http`] when `allow_http`: for callers whose
    /// configuration decides (an emulator endpoint, a user's opt-in).
    pub fn url_with(url: impl Into<String>, allow_http: bool) -> Result<Self> {
        let url = url.into();
        let lower = url.to_ascii_lowercase();
        let ok = lower.starts_with("https://") || (allow_http && lower.starts_with("http://"));
        let redacted = redact_url(&url);
        if !ok {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "input URL {redacted} must start with https:// \
                     (plain http:// only through Input::url_allow_http)"
                ),
            });
        }
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::InvalidConfig {
                reason: format!("input URL {redacted} contains whitespace or control characters"),
            });
        }
        Ok(Input::Url(UrlInput { url, redacted }))
    }

    /// Bytes read from `reader` and fed to ffmpeg's stdin; `name` is used in messages.
    pub fn reader(
        name: impl Into<String>,
        reader: impl AsyncRead + Send + Sync + Unpin + 'static,
    ) -> Self {
        Input::Reader {
            name: name.into(),
            reader: Box::new(reader),
        }
    }

    /// The name used in errors and logs (URL query strings redacted).
    pub fn name(&self) -> String {
        match self {
            Input::Path(p) => p.display().to_string(),
            Input::Url(u) => u.redacted.clone(),
            Input::Reader { name, .. } => name.clone(),
        }
    }

    /// True when ffprobe can look at the input without consuming it.
    pub fn is_probeable(&self) -> bool {
        !matches!(self, Input::Reader { .. })
    }

    /// The local path, if the input is a file.
    pub fn as_path(&self) -> Option<&Path> {
        match self {
            Input::Path(p) => Some(p),
            _ => None,
        }
    }
}

impl fmt::Debug for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::Path(p) => f.debug_tuple("Path").field(p).finish(),
            Input::Url(u) => f.debug_tuple("Url").field(&u.redacted).finish(),
            Input::Reader { name, .. } => f
                .debug_struct("Reader")
                .field("name", name)
                .finish_non_exhaustive(),
        }
    }
}

/// Replaces the query string (and any fragment) of a URL, and any `user:password@`, with
/// `<redacted>`.
pub(crate) fn redact_url(url: &str) -> String {
    let (before_query, has_query) = match url.find(['?', '#']) {
        Some(i) => (&url[..i], true),
        None => (url, false),
    };
    let mut out = match before_query.find("://") {
        Some(scheme_end) => {
            let rest = &before_query[scheme_end + 3..];
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!(
                    "{}://<redacted>@{}",
                    &before_query[..scheme_end],
                    &rest[at + 1..]
                ),
                None => before_query.to_owned(),
            }
        }
        None => before_query.to_owned(),
    };
    if has_query {
        out.push_str("?<redacted>");
    }
    out
}

/// Why an MP4 with its index at the end cannot be read from a pipe, and what to do instead.
pub(crate) const MOOV_AT_END_ADVICE: &str = "this MP4 has its index (moov) after the media (mdat), so ffmpeg \
    can only read it by seeking, which a pipe cannot do. Pass a file path or an http(s) URL (a \
    presigned S3 GET URL works: ffmpeg seeks with Range requests), or remux it once with \
    `ffmpeg -i in.mp4 -c copy -movflags +faststart out.mp4`";

/// How ffmpeg and ffprobe are told to read `input`.
pub(crate) fn input_arg(input: &Input) -> OsString {
    match input {
        // The file: protocol stops ffmpeg reading `-x.mp4` as an option or `a:b.mp4` as a
        // protocol.
        Input::Path(p) => {
            let mut s = OsString::from("file:");
            s.push(p.as_os_str());
            s
        }
        Input::Url(u) => u.as_str().into(),
        Input::Reader { .. } => "pipe:0".into(),
    }
}

/// Options ffmpeg and ffprobe need before `-i` for `input`.
pub(crate) fn url_args(input: &Input) -> Vec<&'static str> {
    match input {
        // ffmpeg does not verify TLS certificates unless told to.
        Input::Url(u)
            if u.as_str().len() >= 8 && u.as_str()[..8].eq_ignore_ascii_case("https://") =>
        {
            vec!["-tls_verify", "1"]
        }
        _ => Vec::new(),
    }
}

/// Scrubs URL credentials from ffmpeg's stderr lines.
#[derive(Clone)]
pub(crate) struct Redactor {
    query: Option<String>,
}

impl Redactor {
    pub(crate) fn new(input: &Input) -> Self {
        Redactor {
            query: match input {
                Input::Url(u) => u.query().map(str::to_owned),
                _ => None,
            },
        }
    }

    pub(crate) fn apply(&self, line: &str) -> String {
        let mut s = match &self.query {
            Some(q) => line.replace(q.as_str(), "<redacted>"),
            None => line.to_owned(),
        };
        if s.contains("://") && s.contains('?') {
            s = s
                .split(' ')
                .map(|w| {
                    if w.contains("://") {
                        redact_url(w)
                    } else {
                        w.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join(" ");
        }
        s
    }
}

/// What the first bytes of an MP4/MOV file say about where its index (`moov`) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mp4Layout {
    /// Not an ISO-BMFF file (no plausible top-level box at offset 0).
    NotMp4,
    /// `moov` comes before `mdat` (fast start or fragmented MP4): readable from a pipe.
    IndexFirst,
    /// `mdat` comes first: ffmpeg would need to seek to the end.
    IndexAtEnd,
    /// The prefix ended before either box was found; need more bytes.
    NeedMore,
}

/// Walks the top-level ISO-BMFF boxes in `prefix`. `complete` says the prefix is the whole input.
pub(crate) fn mp4_layout(prefix: &[u8], complete: bool) -> Mp4Layout {
    const KNOWN: [&[u8; 4]; 10] = [
        b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"uuid", b"styp", b"pdin", b"meta",
    ];
    if prefix.len() < 8 {
        return if complete {
            Mp4Layout::NotMp4
        } else {
            Mp4Layout::NeedMore
        };
    }
    if !KNOWN.iter().any(|k| &prefix[4..8] == *k) {
        return Mp4Layout::NotMp4;
    }
    let mut offset: u64 = 0;
    loop {
        let Ok(at) = usize::try_from(offset) else {
            return Mp4Layout::NeedMore;
        };
        if at + 8 > prefix.len() {
            return if complete {
                Mp4Layout::NotMp4
            } else {
                Mp4Layout::NeedMore
            };
        }
        let size32 =
            u32::from_be_bytes([prefix[at], prefix[at + 1], prefix[at + 2], prefix[at + 3]]);
        let kind = &prefix[at + 4..at + 8];
        match kind {
            b"moov" | b"moof" => return Mp4Layout::IndexFirst,
            b"mdat" => return Mp4Layout::IndexAtEnd,
            _ => {}
        }
        let size = match size32 {
            // Box extends to the end of the file: nothing follows it.
            0 => return Mp4Layout::NotMp4,
            1 => {
                if at + 16 > prefix.len() {
                    return if complete {
                        Mp4Layout::NotMp4
                    } else {
                        Mp4Layout::NeedMore
                    };
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&prefix[at + 8..at + 16]);
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        };
        if size < 8 {
            return Mp4Layout::NotMp4;
        }
        offset = offset.saturating_add(size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(kind: &[u8; 4], body: usize) -> Vec<u8> {
        let mut v = u32::try_from(body + 8).unwrap().to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.resize(body + 8, 0);
        v
    }

    #[test]
    fn redacts_presigned_query_and_userinfo() {
        let u = "https://b.s3.amazonaws.com/k.mp4?X-Amz-Credential=AKIA%2F&X-Amz-Signature=abc";
        assert_eq!(redact_url(u), "https://b.s3.amazonaws.com/k.mp4?<redacted>");
        assert_eq!(redact_url("http://u:p@h:1/x"), "http://<redacted>@h:1/x");
        assert_eq!(redact_url("https://h/x"), "https://h/x");
        let input = Input::url(u).unwrap();
        assert!(!format!("{input:?}").contains("abc"));
        assert!(!input.name().contains("AKIA"));
    }

    #[test]
    fn refuses_plain_http_without_opt_in() {
        assert!(matches!(
            Input::url("http://127.0.0.1/x"),
            Err(Error::InvalidConfig { .. })
        ));
        assert!(matches!(
            Input::url("file:///etc/passwd"),
            Err(Error::InvalidConfig { .. })
        ));
        assert!(Input::url_allow_http("http://127.0.0.1/x").is_ok());
        assert!(Input::url_with("http://127.0.0.1/x", true).is_ok());
        assert!(Input::url_with("http://127.0.0.1/x", false).is_err());
    }

    #[test]
    fn mp4_layouts() {
        let mut at_end = boxed(b"ftyp", 16);
        at_end.extend(boxed(b"free", 0));
        at_end.extend(boxed(b"mdat", 100));
        assert_eq!(mp4_layout(&at_end, false), Mp4Layout::IndexAtEnd);
        let mut first = boxed(b"ftyp", 16);
        first.extend(boxed(b"moov", 50));
        assert_eq!(mp4_layout(&first, false), Mp4Layout::IndexFirst);
        assert_eq!(mp4_layout(&first[..20], false), Mp4Layout::NeedMore);
        assert_eq!(
            mp4_layout(b"\x1a\x45\xdf\xa3\x01\x00\x00\x00", false),
            Mp4Layout::NotMp4
        );
        assert_eq!(mp4_layout(b"", true), Mp4Layout::NotMp4);
        // A 64-bit size box before mdat.
        let mut large = 1u32.to_be_bytes().to_vec();
        large.extend_from_slice(b"free");
        large.extend_from_slice(&24u64.to_be_bytes());
        large.extend_from_slice(&[0; 8]);
        large.extend(boxed(b"mdat", 4));
        assert_eq!(mp4_layout(&large, false), Mp4Layout::IndexAtEnd);
    }

    proptest::proptest! {
        #[test]
        fn mp4_layout_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256), complete: bool) {
            let _ = mp4_layout(&data, complete);
        }
    }
}

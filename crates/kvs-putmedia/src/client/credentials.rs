//! Credentials: a refreshing cache in front of any provider, aws-config's STS AssumeRole
//! provider behind it, and the injectable wall clock used for signing and expiry.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{self, ProvideCredentials, SharedCredentialsProvider, future};

/// A wall clock. Signing (`x-amz-date`), the producer start timestamp and credential expiry
/// checks read it; tests inject a fixed one so signatures are reproducible.
pub trait Clock: fmt::Debug + Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// The system clock, the default [`Clock`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A shared [`Clock`].
pub type SharedClock = Arc<dyn Clock>;

/// Caches credentials and refreshes them `refresh_before` their expiry: the one credentials
/// cache of a [`PutMediaClient`](super::PutMediaClient), shared by its sessions and its SDK
/// clients (which get `IdentityCache::no_cache()`, so nothing is cached twice).
///
/// aws-config 1.x credential providers do not cache by themselves; the SDK's `IdentityCache`
/// (`IdentityCache::lazy()`) does, but it can only be called from inside an SDK operation
/// (`ResolveCachedIdentity` takes the operation's `RuntimeComponents`), and PutMedia is not
/// one. This cache adds what PutMedia needs on top: a minimum remaining lifetime at session
/// start and invalidation after the service refused the credentials.
#[derive(Clone)]
pub(crate) struct CachingProvider {
    inner: Arc<CacheInner>,
}

struct CacheInner {
    provider: SharedCredentialsProvider,
    cached: tokio::sync::Mutex<Option<Credentials>>,
    refresh_before: Duration,
    clock: SharedClock,
}

impl fmt::Debug for CachingProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the cached credentials, even redacted: the access key id is enough to
        // identify an account.
        f.debug_struct("CachingProvider")
            .field("provider", &self.inner.provider)
            .field("refresh_before", &self.inner.refresh_before)
            .finish_non_exhaustive()
    }
}

impl CachingProvider {
    pub(crate) fn new(
        provider: SharedCredentialsProvider,
        refresh_before: Duration,
        clock: SharedClock,
    ) -> Self {
        Self {
            inner: Arc::new(CacheInner {
                provider,
                cached: tokio::sync::Mutex::new(None),
                refresh_before,
                clock,
            }),
        }
    }

    /// Credentials valid for at least `min_valid` more (or without expiry). Refreshes the cache
    /// when the cached ones expire sooner; fails when even fresh ones do.
    pub(crate) async fn credentials_valid_for(
        &self,
        min_valid: Duration,
    ) -> Result<Credentials, CredentialsError> {
        let mut cached = self.inner.cached.lock().await;
        let now = self.inner.clock.now();
        let need = min_valid.max(self.inner.refresh_before);
        if let Some(c) = cached.as_ref()
            && valid_for(c, now, need)
        {
            return Ok(c.clone());
        }
        let fresh = self.inner.provider.provide_credentials().await?;
        let now = self.inner.clock.now();
        if !valid_for(&fresh, now, min_valid) {
            let left = fresh
                .expiry()
                .and_then(|e| e.duration_since(now).ok())
                .unwrap_or_default();
            return Err(CredentialsError::invalid_configuration(format!(
                "the credentials provider returned credentials that expire in {}s, less than the \
                 {}s a session needs",
                left.as_secs(),
                min_valid.as_secs()
            )));
        }
        tracing::debug!(expiry = ?fresh.expiry(), "refreshed credentials");
        *cached = Some(fresh.clone());
        Ok(fresh)
    }

    /// Drops the cached credentials (after the service refused them).
    pub(crate) async fn invalidate(&self) {
        *self.inner.cached.lock().await = None;
    }
}

fn valid_for(c: &Credentials, now: SystemTime, d: Duration) -> bool {
    match c.expiry() {
        None => true,
        Some(exp) => exp.duration_since(now).is_ok_and(|left| left >= d),
    }
}

impl ProvideCredentials for CachingProvider {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.credentials_valid_for(Duration::ZERO))
    }
}

/// aws-config's [`AssumeRoleProvider`](aws_config::sts::AssumeRoleProvider), built on first
/// use (its builder is async). Like every aws-config provider it does not cache: the
/// [`CachingProvider`] in front makes one `AssumeRole` per credential lifetime for all the
/// sessions of a client, where the Node sample assumed the role before every stream.
#[derive(Debug)]
pub(crate) struct LazyAssumeRole {
    role_arn: String,
    session_name: String,
    duration: Duration,
    sts: aws_types::SdkConfig,
    provider: tokio::sync::OnceCell<aws_config::sts::AssumeRoleProvider>,
}

impl LazyAssumeRole {
    /// `sts` carries the region, endpoint, HTTP client and the base credentials.
    pub(crate) fn new(
        role_arn: String,
        session_name: String,
        duration: Duration,
        sts: aws_types::SdkConfig,
    ) -> Self {
        Self {
            role_arn,
            session_name,
            duration,
            sts,
            provider: tokio::sync::OnceCell::new(),
        }
    }

    async fn assume(&self) -> provider::Result {
        let p = self
            .provider
            .get_or_init(|| {
                aws_config::sts::AssumeRoleProvider::builder(self.role_arn.clone())
                    .session_name(self.session_name.clone())
                    .session_length(self.duration)
                    .configure(&self.sts)
                    .build()
            })
            .await;
        p.provide_credentials().await
    }
}

impl ProvideCredentials for LazyAssumeRole {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.assume())
    }
}

/// Our [`Clock`] as the SDK's time source, so that STS calls sign with the same time as
/// PutMedia.
#[derive(Debug)]
pub(crate) struct ClockTimeSource(pub(crate) SharedClock);

impl aws_types::sdk_config::TimeSource for ClockTimeSource {
    fn now(&self) -> SystemTime {
        self.0.now()
    }
}

/// Whether asking the provider again can give credentials: false for a missing provider, a
/// configuration error, or STS refusing the request (a bad web-identity token, a role the
/// caller may not assume, unknown base credentials). Those end a session at once instead of
/// after the whole retry budget.
pub(crate) fn may_heal(e: &CredentialsError) -> bool {
    match e {
        CredentialsError::CredentialsNotLoaded(_) | CredentialsError::InvalidConfiguration(_) => {
            false
        }
        CredentialsError::ProviderTimedOut(_) => true,
        _ => !refused_by_sts(e),
    }
}

/// An STS answer in the error's source chain that says "no" rather than "not now".
fn refused_by_sts(e: &(dyn std::error::Error + 'static)) -> bool {
    use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
    use aws_sdk_sts::operation::assume_role::AssumeRoleError;
    use aws_sdk_sts::operation::assume_role_with_web_identity::AssumeRoleWithWebIdentityError;
    use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

    fn refusal<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
        let SdkError::ServiceError(ctx) = e else {
            return false;
        };
        let status = ctx.raw().status().as_u16();
        let code = ctx.err().code().unwrap_or("");
        // Throttling and the identity provider being unreachable heal; 5xx too.
        (400..500).contains(&status)
            && status != 429
            && !matches!(
                code,
                "Throttling"
                    | "ThrottlingException"
                    | "RequestLimitExceeded"
                    | "IDPCommunicationError"
            )
    }

    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(s) = err.downcast_ref::<SdkError<AssumeRoleError, HttpResponse>>()
            && refusal(s)
        {
            return true;
        }
        if let Some(s) =
            err.downcast_ref::<SdkError<AssumeRoleWithWebIdentityError, HttpResponse>>()
            && refusal(s)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug)]
    struct FixedClock(SystemTime);
    impl Clock for FixedClock {
        fn now(&self) -> SystemTime {
            self.0
        }
    }

    #[derive(Debug)]
    struct Counting {
        calls: Arc<AtomicU32>,
        lifetime: Duration,
        now: SystemTime,
    }
    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            future::ProvideCredentials::ready(Ok(Credentials::new(
                format!("AKID{n}"),
                "secret",
                Some("token".into()),
                Some(self.now + self.lifetime),
                "test",
            )))
        }
    }

    fn cache(lifetime: Duration) -> (CachingProvider, Arc<AtomicU32>) {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let calls = Arc::new(AtomicU32::new(0));
        let p = Counting {
            calls: calls.clone(),
            lifetime,
            now,
        };
        (
            CachingProvider::new(
                SharedCredentialsProvider::new(p),
                Duration::from_secs(300),
                Arc::new(FixedClock(now)),
            ),
            calls,
        )
    }

    #[tokio::test]
    async fn caches_until_refresh_margin() {
        let (c, calls) = cache(Duration::from_secs(3600));
        c.credentials_valid_for(Duration::from_secs(60))
            .await
            .unwrap();
        c.credentials_valid_for(Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // Asking for more lifetime than is left forces a refresh, which cannot satisfy it.
        let err = c
            .credentials_valid_for(Duration::from_secs(7200))
            .await
            .unwrap_err();
        assert!(format!("{err:?}").contains("expire"), "{err:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn refreshes_credentials_inside_the_margin() {
        // Lifetime 200 s < 300 s refresh margin: every call refreshes.
        let (c, calls) = cache(Duration::from_secs(200));
        c.credentials_valid_for(Duration::from_secs(10))
            .await
            .unwrap();
        c.credentials_valid_for(Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        c.invalidate().await;
    }

    fn sts_refusal(status: u16) -> CredentialsError {
        use aws_sdk_sts::error::SdkError;
        use aws_sdk_sts::operation::assume_role_with_web_identity::AssumeRoleWithWebIdentityError;
        use aws_sdk_sts::types::error::InvalidIdentityTokenException;
        let err = AssumeRoleWithWebIdentityError::InvalidIdentityTokenException(
            InvalidIdentityTokenException::builder()
                .message("the token is not valid")
                .build(),
        );
        let raw = aws_smithy_runtime_api::http::Response::new(
            status.try_into().unwrap(),
            aws_smithy_types::body::SdkBody::empty(),
        );
        CredentialsError::provider_error(SdkError::service_error(err, raw))
    }

    #[test]
    fn which_credential_errors_may_heal() {
        // A refused web-identity token, no provider, a bad configuration: final.
        assert!(!may_heal(&sts_refusal(400)));
        assert!(!may_heal(&CredentialsError::not_loaded("no provider")));
        assert!(!may_heal(&CredentialsError::invalid_configuration("bad")));
        // STS failing or slow, a provider timing out, anything unrecognised: try again.
        assert!(may_heal(&sts_refusal(503)));
        assert!(may_heal(&CredentialsError::provider_timed_out(
            Duration::from_secs(5)
        )));
        assert!(may_heal(&CredentialsError::provider_error(
            "IMDS unreachable"
        )));
    }

    #[test]
    fn debug_hides_credentials() {
        let (c, _) = cache(Duration::from_secs(3600));
        let s = format!("{c:?}");
        assert!(!s.contains("secret") && !s.contains("token"), "{s}");
    }
}

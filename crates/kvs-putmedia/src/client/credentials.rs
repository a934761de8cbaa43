//! Credentials: a refreshing cache in front of any provider, an STS AssumeRole provider, and
//! the injectable wall clock used for signing and expiry.

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

/// Caches credentials and refreshes them `refresh_before` their expiry.
///
/// aws-config 1.x credential providers do not cache by themselves: without this every session
/// start would call STS or IMDS.
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

/// Assumes a role through STS `AssumeRole` each time it is asked (put a [`CachingProvider`] in
/// front). The Node sample assumes `ECS_ROLE` before every stream; this does it once per
/// credential lifetime instead.
#[derive(Debug, Clone)]
pub(crate) struct AssumeRoleProvider {
    pub(crate) client: aws_sdk_sts::Client,
    pub(crate) role_arn: String,
    pub(crate) session_name: String,
    pub(crate) duration: Duration,
}

impl AssumeRoleProvider {
    async fn assume(&self) -> provider::Result {
        let out = self
            .client
            .assume_role()
            .role_arn(&self.role_arn)
            .role_session_name(&self.session_name)
            .duration_seconds(i32::try_from(self.duration.as_secs()).unwrap_or(3600))
            .send()
            .await
            .map_err(|e| {
                CredentialsError::provider_error(format!(
                    "AssumeRole {} failed: {}",
                    self.role_arn,
                    aws_sdk_sts::error::DisplayErrorContext(&e)
                ))
            })?;
        let c = out.credentials.ok_or_else(|| {
            CredentialsError::unhandled("AssumeRole answered without credentials")
        })?;
        let expiry = SystemTime::try_from(c.expiration).map_err(|_| {
            CredentialsError::unhandled("AssumeRole answered with an unrepresentable expiry")
        })?;
        Ok(Credentials::new(
            c.access_key_id,
            c.secret_access_key,
            Some(c.session_token),
            Some(expiry),
            "AssumeRole",
        ))
    }
}

impl ProvideCredentials for AssumeRoleProvider {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.assume())
    }
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

    #[test]
    fn debug_hides_credentials() {
        let (c, _) = cache(Duration::from_secs(3600));
        let s = format!("{c:?}");
        assert!(!s.contains("secret") && !s.contains("token"), "{s}");
    }
}

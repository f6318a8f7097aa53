//! Cache behaviour under paused time with a fake source that counts mints.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::*;
use crate::google::token::unsigned_jwt;

struct FakeSource {
    clock: Clock,
    mints: AtomicUsize,
    failing: AtomicBool,
    latency: Duration,
}

impl FakeSource {
    fn new(clock: &Clock) -> Arc<Self> {
        Arc::new(Self {
            clock: clock.clone(),
            mints: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
            latency: Duration::from_millis(50),
        })
    }
}

impl IdTokenSource for FakeSource {
    fn mint<'a>(
        &'a self,
        audience: &'a str,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<IdToken, CredentialsError>> + Send + 'a>,
    > {
        Box::pin(async move {
            self.mints.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.latency).await;
            if self.failing.load(Ordering::SeqCst) {
                return Err(CredentialsError::Http {
                    url: "https://oauth2.example/token".into(),
                    status: 503,
                    snippet: "down".into(),
                });
            }
            let exp = self.clock.unix_secs() + 3600;
            Ok(IdToken::parse(unsigned_jwt(
                serde_json::json!({"aud": audience, "exp": exp}),
            ))
            .unwrap())
        })
    }
    fn principal(&self) -> String {
        "fake@test".into()
    }
}

fn cache(source: Arc<FakeSource>, clock: &Clock) -> (Arc<TokenCache>, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let sources: BTreeMap<String, Arc<dyn IdTokenSource>> =
        [("prod".to_owned(), source as Arc<dyn IdTokenSource>)].into();
    (
        Arc::new(TokenCache::new(
            sources,
            Duration::from_secs(300),
            clock.clone(),
            metrics.clone(),
        )),
        metrics,
    )
}

#[tokio::test(start_paused = true)]
async fn a_thousand_concurrent_first_calls_make_one_mint() {
    let clock = Clock::tokio();
    let source = FakeSource::new(&clock);
    let (cache, metrics) = cache(source.clone(), &clock);
    let calls = (0..1000).map(|_| {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .get("prod", "https://f.example/a")
                .await
                .map(|t| t.expose().to_owned())
        })
    });
    let tokens: Vec<String> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    assert_eq!(source.mints.load(Ordering::SeqCst), 1);
    assert!(
        tokens.iter().all(|t| t == &tokens[0]),
        "everyone got the one token"
    );
    assert_eq!(metrics.token_mints("prod", true), 1);
}

#[tokio::test(start_paused = true)]
async fn audiences_and_connections_are_cached_separately() {
    let clock = Clock::tokio();
    let source = FakeSource::new(&clock);
    let (cache, _) = cache(source.clone(), &clock);
    cache.get("prod", "https://f.example/a").await.unwrap();
    cache.get("prod", "https://f.example/b").await.unwrap();
    cache.get("prod", "https://f.example/a").await.unwrap();
    assert_eq!(source.mints.load(Ordering::SeqCst), 2);
    assert!(matches!(
        cache.get("other", "https://f.example/a").await,
        Err(TokenError::UnknownConnection(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn refreshes_ahead_of_expiry() {
    let clock = Clock::tokio();
    let source = FakeSource::new(&clock);
    let (cache, _) = cache(source.clone(), &clock);
    let first = cache.get("prod", "aud").await.unwrap();
    // 54 minutes in: more than 5 minutes left, still cached.
    tokio::time::advance(Duration::from_secs(54 * 60)).await;
    assert_eq!(
        cache.get("prod", "aud").await.unwrap().expose(),
        first.expose()
    );
    assert_eq!(source.mints.load(Ordering::SeqCst), 1);
    // 56 minutes in: inside the 5-minute window, refreshed before it expires.
    tokio::time::advance(Duration::from_secs(2 * 60)).await;
    let second = cache.get("prod", "aud").await.unwrap();
    assert_eq!(source.mints.load(Ordering::SeqCst), 2);
    assert!(second.expires_at > first.expires_at);
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_keeps_serving_the_valid_token_then_fails_when_it_nears_expiry() {
    let clock = Clock::tokio();
    let source = FakeSource::new(&clock);
    let (cache, metrics) = cache(source.clone(), &clock);
    let first = cache.get("prod", "aud").await.unwrap();
    source.failing.store(true, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(57 * 60)).await;
    let served = cache.get("prod", "aud").await.unwrap();
    assert_eq!(
        served.expose(),
        first.expose(),
        "still valid: served despite the failed refresh"
    );
    assert_eq!(metrics.token_mints("prod", false), 1);
    // Past the point where a call could outlive it: an error, which says why.
    tokio::time::advance(Duration::from_secs(2 * 60 + 30)).await;
    let err = cache.get("prod", "aud").await.unwrap_err();
    assert!(err.is_retryable());
    assert!(
        err.to_string().contains("fake@test") && err.to_string().contains("503"),
        "{err}"
    );
    // The endpoint recovers: the next call mints again.
    source.failing.store(false, Ordering::SeqCst);
    assert!(cache.get("prod", "aud").await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn waiters_share_a_failed_mint_instead_of_retrying_one_by_one() {
    let clock = Clock::tokio();
    let source = FakeSource::new(&clock);
    source.failing.store(true, Ordering::SeqCst);
    let (cache, _) = cache(source.clone(), &clock);
    let calls = (0..200).map(|_| {
        let cache = cache.clone();
        tokio::spawn(async move { cache.get("prod", "aud").await })
    });
    let results = futures_util::future::join_all(calls).await;
    assert!(results.into_iter().all(|r| r.unwrap().is_err()));
    assert_eq!(source.mints.load(Ordering::SeqCst), 1);
}

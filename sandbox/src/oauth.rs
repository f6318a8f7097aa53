//! The OAuth token endpoint (`oauth2.googleapis.com`) and Google's signing
//! certificates (`www.googleapis.com/oauth2/{v1,v3}/certs`).
//!
//! `POST /token` takes a service-account JWT assertion and answers with an ID
//! token (`target_audience`) or an access token (`scope`), checking the
//! assertion the way Google does and failing with Google's exact error JSON.
//! It must never panic on client input and never log assertions or tokens.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State as AxState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Value, json};

use super::{IdTokenFormat, State, TOKEN_LIFETIME_SECS};

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const REFRESH_TOKEN: &str = "refresh_token";
/// Audiences Google accepts in an assertion (besides this sandbox's own token URL).
const ACCEPTED_AUDIENCES: [&str; 3] = [
    "https://oauth2.googleapis.com/token",
    "https://www.googleapis.com/oauth2/v4/token",
    "https://accounts.google.com/o/oauth2/token",
];
/// Largest token request body read.
const MAX_FORM_BYTES: usize = 64 * 1024;
/// Clock skew Google tolerates on `iat`/`exp`.
const SKEW_SECS: i64 = 60;

const INVALID_SIGNATURE: &str = "Invalid JWT Signature.";
const BAD_TIMEFRAME: &str = "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.";
const ACCOUNT_NOT_FOUND: &str = "Invalid grant: account not found";

pub(crate) fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/token", post(token))
        // STS (sts.googleapis.com/v1/token): workload identity federation.
        .route("/v1/token", post(sts_token))
        .route("/oauth2/v4/token", post(token))
        .route("/oauth2/v3/certs", get(jwks))
        .route("/oauth2/v1/certs", get(pem_certs))
        .route("/robot/v1/metadata/x509/{email}", get(account_certs))
        .with_state(state)
}

/// An OAuth error reply: HTTP 400 (or 401) `{"error","error_description"}`.
#[derive(Debug)]
struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl OAuthError {
    fn new(error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error,
            description: description.into(),
        }
    }
    fn grant(description: impl Into<String>) -> Self {
        Self::new("invalid_grant", description)
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.error, "error_description": self.description})),
        )
            .into_response()
    }
}

/// STS's token exchange (RFC 8693, as google-auth's `sts.Client` sends it):
/// a subject token the sandbox issued for a workload identity provider
/// (`audience`) becomes a federated access token of its principal.
async fn sts_token(AxState(state): AxState<Arc<State>>, body: Body) -> Response {
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
        return OAuthError::new("invalid_request", "Request body too large.").into_response();
    };
    match sts_exchange(&state, &bytes) {
        Ok(reply) => (StatusCode::OK, Json(reply)).into_response(),
        Err(e) => e.into_response(),
    }
}

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const SUBJECT_TOKEN_TYPES: [&str; 4] = [
    "urn:ietf:params:oauth:token-type:jwt",
    "urn:ietf:params:oauth:token-type:id_token",
    "urn:ietf:params:oauth:token-type:saml2",
    "urn:ietf:params:aws:token-type:aws4_request",
];

fn sts_exchange(state: &State, form: &[u8]) -> Result<Value, OAuthError> {
    let field = |name: &str| {
        url::form_urlencoded::parse(form)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    if field("grant_type") != TOKEN_EXCHANGE {
        return Err(OAuthError::new(
            "unsupported_grant_type",
            format!("Invalid value for \"grant_type\": {}", field("grant_type")),
        ));
    }
    if field("requested_token_type") != ACCESS_TOKEN_TYPE {
        return Err(OAuthError::new(
            "invalid_request",
            "Invalid value for \"requested_token_type\".",
        ));
    }
    let subject_token_type = field("subject_token_type");
    if !SUBJECT_TOKEN_TYPES.contains(&subject_token_type.as_str()) {
        return Err(OAuthError::new(
            "invalid_request",
            "Invalid value for \"subject_token_type\".",
        ));
    }
    let audience = field("audience");
    if subject_token_type == "urn:ietf:params:aws:token-type:aws4_request" {
        if !state.lock().workload_providers.contains(&audience) {
            return Err(OAuthError::new(
                "invalid_target",
                "The target service indicated by the \"audience\" parameters is invalid. This might either be because the pool or provider is disabled or deleted or because it doesn't exist.",
            ));
        }
        let arn = super::aws::verify(
            state,
            &field("subject_token"),
            &audience,
            std::time::UNIX_EPOCH
                + std::time::Duration::from_secs(u64::try_from(state.now()).unwrap_or(0)),
        )
        .map_err(OAuthError::grant)?;
        return Ok(federated_answer(state, &audience, &arn));
    }
    let inner = state.lock();
    if !inner.workload_providers.contains(&audience) {
        return Err(OAuthError::new(
            "invalid_target",
            "The target service indicated by the \"audience\" parameters is invalid. This might either be because the pool or provider is disabled or deleted or because it doesn't exist.",
        ));
    }
    let Some((provider, subject)) = inner.subject_tokens.get(&field("subject_token")).cloned()
    else {
        return Err(OAuthError::grant(
            "The subject token could not be verified.",
        ));
    };
    drop(inner);
    if provider != audience {
        return Err(OAuthError::grant(
            "The audience in ID Token does not match the expected audience.",
        ));
    }
    Ok(federated_answer(state, &audience, &subject))
}

/// STS's answer: a federated access token of `subject` of `provider`'s pool.
fn federated_answer(state: &State, provider: &str, subject: &str) -> Value {
    let principal = federated_principal(provider, subject);
    state.lock().account_mut(&principal);
    let (token, _) = state.mint_access_token(&principal, TOKEN_LIFETIME_SECS);
    json!({
        "access_token": token,
        "issued_token_type": ACCESS_TOKEN_TYPE,
        "token_type": "Bearer",
        "expires_in": TOKEN_LIFETIME_SECS - 1,
    })
}

/// `principal://iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/POOL/subject/SUB`
/// for a subject of the provider `//iam.googleapis.com/.../workloadIdentityPools/POOL/providers/P`.
pub(crate) fn federated_principal(provider: &str, subject: &str) -> String {
    let pool = provider
        .trim_start_matches("//")
        .split("/providers/")
        .next()
        .unwrap_or(provider);
    format!("principal://{pool}/subject/{subject}")
}

async fn token(AxState(state): AxState<Arc<State>>, body: Body) -> Response {
    let started = std::time::Instant::now();
    let answer = token_inner(&state, body).await;
    state.token_endpoint_nanos.fetch_add(
        u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
        std::sync::atomic::Ordering::Relaxed,
    );
    answer
}

async fn token_inner(state: &Arc<State>, body: Body) -> Response {
    let bytes = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return OAuthError::new("invalid_request", "Request body too large.").into_response();
        }
    };
    let mut resp = match grant(state, &bytes) {
        Ok(reply) => (StatusCode::OK, Json(reply)).into_response(),
        Err(e) => e.into_response(),
    };
    // Google's token answers are never cacheable.
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache, no-store, max-age=0, must-revalidate"),
    );
    resp.headers_mut()
        .insert(header::PRAGMA, header::HeaderValue::from_static("no-cache"));
    resp
}

/// The token endpoint's logic, from the raw form body to the JSON reply:
/// the form, the assertion's signature (Google looks the account up by
/// `iss`, then the key by `kid`), its claims, then the token asked for.
fn grant(state: &State, form: &[u8]) -> Result<Value, OAuthError> {
    let grant_type = url::form_urlencoded::parse(form)
        .find(|(k, _)| k == "grant_type")
        .map(|(_, v)| v.into_owned());
    if grant_type.as_deref() == Some(REFRESH_TOKEN) {
        return refresh(state, form);
    }
    let assertion = jwt_bearer_assertion(form)?;
    let (iss, claims) = verified_claims(state, &assertion)?;
    check_claims(state, &iss, &claims)?;
    issue(state, &iss, &claims)
}

/// The `refresh_token` grant of a person's login (`authorized_user`), as
/// google-auth's `refresh_grant` sends it: `client_id`, `client_secret`,
/// `refresh_token`. Answers an access token of the user.
fn refresh(state: &State, form: &[u8]) -> Result<Value, OAuthError> {
    let field = |name: &str| {
        url::form_urlencoded::parse(form)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let (client_id, client_secret, refresh_token) = (
        field("client_id"),
        field("client_secret"),
        field("refresh_token"),
    );
    if refresh_token.is_empty() {
        return Err(OAuthError::new(
            "invalid_request",
            "Missing required parameter: refresh_token",
        ));
    }
    let login = state.lock().user_logins.get(&refresh_token).cloned();
    let Some(login) = login else {
        return Err(OAuthError::grant("Token has been expired or revoked."));
    };
    if login.client_id != client_id || login.client_secret != client_secret {
        return Err(OAuthError::new(
            "invalid_client",
            "The OAuth client was not found.",
        ));
    }
    let (token, _) = state.mint_access_token(&login.email, TOKEN_LIFETIME_SECS);
    Ok(json!({
        "access_token": token,
        "expires_in": TOKEN_LIFETIME_SECS - 1,
        "scope": "https://www.googleapis.com/auth/cloud-platform openid https://www.googleapis.com/auth/userinfo.email",
        "token_type": "Bearer",
    }))
}

/// The `assertion` of a `jwt-bearer` grant.
fn jwt_bearer_assertion(form: &[u8]) -> Result<String, OAuthError> {
    let mut grant_type = None;
    let mut assertion = None;
    for (k, v) in url::form_urlencoded::parse(form) {
        match &*k {
            "grant_type" => grant_type = Some(v.into_owned()),
            "assertion" => assertion = Some(v.into_owned()),
            _ => {}
        }
    }
    let grant_type = grant_type.unwrap_or_default();
    if grant_type != JWT_BEARER {
        return Err(OAuthError::new(
            "unsupported_grant_type",
            format!("Invalid grant_type: {grant_type}"),
        ));
    }
    assertion
        .filter(|a| !a.is_empty())
        .ok_or_else(|| OAuthError::new("invalid_request", "Missing required parameter: assertion"))
}

/// The issuer and the claims of an assertion signed by one of the issuer's
/// live keys.
fn verified_claims(state: &State, assertion: &str) -> Result<(String, Value), OAuthError> {
    let malformed = || OAuthError::new("invalid_request", "Invalid JWT: malformed assertion.");
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| malformed())?;
    let unverified: Value =
        jsonwebtoken::dangerous::insecure_decode_claims(assertion).map_err(|_| malformed())?;
    let iss = unverified
        .get("iss")
        .and_then(Value::as_str)
        .ok_or_else(|| OAuthError::grant(ACCOUNT_NOT_FOUND))?
        .to_owned();
    let candidates: Vec<_> = {
        let inner = state.lock();
        let account = inner
            .active_account(&iss)
            .ok_or_else(|| OAuthError::grant(ACCOUNT_NOT_FOUND))?;
        account
            .keys
            .iter()
            .filter(|(_, k)| !k.deleted)
            .filter(|(id, _)| header.kid.as_deref().is_none_or(|kid| kid == id.as_str()))
            .map(|(_, k)| k.key.clone())
            .collect()
    };
    if header.alg != Algorithm::RS256 {
        return Err(OAuthError::grant(INVALID_SIGNATURE));
    }
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims = HashSet::new();
    let claims = candidates
        .iter()
        .find_map(|k| jsonwebtoken::decode::<Value>(assertion, &k.decoding, &validation).ok())
        .map(|d| d.claims)
        .ok_or_else(|| OAuthError::grant(INVALID_SIGNATURE))?;
    Ok((iss, claims))
}

/// `sub`, `aud` and the time frame, as Google checks them.
fn check_claims(state: &State, iss: &str, claims: &Value) -> Result<(), OAuthError> {
    if let Some(sub) = claims.get("sub").and_then(Value::as_str)
        && sub != iss
    {
        return Err(OAuthError::new(
            "unauthorized_client",
            "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested.",
        ));
    }
    let token_url = state.urls.token_url();
    let aud_ok = |a: &str| ACCEPTED_AUDIENCES.contains(&a) || a == token_url;
    let aud_matches = match claims.get("aud") {
        Some(Value::String(a)) => aud_ok(a),
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(aud_ok),
        _ => false,
    };
    if !aud_matches {
        return Err(OAuthError::grant(
            "Invalid JWT: Failed audience check. The right audience is https://oauth2.googleapis.com/token",
        ));
    }
    let num = |name: &str| claims.get(name).and_then(Value::as_f64).map(|f| f as i64);
    let (Some(iat), Some(exp)) = (num("iat"), num("exp")) else {
        return Err(OAuthError::grant(BAD_TIMEFRAME));
    };
    let now = state.now();
    if exp <= iat
        || exp - iat > TOKEN_LIFETIME_SECS
        || iat > now + SKEW_SECS
        || exp < now - SKEW_SECS
    {
        return Err(OAuthError::grant(BAD_TIMEFRAME));
    }
    Ok(())
}

/// An ID token for `target_audience`, else an access token for `scope`.
fn issue(state: &State, iss: &str, claims: &Value) -> Result<Value, OAuthError> {
    let nonempty = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_owned)
    };
    if let Some(audience) = nonempty("target_audience") {
        let token = state
            .mint_id_token(iss, &audience, IdTokenFormat::WithEmail)
            .map_err(|_| OAuthError::grant(ACCOUNT_NOT_FOUND))?;
        return Ok(json!({"id_token": token}));
    }
    if nonempty("scope").is_some() {
        let (token, _) = state.mint_access_token(iss, TOKEN_LIFETIME_SECS);
        return Ok(json!({
            "access_token": token,
            "expires_in": TOKEN_LIFETIME_SECS - 1,
            "token_type": "Bearer",
        }));
    }
    Err(OAuthError::new(
        "invalid_scope",
        "Invalid OAuth scope or ID token audience provided.",
    ))
}

async fn jwks(AxState(state): AxState<Arc<State>>) -> Response {
    let keys: Vec<_> = state.google().published().map(|k| k.jwk()).collect();
    cacheable(Json(json!({ "keys": keys })).into_response())
}

async fn pem_certs(AxState(state): AxState<Arc<State>>) -> Response {
    let certs: BTreeMap<String, String> = state
        .google()
        .published()
        .map(|k| (k.kid().to_owned(), k.cert_pem().to_owned()))
        .collect();
    cacheable(Json(certs).into_response())
}

/// A service account's public certificates (its key file's `client_x509_cert_url`).
async fn account_certs(AxState(state): AxState<Arc<State>>, Path(email): Path<String>) -> Response {
    let inner = state.lock();
    let Some(account) = inner.accounts.get(&email) else {
        return (StatusCode::NOT_FOUND, "Not Found").into_response();
    };
    let certs: BTreeMap<String, String> = account
        .keys
        .iter()
        .filter(|(_, k)| !k.deleted)
        .map(|(id, k)| (id.clone(), k.key.cert_pem.clone()))
        .collect();
    Json(certs).into_response()
}

/// Google serves its certs with a `Cache-Control: max-age`; clients honour it.
fn cacheable(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("public, max-age=19000, must-revalidate, no-transform"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{Clock, Sandbox};
    use super::*;

    const AUD: &str = "https://oauth2.googleapis.com/token";

    fn claims(iss: &str, extra: Value, iat_offset: i64, lifetime: i64) -> Value {
        let now = Clock::system().unix_secs() + iat_offset;
        let mut c = json!({"iss": iss, "aud": AUD, "iat": now, "exp": now + lifetime});
        if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
            c.extend(extra.clone());
        }
        c
    }

    async fn post_assertion(sb: &Sandbox, assertion: &str) -> (u16, Value) {
        let resp = client()
            .post(sb.token_url())
            .form(&[("grant_type", JWT_BEARER), ("assertion", assertion)])
            .send()
            .await
            .expect("send");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("json"))
    }

    fn grant_err(desc: &str) -> Value {
        json!({"error": "invalid_grant", "error_description": desc})
    }

    #[tokio::test]
    async fn valid_assertion_gets_an_id_token_and_nothing_else() {
        let sb = sandbox().await;
        let info = sb.create_service_account(SA);
        let key = sb.create_key(SA);
        let a = sign_assertion(
            &key.json,
            Some(&key.private_key_id),
            &claims(SA, json!({"target_audience": "https://fn"}), 0, 3600),
        );
        let (status, body) = post_assertion(&sb, &a).await;
        assert_eq!(status, 200, "{body}");
        let obj = body.as_object().expect("object");
        assert_eq!(obj.len(), 1, "only id_token: {body}");
        let token = obj["id_token"].as_str().expect("id_token");
        let header = jsonwebtoken::decode_header(token).expect("header");
        assert_eq!(header.kid, Some(sb.google_signing_kid()));
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        let c = sb.verify_id_token(token, "https://fn").expect("verifies");
        assert_eq!(c.iss, "https://accounts.google.com");
        assert_eq!(c.aud, "https://fn");
        assert_eq!(c.sub, info.unique_id);
        assert_eq!(c.azp, info.unique_id);
        assert_eq!(c.email.as_deref(), Some(SA));
        assert_eq!(c.email_verified, Some(true));
        assert_eq!(c.exp - c.iat, 3600);
        assert_eq!(sb.id_tokens_minted(SA), 1);
        assert_eq!(sb.access_tokens_minted(SA), 0);
    }

    #[tokio::test]
    async fn own_token_url_audience_and_missing_kid_are_accepted() {
        let sb = sandbox().await;
        let key = sb.create_key(SA);
        let mut c = claims(SA, json!({"target_audience": "x"}), 0, 3600);
        c["aud"] = json!(sb.token_url());
        let a = sign_assertion(&key.json, None, &c);
        let (status, body) = post_assertion(&sb, &a).await;
        assert_eq!(status, 200, "{body}");
    }

    #[tokio::test]
    async fn scope_grant_gets_an_access_token() {
        let sb = sandbox().await;
        let key = sb.create_key(SA);
        let a = sign_assertion(
            &key.json,
            Some(&key.private_key_id),
            &claims(
                SA,
                json!({"scope": "https://www.googleapis.com/auth/cloud-platform"}),
                0,
                3600,
            ),
        );
        let (status, body) = post_assertion(&sb, &a).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["expires_in"], 3599);
        assert_eq!(body["token_type"], "Bearer");
        let token = body["access_token"].as_str().expect("token");
        assert!(token.starts_with("ya29."));
        assert_eq!(sb.access_tokens_minted(SA), 1);
        assert_eq!(sb.state.access_token_owner(token).as_deref(), Some(SA));
    }

    #[tokio::test]
    async fn bad_assertions_get_googles_errors() {
        let sb = sandbox().await;
        let key = sb.create_key(SA);
        let other = sb.create_key("other@sandbox-project.iam.gserviceaccount.com");
        let kid = Some(key.private_key_id.as_str());
        let ta = json!({"target_audience": "https://fn"});

        // Unknown kid.
        let a = sign_assertion(&key.json, Some("nope"), &claims(SA, ta.clone(), 0, 3600));
        assert_eq!(
            post_assertion(&sb, &a).await,
            (400, grant_err(INVALID_SIGNATURE))
        );
        // Signed by another account's key (iss is SA, kid is SA's).
        let a = sign_assertion(&other.json, kid, &claims(SA, ta.clone(), 0, 3600));
        assert_eq!(
            post_assertion(&sb, &a).await,
            (400, grant_err(INVALID_SIGNATURE))
        );
        // iss names an account that does not hold the key.
        let a = sign_assertion(
            &key.json,
            kid,
            &claims(
                "other@sandbox-project.iam.gserviceaccount.com",
                ta.clone(),
                0,
                3600,
            ),
        );
        assert_eq!(
            post_assertion(&sb, &a).await,
            (400, grant_err(INVALID_SIGNATURE))
        );
        // iss unknown.
        let a = sign_assertion(&key.json, kid, &claims("ghost@x.com", ta.clone(), 0, 3600));
        assert_eq!(
            post_assertion(&sb, &a).await,
            (400, grant_err(ACCOUNT_NOT_FOUND))
        );
        // Wrong aud.
        let mut c = claims(SA, ta.clone(), 0, 3600);
        c["aud"] = json!("https://example.com/token");
        let a = sign_assertion(&key.json, kid, &c);
        let (status, body) = post_assertion(&sb, &a).await;
        assert_eq!(status, 400);
        assert_eq!(
            body["error_description"],
            "Invalid JWT: Failed audience check. The right audience is https://oauth2.googleapis.com/token"
        );
        // Two-hour lifetime.
        let a = sign_assertion(&key.json, kid, &claims(SA, ta.clone(), 0, 7200));
        assert_eq!(
            post_assertion(&sb, &a).await,
            (400, grant_err(BAD_TIMEFRAME))
        );
        // iat an hour in the future.
        let a = sign_assertion(&key.json, kid, &claims(SA, ta.clone(), 3600, 3600));
        assert_eq!(
            post_assertion(&sb, &a).await,
            (400, grant_err(BAD_TIMEFRAME))
        );
        // Expired.
        let a = sign_assertion(&key.json, kid, &claims(SA, ta.clone(), -7200, 3600));
        assert_eq!(
            post_assertion(&sb, &a).await,
            (400, grant_err(BAD_TIMEFRAME))
        );
        // Neither target_audience nor scope.
        let a = sign_assertion(&key.json, kid, &claims(SA, json!({}), 0, 3600));
        assert_eq!(
            post_assertion(&sb, &a).await,
            (
                400,
                json!({"error": "invalid_scope", "error_description": "Invalid OAuth scope or ID token audience provided."})
            )
        );
        // Domain-wide delegation is not enabled.
        let a = sign_assertion(
            &key.json,
            kid,
            &claims(
                SA,
                json!({"sub": "alice@example.com", "scope": "s"}),
                0,
                3600,
            ),
        );
        let (status, body) = post_assertion(&sb, &a).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("unauthorized_client"))
        );
        // Deleted key, then disabled account.
        let good = sign_assertion(&key.json, kid, &claims(SA, ta.clone(), 0, 3600));
        sb.delete_key(SA, &key.private_key_id);
        assert_eq!(
            post_assertion(&sb, &good).await,
            (400, grant_err(INVALID_SIGNATURE))
        );
        sb.disable_service_account(SA);
        assert_eq!(
            post_assertion(&sb, &good).await,
            (400, grant_err(ACCOUNT_NOT_FOUND))
        );
        // Garbage assertion.
        let (status, body) = post_assertion(&sb, "not.a.jwt").await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_request"))
        );
        assert_eq!(sb.id_tokens_minted(SA), 0);
    }

    #[tokio::test]
    async fn wrong_grant_type_and_missing_assertion() {
        let sb = sandbox().await;
        let resp = client()
            .post(sb.token_url())
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 400);
        let body: Value = resp.json().await.expect("json");
        assert_eq!(
            body,
            json!({"error": "unsupported_grant_type", "error_description": "Invalid grant_type: client_credentials"})
        );
        let resp = client()
            .post(sb.token_url())
            .form(&[("grant_type", JWT_BEARER)])
            .send()
            .await
            .expect("send");
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["error"], "invalid_request");
        let resp = client()
            .post(sb.token_url())
            .body(vec![b'a'; MAX_FORM_BYTES + 1])
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 400);
    }

    /// Whatever arrives, the endpoint answers a Google error and never panics.
    #[test]
    fn garbage_never_panics() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        let sb = rt.block_on(sandbox());
        sb.create_key(SA);
        let strategy = (
            proptest::collection::vec(any::<u8>(), 0..512),
            proptest::collection::vec("[A-Za-z0-9_=-]{0,40}", 0..5),
        );
        let mut runner = TestRunner::new(Config::with_cases(512));
        runner
            .run(&strategy, |(form, segments)| {
                prop_assert!(grant(&sb.state, &form).is_err());
                let form = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("grant_type", JWT_BEARER)
                    .append_pair("assertion", &segments.join("."))
                    .finish();
                let err = grant(&sb.state, form.as_bytes()).expect_err("garbage is refused");
                prop_assert_eq!(err.status, StatusCode::BAD_REQUEST);
                Ok(())
            })
            .expect("no input gets a token or a panic");
    }

    #[tokio::test]
    async fn certs_publish_the_signing_key_in_both_forms() {
        let sb = sandbox().await;
        let jwks: Value = client()
            .get(sb.jwks_url())
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        let kid = sb.google_signing_kid();
        let key = &jwks["keys"][0];
        assert_eq!(key["kid"], kid.as_str());
        assert_eq!(key["kty"], "RSA");
        assert_eq!(key["alg"], "RS256");
        assert_eq!(key["use"], "sig");
        assert_eq!(key["e"], "AQAB");
        let dk = jsonwebtoken::DecodingKey::from_rsa_components(
            key["n"].as_str().expect("n"),
            key["e"].as_str().expect("e"),
        )
        .expect("jwk");
        sb.create_service_account(SA);
        let token = sb.mint_id_token(SA, "aud").expect("mint");
        let mut v = Validation::new(Algorithm::RS256);
        v.set_audience(&["aud"]);
        jsonwebtoken::decode::<Value>(&token, &dk, &v).expect("JWKS key verifies the token");

        let pems: Value = client()
            .get(sb.pem_certs_url())
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        let pem = pems[&kid].as_str().expect("cert for kid");
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(pem.ends_with("-----END CERTIFICATE-----\n"));

        sb.rotate_google_signing_key();
        let jwks: Value = client()
            .get(sb.jwks_url())
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(2));
    }
}

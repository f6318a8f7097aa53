//! IAM Credentials (`iamcredentials.googleapis.com`): `generateIdToken` and
//! `generateAccessToken` for service-account impersonation, with Token Creator
//! checks along the delegation chain.
//!
//! Callers authenticate with an access token this sandbox issued; every failure
//! uses Google's JSON error shape. It must never mint a token for a caller that
//! lacks Token Creator on the target (directly or through the delegates).

use std::sync::Arc;

use axum::Json;
use axum::Router;

use super::api_error::ApiError;
use axum::body::Body;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::json;

use super::{IdTokenFormat, State};

const MAX_BODY_BYTES: usize = 64 * 1024;
const UNAUTHENTICATED: &str = "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.";

pub(crate) fn router(state: Arc<State>) -> Router {
    Router::new()
        .route(
            "/v1/projects/{project}/serviceAccounts/{name}",
            post(handle),
        )
        .with_state(state)
}

impl ApiError {
    fn denied(permission: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            format!("Permission '{permission}' denied on resource (or it may not exist)."),
        )
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IdTokenRequest {
    #[serde(default)]
    audience: String,
    #[serde(default)]
    include_email: bool,
    #[serde(default, deserialize_with = "null_is_empty")]
    delegates: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct AccessTokenRequest {
    #[serde(default, deserialize_with = "null_is_empty")]
    scope: Vec<String>,
    #[serde(default)]
    lifetime: Option<String>,
    #[serde(default, deserialize_with = "null_is_empty")]
    delegates: Vec<String>,
}

/// A repeated field sent as `null` is empty, as Google's JSON mapping of
/// protobuf reads it (google-auth sends `"delegates": null`).
fn null_is_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

enum Method {
    IdToken,
    AccessToken,
}

impl Method {
    fn permission(&self) -> &'static str {
        match self {
            Method::IdToken => "iam.serviceAccounts.getOpenIdToken",
            Method::AccessToken => "iam.serviceAccounts.getAccessToken",
        }
    }
}

async fn handle(
    AxState(state): AxState<Arc<State>>,
    Path((_project, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "INVALID_ARGUMENT",
                "Request payload size exceeds the limit.",
            )
            .into_response();
        }
    };
    match dispatch(&state, &name, &headers, &body) {
        Ok(v) => (StatusCode::OK, Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

fn dispatch(
    state: &State,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<serde_json::Value, ApiError> {
    let (email, verb) = name
        .rsplit_once(':')
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "Not Found"))?;
    let method = match verb {
        "generateIdToken" => Method::IdToken,
        "generateAccessToken" => Method::AccessToken,
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                "Not Found",
            ));
        }
    };
    let caller = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| state.access_token_owner(t.trim()))
        .ok_or_else(|| {
            ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", UNAUTHENTICATED)
        })?;

    let parse_err =
        |e: serde_json::Error| ApiError::invalid(format!("Invalid JSON payload received. {e}"));
    match method {
        Method::IdToken => {
            let req: IdTokenRequest = serde_json::from_slice(body).map_err(parse_err)?;
            if req.audience.trim().is_empty() {
                return Err(ApiError::invalid("Request contains an invalid argument."));
            }
            authorize(state, &caller, &req.delegates, email, &method)?;
            let format = if req.include_email {
                IdTokenFormat::WithEmail
            } else {
                IdTokenFormat::Standard
            };
            let token = state
                .mint_id_token(email, &req.audience, format)
                .map_err(|_| not_found(email))?;
            Ok(json!({ "token": token }))
        }
        Method::AccessToken => {
            let req: AccessTokenRequest = serde_json::from_slice(body).map_err(parse_err)?;
            if req.scope.is_empty() {
                return Err(ApiError::invalid("Scope required."));
            }
            let lifetime = match req.lifetime.as_deref() {
                None => 3600,
                Some(l) => l
                    .strip_suffix('s')
                    .and_then(|n| n.parse::<f64>().ok())
                    .filter(|n| *n > 0.0 && *n <= 3600.0)
                    .map(|n| n as i64)
                    .ok_or_else(|| {
                        ApiError::invalid(format!("The lifetime {l} is invalid or exceeds 3600s."))
                    })?,
            };
            authorize(state, &caller, &req.delegates, email, &method)?;
            let (token, expires_at) = state.mint_access_token(email, lifetime);
            Ok(json!({
                "accessToken": token,
                "expireTime": State::rfc3339(expires_at),
            }))
        }
    }
}

fn not_found(email: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("Not found; Gaia id not found for email {email}"),
    )
}

/// Walk caller → delegates… → target: each must hold Token Creator on the next.
fn authorize(
    state: &State,
    caller: &str,
    delegates: &[String],
    target: &str,
    method: &Method,
) -> Result<(), ApiError> {
    let mut chain = Vec::with_capacity(delegates.len() + 1);
    for d in delegates {
        let email = d
            .strip_prefix("projects/-/serviceAccounts/")
            .filter(|e| e.contains('@'))
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "Delegate {d} must be of the form projects/-/serviceAccounts/EMAIL."
                ))
            })?;
        chain.push(email);
    }
    chain.push(target);
    let inner = state.lock();
    match inner.accounts.get(target) {
        None => return Err(not_found(target)),
        Some(a) if a.disabled => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "FAILED_PRECONDITION",
                "Precondition check failed.",
            ));
        }
        Some(_) => {}
    }
    let mut member = caller;
    for next in chain {
        let allowed = inner
            .active_account(next)
            .is_some_and(|a| a.token_creators.contains(member));
        if !allowed {
            return Err(ApiError::denied(method.permission()));
        }
        member = next;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Sandbox;
    use super::super::test_support::*;
    use super::*;
    use serde_json::Value;

    const TARGET: &str = "target@sandbox-project.iam.gserviceaccount.com";
    const DELEGATE: &str = "delegate@sandbox-project.iam.gserviceaccount.com";

    async fn call(
        sb: &Sandbox,
        verb: &str,
        email: &str,
        token: Option<&str>,
        body: Value,
    ) -> (u16, Value) {
        let mut req = client()
            .post(format!(
                "{}/v1/projects/-/serviceAccounts/{email}:{verb}",
                sb.iam_credentials_url()
            ))
            .json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("send");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("json"))
    }

    #[tokio::test]
    async fn generate_id_token_needs_token_creator() {
        let sb = sandbox().await;
        sb.create_service_account(SA);
        let target = sb.create_service_account(TARGET);
        let (caller_token, _) = sb.state.mint_access_token(SA, 3600);
        let body = json!({"audience": "https://fn", "includeEmail": true});

        let (status, v) = call(
            &sb,
            "generateIdToken",
            TARGET,
            Some(&caller_token),
            body.clone(),
        )
        .await;
        assert_eq!(status, 403);
        assert_eq!(
            v,
            json!({"error": {"code": 403, "message": "Permission 'iam.serviceAccounts.getOpenIdToken' denied on resource (or it may not exist).", "status": "PERMISSION_DENIED"}})
        );

        sb.grant_token_creator(TARGET, SA);
        let (status, v) = call(&sb, "generateIdToken", TARGET, Some(&caller_token), body).await;
        assert_eq!(status, 200, "{v}");
        let token = v["token"].as_str().expect("token");
        let c = sb.verify_id_token(token, "https://fn").expect("verifies");
        assert_eq!(c.email.as_deref(), Some(TARGET));
        assert_eq!(c.sub, target.unique_id);
        assert_eq!(sb.id_tokens_minted(TARGET), 1);

        let (status, v) = call(
            &sb,
            "generateIdToken",
            TARGET,
            Some(&caller_token),
            json!({"audience": "https://fn"}),
        )
        .await;
        assert_eq!(status, 200);
        let c = sb
            .verify_id_token(v["token"].as_str().expect("token"), "https://fn")
            .expect("verifies");
        assert_eq!(c.email, None, "no email without includeEmail");
        assert_eq!(c.email_verified, None);
    }

    #[tokio::test]
    async fn authentication_and_argument_errors() {
        let sb = sandbox().await;
        sb.create_service_account(SA);
        sb.grant_token_creator(TARGET, SA);
        let body = json!({"audience": "https://fn"});
        let unauth = json!({"error": {"code": 401, "message": UNAUTHENTICATED, "status": "UNAUTHENTICATED"}});
        assert_eq!(
            call(&sb, "generateIdToken", TARGET, None, body.clone()).await,
            (401, unauth.clone())
        );
        assert_eq!(
            call(
                &sb,
                "generateIdToken",
                TARGET,
                Some("ya29.forged"),
                body.clone()
            )
            .await,
            (401, unauth.clone())
        );
        let (token, _) = sb.state.mint_access_token(SA, 3600);
        sb.set_clock(crate::clock::Clock::system().skewed(3601));
        assert_eq!(
            call(&sb, "generateIdToken", TARGET, Some(&token), body.clone()).await,
            (401, unauth)
        );
        sb.set_clock(crate::clock::Clock::system());

        let (status, v) = call(&sb, "generateIdToken", TARGET, Some(&token), json!({})).await;
        assert_eq!(
            (status, v["error"]["status"].as_str()),
            (400, Some("INVALID_ARGUMENT"))
        );
        let (status, v) = call(
            &sb,
            "generateIdToken",
            "nobody@sandbox-project.iam.gserviceaccount.com",
            Some(&token),
            body,
        )
        .await;
        assert_eq!(
            (status, v["error"]["status"].as_str()),
            (404, Some("NOT_FOUND"))
        );
    }

    #[tokio::test]
    async fn delegation_chain_is_checked_link_by_link() {
        let sb = sandbox().await;
        sb.create_service_account(SA);
        sb.create_service_account(TARGET);
        let (token, _) = sb.state.mint_access_token(SA, 3600);
        let body = json!({
            "audience": "https://fn",
            "delegates": [format!("projects/-/serviceAccounts/{DELEGATE}")],
        });
        sb.grant_token_creator(DELEGATE, SA);
        let (status, _) = call(&sb, "generateIdToken", TARGET, Some(&token), body.clone()).await;
        assert_eq!(status, 403, "delegate is not Token Creator on the target");
        sb.grant_token_creator(TARGET, DELEGATE);
        let (status, v) = call(&sb, "generateIdToken", TARGET, Some(&token), body.clone()).await;
        assert_eq!(status, 200, "{v}");
        sb.revoke_token_creator(DELEGATE, SA);
        let (status, _) = call(&sb, "generateIdToken", TARGET, Some(&token), body).await;
        assert_eq!(status, 403, "caller is not Token Creator on the delegate");
    }

    #[tokio::test]
    async fn generate_access_token() {
        let sb = sandbox().await;
        sb.create_service_account(SA);
        sb.grant_token_creator(TARGET, SA);
        let (token, _) = sb.state.mint_access_token(SA, 3600);
        let (status, v) = call(
            &sb,
            "generateAccessToken",
            TARGET,
            Some(&token),
            json!({"scope": ["https://www.googleapis.com/auth/cloud-platform"], "lifetime": "600s"}),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        let access = v["accessToken"].as_str().expect("accessToken");
        assert!(access.starts_with("ya29."));
        assert!(v["expireTime"].as_str().expect("expireTime").ends_with('Z'));
        assert_eq!(sb.state.access_token_owner(access).as_deref(), Some(TARGET));
        assert_eq!(sb.access_tokens_minted(TARGET), 1);
        let (status, v) = call(
            &sb,
            "generateAccessToken",
            TARGET,
            Some(&token),
            json!({"scope": ["s"], "lifetime": "7200s"}),
        )
        .await;
        assert_eq!(
            (status, v["error"]["status"].as_str()),
            (400, Some("INVALID_ARGUMENT"))
        );
    }
}

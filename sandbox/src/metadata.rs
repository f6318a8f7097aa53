//! The GCE metadata server (`metadata.google.internal`, reached through
//! `GCE_METADATA_HOST`): the attached service account's email, access tokens
//! and ID tokens, and the project id.
//!
//! Like Google it insists on `Metadata-Flavor: Google`, refuses proxied
//! requests (`X-Forwarded-For`) and stamps `Metadata-Flavor: Google` on every
//! answer. It must not serve a service account that is not attached.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{IdTokenFormat, State, TOKEN_LIFETIME_SECS};

const V1: &str = "/computeMetadata/v1/";
const DEFAULT_SCOPES: &str = "https://www.googleapis.com/auth/cloud-platform\nhttps://www.googleapis.com/auth/userinfo.email\n";

pub(crate) fn router(state: Arc<State>) -> Router {
    Router::new().fallback(handle).with_state(state)
}

async fn handle(
    AxState(state): AxState<Arc<State>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    // Parsed by hand so a malformed query still gets a metadata-style answer.
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let mut resp = answer(&state, &method, &uri, &headers, &query);
    let token_path = uri.path().ends_with("/token") || uri.path().ends_with("/identity");
    if !(token_path && state.lock().metadata_drops_flavor) {
        resp.headers_mut()
            .insert("metadata-flavor", HeaderValue::from_static("Google"));
    }
    resp.headers_mut().insert(
        header::SERVER,
        HeaderValue::from_static("Metadata Server for VM"),
    );
    resp
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/text")],
        body.into(),
    )
        .into_response()
}

fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "Not Found\n")
}

fn answer(
    state: &State,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Response {
    if headers.contains_key("x-forwarded-for") {
        return text(
            StatusCode::FORBIDDEN,
            "Request had an X-Forwarded-For header and cannot be served.\n",
        );
    }
    let flavor_ok = headers
        .get("metadata-flavor")
        .is_some_and(|v| v.as_bytes() == b"Google")
        || headers
            .get("x-google-metadata-request")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    let path = uri.path();
    if path == "/" {
        // The ping google-auth libraries send to detect GCE.
        return text(StatusCode::OK, "computeMetadata/\n");
    }
    if !flavor_ok {
        return text(
            StatusCode::FORBIDDEN,
            "Missing required header \"Metadata-Flavor\": \"Google\"\n",
        );
    }
    if method != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
    }
    let Some(rest) = path.strip_prefix(V1) else {
        return not_found();
    };
    match rest {
        "project/project-id" => return text(StatusCode::OK, state.project_id.clone()),
        "project/numeric-project-id" => {
            return text(StatusCode::OK, state.project_number.clone());
        }
        _ => {}
    }
    let Some(sa_path) = rest.strip_prefix("instance/service-accounts/") else {
        return not_found();
    };
    let attached = state.lock().metadata_account.clone();
    let Some(email) = attached else {
        return not_found();
    };
    if sa_path.is_empty() {
        return text(StatusCode::OK, format!("default/\n{email}/\n"));
    }
    let (account, leaf) = sa_path.split_once('/').unwrap_or((sa_path, ""));
    if account != "default" && account != email {
        return not_found();
    }
    match leaf {
        "" => {
            if query.get("recursive").is_some_and(|v| v == "true") {
                axum::Json(json!({
                    "aliases": ["default"],
                    "email": email,
                    "scopes": DEFAULT_SCOPES.lines().collect::<Vec<_>>(),
                }))
                .into_response()
            } else {
                text(StatusCode::OK, "aliases\nemail\nidentity\nscopes\ntoken\n")
            }
        }
        "email" => text(StatusCode::OK, email),
        "aliases" => text(StatusCode::OK, "default\n"),
        "scopes" => text(StatusCode::OK, DEFAULT_SCOPES),
        "token" => {
            let (token, _) = state.mint_access_token(&email, TOKEN_LIFETIME_SECS);
            axum::Json(json!({
                "access_token": token,
                "expires_in": TOKEN_LIFETIME_SECS - 1,
                "token_type": "Bearer",
            }))
            .into_response()
        }
        "identity" => {
            let Some(audience) = query.get("audience").filter(|a| !a.is_empty()) else {
                return text(
                    StatusCode::BAD_REQUEST,
                    "non-empty audience parameter required\n",
                );
            };
            let format = match query.get("format").map(String::as_str) {
                None | Some("standard") => IdTokenFormat::Standard,
                Some("full") => IdTokenFormat::Full,
                Some(_) => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        "format parameter must be 'standard' or 'full'\n",
                    );
                }
            };
            match state.mint_id_token(&email, audience, format) {
                Ok(token) => text(StatusCode::OK, token),
                Err(_) => not_found(),
            }
        }
        _ => not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Sandbox;
    use super::super::test_support::*;

    fn url(sb: &Sandbox, path: &str) -> String {
        format!("http://{}{path}", sb.metadata_host())
    }

    async fn get(sb: &Sandbox, path: &str, flavor: bool) -> (u16, Option<String>, String) {
        let mut req = client().get(url(sb, path));
        if flavor {
            req = req.header("Metadata-Flavor", "Google");
        }
        let resp = req.send().await.expect("send");
        let flavor = resp
            .headers()
            .get("metadata-flavor")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (
            resp.status().as_u16(),
            flavor,
            resp.text().await.expect("text"),
        )
    }

    #[tokio::test]
    async fn header_is_required_and_proxies_are_refused() {
        let sb = sandbox().await;
        sb.attach_metadata_account(Some(SA));
        let (status, flavor, _) = get(
            &sb,
            "/computeMetadata/v1/instance/service-accounts/default/email",
            false,
        )
        .await;
        assert_eq!((status, flavor.as_deref()), (403, Some("Google")));
        let resp = client()
            .get(url(
                &sb,
                "/computeMetadata/v1/instance/service-accounts/default/email",
            ))
            .header("Metadata-Flavor", "Google")
            .header("X-Forwarded-For", "10.0.0.1")
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), 403);
        assert_eq!(get(&sb, "/", false).await.0, 200);
    }

    #[tokio::test]
    async fn serves_email_project_tokens_and_identity() {
        let sb = sandbox().await;
        let info = sb.create_service_account(SA);
        sb.attach_metadata_account(Some(SA));
        let base = "/computeMetadata/v1/instance/service-accounts";
        assert_eq!(
            get(&sb, &format!("{base}/default/email"), true).await,
            (200, Some("Google".into()), SA.to_owned())
        );
        assert_eq!(
            get(&sb, "/computeMetadata/v1/project/project-id", true)
                .await
                .2,
            "sandbox-project"
        );

        let (status, _, token) = get(
            &sb,
            &format!("{base}/default/identity?audience=https://fn"),
            true,
        )
        .await;
        assert_eq!(status, 200);
        let c = sb.verify_id_token(&token, "https://fn").expect("verifies");
        assert_eq!(c.sub, info.unique_id);
        assert_eq!(c.email, None, "format=standard carries no email");

        let (status, _, token) = get(
            &sb,
            &format!("{base}/{SA}/identity?audience=https://fn&format=full"),
            true,
        )
        .await;
        assert_eq!(status, 200);
        let c = sb.verify_id_token(&token, "https://fn").expect("verifies");
        assert_eq!(c.email.as_deref(), Some(SA));
        assert!(c.google.is_some());
        assert_eq!(sb.id_tokens_minted(SA), 2);

        let (status, _, body) = get(&sb, &format!("{base}/default/identity"), true).await;
        assert_eq!(
            (status, body.as_str()),
            (400, "non-empty audience parameter required\n")
        );

        let (status, _, body) = get(&sb, &format!("{base}/default/token"), true).await;
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert!(
            v["access_token"]
                .as_str()
                .expect("tok")
                .starts_with("ya29.")
        );
        assert_eq!(v["token_type"], "Bearer");
        assert_eq!(sb.access_tokens_minted(SA), 1);

        let (status, _, _) = get(&sb, &format!("{base}/someone@else/email"), true).await;
        assert_eq!(status, 404);
    }

    #[tokio::test]
    async fn vm_without_service_account_answers_404() {
        let sb = sandbox().await;
        let base = "/computeMetadata/v1/instance/service-accounts/default";
        assert_eq!(
            get(&sb, &format!("{base}/identity?audience=a"), true)
                .await
                .0,
            404
        );
        assert_eq!(get(&sb, &format!("{base}/token"), true).await.0, 404);
        sb.attach_metadata_account(Some(SA));
        assert_eq!(
            get(&sb, &format!("{base}/identity?audience=a"), true)
                .await
                .0,
            200
        );
        sb.attach_metadata_account(None);
        assert_eq!(get(&sb, &format!("{base}/token"), true).await.0, 404);
    }
}

//! Google's API error answer, `{"error":{"code","message","status"}}` (with
//! `WWW-Authenticate` on 401), shared by the sandbox's Google API emulations.
//! Each service adds its own constructors for its own error texts.
//!
//! It must answer exactly in Google's shape: clients parse it.

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) code: StatusCode,
    pub(crate) message: String,
    pub(crate) status: &'static str,
}

impl ApiError {
    pub(crate) fn new(code: StatusCode, status: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            status,
        }
    }
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
    }
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.code,
            Json(json!({"error": {"code": self.code.as_u16(), "message": self.message, "status": self.status}})),
        )
            .into_response();
        if self.code == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"https://accounts.google.com/\""),
            );
        }
        resp
    }
}

//! The sandbox: Google (and later the control plane) on 127.0.0.1.
//!
//! Everything binds port 0 and is started in-process by tests, the demo and
//! `grantbridge sandbox`. It must never be reachable from production code paths.

// Placeholder until the sandbox branch lands: the CLI's types.
#[derive(Debug, thiserror::Error)]
#[error("sandbox: {0}")]
pub struct SandboxError(pub String);

pub struct StandaloneArgs {
    pub dir: std::path::PathBuf,
    pub service_account: String,
    pub functions: Vec<(String, Option<url::Url>)>,
}

pub async fn run_standalone(
    _args: StandaloneArgs,
    _shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), SandboxError> {
    Err(SandboxError("not built yet".into()))
}

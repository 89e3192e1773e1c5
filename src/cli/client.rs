//! A small client for the engine's API, used by the CLI commands.

use reqwest::StatusCode;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the engine at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("{message} ({status})")]
    Refused { status: u16, message: String },
}

impl ClientError {
    /// Errors the user fixes by changing how they call us.
    pub fn is_usage(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            ClientError::Refused { status, .. } => matches!(status, 400 | 401 | 404),
        }
    }
}

pub struct ApiClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl ApiClient {
    pub fn new(base: &str, token: Option<String>) -> ApiClient {
        ApiClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder, path: &str) -> Result<Value, ClientError> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            url: format!("{}{path}", self.base),
            message: e.to_string(),
        })?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let message = body["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
        let message = if status == StatusCode::UNAUTHORIZED {
            format!("{message}: set NOODLE_MIGRATE_API_TOKEN")
        } else {
            message
        };
        Err(ClientError::Refused {
            status: status.as_u16(),
            message,
        })
    }

    pub async fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.send(self.http.get(format!("{}{path}", self.base)), path)
            .await
    }

    pub async fn post(&self, path: &str, body: Option<Value>) -> Result<Value, ClientError> {
        let req = self.http.post(format!("{}{path}", self.base));
        let req = match body {
            Some(b) => req.json(&b),
            None => req,
        };
        self.send(req, path).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.send(self.http.delete(format!("{}{path}", self.base)), path)
            .await
    }
}

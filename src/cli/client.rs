//! A small client for the engine's API, used by the CLI commands. It reads
//! answers into the server's own body types, so a field the server does
//! not send cannot be printed.

use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the engine at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("{message} ({status})")]
    Refused { status: u16, message: String },
    #[error("the engine's answer to {path} cannot be read: {message}")]
    Unreadable { path: String, message: String },
}

impl ClientError {
    /// Errors the user fixes by changing how they call us.
    pub fn is_usage(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } => true,
            ClientError::Refused { status, .. } => matches!(status, 400 | 401 | 404),
            ClientError::Unreadable { .. } => false,
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

    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        path: &str,
    ) -> Result<T, ClientError> {
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
            return serde_json::from_value(body).map_err(|e| ClientError::Unreadable {
                path: path.to_string(),
                message: e.to_string(),
            });
        }
        Err(Self::refused(status, &body))
    }

    /// A GET whose body is handed over piece by piece as it arrives.
    pub async fn stream(&self, path: &str, mut each: impl FnMut(&[u8])) -> Result<(), ClientError> {
        let req = self.http.get(format!("{}{path}", self.base));
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let unreachable = |e: reqwest::Error| ClientError::Unreachable {
            url: format!("{}{path}", self.base),
            message: e.to_string(),
        };
        let mut resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        if !status.is_success() {
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            return Err(Self::refused(status, &body));
        }
        while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
            each(&chunk);
        }
        Ok(())
    }

    fn refused(status: StatusCode, body: &Value) -> ClientError {
        let message = body["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
        let message = if status == StatusCode::UNAUTHORIZED {
            format!("{message}: set NOODLE_MIGRATE_API_TOKEN")
        } else {
            message
        };
        ClientError::Refused {
            status: status.as_u16(),
            message,
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(self.http.get(format!("{}{path}", self.base)), path)
            .await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Option<&Value>,
    ) -> Result<T, ClientError> {
        let req = self.http.post(format!("{}{path}", self.base));
        let req = match body {
            Some(b) => req.json(b),
            None => req,
        };
        self.send(req, path).await
    }

    pub async fn patch<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
    ) -> Result<T, ClientError> {
        let req = self.http.patch(format!("{}{path}", self.base)).json(body);
        self.send(req, path).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(self.http.delete(format!("{}{path}", self.base)), path)
            .await
    }
}

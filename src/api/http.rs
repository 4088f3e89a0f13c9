//! HTTP implementation of [`super::MediaClient`] (filled in by the client work).

/// Connection settings of the HTTP client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub base_url: String,
    pub token: String,
}

/// The reqwest-based client.
pub struct HttpClient {
    _config: ClientConfig,
}

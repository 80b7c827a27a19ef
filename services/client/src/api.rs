//! The few gRPC API calls the client needs.

use tern_proto::api::IssueDevTokenRequest;
use tern_proto::api::tern_client::TernClient;
use tonic::transport::Endpoint;

use crate::ClientError;
use crate::client::DEFAULT_REQUEST_TIMEOUT;

/// Default address of the gRPC API.
pub const DEFAULT_API_ADDR: &str = "http://127.0.0.1:7402";

/// Asks the API at `api_addr` (`http://host:port`, or `host:port`) for a
/// token for `user`, with the server's default lifetime. Only a server in
/// dev mode issues them (otherwise `ClientError::Api` with `PermissionDenied`).
pub async fn dev_token(api_addr: &str, user: &str) -> Result<String, ClientError> {
    dev_token_with_ttl(api_addr, user, 0).await
}

/// [`dev_token`] with a lifetime in seconds (0: the server's default).
pub async fn dev_token_with_ttl(
    api_addr: &str,
    user: &str,
    ttl_seconds: u64,
) -> Result<String, ClientError> {
    let mut api = connect_api(api_addr).await?;
    let response = api
        .issue_dev_token(IssueDevTokenRequest {
            user: user.to_string(),
            ttl_seconds,
        })
        .await?;
    Ok(response.into_inner().token)
}

/// A gRPC client for the API at `api_addr`, with the default timeouts.
pub async fn connect_api(
    api_addr: &str,
) -> Result<TernClient<tonic::transport::Channel>, ClientError> {
    Ok(TernClient::new(
        api_channel(api_addr, Some(DEFAULT_REQUEST_TIMEOUT)).await?,
    ))
}

/// A connection to the API at `api_addr`; `timeout` bounds each call
/// (None: calls may stream for as long as they need, like an export).
pub(crate) async fn api_channel(
    api_addr: &str,
    timeout: Option<std::time::Duration>,
) -> Result<tonic::transport::Channel, ClientError> {
    let url = if api_addr.contains("://") {
        api_addr.to_string()
    } else {
        format!("http://{api_addr}")
    };
    let unreachable = |reason: String| ClientError::ApiUnreachable {
        addr: url.clone(),
        reason,
    };
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| unreachable(format!("not a valid URL ({e})")))?
        .connect_timeout(DEFAULT_REQUEST_TIMEOUT);
    if let Some(t) = timeout {
        endpoint = endpoint.timeout(t);
    }
    endpoint
        .connect()
        .await
        .map_err(|e| unreachable(error_chain(&e)))
}

/// An error and its causes, joined: tonic's transport error alone just says
/// "transport error". Causes that repeat the previous one are left out.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: &'static str,
        #[source]
        cause: Option<Box<Layer>>,
    }

    fn layer(text: &'static str, cause: Option<Layer>) -> Layer {
        Layer {
            text,
            cause: cause.map(Box::new),
        }
    }

    #[test]
    fn error_chain_joins_causes_without_repeats() {
        let err = layer(
            "transport error",
            Some(layer(
                "tcp connect error",
                Some(layer("tcp connect error", Some(layer("refused", None)))),
            )),
        );
        assert_eq!(
            error_chain(&err),
            "transport error: tcp connect error: refused"
        );
    }

    #[tokio::test]
    async fn an_unreachable_api_is_reported_with_its_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let err = dev_token(&addr, "alice").await.unwrap_err();
        let ClientError::ApiUnreachable { addr: reported, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(reported, &format!("http://{addr}"));
    }
}

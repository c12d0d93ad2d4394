//! `rest_client_requests_total{code,host,method}` for keel's API client: a tower layer in the
//! kube client's stack that counts every request by method and answer code (`<error>` when no
//! answer came, as client-go's metrics adapter).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use crate::metrics;

/// The code recorded for a request that got no HTTP answer.
const NO_ANSWER: &str = "<error>";

/// Counts the requests of the service it wraps.
#[derive(Clone, Debug)]
pub struct RestMetricsLayer {
    host: Arc<str>,
}

impl RestMetricsLayer {
    /// `host` is the API server's `host:port`, the series' `host` label.
    pub fn new(host: impl Into<Arc<str>>) -> Self {
        Self { host: host.into() }
    }
}

impl<S> Layer<S> for RestMetricsLayer {
    type Service = RestMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RestMetrics {
            inner,
            host: self.host.clone(),
        }
    }
}

/// The counting service.
#[derive(Clone, Debug)]
pub struct RestMetrics<S> {
    inner: S,
    host: Arc<str>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for RestMetrics<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let method = req.method().as_str().to_string();
        let host = self.host.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            let code = match &res {
                Ok(r) => r.status().as_u16().to_string(),
                Err(_) => NO_ANSWER.to_string(),
            };
            metrics::global().rest_request(&method, &code, &host);
            res
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn requests_are_counted_by_method_and_code() {
        let host = "rest-test-host:6443";
        let ok = tower::service_fn(|req: http::Request<()>| async move {
            let status = if req.uri().path() == "/missing" { 404 } else { 200 };
            Ok::<_, std::io::Error>(http::Response::builder().status(status).body(()).unwrap())
        });
        let svc = RestMetricsLayer::new(host).layer(ok);
        let count = |method: &str, code: &str| {
            metrics::global()
                .rest_client_requests
                .get_or_create(&metrics::RestLabels {
                    code: code.into(),
                    host: host.into(),
                    method: method.into(),
                })
                .get()
        };
        let req = |m: &str, p: &str| http::Request::builder().method(m).uri(p).body(()).unwrap();
        svc.clone().oneshot(req("GET", "/api")).await.unwrap();
        svc.clone().oneshot(req("GET", "/missing")).await.unwrap();
        svc.clone().oneshot(req("PATCH", "/api")).await.unwrap();
        assert_eq!(count("GET", "200"), 1);
        assert_eq!(count("GET", "404"), 1);
        assert_eq!(count("PATCH", "200"), 1);
        let failing = tower::service_fn(|_: http::Request<()>| async {
            Err::<http::Response<()>, _>(std::io::Error::other("refused"))
        });
        let svc = RestMetricsLayer::new(host).layer(failing);
        assert!(svc.oneshot(req("PUT", "/x")).await.is_err());
        assert_eq!(count("PUT", "<error>"), 1);
    }
}

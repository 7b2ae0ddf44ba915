//! The HTTP client webhooks go out through. It connects only where `egress` allows: names
//! are resolved by it at every connection, IP literals judged before the request. It
//! follows no redirect (a receiver could send it anywhere) and takes no proxy from the
//! environment (a proxy would connect for it, to wherever it was told). How a POST went is
//! said in the words of `failure`; the transport's own error goes to the debug log only.

use std::{sync::Arc, time::Duration};

use url::Url;

use super::{failure::Failure, post::Outcome};
use crate::egress::Egress;

/// POSTs webhooks within the egress policy.
pub struct Sender {
    http: reqwest::Client,
    egress: Egress,
}

impl Sender {
    /// A client whose requests end after `timeout`.
    pub fn new(timeout: Duration, egress: Egress) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            // Shorter than the whole request, so that an absent host ends as a connection
            // failure, like a closed port, and not as the receiver's "timed out".
            .connect_timeout(timeout / 2)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(egress.clone()))
            .build()?;
        Ok(Self { http, egress })
    }

    /// POSTs `body` with `headers` to `url`: the 2xx status, or why not.
    pub async fn post(&self, url: &str, headers: Vec<(&'static str, String)>, body: Vec<u8>) -> Outcome {
        // Stored URLs were parsed at registration; one that no longer parses is not sent.
        let url = Url::parse(url).map_err(|_| Failure::Failed)?;
        self.egress.literal(&url).map_err(|_| Failure::Refused)?;
        let mut request = self.http.post(url);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.body(body).send().await.map_err(|error| {
            let failure = Failure::of(&error);
            // Without the URL, which may carry the receiver's token.
            tracing::debug!(error = ?error.without_url(), %failure, "webhook POST failed");
            failure
        })?;
        let status = response.status();
        if status.is_success() {
            Ok(status.as_u16())
        } else {
            Err(Failure::Status(status.as_u16()))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;
    use crate::{
        domain::destination::Destinations,
        egress::{Lookup, tests::Answers},
    };

    /// A receiver on loopback that answers every request with `response` (none: it never
    /// answers), and counts the connections it accepted.
    async fn receiver(response: Option<&'static str>) -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut request = vec![0; 65_536];
                    let _ = socket.read(&mut request).await;
                    match response {
                        Some(response) => {
                            let _ = socket.write_all(response.as_bytes()).await;
                        }
                        None => tokio::time::sleep(Duration::from_secs(60)).await,
                    }
                });
            }
        });
        (port, accepted)
    }

    const NO_CONTENT: &str = "HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

    fn sender(allowed: &str, lookup: Arc<dyn Lookup>) -> Sender {
        let destinations: Destinations = allowed.parse().expect("valid");
        Sender::new(Duration::from_secs(2), Egress::new(destinations, lookup)).expect("client")
    }

    async fn post(sender: &Sender, url: &str) -> Outcome {
        sender
            .post(url, vec![("x-test", "1".into())], b"{}".to_vec())
            .await
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_after_registration_is_never_posted_to() {
        let (port, accepted) = receiver(Some(NO_CONTENT)).await;
        let url = format!("http://receiver.test:{port}/hook");
        let answers = Arc::new(Answers::default());
        let production = sender("", answers.clone());

        // Registered while the name answered a public address...
        answers.answer(&["8.8.8.8"]);
        let registered = production.egress.vet(&Url::parse(&url).expect("url")).await;
        assert!(registered.is_ok());
        // ...it answers loopback at delivery: the attempt fails, and nothing connected.
        answers.answer(&["127.0.0.1"]);
        let outcome = post(&production, &url).await;
        assert_eq!(outcome, Err(Failure::Refused));
        assert_eq!(
            outcome.map_err(|f| f.to_string()),
            Err("destination refused by policy".to_owned())
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 0, "no connection was made");
        // Only the permitted answers are offered: a public one beside it would be used.

        // The same receiver, allowed for development, is reached: the refusal was policy's.
        let development = sender("127.0.0.1/32", answers);
        assert_eq!(post(&development, &url).await, Ok(204));
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn ip_literals_are_judged_before_any_connection() {
        let (port, accepted) = receiver(Some(NO_CONTENT)).await;
        let production = sender("", Arc::new(Answers::default()));
        for url in [
            format!("http://127.0.0.1:{port}/hook"),
            format!("http://[::ffff:127.0.0.1]:{port}/hook"),
            format!("http://2130706433:{port}/hook"),
        ] {
            assert_eq!(post(&production, &url).await, Err(Failure::Refused), "{url}");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 0);
        let development = sender("127.0.0.1/32", Arc::new(Answers::default()));
        assert_eq!(
            post(&development, &format!("http://127.0.0.1:{port}/hook")).await,
            Ok(204)
        );
    }

    #[tokio::test]
    async fn failures_are_told_in_a_few_words_and_redirects_are_not_followed() {
        let development = sender("127.0.0.1/32", Arc::new(Answers::default()));
        let url = |port: u16| format!("http://127.0.0.1:{port}/hook");

        let (elsewhere, followed) = receiver(Some(NO_CONTENT)).await;
        let redirect: &'static str = format!(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: {}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            url(elsewhere)
        )
        .leak();
        let (redirecting, _) = receiver(Some(redirect)).await;
        assert_eq!(
            post(&development, &url(redirecting)).await,
            Err(Failure::Status(307))
        );
        assert_eq!(
            followed.load(Ordering::SeqCst),
            0,
            "the redirect was not followed"
        );

        let (unavailable, _) = receiver(Some(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        ))
        .await;
        let failed = post(&development, &url(unavailable)).await;
        assert_eq!(failed, Err(Failure::Status(503)));
        assert_eq!(
            failed.map_err(|f| (f.http_status(), f.to_string())),
            Err((503, "HTTP 503".to_owned()))
        );

        // A closed port: nothing listens there any more.
        let closed = {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            listener.local_addr().expect("address").port()
        };
        let refused = post(&development, &url(closed)).await;
        assert_eq!(
            refused.map_err(|f| f.to_string()),
            Err("could not connect".to_owned())
        );

        let (hanging, _) = receiver(None).await;
        let slow = post(&development, &url(hanging)).await;
        assert_eq!(slow.map_err(|f| f.to_string()), Err("timed out".to_owned()));
    }
}

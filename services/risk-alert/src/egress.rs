//! Where webhooks may go, judged on the addresses a URL's host resolves to
//! (`domain::destination`): every one of them at registration, and again at every
//! connection, because a name that resolved to a public address when it was registered may
//! resolve to 127.0.0.1 later (DNS rebinding). The delivery client resolves names through
//! [`Egress`] (reqwest's `dns_resolver`), so it connects only to permitted addresses;
//! reqwest connects to an IP literal without resolving it, so [`Egress::literal`] judges
//! those before a request is made.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use futures::future::BoxFuture;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

use crate::domain::destination::Destinations;

/// How long a name may take to resolve. At registration this bounds the RPC; a delivery's
/// connect timeout bounds it there too.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// A webhook destination that policy does not allow (or, at registration, a host that does
/// not resolve). Which address a name resolved to is never said.
#[derive(Debug, thiserror::Error)]
#[error("destination refused by policy")]
pub struct Refused;

/// Resolves a host name to its addresses: the system's resolver in the service, a fixed
/// answer in tests of what follows from an answer.
pub trait Lookup: Send + Sync {
    fn lookup(&self, host: &str) -> BoxFuture<'static, io::Result<Vec<IpAddr>>>;
}

/// The system's resolver (`getaddrinfo`, on tokio's blocking pool).
#[derive(Debug)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: &str) -> BoxFuture<'static, io::Result<Vec<IpAddr>>> {
        let host = host.to_owned();
        Box::pin(async move {
            let addresses = tokio::net::lookup_host((host.as_str(), 0)).await?;
            Ok(addresses.map(|address| address.ip()).collect())
        })
    }
}

/// The destinations webhooks may reach, and how names are resolved to judge them.
#[derive(Clone)]
pub struct Egress {
    destinations: Arc<Destinations>,
    lookup: Arc<dyn Lookup>,
}

impl Egress {
    pub fn new(destinations: Destinations, lookup: Arc<dyn Lookup>) -> Self {
        Self {
            destinations: Arc::new(destinations),
            lookup,
        }
    }

    /// On the system's resolver.
    pub fn system(destinations: Destinations) -> Self {
        Self::new(destinations, Arc::new(SystemLookup))
    }

    /// At registration: an IP literal must be permitted, and so must every address a name
    /// resolves to — one bad answer among good ones is refused, since which one a
    /// connection would take is not ours to choose. A name that does not resolve is refused
    /// too: nothing could be delivered to it.
    pub async fn vet(&self, url: &Url) -> Result<(), Refused> {
        let Some(Host::Domain(name)) = url.host() else {
            return self.literal(url);
        };
        let addresses = self.resolve(name).await.map_err(|_| Refused)?;
        if addresses.iter().all(|ip| self.destinations.permits(*ip)) {
            Ok(())
        } else {
            Err(Refused)
        }
    }

    /// Before a request: an IP-literal host must be permitted (reqwest connects to it without
    /// asking the resolver). A name passes here; it is judged as it is resolved.
    pub fn literal(&self, url: &Url) -> Result<(), Refused> {
        let ip = match url.host() {
            Some(Host::Domain(_)) => return Ok(()),
            Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
            None => return Err(Refused),
        };
        if self.destinations.permits(ip) {
            Ok(())
        } else {
            Err(Refused)
        }
    }

    /// The addresses `name` resolves to, at least one, within [`LOOKUP_TIMEOUT`].
    async fn resolve(&self, name: &str) -> io::Result<Vec<IpAddr>> {
        let addresses = tokio::time::timeout(LOOKUP_TIMEOUT, self.lookup.lookup(name))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        if addresses.is_empty() {
            return Err(io::Error::from(io::ErrorKind::NotFound));
        }
        Ok(addresses)
    }
}

/// At every connection: only the permitted addresses among a name's answers are offered to
/// the connector; with none left the connection is refused ([`Refused`] is the error's
/// source, so the attempt reads "destination refused by policy"). A name that does not
/// resolve fails like an unreachable host.
impl Resolve for Egress {
    fn resolve(&self, name: Name) -> Resolving {
        let egress = self.clone();
        Box::pin(async move {
            let permitted: Vec<SocketAddr> = Egress::resolve(&egress, name.as_str())
                .await?
                .into_iter()
                .filter(|ip| egress.destinations.permits(*ip))
                .map(|ip| SocketAddr::new(ip, 0))
                .collect();
            if permitted.is_empty() {
                return Err(Box::new(Refused) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(permitted.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A resolver whose answer the test sets, and changes (a rebinding name).
    #[derive(Default)]
    pub struct Answers(Mutex<Vec<IpAddr>>);

    impl Answers {
        pub fn answer(&self, addresses: &[&str]) {
            let addresses = addresses
                .iter()
                .map(|text| text.parse().expect("an address"))
                .collect();
            *self.0.lock().expect("not poisoned") = addresses;
        }
    }

    impl Lookup for Answers {
        fn lookup(&self, _host: &str) -> BoxFuture<'static, io::Result<Vec<IpAddr>>> {
            let addresses = self.0.lock().expect("not poisoned").clone();
            Box::pin(async move { Ok(addresses) })
        }
    }

    fn url(text: &str) -> Url {
        Url::parse(text).expect("a URL")
    }

    #[tokio::test]
    async fn a_registration_is_refused_when_any_address_of_its_host_is_not_public() {
        let answers = Arc::new(Answers::default());
        let egress = Egress::new(Destinations::public_only(), answers.clone());
        let office = url("https://office.example/hook");

        answers.answer(&["8.8.8.8", "2606:4700:4700::1111"]);
        assert!(egress.vet(&office).await.is_ok());
        answers.answer(&["8.8.8.8", "10.0.0.7"]);
        assert!(egress.vet(&office).await.is_err(), "one private answer is enough");
        answers.answer(&["::ffff:169.254.169.254"]);
        assert!(egress.vet(&office).await.is_err());
        answers.answer(&[]);
        assert!(egress.vet(&office).await.is_err(), "a host that does not resolve");

        // Literals, however written (the URL parser reads 2130706433 and 127.1 as IPv4).
        for literal in [
            "https://127.0.0.1:5432/x",
            "https://169.254.169.254/latest",
            "https://2130706433/",
            "https://127.1/",
            "https://0x7f.0.0.1/",
            "https://127.0.0.1./",
            "https://[::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://[fd00:ec2::254]/",
        ] {
            assert!(egress.vet(&url(literal)).await.is_err(), "{literal}");
            assert!(egress.literal(&url(literal)).is_err(), "{literal}");
        }
        assert!(egress.vet(&url("https://8.8.8.8/hook")).await.is_ok());
        assert!(egress.literal(&office).is_ok(), "a name is judged as it resolves");
    }

    #[tokio::test]
    async fn the_allow_list_lets_registrations_reach_its_networks() {
        let answers = Arc::new(Answers::default());
        let loopback = "127.0.0.1/32".parse().expect("valid");
        let egress = Egress::new(loopback, answers.clone());
        assert!(egress.vet(&url("http://127.0.0.1:8080/hook")).await.is_ok());
        answers.answer(&["127.0.0.1"]);
        assert!(egress.vet(&url("http://receiver.test:8080/hook")).await.is_ok());
        answers.answer(&["127.0.0.1", "::1"]);
        assert!(
            egress.vet(&url("http://receiver.test:8080/hook")).await.is_err(),
            "::1 is not on the list"
        );
        assert!(egress.vet(&url("https://10.0.0.1/")).await.is_err());
    }
}

//! Which addresses a webhook may be sent to: public unicast addresses only, so that a
//! registered URL cannot make the service reach its own network (loopback, private and
//! link-local ranges, the cloud metadata address) — unless a development allow-list names
//! the network (`MESH_WEBHOOK_ALLOW_PRIVATE`). `egress` applies it to what a host resolves
//! to, at registration and at every connection.
//!
//! The ranges are IANA's special-purpose registries (RFC 6890 and its updates). Rust's own
//! `Ipv4Addr::is_global` and friends are still unstable, so they are listed here, and an
//! IPv6 address that carries an IPv4 one (mapped, compatible, NAT64, 6to4) is judged by the
//! IPv4 address it leads to.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix)
}

const fn v6(segments: [u16; 8], prefix: u8) -> Ipv6Net {
    let [a, b, c, d, e, f, g, h] = segments;
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), prefix)
}

/// IPv4 networks that are not public unicast destinations.
const NOT_PUBLIC_V4: [Ipv4Net; 15] = [
    v4(0, 0, 0, 0, 8),       // "this network", including the unspecified 0.0.0.0
    v4(10, 0, 0, 0, 8),      // private (RFC 1918)
    v4(100, 64, 0, 0, 10),   // carrier-grade NAT (RFC 6598); also Alibaba's metadata 100.100.100.200
    v4(127, 0, 0, 0, 8),     // loopback
    v4(169, 254, 0, 0, 16),  // link-local; the cloud metadata address 169.254.169.254
    v4(172, 16, 0, 0, 12),   // private
    v4(192, 0, 0, 0, 24),    // IETF protocol assignments (Oracle's metadata 192.0.0.192)
    v4(192, 0, 2, 0, 24),    // documentation (TEST-NET-1)
    v4(192, 88, 99, 0, 24),  // 6to4 relay anycast (deprecated)
    v4(192, 168, 0, 0, 16),  // private
    v4(198, 18, 0, 0, 15),   // benchmarking
    v4(198, 51, 100, 0, 24), // documentation (TEST-NET-2)
    v4(203, 0, 113, 0, 24),  // documentation (TEST-NET-3)
    v4(224, 0, 0, 0, 4),     // multicast
    v4(240, 0, 0, 0, 4),     // reserved, and the broadcast 255.255.255.255
];

/// IPv6's global unicast space: everything outside it (loopback, unspecified, link-local
/// fe80::/10, unique-local fc00::/7 with AWS's metadata fd00:ec2::254, multicast ff00::/8,
/// discard 100::/64, local NAT64 64:ff9b:1::/48) is not a public destination.
const GLOBAL_UNICAST_V6: Ipv6Net = v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3);

/// Networks inside the global unicast space that are not public destinations either.
const NOT_PUBLIC_V6: [Ipv6Net; 3] = [
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23), // IETF protocol assignments: Teredo, benchmarking, ORCHID
    v6([0x2001, 0x0db8, 0, 0, 0, 0, 0, 0], 32), // documentation
    v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), // documentation (RFC 9637)
];

/// NAT64's well-known prefix (RFC 6052): the last 32 bits are the IPv4 destination.
const NAT64: Ipv6Net = v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96);
/// 6to4 (RFC 3056): bits 16 to 47 are the IPv4 address of the site's router.
const SIX_TO_FOUR: Ipv6Net = v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16);

/// Whether `ip` is a public unicast address, one a webhook may go to in production.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => !NOT_PUBLIC_V4.iter().any(|net| net.contains(&ip)),
        IpAddr::V6(ip) => match embedded_v4(ip) {
            Some(v4) => is_public(IpAddr::V4(v4)),
            None => GLOBAL_UNICAST_V6.contains(&ip) && !NOT_PUBLIC_V6.iter().any(|net| net.contains(&ip)),
        },
    }
}

/// The IPv4 address an IPv6 one leads to: IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible
/// (::a.b.c.d, which covers :: and ::1 as 0.0.0.0 and 0.0.0.1), NAT64 and 6to4.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = ip.to_bits();
    if let Some(v4) = ip.to_ipv4() {
        Some(v4)
    } else if NAT64.contains(&ip) {
        Some(Ipv4Addr::from_bits(bits as u32))
    } else if SIX_TO_FOUR.contains(&ip) {
        Some(Ipv4Addr::from_bits((bits >> 80) as u32))
    } else {
        None
    }
}

/// Where webhooks may go: public addresses, and the networks of the development allow-list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Destinations {
    allowed: Vec<IpNet>,
}

impl Destinations {
    /// Public addresses only: production.
    pub fn public_only() -> Self {
        Self::default()
    }

    /// Whether a webhook may go to `ip`. The allow-list is matched against the address as
    /// written and as the IPv4 address an IPv4-mapped one is.
    pub fn permits(&self, ip: IpAddr) -> bool {
        is_public(ip)
            || self
                .allowed
                .iter()
                .any(|net| net.contains(&ip) || net.contains(&ip.to_canonical()))
    }
}

/// `MESH_WEBHOOK_ALLOW_PRIVATE`: comma-separated networks in CIDR form (`127.0.0.1/32,
/// ::1/128`) that webhooks may reach although they are not public — for development and
/// tests whose receivers listen on loopback. Empty by default.
impl FromStr for Destinations {
    type Err = NotANetwork;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let allowed = text
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| entry.parse().map_err(|_| NotANetwork(entry.to_owned())))
            .collect::<Result<_, _>>()?;
        Ok(Self { allowed })
    }
}

/// An allow-list entry that is not a network in CIDR form.
#[derive(Debug, PartialEq, Eq)]
pub struct NotANetwork(String);

impl fmt::Display for NotANetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a network in CIDR form such as 127.0.0.1/32",
            self.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn only_public_unicast_addresses_are_public() {
        let refused = [
            // IPv4: unspecified, "this network", loopback, private, carrier-grade NAT,
            // link-local and the metadata addresses, IETF assignments, documentation,
            // benchmarking, 6to4 relay, multicast, reserved, broadcast.
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.100.100.200",
            "100.127.255.255",
            "169.254.0.1",
            "169.254.169.254",
            "192.0.0.192",
            "192.0.2.10",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "198.19.255.255",
            "192.88.99.1",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            // IPv6: unspecified, loopback, link-local, unique-local and AWS's metadata
            // address, multicast, documentation, Teredo, benchmarking, discard, site-local,
            // local NAT64.
            "::",
            "::1",
            "fe80::1",
            "febf::1",
            "fc00::1",
            "fd12:3456::1",
            "fd00:ec2::254",
            "ff02::1",
            "ff0e::1",
            "2001:db8::1",
            "3fff::1",
            "2001:0:4136:e378::1",
            "2001:2::1",
            "100::1",
            "fec0::1",
            "64:ff9b:1::1",
            // IPv4 addresses refused above, in their IPv6 forms: mapped, compatible,
            // NAT64 and 6to4.
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.1.2.3",
            "::ffff:0.0.0.0",
            "::127.0.0.1",
            "::169.254.169.254",
            "64:ff9b::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::192.168.0.1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::1",
            "2002:c0a8:101::",
        ];
        for text in refused {
            assert!(!is_public(ip(text)), "{text} must not count as public");
        }
        let public = [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.215.14",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "169.253.255.255",
            "192.0.1.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2400:3200::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ];
        for text in public {
            assert!(is_public(ip(text)), "{text} is public");
        }
    }

    #[test]
    fn the_allow_list_opens_only_the_networks_it_names() {
        let loopback: Destinations = " 127.0.0.1/32 , ::1/128,".parse().expect("valid");
        assert!(loopback.permits(ip("127.0.0.1")));
        assert!(loopback.permits(ip("::ffff:127.0.0.1")), "the same destination");
        assert!(loopback.permits(ip("::1")));
        assert!(loopback.permits(ip("8.8.8.8")), "public addresses stay open");
        assert!(!loopback.permits(ip("127.0.0.2")));
        assert!(!loopback.permits(ip("169.254.169.254")));
        assert!(!loopback.permits(ip("10.0.0.1")));

        let production = Destinations::public_only();
        assert_eq!("".parse::<Destinations>(), Ok(production.clone()));
        assert!(!production.permits(ip("127.0.0.1")));
        assert!(production.permits(ip("8.8.8.8")));
    }

    #[test]
    fn an_allow_list_entry_must_be_a_network() {
        for (text, bad) in [
            ("127.0.0.1", "127.0.0.1"),
            ("127.0.0.1/32,localhost/8", "localhost/8"),
            ("10.0.0.0/33", "10.0.0.0/33"),
        ] {
            let error = text.parse::<Destinations>().expect_err(text);
            assert_eq!(error, NotANetwork(bad.to_owned()));
            assert!(error.to_string().contains(bad), "{error}");
        }
    }
}

//! Client addresses behind a reverse proxy: `X-Forwarded-For`, believed
//! only from the proxies an operator names (`--trusted-proxy`).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::Request;

/// An address or a network (`10.0.0.0/8`, `::1`) of trusted proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    /// Whether `address` is in the network.
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.address, canonical(address)) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let shift = 32 - u32::from(self.prefix);
                shift == 32 || u32::from(net) >> shift == u32::from(a) >> shift
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let shift = 128 - u32::from(self.prefix);
                shift == 128 || u128::from(net) >> shift == u128::from(a) >> shift
            }
            _ => false,
        }
    }
}

/// An IPv4 address mapped into IPv6 (`::ffff:10.0.0.1`), as a dual-stack
/// socket reports IPv4 peers, is that IPv4 address.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

impl FromStr for Network {
    type Err = String;

    /// ```
    /// use signalbox::http::forwarded::Network;
    /// let net: Network = "10.0.0.0/8".parse().unwrap();
    /// assert!(net.contains("10.1.2.3".parse().unwrap()));
    /// assert!(!net.contains("192.168.0.1".parse().unwrap()));
    /// assert!("127.0.0.1".parse::<Network>().is_ok());
    /// assert!("10.0.0.0/33".parse::<Network>().is_err());
    /// ```
    fn from_str(text: &str) -> Result<Network, String> {
        let invalid = || {
            format!(
                "invalid proxy address {text:?}: expected an IP address or a network such as 10.0.0.0/8"
            )
        };
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.trim(), None),
        };
        let address = canonical(address.parse().map_err(|_| invalid())?);
        let most = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => most,
            Some(prefix) => prefix
                .parse()
                .ok()
                .filter(|p| *p <= most)
                .ok_or_else(invalid)?,
        };
        Ok(Network { address, prefix })
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct Proxies(Vec<Network>);

impl Proxies {
    /// Trusts `networks`; none: every header is ignored.
    pub fn new(networks: impl IntoIterator<Item = Network>) -> Proxies {
        Proxies(networks.into_iter().collect())
    }

    /// Whether `address` is a trusted proxy.
    pub fn trusts(&self, address: IpAddr) -> bool {
        self.0.iter().any(|network| network.contains(address))
    }

    /// The client a request from `peer` comes from: `peer` itself, or,
    /// when `peer` is a trusted proxy, the nearest address in
    /// `X-Forwarded-For` that is not a trusted proxy too (the ones further
    /// left were written by the client and prove nothing).
    ///
    /// ```
    /// use signalbox::http::{parse_head, forwarded::Proxies};
    /// let proxies = Proxies::new(["127.0.0.1".parse().unwrap()]);
    /// let head = b"GET / HTTP/1.1\r\nX-Forwarded-For: 6.6.6.6, 10.0.0.7\r\n\r\n";
    /// let (request, _) = parse_head(head).unwrap().unwrap();
    /// assert_eq!(proxies.client(&request, "127.0.0.1".parse().unwrap()), "10.0.0.7".parse::<std::net::IpAddr>().unwrap());
    /// assert_eq!(proxies.client(&request, "10.0.0.9".parse().unwrap()), "10.0.0.9".parse::<std::net::IpAddr>().unwrap());
    /// ```
    pub fn client(&self, request: &Request, peer: IpAddr) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let hops: Vec<&str> = request
            .headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("x-forwarded-for"))
            .flat_map(|(_, value)| value.split(','))
            .collect();
        for hop in hops.into_iter().rev() {
            match parse_hop(hop) {
                Some(address) if self.trusts(address) => continue,
                Some(address) => return address,
                // Garbage where an address should be: nothing to its left
                // can be believed either.
                None => break,
            }
        }
        peer
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port
/// (`10.0.0.1:5555`, `[::1]:5555`), as some proxies write it.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(address) = hop.parse::<IpAddr>() {
        return Some(canonical(address));
    }
    if let Some(rest) = hop.strip_prefix('[') {
        let (inside, _) = rest.split_once(']')?;
        return inside.parse().ok().map(canonical);
    }
    let (address, port) = hop.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    address.parse().ok().map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_head;

    fn request(headers: &str) -> Request {
        let head = format!("GET / HTTP/1.1\r\n{headers}\r\n");
        parse_head(head.as_bytes()).unwrap().unwrap().0
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn networks() {
        let net: Network = "192.168.4.0/22".parse().unwrap();
        assert!(net.contains(ip("192.168.7.255")));
        assert!(!net.contains(ip("192.168.8.0")));
        assert!(
            "0.0.0.0/0"
                .parse::<Network>()
                .unwrap()
                .contains(ip("8.8.8.8"))
        );
        let v6: Network = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let mapped: Network = "::ffff:127.0.0.1".parse().unwrap();
        assert!(mapped.contains(ip("127.0.0.1")));
        assert!(
            "127.0.0.1"
                .parse::<Network>()
                .unwrap()
                .contains(ip("::ffff:127.0.0.1"))
        );
        for bad in [
            "",
            "nope",
            "10.0.0.0/",
            "10.0.0.0/x",
            "::/129",
            "10.0.0.1/8/8",
        ] {
            assert!(bad.parse::<Network>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_header_is_believed_only_from_trusted_proxies() {
        let none = Proxies::default();
        let local = Proxies::new(["127.0.0.1".parse().unwrap(), "10.9.0.0/16".parse().unwrap()]);
        let peer = ip("127.0.0.1");
        let cases = [
            ("", "127.0.0.1"),
            ("X-Forwarded-For: 192.168.1.5\r\n", "192.168.1.5"),
            ("X-Forwarded-For: 192.168.1.5:40000\r\n", "192.168.1.5"),
            ("X-Forwarded-For: [fd00::5]:40000\r\n", "fd00::5"),
            ("X-Forwarded-For: fd00::5\r\n", "fd00::5"),
            // The client wrote the first; the proxies appended the rest.
            ("X-Forwarded-For: 1.2.3.4, 192.168.1.5\r\n", "192.168.1.5"),
            (
                "X-Forwarded-For: 1.2.3.4, 192.168.1.5, 10.9.0.2\r\n",
                "192.168.1.5",
            ),
            (
                "X-Forwarded-For: 1.2.3.4\r\nX-Forwarded-For: 192.168.1.6\r\n",
                "192.168.1.6",
            ),
            ("X-Forwarded-For: garbage, 192.168.1.5\r\n", "192.168.1.5"),
            ("X-Forwarded-For: 192.168.1.5, garbage\r\n", "127.0.0.1"),
            ("X-Forwarded-For: 10.9.0.3\r\n", "127.0.0.1"),
            ("X-Forwarded-For: \r\n", "127.0.0.1"),
        ];
        for (headers, client) in cases {
            let request = request(headers);
            assert_eq!(local.client(&request, peer), ip(client), "{headers:?}");
            assert_eq!(none.client(&request, peer), peer, "{headers:?}");
            assert_eq!(
                local.client(&request, ip("192.168.1.99")),
                ip("192.168.1.99"),
                "from an untrusted peer: {headers:?}"
            );
        }
    }
}

//! [ours] What `web_fetch` may reach: the public internet, and of the machine's own and
//! its network's addresses (loopback, private, link-local: a cloud's metadata service at
//! 169.254.169.254 hands out the host's credentials) only the hosts the operator names
//! (`AEGIS_WEB_PRIVATE_HOSTS`; not agent.json, which the model can write). A model asked by
//! anyone who can message the bot must not be a way into the operator's network, also
//! with `bash` off.
//!
//! Checked where the address is known for good: the resolver of each request's client
//! keeps only the addresses allowed, and the connection goes to one of those (a name that
//! resolves to another address a moment later, DNS rebinding, gains nothing). Through a
//! proxy the proxy resolves the name; this machine resolves it too, and a name it resolves
//! to a private address is refused (one it cannot resolve is the proxy's to find).
//! Redirects are followed here, one hop at a time, each checked as the first.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// Which hosts may be at a private address (`AEGIS_WEB_PRIVATE_HOSTS`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reach {
    /// Host names and addresses, lowercased, without brackets or a trailing dot.
    hosts: Vec<String>,
    /// `"*"`: every host, the check off.
    anywhere: bool,
}

impl Reach {
    /// From the hosts named: names or addresses, or `"*"`.
    pub fn new(private_hosts: &[String]) -> Reach {
        Reach {
            anywhere: private_hosts.iter().any(|h| h.trim() == "*"),
            hosts: private_hosts
                .iter()
                .map(|h| host_key(h))
                .filter(|h| !h.is_empty())
                .collect(),
        }
    }

    /// Whether `host` (as a URL names it) may be at any address.
    fn named(&self, host: &str) -> bool {
        self.anywhere || self.hosts.contains(&host_key(host))
    }

    /// `addrs` of `host`, but those it may not reach; an error naming the first refused
    /// when none is left.
    pub fn keep(&self, host: &str, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, String> {
        if self.named(host) {
            return Ok(addrs);
        }
        let refused = addrs.iter().find(|a| !is_public(a.ip())).map(|a| a.ip());
        let kept: Vec<SocketAddr> = addrs.into_iter().filter(|a| is_public(a.ip())).collect();
        match (kept.is_empty(), refused) {
            (true, Some(ip)) => Err(refusal(host, ip)),
            _ => Ok(kept),
        }
    }

    /// Before a request through a proxy: `host` as this machine resolves it. A name it
    /// cannot resolve passes (the proxy resolves it); one that resolves to a private
    /// address does not, even among public ones (the proxy may pick it).
    pub fn check_proxied(&self, host: &str, port: u16) -> Result<(), String> {
        if self.named(host) {
            return Ok(());
        }
        let bare = host_key(host);
        let Ok(addrs) = (bare.as_str(), port).to_socket_addrs() else {
            return Ok(());
        };
        match addrs.map(|a| a.ip()).find(|ip| !is_public(*ip)) {
            Some(ip) => Err(refusal(host, ip)),
            None => Ok(()),
        }
    }

    /// A resolver for a client whose proxy (if any) is at `proxy` (host, port): the
    /// proxy's own address is not checked, every other is.
    pub fn resolver(self: &Arc<Self>, proxy: Option<(String, u16)>) -> Guarded {
        Guarded {
            reach: Arc::clone(self),
            proxy,
            inner: DefaultResolver::default(),
        }
    }
}

/// The refusal the model reads.
fn refusal(host: &str, ip: IpAddr) -> String {
    format!(
        "{host} is at {ip}, {}: web_fetch reaches public addresses only (the operator can open a host with AEGIS_WEB_PRIVATE_HOSTS)",
        kind(ip)
    )
}

/// A host as compared: lowercased, without IPv6 brackets or a trailing dot.
fn host_key(host: &str) -> String {
    let h = host.trim().trim_end_matches('.');
    let h = h.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(h);
    h.to_ascii_lowercase()
}

/// The resolver of a `web_fetch` client (see the module's comment).
#[derive(Debug)]
pub struct Guarded {
    reach: Arc<Reach>,
    proxy: Option<(String, u16)>,
    inner: DefaultResolver,
}

impl Resolver for Guarded {
    fn resolve(
        &self,
        uri: &Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let addrs = self.inner.resolve(uri, config, timeout)?;
        let host = uri.host().unwrap_or("");
        let port = uri.port_u16();
        let is_proxy = self
            .proxy
            .as_ref()
            .is_some_and(|(h, p)| host_key(h) == host_key(host) && port.is_none_or(|port| port == *p));
        if is_proxy {
            return Ok(addrs);
        }
        let kept = self
            .reach
            .keep(host, addrs.iter().copied().collect())
            .map_err(|why| ureq::Error::Io(std::io::Error::new(std::io::ErrorKind::PermissionDenied, why)))?;
        let mut out = addrs;
        out.truncate(0);
        for a in kept {
            out.push(a);
        }
        Ok(out)
    }
}

/// Whether `ip` is on the public internet: not this machine, a private or shared
/// network, link-local, multicast, documentation or reserved; an IPv6 address that
/// carries an IPv4 one (mapped, NAT64, 6to4) as that one is.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => match carried_v4(v6) {
            Some(v4) => public_v4(v4),
            None => public_v6(v6),
        },
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b))
        || (a == 169 && b == 254)
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 192 && b == 0 && c == 2)
        || (a == 192 && b == 168)
        || (a == 198 && (18..20).contains(&b))
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || a >= 224)
}

fn public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] & 0xffc0) == 0xfec0
        || (s[0] & 0xff00) == 0xff00
        || (s[0] == 0x2001 && s[1] == 0x0db8)
        || (s[0] == 0x2001 && s[1] == 0)
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]))
}

/// The IPv4 address an IPv6 one stands for: `::ffff:a.b.c.d`, `::a.b.c.d`, NAT64's
/// `64:ff9b::a.b.c.d`, 6to4's `2002:AABB:CCDD::`.
fn carried_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(low),
        // `::` and `::1` are IPv6's own.
        [0, 0, 0, 0, 0, 0, hi, _] if hi != 0 => Some(low),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

/// What kind of address a refused one is, for the model.
fn kind(ip: IpAddr) -> &'static str {
    let v4 = match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => carried_v4(v6),
    };
    match (ip, v4) {
        (_, Some(v4)) if v4.is_loopback() => "this machine",
        (_, Some(v4)) if v4.is_private() => "a private network address",
        (_, Some(v4)) if v4.is_link_local() => "a link-local address (a cloud's metadata service is one)",
        (IpAddr::V6(v6), None) if v6.is_loopback() => "this machine",
        (IpAddr::V6(v6), None) if (v6.segments()[0] & 0xfe00) == 0xfc00 => "a private network address",
        (IpAddr::V6(v6), None) if (v6.segments()[0] & 0xffc0) == 0xfe80 => "a link-local address",
        _ => "not a public address",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_machine_its_networks_and_reserved_ranges_are_not_public() {
        for s in [
            "127.0.0.1",
            "127.255.0.9",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.10",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.170",
            "192.0.2.1",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:c0a8:0101::1",
        ] {
            assert!(!is_public(ip(s)), "{s}");
        }
        for s in [
            "1.1.1.1",
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.0",
            "169.253.1.1",
            "192.169.0.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
            "64:ff9b::808:808",
            "2002:0808:0808::1",
        ] {
            assert!(is_public(ip(s)), "{s}");
        }
    }

    #[test]
    fn a_private_address_is_kept_only_for_a_host_the_operator_named() {
        let sock = |s: &str| SocketAddr::new(ip(s), 80);
        let none = Reach::new(&[]);
        let metadata = none
            .keep("169.254.169.254", vec![sock("169.254.169.254")])
            .unwrap_err();
        assert!(
            metadata.starts_with("169.254.169.254 is at 169.254.169.254, a link-local address (a cloud's metadata service is one): web_fetch reaches public addresses only"),
            "{metadata}"
        );
        assert!(none
            .keep("localhost", vec![sock("::1"), sock("127.0.0.1")])
            .unwrap_err()
            .contains("this machine"));
        // A name with a public and a private address: the public one only.
        assert_eq!(
            none.keep("mixed.example", vec![sock("10.0.0.1"), sock("1.1.1.1")]),
            Ok(vec![sock("1.1.1.1")])
        );
        let named = Reach::new(&["NAS.lan.".into(), "[::1]".into()]);
        assert_eq!(
            named.keep("nas.lan", vec![sock("192.168.1.5")]),
            Ok(vec![sock("192.168.1.5")])
        );
        assert!(named.keep("[::1]", vec![sock("::1")]).is_ok());
        assert!(named.keep("other.lan", vec![sock("192.168.1.6")]).is_err());
        let all = Reach::new(&["*".into()]);
        assert!(all.keep("anything", vec![sock("127.0.0.1")]).is_ok());
    }

    #[test]
    fn through_a_proxy_a_name_this_machine_resolves_privately_is_refused() {
        let none = Reach::new(&[]);
        assert!(none.check_proxied("127.0.0.1", 80).is_err());
        assert!(none.check_proxied("[::1]", 80).is_err());
        assert!(none.check_proxied("169.254.169.254", 80).is_err());
        assert!(none.check_proxied("1.1.1.1", 443).is_ok());
        // A name only the proxy can resolve.
        assert!(none.check_proxied("no-such-host.invalid", 443).is_ok());
        assert!(Reach::new(&["127.0.0.1".into()])
            .check_proxied("127.0.0.1", 80)
            .is_ok());
    }

    proptest! {
        /// An IPv4 address is as public carried in IPv6 (mapped, NAT64, 6to4) as bare.
        #[test]
        fn an_ipv4_address_carried_in_ipv6_is_judged_as_itself(bits in any::<u32>()) {
            let v4 = Ipv4Addr::from(bits);
            let [a, b, c, d] = v4.octets();
            let pair = |x: u8, y: u8| (u16::from(x) << 8) | u16::from(y);
            let carriers = [
                v4.to_ipv6_mapped(),
                Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, pair(a, b), pair(c, d)),
                Ipv6Addr::new(0x2002, pair(a, b), pair(c, d), 0, 0, 0, 0, 1),
            ];
            for v6 in carriers {
                prop_assert_eq!(is_public(IpAddr::V6(v6)), is_public(IpAddr::V4(v4)), "{}", v6);
            }
        }
    }
}

//! Throttling shared by every node: counters live in the store (`failures` table), keyed by what is
//! being protected. Checks run before any directory call or password hash, so a rejection is cheap.
use std::net::IpAddr;
use time::Duration;

/// At most `max` events per `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    pub max: u32,
    pub window: Duration,
}

impl Limit {
    pub const fn new(max: u32, window: Duration) -> Self {
        Self { max, window }
    }
    /// A limit of 0 is off.
    pub fn enabled(&self) -> bool {
        self.max > 0
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThrottleSettings {
    /// Resets started and codes checked per account (Entra: 5 an hour), then blocked for `account_block`.
    pub account: Limit,
    pub account_block: Duration,
    /// Flow starts, wrong codes and answers, failed sign-ins and changes, per client address and per
    /// /24 (IPv6 /64).
    pub ip: Limit,
    pub subnet: Limit,
    /// Codes sent to one address or number: a short and a daily limit.
    pub destination_short: Limit,
    pub destination_day: Limit,
    /// Texts and calls per number prefix (`+` and `prefix_digits` digits): SMS pumping uses ranges.
    pub prefix: Limit,
    pub prefix_digits: usize,
    /// All texts and calls together (the bill).
    pub phone_budget: Limit,
    /// The circuit breaker trips when, over `phone_budget.window`, at least `breaker_min_sends`
    /// texts/calls went out and fewer than one in `breaker_ratio` was followed by a verification.
    pub breaker_ratio: u32,
    pub breaker_min_sends: u32,
    pub breaker_block: Duration,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self {
            account: Limit::new(5, Duration::hours(1)),
            account_block: Duration::hours(24),
            ip: Limit::new(60, Duration::minutes(10)),
            subnet: Limit::new(300, Duration::minutes(10)),
            destination_short: Limit::new(3, Duration::minutes(10)),
            destination_day: Limit::new(10, Duration::days(1)),
            prefix: Limit::new(30, Duration::hours(1)),
            prefix_digits: 7,
            phone_budget: Limit::new(1000, Duration::hours(1)),
            breaker_ratio: 4,
            breaker_min_sends: 40,
            breaker_block: Duration::minutes(30),
        }
    }
}

impl ThrottleSettings {
    /// Everything off (benchmarks and the timing tests, which make thousands of requests).
    pub fn off() -> Self {
        let off = Limit::new(0, Duration::hours(1));
        Self {
            account: off,
            ip: off,
            subnet: off,
            destination_short: off,
            destination_day: off,
            prefix: off,
            phone_budget: off,
            breaker_min_sends: 0,
            ..Self::default()
        }
    }
}

/// The counter keys. Logins are keyed as typed-and-normalised, so an unknown login is counted (and
/// blocked) exactly like a real one.
pub fn account_key(login: &str) -> String {
    format!("acct:{login}")
}
pub fn account_block_key(login: &str) -> String {
    format!("block:acct:{login}")
}
pub fn ip_key(ip: IpAddr) -> String {
    format!("ip:{ip}")
}
/// The client's network: /24 for IPv4, /64 for IPv6 (an IPv4-mapped IPv6 address counts as IPv4).
pub fn subnet_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("net:{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => subnet_key(IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                format!("net:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}
pub fn destination_key(address: &str) -> String {
    format!("dest:{}", address.to_lowercase())
}
pub fn prefix_key(e164: &str, digits: usize) -> String {
    let cut: String = e164.chars().take(digits + 1).collect();
    format!("prefix:{cut}")
}
pub const PHONE_SENT: &str = "phone:sent";
pub const PHONE_VERIFIED: &str = "phone:verified";
pub const BREAKER: &str = "block:phone:breaker";

/// Whether the breaker should trip: many sends, few of them verified.
pub fn breaker_trips(s: &ThrottleSettings, sent: u32, verified: u32) -> bool {
    s.breaker_min_sends > 0 && sent >= s.breaker_min_sends && sent > verified.saturating_mul(s.breaker_ratio)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_group_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(subnet_key(ip("203.0.113.77")), "net:203.0.113.0/24");
        assert_eq!(subnet_key(ip("::ffff:203.0.113.9")), "net:203.0.113.0/24");
        assert_eq!(subnet_key(ip("2001:db8:1:2:3:4:5:6")), "net:2001:db8:1:2::/64");
        assert_eq!(
            subnet_key(ip("2001:db8:1:2::ffff")),
            subnet_key(ip("2001:db8:1:2:aaaa::1"))
        );
        assert_ne!(
            subnet_key(ip("2001:db8:1:3::1")),
            subnet_key(ip("2001:db8:1:2::1"))
        );
    }

    #[test]
    fn prefixes_and_the_breaker() {
        assert_eq!(prefix_key("+33612345678", 7), "prefix:+3361234");
        assert_eq!(prefix_key("+1", 7), "prefix:+1");
        let s = ThrottleSettings::default();
        assert!(!breaker_trips(&s, 39, 0), "too few sends to judge");
        assert!(breaker_trips(&s, 40, 9));
        assert!(!breaker_trips(&s, 40, 10));
        assert!(!breaker_trips(&ThrottleSettings::off(), 10_000, 0));
    }
}

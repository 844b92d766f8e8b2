//! A per-client rate limit for the public creation route: a token bucket per client (an
//! IPv4 address or an IPv6 /64, see `client`): a burst, then a steady rate. Kept in memory:
//! it protects this process's Engine, and a restart forgiving everyone is harmless.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::client::ClientKey;

/// Beyond this many tracked clients, buckets that have refilled are forgotten.
const TRACKED: usize = 10_000;

pub struct RateLimiter {
    burst: f64,
    per_second: f64,
    buckets: Mutex<HashMap<ClientKey, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    pub fn new(burst: u32, per_minute: u32) -> Self {
        RateLimiter {
            burst: f64::from(burst.max(1)),
            per_second: f64::from(per_minute.max(1)) / 60.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `client`, or says how long until one is there.
    pub fn take(&self, client: ClientKey) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limit lock");
        if buckets.len() >= TRACKED {
            let (burst, rate) = (self.burst, self.per_second);
            buckets.retain(|_, b| b.tokens + (now - b.at).as_secs_f64() * rate < burst);
        }
        let bucket = buckets.entry(client).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        bucket.tokens =
            (bucket.tokens + (now - bucket.at).as_secs_f64() * self.per_second).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::client::TrustedProxies;

    fn key(ip: &str) -> ClientKey {
        TrustedProxies::default()
            .client(ip.parse().unwrap(), std::iter::empty())
            .key()
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_steady_rate() {
        let limiter = RateLimiter::new(3, 60);
        let client = key("192.0.2.1");
        let other = key("192.0.2.2");
        for _ in 0..3 {
            assert!(limiter.take(client).is_ok());
        }
        let wait = limiter.take(client).unwrap_err();
        assert!(
            wait <= Duration::from_secs(1) && wait > Duration::ZERO,
            "{wait:?}"
        );
        // Others have their own bucket.
        assert!(limiter.take(other).is_ok());
        // One a second comes back, never more than the burst.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(limiter.take(client).is_ok());
        assert!(limiter.take(client).is_err());
        tokio::time::advance(Duration::from_secs(3600)).await;
        for _ in 0..3 {
            assert!(limiter.take(client).is_ok());
        }
        assert!(limiter.take(client).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn an_ipv6_client_has_one_bucket_for_its_whole_64() {
        let limiter = RateLimiter::new(2, 1);
        assert!(limiter.take(key("2001:db8:1:2::1")).is_ok());
        assert!(limiter.take(key("2001:db8:1:2::2")).is_ok());
        assert!(limiter.take(key("2001:db8:1:2:dead:beef:0:1")).is_err());
        assert!(limiter.take(key("2001:db8:1:3::1")).is_ok());
    }
}

//! Forwarded answers, by question, for as long as their TTL (at most a day; negative answers
//! for the SOA's minimum, at most 15 minutes), at most `capacity` questions.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hickory_proto::op::{Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

use crate::upstream::Upstream;

const MAX_TTL: u32 = 86_400;
const MAX_NEGATIVE_TTL: u32 = 900;

/// The cache.
#[derive(Debug)]
pub struct Cache {
    entries: HashMap<(Name, RecordType, DNSClass), Entry>,
    capacity: usize,
}

#[derive(Debug)]
struct Entry {
    stored: Instant,
    expires: Instant,
    value: Upstream,
}

impl Cache {
    /// An empty cache for at most `capacity` questions.
    pub fn new(capacity: usize) -> Cache {
        Cache {
            entries: HashMap::new(),
            capacity,
        }
    }

    fn key(q: &Query) -> (Name, RecordType, DNSClass) {
        (q.name().to_lowercase(), q.query_type(), q.query_class())
    }

    /// The answer to `q` if one is stored and alive at `now`, its TTLs counted down.
    pub fn get(&self, q: &Query, now: Instant) -> Option<Upstream> {
        let e = self.entries.get(&Cache::key(q))?;
        if now >= e.expires {
            return None;
        }
        let age = u32::try_from(now.duration_since(e.stored).as_secs()).unwrap_or(u32::MAX);
        let mut v = e.value.clone();
        for r in v.answers.iter_mut().chain(v.authorities.iter_mut()) {
            r.ttl = r.ttl.saturating_sub(age);
        }
        Some(v)
    }

    /// Stores `value` as the answer to `q` (only NOERROR and NXDOMAIN; a TTL of 0 is not
    /// stored). When full, expired entries go first; if none, the new answer is not stored.
    pub fn put(&mut self, q: &Query, value: &Upstream, now: Instant) {
        if !matches!(value.rcode, ResponseCode::NoError | ResponseCode::NXDomain) {
            return;
        }
        let ttl = if value.answers.is_empty() {
            value
                .authorities
                .iter()
                .map(|r| match &r.data {
                    RData::SOA(soa) => r.ttl.min(soa.minimum),
                    _ => r.ttl,
                })
                .min()
                .unwrap_or(0)
                .min(MAX_NEGATIVE_TTL)
        } else {
            value
                .answers
                .iter()
                .map(|r| r.ttl)
                .min()
                .unwrap_or(0)
                .min(MAX_TTL)
        };
        if ttl == 0 {
            return;
        }
        if self.entries.len() >= self.capacity {
            self.entries.retain(|_, e| e.expires > now);
            if self.entries.len() >= self.capacity {
                return;
            }
        }
        let mut value = value.clone();
        for r in value.answers.iter_mut().chain(value.authorities.iter_mut()) {
            r.ttl = r.ttl.min(ttl);
        }
        self.entries.insert(
            Cache::key(q),
            Entry {
                stored: now,
                expires: now + Duration::from_secs(u64::from(ttl)),
                value,
            },
        );
    }

    /// How many questions are stored (expired ones included until they are swept).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use hickory_proto::rr::Record;
    use hickory_proto::rr::rdata::A;

    #[test]
    fn ttls_count_down_and_expire() {
        let q = Query::query(Name::from_ascii("www.example.com.").unwrap(), RecordType::A);
        let v = Upstream {
            rcode: ResponseCode::NoError,
            answers: vec![Record::from_rdata(
                Name::from_ascii("www.example.com.").unwrap(),
                60,
                RData::A(A("192.0.2.1".parse().unwrap())),
            )],
            authorities: vec![],
            authentic: false,
        };
        let mut c = Cache::new(1);
        let t = Instant::now();
        c.put(&q, &v, t);
        let upper = Query::query(Name::from_ascii("WWW.example.com.").unwrap(), RecordType::A);
        let got = c.get(&upper, t + Duration::from_secs(10)).unwrap();
        assert_eq!(got.answers[0].ttl, 50);
        assert!(c.get(&q, t + Duration::from_secs(60)).is_none());
        // Full: a second question is not stored until the first expired.
        let q2 = Query::query(Name::from_ascii("x.example.com.").unwrap(), RecordType::A);
        c.put(&q2, &v, t + Duration::from_secs(1));
        assert!(c.get(&q2, t + Duration::from_secs(2)).is_none());
        c.put(&q2, &v, t + Duration::from_secs(61));
        assert!(c.get(&q2, t + Duration::from_secs(62)).is_some());
        // SERVFAIL is never stored.
        let mut c = Cache::new(10);
        c.put(
            &q,
            &Upstream {
                rcode: ResponseCode::ServFail,
                ..v
            },
            t,
        );
        assert!(c.is_empty());
    }
}

//! The question to a forwarder and the checks on its answer.
//!
//! The attacker here is anyone who can send datagrams to the port the question went out on
//! (an off-path spoofer guessing ID and port, or a confused forwarder): an answer counts only
//! if it is a response with the question's ID and exactly the question asked (name, type,
//! class); of it only the answer chain for the question is kept (records owned by the
//! question's name or by a CNAME target in the chain, of the asked type or CNAME) and an SOA
//! of the authority section (for the negative TTL). Additional records and NS are dropped, so
//! nothing beyond the question can enter the cache.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::MAX_UDP_PAYLOAD;

/// What is kept of a forwarder's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Its response code.
    pub rcode: ResponseCode,
    /// The answer chain for the question.
    pub answers: Vec<Record>,
    /// The SOA for a negative answer, if any.
    pub authorities: Vec<Record>,
    /// The forwarder validated it with DNSSEC (its AD bit).
    pub authentic: bool,
}

/// The wire form of `q` to a forwarder, with `id` (random, chosen by the caller), recursion
/// desired and EDNS (so large answers come over UDP).
pub fn query(q: &Query, id: u16, dnssec_ok: bool) -> Option<Vec<u8>> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(q.clone());
    let mut e = Edns::new();
    e.set_max_payload(MAX_UDP_PAYLOAD);
    e.set_dnssec_ok(dnssec_ok);
    m.set_edns(e);
    m.to_vec().ok()
}

/// What a datagram from a forwarder is.
#[derive(Debug)]
pub enum Checked {
    /// The answer to the question.
    Answer(Upstream),
    /// The answer to the question, truncated: ask again over TCP.
    Truncated,
    /// Not the answer to the question (wrong ID or question, not a response, malformed):
    /// ignored, keep waiting.
    Ignore,
}

/// Checks `bytes` as the answer to question `q` sent with `id`.
pub fn check(bytes: &[u8], id: u16, q: &Query) -> Checked {
    let Ok(m) = Message::from_vec(bytes) else {
        return Checked::Ignore;
    };
    if m.metadata.message_type != MessageType::Response
        || m.metadata.id != id
        || m.metadata.op_code != OpCode::Query
        || m.queries.len() != 1
        || m.queries[0].name() != q.name()
        || m.queries[0].query_type() != q.query_type()
        || m.queries[0].query_class() != q.query_class()
    {
        return Checked::Ignore;
    }
    if m.metadata.truncation {
        return Checked::Truncated;
    }
    let mut chain: Vec<Name> = vec![q.name().clone()];
    let mut answers = Vec::new();
    if matches!(
        m.metadata.response_code,
        ResponseCode::NoError | ResponseCode::NXDomain
    ) {
        for r in &m.answers {
            if !chain.contains(&r.name) || r.dns_class != q.query_class() {
                continue;
            }
            if let RData::CNAME(c) = &r.data {
                if chain.len() < 16 && !chain.contains(&c.0) {
                    chain.push(c.0.clone());
                }
                answers.push(r.clone());
            } else if r.record_type() == q.query_type() {
                answers.push(r.clone());
            }
        }
    }
    let last = chain.last().unwrap_or(q.name());
    let authorities = m
        .authorities
        .iter()
        .filter(|r| r.record_type() == RecordType::SOA && r.name.zone_of(last))
        .cloned()
        .collect();
    Checked::Answer(Upstream {
        rcode: m.metadata.response_code,
        answers,
        authorities,
        authentic: m.metadata.authentic_data,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, CNAME};

    fn q() -> Query {
        Query::query(Name::from_ascii("www.example.com.").unwrap(), RecordType::A)
    }

    fn response(id: u16, q: Query, answers: Vec<Record>, additional: Vec<Record>) -> Vec<u8> {
        let mut m = Message::response(id, OpCode::Query);
        m.add_query(q);
        m.add_answers(answers);
        m.add_additionals(additional);
        m.to_vec().unwrap()
    }

    fn a(name: &str, ip: &str) -> Record {
        Record::from_rdata(
            Name::from_ascii(name).unwrap(),
            60,
            RData::A(A(ip.parse().unwrap())),
        )
    }

    #[test]
    fn only_the_answer_to_the_question_counts() {
        let good = response(7, q(), vec![a("www.example.com.", "192.0.2.1")], vec![]);
        assert!(matches!(check(&good, 7, &q()), Checked::Answer(u) if u.answers.len() == 1));
        assert!(matches!(check(&good, 8, &q()), Checked::Ignore));
        let other = Query::query(Name::from_ascii("evil.example.").unwrap(), RecordType::A);
        let wrong_q = response(7, other, vec![a("www.example.com.", "192.0.2.1")], vec![]);
        assert!(matches!(check(&wrong_q, 7, &q()), Checked::Ignore));
        assert!(matches!(check(&good[..20], 7, &q()), Checked::Ignore));
        let mut as_query = good.clone();
        as_query[2] &= 0x7f;
        assert!(matches!(check(&as_query, 7, &q()), Checked::Ignore));
    }

    #[test]
    fn records_beyond_the_chain_are_dropped() {
        let cname = Record::from_rdata(
            Name::from_ascii("www.example.com.").unwrap(),
            60,
            RData::CNAME(CNAME(Name::from_ascii("cdn.example.net.").unwrap())),
        );
        let bytes = response(
            9,
            q(),
            vec![
                cname,
                a("cdn.example.net.", "192.0.2.2"),
                a("mail.example.org.", "6.6.6.6"),
            ],
            vec![a("bank.example.", "6.6.6.6")],
        );
        let Checked::Answer(u) = check(&bytes, 9, &q()) else {
            panic!("not accepted")
        };
        assert_eq!(u.answers.len(), 2);
        assert!(u.authorities.is_empty());
    }
}

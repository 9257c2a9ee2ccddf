//! The answer to one message from a client, by the client's view.

use std::collections::HashMap;
use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::MAX_UDP_PAYLOAD;
use crate::settings::{Network, Settings};
use crate::upstream::Upstream;

/// How the message came (UDP answers are limited in size; larger ones are truncated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A datagram.
    Udp,
    /// A length-prefixed message on a TCP connection.
    Tcp,
}

/// What to do with a client's message.
#[derive(Debug)]
pub enum Decision {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Ask the forwarders (or the cache), then answer with [`forwarded`].
    Forward(Question),
    /// Send nothing: not a query (answering a response could start a reflection loop), or
    /// too short to carry an ID.
    Drop,
}

/// A question to forward, with what the client's answer needs.
#[derive(Debug, Clone)]
pub struct Question {
    /// The client's question (its spelling is kept in the answer).
    pub query: Query,
    id: u16,
    recursion_desired: bool,
    edns: Option<u16>,
    /// Whether the client asked for DNSSEC records (the DO bit).
    pub dnssec_ok: bool,
    /// Whether the client wants to know if the answer was validated (DO or AD in its query).
    wants_ad: bool,
    /// The client's view.
    pub view: String,
}

/// The views of the settings, indexed by name, and who may have names forwarded.
#[derive(Debug, Clone)]
pub struct Views {
    views: Vec<ViewIndex>,
    recursion: Vec<Network>,
    forwarding: bool,
    /// The view of loopback clients (the box's own resolver), if set.
    own: Option<usize>,
}

#[derive(Debug, Clone)]
struct ViewIndex {
    name: String,
    networks: Vec<Network>,
    names: HashMap<Name, Vec<Record>>,
}

impl Views {
    /// The views of `s`, in order.
    pub fn new(s: &Settings) -> Views {
        Views {
            views: s
                .views
                .iter()
                .map(|v| {
                    let mut names: HashMap<Name, Vec<Record>> = HashMap::new();
                    for r in &v.records {
                        let rec = r.record().clone();
                        names.entry(rec.name.to_lowercase()).or_default().push(rec);
                    }
                    ViewIndex {
                        name: v.name.clone(),
                        networks: v.networks.clone(),
                        names,
                    }
                })
                .collect(),
            recursion: s.recursion_networks.clone(),
            forwarding: !s.forwarders.is_empty(),
            own: s
                .own_view
                .as_ref()
                .and_then(|o| s.views.iter().position(|v| &v.name == o)),
        }
    }

    /// Forwards other names (for `recursion_networks`) even without `forwarders` in the
    /// settings: the server has forwarders from elsewhere (DHCP leases).
    pub fn with_forwarding(mut self, on: bool) -> Views {
        self.forwarding |= on;
        self
    }

    /// The name of the view that answers `client`, if any.
    pub fn view_for(&self, client: IpAddr) -> Option<&str> {
        self.find(client).map(|v| v.name.as_str())
    }

    fn find(&self, client: IpAddr) -> Option<&ViewIndex> {
        if client.to_canonical().is_loopback()
            && let Some(v) = self.own.and_then(|i| self.views.get(i))
        {
            return Some(v);
        }
        self.views
            .iter()
            .find(|v| v.networks.iter().any(|n| n.contains(client)))
    }

    fn may_recurse(&self, client: IpAddr) -> bool {
        self.forwarding && self.recursion.iter().any(|n| n.contains(client))
    }
}

const HEADER_LEN: usize = 12;
/// Longest CNAME chain followed inside a view.
const MAX_CHAIN: usize = 8;

/// What the message `packet` from `client` gets.
pub fn answer(packet: &[u8], client: IpAddr, views: &Views, transport: Transport) -> Decision {
    let Some(header) = packet.get(..HEADER_LEN) else {
        return Decision::Drop;
    };
    let id = u16::from_be_bytes([header[0], header[1]]);
    if header[2] & 0x80 != 0 {
        return Decision::Drop;
    }
    let op = OpCode::from_u8((header[2] >> 3) & 0x0f);
    let count = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    if op != OpCode::Query {
        return error(id, op, ResponseCode::NotImp);
    }
    // One question, nothing in the answer and authority sections, at most an OPT record:
    // checked before decoding so a header claiming thousands of records costs nothing.
    if count(4) != 1 || count(6) != 0 || count(8) != 0 || count(10) > 1 {
        return error(id, op, ResponseCode::FormErr);
    }
    let Ok(msg) = Message::from_vec(packet) else {
        return error(id, op, ResponseCode::FormErr);
    };
    let Some(query) = msg.queries.first().cloned() else {
        return error(id, op, ResponseCode::FormErr);
    };
    let edns = msg
        .edns
        .as_ref()
        .map(|e| e.max_payload().clamp(512, MAX_UDP_PAYLOAD));
    let dnssec_ok = msg.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
    let recursion = views.may_recurse(client);
    let mut reply = Message::response(id, OpCode::Query);
    reply.metadata.recursion_desired = msg.metadata.recursion_desired;
    reply.metadata.recursion_available = recursion;
    reply.add_query(query.clone());
    let limit = limit(transport, edns);
    let finish = |mut reply: Message, rcode: ResponseCode| {
        reply.metadata.response_code = rcode;
        if edns.is_some() {
            reply.set_edns(edns_of_reply());
        }
        encode(reply, limit).map_or(Decision::Drop, Decision::Reply)
    };
    if query.query_class() != DNSClass::IN {
        return finish(reply, ResponseCode::Refused);
    }
    match query.query_type() {
        // RFC 8482 allows a minimal answer to ANY; NOTIMP is smaller still, and ANY is the
        // amplifier of choice.
        RecordType::ANY => return finish(reply, ResponseCode::NotImp),
        RecordType::AXFR | RecordType::IXFR => return finish(reply, ResponseCode::Refused),
        _ => {}
    }
    let Some(view) = views.find(client) else {
        return finish(reply, ResponseCode::Refused);
    };
    let qname = query.name().to_lowercase();
    if view.names.contains_key(&qname) {
        reply.metadata.authoritative = true;
        let mut name = qname;
        for _ in 0..MAX_CHAIN {
            let Some(records) = view.names.get(&name) else {
                break;
            };
            let wanted: Vec<&Record> = records
                .iter()
                .filter(|r| r.record_type() == query.query_type())
                .collect();
            if !wanted.is_empty() || query.query_type() == RecordType::CNAME {
                reply.add_answers(wanted.into_iter().cloned());
                break;
            }
            let Some(cname) = records.iter().find_map(|r| match &r.data {
                RData::CNAME(c) => Some((r.clone(), c.0.to_lowercase())),
                _ => None,
            }) else {
                break;
            };
            reply.add_answer(cname.0);
            name = cname.1;
        }
        return finish(reply, ResponseCode::NoError);
    }
    if !recursion {
        return finish(reply, ResponseCode::Refused);
    }
    Decision::Forward(Question {
        query,
        id,
        recursion_desired: msg.metadata.recursion_desired,
        edns,
        dnssec_ok,
        wants_ad: dnssec_ok || msg.metadata.authentic_data,
        view: view.name.clone(),
    })
}

/// The client's answer to `q` from the forwarders' (or the cache's) answer `a`; `None` when
/// it cannot be encoded (then the client gets nothing and retries).
pub fn forwarded(q: &Question, a: &Upstream, transport: Transport) -> Option<Vec<u8>> {
    let mut reply = Message::response(q.id, OpCode::Query);
    reply.metadata.recursion_desired = q.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.response_code = a.rcode;
    reply.metadata.authentic_data = a.authentic && q.wants_ad;
    reply.add_query(q.query.clone());
    reply.add_answers(a.answers.iter().cloned());
    reply.add_authorities(a.authorities.iter().cloned());
    if q.edns.is_some() {
        reply.set_edns(edns_of_reply());
    }
    encode(reply, limit(transport, q.edns))
}

/// SERVFAIL for `q` (no forwarder answered).
pub fn failed(q: &Question, transport: Transport) -> Option<Vec<u8>> {
    forwarded(
        q,
        &Upstream {
            rcode: ResponseCode::ServFail,
            answers: Vec::new(),
            authorities: Vec::new(),
            authentic: false,
        },
        transport,
    )
}

fn limit(transport: Transport, edns: Option<u16>) -> usize {
    match transport {
        Transport::Tcp => usize::from(u16::MAX),
        Transport::Udp => usize::from(edns.unwrap_or(512)),
    }
}

fn edns_of_reply() -> Edns {
    let mut e = Edns::new();
    e.set_max_payload(MAX_UDP_PAYLOAD);
    e
}

fn error(id: u16, op: OpCode, rcode: ResponseCode) -> Decision {
    encode(Message::error_msg(id, op, rcode), HEADER_LEN).map_or(Decision::Drop, Decision::Reply)
}

/// The wire form, truncated (TC set, records dropped) when longer than `limit`.
fn encode(reply: Message, limit: usize) -> Option<Vec<u8>> {
    let bytes = reply.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    let mut t = reply.truncate();
    t.metadata.message_type = MessageType::Response;
    t.to_vec().ok().filter(|b| b.len() <= limit.max(512))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::settings::View;

    fn views() -> Views {
        let s = Settings {
            listen: None,
            forwarders: vec!["127.0.0.1:5354".parse().unwrap()],
            views: vec![
                View {
                    name: "inside".into(),
                    networks: vec!["10.0.0.0/8".parse().unwrap()],
                    records: vec![
                        "mail.example.org. 300 IN A 10.0.0.5".parse().unwrap(),
                        "webmail.example.org. 300 IN CNAME mail.example.org."
                            .parse()
                            .unwrap(),
                    ],
                },
                View {
                    name: "outside".into(),
                    networks: vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
                    records: vec!["mail.example.org. 300 IN A 203.0.113.5".parse().unwrap()],
                },
            ],
            ..Settings::default()
        };
        Views::new(&s)
    }

    fn ask(name: &str, t: RecordType, edns: bool) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 4711;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        if edns {
            m.set_edns(Edns::new());
        }
        m.to_vec().unwrap()
    }

    fn reply(d: Decision) -> Message {
        match d {
            Decision::Reply(b) => Message::from_vec(&b).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    const INSIDE: &str = "10.1.2.3";
    const OUTSIDE: &str = "198.51.100.7";

    #[test]
    fn the_box_itself_gets_its_own_view() {
        let base = Settings {
            forwarders: vec!["127.0.0.1:5354".parse().unwrap()],
            views: vec![
                View {
                    name: "inside".into(),
                    networks: vec!["10.0.0.0/8".parse().unwrap()],
                    records: vec!["mail.example.org. 300 IN A 10.0.0.5".parse().unwrap()],
                },
                View {
                    name: "outside".into(),
                    networks: vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
                    records: vec![],
                },
            ],
            ..Settings::default()
        };
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(Views::new(&base).view_for(lo), Some("outside"));
        let own = Settings {
            own_view: Some("inside".into()),
            ..base.clone()
        };
        own.validate().unwrap();
        let v = Views::new(&own);
        assert_eq!(v.view_for(lo), Some("inside"));
        assert_eq!(v.view_for("::1".parse().unwrap()), Some("inside"));
        assert_eq!(v.view_for("198.51.100.1".parse().unwrap()), Some("outside"));
        let bad = Settings {
            own_view: Some("nope".into()),
            ..base
        };
        assert!(bad.validate().unwrap_err().contains("own_view"));
    }

    #[test]
    fn each_view_answers_its_clients() {
        let v = views();
        let q = ask("Mail.Example.org.", RecordType::A, false);
        let a = reply(answer(&q, INSIDE.parse().unwrap(), &v, Transport::Udp));
        assert_eq!(a.metadata.id, 4711);
        assert!(a.metadata.authoritative);
        assert_eq!(a.answers.len(), 1);
        assert_eq!(
            a.answers[0].data,
            RData::A(hickory_proto::rr::rdata::A("10.0.0.5".parse().unwrap()))
        );
        assert_eq!(a.queries[0].name().to_string(), "Mail.Example.org.");
        let a = reply(answer(&q, OUTSIDE.parse().unwrap(), &v, Transport::Udp));
        assert_eq!(
            a.answers[0].data,
            RData::A(hickory_proto::rr::rdata::A("203.0.113.5".parse().unwrap()))
        );
        assert!(!a.metadata.recursion_available);
        // A name of the view without the asked type: NODATA, not forwarded.
        let q = ask("mail.example.org.", RecordType::AAAA, true);
        let a = reply(answer(&q, INSIDE.parse().unwrap(), &v, Transport::Udp));
        assert_eq!(a.metadata.response_code, ResponseCode::NoError);
        assert!(a.answers.is_empty() && a.edns.is_some());
        // CNAME chased inside the view.
        let q = ask("webmail.example.org.", RecordType::A, false);
        let a = reply(answer(&q, INSIDE.parse().unwrap(), &v, Transport::Udp));
        assert_eq!(a.answers.len(), 2);
    }

    #[test]
    fn other_names_are_forwarded_only_for_recursion_networks() {
        let v = views();
        let q = ask("www.example.com.", RecordType::A, false);
        assert!(matches!(
            answer(&q, INSIDE.parse().unwrap(), &v, Transport::Udp),
            Decision::Forward(_)
        ));
        let a = reply(answer(&q, OUTSIDE.parse().unwrap(), &v, Transport::Udp));
        assert_eq!(a.metadata.response_code, ResponseCode::Refused);
    }

    #[test]
    fn the_forwarders_ad_bit_reaches_only_clients_that_ask() {
        let v = views();
        let ip: IpAddr = INSIDE.parse().unwrap();
        let validated = Upstream {
            rcode: ResponseCode::NoError,
            answers: vec![],
            authorities: vec![],
            authentic: true,
        };
        for (edns_do, ad) in [(false, false), (true, true)] {
            let mut m = Message::query();
            m.add_query(Query::query(
                Name::from_ascii("www.example.com.").unwrap(),
                RecordType::A,
            ));
            let mut e = Edns::new();
            e.set_dnssec_ok(edns_do);
            m.set_edns(e);
            let Decision::Forward(q) = answer(&m.to_vec().unwrap(), ip, &v, Transport::Udp) else {
                panic!("not forwarded")
            };
            let a = Message::from_vec(&forwarded(&q, &validated, Transport::Udp).unwrap()).unwrap();
            assert_eq!(a.metadata.authentic_data, ad);
        }
    }

    #[test]
    fn abuse() {
        let v = views();
        let ip: IpAddr = INSIDE.parse().unwrap();
        let a = reply(answer(
            &ask("mail.example.org.", RecordType::ANY, false),
            ip,
            &v,
            Transport::Udp,
        ));
        assert_eq!(a.metadata.response_code, ResponseCode::NotImp);
        assert!(a.answers.is_empty());
        let a = reply(answer(
            &ask("example.org.", RecordType::AXFR, false),
            ip,
            &v,
            Transport::Tcp,
        ));
        assert_eq!(a.metadata.response_code, ResponseCode::Refused);
        // Responses are never answered; short datagrams neither.
        let mut r = ask("mail.example.org.", RecordType::A, false);
        r[2] |= 0x80;
        assert!(matches!(answer(&r, ip, &v, Transport::Udp), Decision::Drop));
        assert!(matches!(
            answer(&r[..5], ip, &v, Transport::Udp),
            Decision::Drop
        ));
        // A header claiming many questions, garbage after the header: FORMERR, header only.
        let mut r = ask("mail.example.org.", RecordType::A, false);
        r[4] = 0xff;
        let a = reply(answer(&r, ip, &v, Transport::Udp));
        assert_eq!(a.metadata.response_code, ResponseCode::FormErr);
        let mut r = ask("mail.example.org.", RecordType::A, false);
        r.truncate(20);
        let a = reply(answer(&r, ip, &v, Transport::Udp));
        assert_eq!(a.metadata.response_code, ResponseCode::FormErr);
        // Updates and notifies are not implemented.
        let mut r = ask("mail.example.org.", RecordType::A, false);
        r[2] = 5 << 3;
        let a = reply(answer(&r, ip, &v, Transport::Udp));
        assert_eq!(a.metadata.response_code, ResponseCode::NotImp);
        // Other classes (CHAOS version.bind) are refused.
        let mut m = Message::query();
        let mut q = Query::query(Name::from_ascii("version.bind.").unwrap(), RecordType::TXT);
        q.set_query_class(DNSClass::CH);
        m.add_query(q);
        let a = reply(answer(&m.to_vec().unwrap(), ip, &v, Transport::Udp));
        assert_eq!(a.metadata.response_code, ResponseCode::Refused);
    }

    #[test]
    fn large_answers_are_truncated_over_udp() {
        let records = (0..100)
            .map(|i| {
                format!("big.example.org. 300 IN A 10.0.{}.{}", i / 250, i % 250)
                    .parse()
                    .unwrap()
            })
            .collect();
        let s = Settings {
            views: vec![View {
                name: "all".into(),
                networks: vec!["0.0.0.0/0".parse().unwrap()],
                records,
            }],
            ..Settings::default()
        };
        let v = Views::new(&s);
        let q = ask("big.example.org.", RecordType::A, false);
        let ip = INSIDE.parse().unwrap();
        let a = reply(answer(&q, ip, &v, Transport::Udp));
        assert!(a.metadata.truncation && a.answers.is_empty());
        let a = reply(answer(&q, ip, &v, Transport::Tcp));
        assert_eq!(a.answers.len(), 100);
    }
}

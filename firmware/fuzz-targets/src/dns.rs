//! The split-horizon DNS server's parsers: a client's message (`answer`), a forwarder's
//! answer (`upstream::check`), and a record line of the settings.

use std::sync::OnceLock;

use hickory_proto::op::Query;
use hickory_proto::rr::{Name, RecordType};
use sealgate_dns::answer::Transport;
use sealgate_dns::{Settings, View, Views, answer};

fn views() -> &'static Views {
    static V: OnceLock<Views> = OnceLock::new();
    V.get_or_init(|| {
        let s = Settings {
            forwarders: vec!["127.0.0.1:5354".parse().expect("addr")],
            views: vec![View {
                name: "all".into(),
                networks: vec!["0.0.0.0/0".parse().expect("net")],
                records: vec![
                    "mail.example.org. 300 IN A 10.0.0.5"
                        .parse()
                        .expect("record"),
                    "www.example.org. 300 IN CNAME mail.example.org."
                        .parse()
                        .expect("record"),
                ],
            }],
            ..Settings::default()
        };
        Views::new(&s)
    })
}

/// One input: see the module documentation for what must hold.
pub fn run(data: &[u8]) {
    let client = "10.1.2.3".parse().expect("ip");
    let _ = answer(data, client, views(), Transport::Udp);
    let _ = answer(data, client, views(), Transport::Tcp);
    if data.len() >= 2 {
        let id = u16::from_be_bytes([data[0], data[1]]);
        let q = Query::query(
            Name::from_ascii("www.example.com.").expect("name"),
            RecordType::A,
        );
        let _ = sealgate_dns::upstream::check(data, id, &q);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = text.parse::<sealgate_dns::ZoneRecord>();
    }
}

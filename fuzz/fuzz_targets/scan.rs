//! Content scanning's parsers on attacker bytes: the first byte chooses what the rest is fed
//! to: a ClamAV hash database (`.hdb`/`.hsb` lines), an archive for the unpacker (zip, gzip,
//! tar, with small limits so bombs are cheap to find), or a whole message through the
//! standard pipeline (MIME walk, unpacking, every check). No panic, and unpacking never
//! produces more than its limits allow.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sealgate_scan::unpack::{self, Budget, Container, Limits};
use sealgate_scan::{Direction, HashDb, Input, Pipeline, Settings};

fn pipeline() -> &'static Pipeline {
    static P: OnceLock<Pipeline> = OnceLock::new();
    P.get_or_init(|| {
        let mut p = Settings::default().pipeline(&[]).expect("default pipeline");
        p.limits = Limits {
            max_total: 1 << 20,
            ratio_floor: 64 << 10,
            ..Limits::default()
        };
        p
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            let text = String::from_utf8_lossy(rest);
            let mut db = HashDb::new();
            let _ = db.load(&text);
            for line in text.lines() {
                let _ = sealgate_scan::hashdb::parse_line(line);
            }
        }
        1 => {
            let limits = Limits {
                max_total: 1 << 20,
                ratio_floor: 64 << 10,
                max_objects: 64,
                ..Limits::default()
            };
            let mut budget = Budget::new(limits);
            for kind in [Container::Zip, Container::Gzip, Container::Tar] {
                let (members, _) = unpack::unpack(kind, rest, &mut budget);
                let total: usize = members.iter().map(|m| m.data.len()).sum();
                assert!(total as u64 <= limits.max_total);
            }
        }
        _ => {
            let dir = if which % 2 == 0 {
                Direction::Inbound
            } else {
                Direction::Outbound
            };
            let r = pipeline().scan(&Input::new(rest, dir));
            assert!(r.score.is_finite());
            let _ = r.header_value();
        }
    }
});

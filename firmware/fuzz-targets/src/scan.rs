//! Content scanning's parsers on attacker bytes: the first byte chooses what the rest is fed
//! to: a ClamAV hash database (`.hdb`/`.hsb` lines; with bit 4, `.mdb`/`.msb` section lines
//! and the PE section reader; with bit 8, the reputation service's HTTP answer and clamd's
//! answer, as `sealgate-scan-net` reads them), an archive for the unpacker (zip, gzip, tar, bzip2, xz, with
//! small limits so bombs are cheap to find; with bit 4, the PDF text reader and the office
//! XML text reader), or a whole message through the standard pipeline (MIME walk, unpacking,
//! every check) and the Subject tag (with bit 8, also the URL normaliser on each line), the
//! authserv-id of an `Authentication-Results:` value and the link hosts URIBL looks up. No
//! panic, and unpacking never produces more than its limits allow.

use std::sync::OnceLock;

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

/// One input: see the module documentation for what must hold.
pub fn run(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 if which & 8 != 0 => {
            if let Ok(listed) = sealgate_scan_net::read_answer(rest) {
                assert!(listed.iter().all(|h| h.len() == 64));
            }
            let _ = sealgate_scan_net::parse_clamd(rest);
        }
        0 if which & 4 != 0 => {
            let text = String::from_utf8_lossy(rest);
            let mut db = HashDb::new();
            let _ = db.load_kind(&text, sealgate_scan::hashdb::Kind::Sections);
            let _ = db.lookup_sections(rest);
            for sec in sealgate_scan::hashdb::pe_sections(rest) {
                assert!(sec.len() <= rest.len());
            }
        }
        1 if which & 4 != 0 => {
            let limits = Limits {
                max_total: 1 << 20,
                ratio_floor: 64 << 10,
                ..Limits::default()
            };
            let mut budget = Budget::new(limits);
            if let Ok(t) = sealgate_scan::pdf::text(rest, &mut budget) {
                assert!(t.len() as u64 <= 4 * (rest.len() as u64 + limits.max_total));
            }
            let mut out = String::new();
            sealgate_scan::office::xml_text(&String::from_utf8_lossy(rest), &mut out);
        }
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
            for kind in [
                Container::Zip,
                Container::Gzip,
                Container::Tar,
                Container::Bzip2,
                Container::Xz,
            ] {
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
            if which & 8 != 0 {
                for line in String::from_utf8_lossy(rest).lines() {
                    if let Some(n) = sealgate_scan::urls::normalise(line) {
                        // Normalising is idempotent.
                        assert_eq!(sealgate_scan::urls::normalise(&n), Some(n.clone()));
                    }
                }
            }
            let r = pipeline().scan(&Input::new(rest, dir));
            assert!(r.score.is_finite());
            let _ = r.header_value();
            // The Subject tag: only ever adds the tag (and a field name), never drops bytes.
            let tagged = sealgate_scan::subject::tag_subject(rest, "[SPAM]");
            assert!(tagged.len() <= rest.len() + "Subject: [SPAM]\r\n".len());
            assert!(tagged.len() >= rest.len());
            // The authserv-id of an Authentication-Results value is a part of it; link hosts
            // for URIBL stay bounded.
            let text = String::from_utf8_lossy(rest);
            let id = sealgate_scan::checks::auth::authserv_id(&text);
            assert!(text.contains(id));
            assert!(pipeline().link_hosts(rest).len() <= 20);
        }
    }
}

//! The login verifier against real servers: Dovecot's IMAPS (LOGIN) and Postfix's submission
//! port with Dovecot SASL (STARTTLS, AUTH PLAIN), and what it must refuse to do.

use std::net::IpAddr;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::peers::OrgServers;
use crate::verifier::{AuthError, Credentials, Limits, Scheme, Server, Verifier, client_config};

const USERS: &[(&str, &str)] = &[
    ("alice@example.org", "alice-Passw0rd"),
    ("bob@example.org", "b\"ob\\pass word"),
    ("carol@example.org", "pässwort-carol"),
];

fn creds(user: &str, password: &str) -> Credentials {
    Credentials {
        user: user.into(),
        password: Zeroizing::new(password.into()),
    }
}

fn verifier(org: &OrgServers, scheme: Scheme, port: u16, max_failures: u32) -> Verifier {
    let ca = std::fs::read(&org.tls.ca).unwrap();
    Verifier::new(
        Server {
            scheme,
            host: "127.0.0.1".into(),
            port,
        },
        client_config(Some(&ca)).unwrap(),
        Limits {
            cache_ttl: Duration::from_secs(300),
            max_failures,
            window: Duration::from_secs(300),
            timeout: Duration::from_secs(20),
        },
        "box.test",
    )
    .unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

const PEER: &str = "192.0.2.7";

#[test]
fn imaps_login_is_verified_by_dovecot() {
    let org = OrgServers::start(USERS, &[]);
    let v = verifier(&org, Scheme::Imaps, org.dovecot.imaps, 100);
    let peer: IpAddr = PEER.parse().unwrap();
    rt().block_on(async {
        for (u, p) in USERS {
            assert_eq!(v.verify(&creds(u, p), peer).await, Ok(()), "{u}");
        }
        assert_eq!(
            v.verify(&creds("alice@example.org", "wrong"), peer).await,
            Err(AuthError::Rejected)
        );
        assert_eq!(
            v.verify(&creds("nobody@example.org", "x"), peer).await,
            Err(AuthError::Rejected)
        );
    });
}

#[test]
fn smtp_submission_login_is_verified_by_postfix_with_dovecot_sasl() {
    let org = OrgServers::start(USERS, &[]);
    let v = verifier(&org, Scheme::Smtp, org.postfix.submission, 100);
    let peer: IpAddr = PEER.parse().unwrap();
    rt().block_on(async {
        for (u, p) in USERS {
            assert_eq!(v.verify(&creds(u, p), peer).await, Ok(()), "{u}");
        }
        assert_eq!(
            v.verify(&creds("bob@example.org", "wrong"), peer).await,
            Err(AuthError::Rejected)
        );
    });
}

#[test]
fn smtps_login_is_verified_by_postfix_over_implicit_tls() {
    let org = OrgServers::start(USERS, &[]);
    let v = verifier(&org, Scheme::Smtps, org.postfix.smtps, 100);
    let peer: IpAddr = PEER.parse().unwrap();
    rt().block_on(async {
        assert_eq!(
            v.verify(&creds("carol@example.org", "pässwort-carol"), peer)
                .await,
            Ok(())
        );
        assert_eq!(
            v.verify(&creds("carol@example.org", "wrong"), peer).await,
            Err(AuthError::Rejected)
        );
    });
}

#[test]
fn a_server_without_starttls_or_with_an_untrusted_certificate_never_gets_the_password() {
    let org = OrgServers::start(USERS, &[]);
    let peer: IpAddr = PEER.parse().unwrap();
    rt().block_on(async {
        // Postfix's relay port offers STARTTLS; a plain listener that does not is refused
        // before AUTH: the relay port with TLS turned off is not available here, so the
        // check runs against a one-line fake that only greets and answers EHLO.
        let fake = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = fake.local_addr().unwrap().port();
        let seen = std::thread::spawn(move || {
            use std::io::{BufRead, BufReader, Write};
            let (s, _) = fake.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            w.write_all(b"220 fake ESMTP\r\n").unwrap();
            let mut got = String::new();
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                got.push_str(&line);
                if line.starts_with("EHLO") {
                    w.write_all(b"250-fake\r\n250 AUTH PLAIN\r\n").unwrap();
                }
                line.clear();
            }
            got
        });
        let v = verifier(&org, Scheme::Smtp, port, 100);
        let r = v
            .verify(&creds("alice@example.org", "alice-Passw0rd"), peer)
            .await;
        assert!(
            matches!(r, Err(AuthError::Unavailable(ref w)) if w.contains("STARTTLS")),
            "{r:?}"
        );
        drop(v);
        let got = seen.join().unwrap();
        assert!(!got.contains("AUTH"), "{got}");
        // A certificate from a CA the verifier does not trust: TLS fails, no password sent.
        let other = tempfile::tempdir().unwrap();
        let other_ca = crate::peers::ServerTls::new(other.path());
        let v = Verifier::new(
            Server {
                scheme: Scheme::Imaps,
                host: "127.0.0.1".into(),
                port: org.dovecot.imaps,
            },
            client_config(Some(&std::fs::read(&other_ca.ca).unwrap())).unwrap(),
            Limits {
                cache_ttl: Duration::from_secs(300),
                max_failures: 5,
                window: Duration::from_secs(300),
                timeout: Duration::from_secs(20),
            },
            "box.test",
        )
        .unwrap();
        let r = v
            .verify(&creds("alice@example.org", "alice-Passw0rd"), peer)
            .await;
        assert!(
            matches!(r, Err(AuthError::Unavailable(ref w)) if w.contains("TLS")),
            "{r:?}"
        );
    });
    let log = std::fs::read_to_string(&org.dovecot.log).unwrap_or_default();
    assert!(!log.contains("alice-Passw0rd"));
}

#[test]
fn failures_are_throttled_per_user_and_per_address_and_successes_cached() {
    let org = OrgServers::start(USERS, &[]);
    let v = verifier(&org, Scheme::Imaps, org.dovecot.imaps, 3);
    let guesser: IpAddr = "192.0.2.66".parse().unwrap();
    let other: IpAddr = "2001:db8::5".parse().unwrap();
    rt().block_on(async {
        // A cached success: the server is not asked again for the same password.
        assert_eq!(
            v.verify(&creds("carol@example.org", "pässwort-carol"), other)
                .await,
            Ok(())
        );
        for i in 0..3 {
            assert_eq!(
                v.verify(&creds("alice@example.org", &format!("guess{i}")), guesser)
                    .await,
                Err(AuthError::Rejected)
            );
        }
        // alice is now throttled from everywhere, even with her password (never verified
        // before, so not in the cache); others not.
        assert_eq!(
            v.verify(&creds("alice@example.org", "alice-Passw0rd"), other)
                .await,
            Err(AuthError::Throttled)
        );
        // The guessing address is throttled for every user.
        assert_eq!(
            v.verify(&creds("bob@example.org", "b\"ob\\pass word"), guesser)
                .await,
            Err(AuthError::Throttled)
        );
        assert_eq!(
            v.verify(&creds("bob@example.org", "b\"ob\\pass word"), other)
                .await,
            Ok(())
        );
        // A cached success passes even from the throttled address.
        assert_eq!(
            v.verify(&creds("carol@example.org", "pässwort-carol"), guesser)
                .await,
            Ok(())
        );
        // Dovecot is stopped: the cached success still passes, a new password cannot.
        drop(org);
        assert_eq!(
            v.verify(&creds("carol@example.org", "pässwort-carol"), other)
                .await,
            Ok(())
        );
        assert!(matches!(
            v.verify(&creds("carol@example.org", "another"), other)
                .await,
            Err(AuthError::Unavailable(_))
        ));
    });
}

//! `sealgated --box` as the box runs it: settings read over the box's shipped settings, a
//! damaged settings file or token file reported on the console, the console kept quiet (the
//! log goes to its file), health answered. Attacker: none new; these are the box's own
//! files on its data partition, damaged by a power cut (or an operator), not peer input.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::harness::require_tool;

fn check(data_dir: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sealgated"))
        .args(["--box", "--check-settings", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("sealgated --check-settings");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// `sealgated --box` on `data_dir` as the box's service starts it (its vault verdict in
/// `data_dir/vault-verdict`), with the software sealer and loopback ports of its own.
fn box_daemon(data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sealgated"));
    cmd.args(["--box", "--danger-software-sealer", "--data-dir"])
        .arg(data_dir)
        .arg("--vault-verdict")
        .arg(data_dir.join("vault-verdict"))
        // The shipped settings' ports could be taken on a test machine.
        .args([
            "--listen-admin",
            "127.0.0.1:0",
            "--listen-docking",
            "127.0.0.1:0",
        ])
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    cmd
}

#[test]
fn box_settings_check_tells_damaged_files_from_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("settings.toml");
    // The first boot's empty copy of issue 20, a zero-filled file, a cut-off one.
    for (bytes, why) in [
        (&b""[..], "empty"),
        (&[0u8; 512][..], "NUL"),
        (&b"[admin]\nlisten = \"0.0.0."[..], "invalid"),
    ] {
        std::fs::write(&file, bytes).unwrap();
        let (code, out) = check(dir.path());
        assert_eq!(code, Some(3), "{out}");
        assert!(out.starts_with("settings fallback "), "{out}");
        assert!(out.contains(why), "{out}");
        assert!(out.contains("admin 0.0.0.0:8440\n"), "{out}");
        assert!(out.contains("docking 0.0.0.0:8444\n"), "{out}");
    }
    std::fs::remove_file(&file).unwrap();
    let (code, out) = check(dir.path());
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("missing"), "{out}");
    // A good file, read over the shipped settings.
    std::fs::write(&file, "[admin]\nlisten = \"0.0.0.0:9440\"\n").unwrap();
    let (code, out) = check(dir.path());
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("settings ok "), "{out}");
    assert!(out.contains("admin 0.0.0.0:9440\n"), "{out}");
    assert!(out.contains("docking 0.0.0.0:8444\n"), "{out}");
    // Without --box an empty file is the developer's defaults, as before.
    std::fs::write(&file, "").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sealgated"))
        .args(["--check-settings", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("admin 127.0.0.1:8440\n"), "{text}");
}

#[test]
fn a_box_with_an_empty_settings_file_and_a_damaged_token_file_says_so_and_serves() {
    require_tool("curl", "curl");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("settings.toml"), "").unwrap();
    std::fs::write(dir.path().join("api-tokens.json"), "{\"version\":1,\"tok").unwrap();
    let mut child = box_daemon(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(dir.path().join("stderr.log")).unwrap(),
        ))
        .spawn()
        .expect("start sealgated");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut console = Vec::new();
    let mut admin = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            let _ = child.kill();
            panic!("not ready: {console:?}");
        };
        if let Some(a) = line.strip_prefix("sealgated: listening admin ") {
            admin = Some(a.to_string());
        }
        let ready = line == "sealgated: ready";
        console.push(line);
        if ready {
            break;
        }
    }
    let text = console.join("\n");
    assert!(
        text.contains("SETTINGS NOT USABLE:") && text.contains("settings.toml: empty"),
        "{text}"
    );
    assert!(text.contains("API TOKEN FILE UNREADABLE"), "{text}");
    // The box's service script reads the vault's verdict from here (the boot's only unseal).
    assert!(text.contains("sealgated: vault open ("), "{text}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("vault-verdict")).unwrap(),
        "unsealed\n"
    );
    let url = format!("https://{}/api/v1/health", admin.expect("admin address"));
    let out = Command::new("curl")
        .args(["-k", "-s", "--max-time", "10", &url])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"up\""),
        "health: {:?}",
        out
    );
    // The box's health gate asks the same through the daemon binary (over TLS).
    let gate = |admin: &str| {
        Command::new(env!("CARGO_BIN_EXE_sealgated"))
            .args([
                "--box",
                "--check-health",
                "--listen-admin",
                admin,
                "--data-dir",
            ])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let admin_addr = url
        .trim_start_matches("https://")
        .trim_end_matches("/api/v1/health")
        .to_string();
    let out = gate(&admin_addr);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("health ok "));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let out = gate(&admin_addr);
    assert!(!out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("health failed"));
    // The console (stderr) got no INFO flood and no colour codes; the log file has it all.
    let stderr = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(!stderr.contains("INFO"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr}");
    let log = std::fs::read_to_string(dir.path().join("log/sealgated.log")).unwrap();
    assert!(log.contains("\"starting\""), "{log}");
    assert!(!log.contains('\u{1b}'), "{log}");
}

/// A vault that cannot be opened (here a damaged database; on the box a TPM refusing the
/// unseal) is said in the verdict file the service script turns into the box's `VAULT
/// LOCKED`, and the daemon exits without listening.
#[test]
fn a_box_whose_vault_does_not_open_writes_a_locked_verdict_and_serves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vault.redb"), b"not a vault database").unwrap();
    let verdict = dir.path().join("vault-verdict");
    std::fs::write(&verdict, "unsealed\n").unwrap();
    let out = box_daemon(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run sealgated");
    let console = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{console}");
    assert!(!console.contains("listening"), "{console}");
    let said = std::fs::read_to_string(&verdict).unwrap();
    assert!(said.starts_with("locked: "), "{said}");
    assert!(!said.contains("cannot open the vault"), "{said}");
    assert_eq!(said.lines().count(), 1, "{said}");
}

//! What the benchmarks share: commands pinned to a CPU, the release daemon started and its
//! listeners read from its console.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// `program`, run under `taskset -c CPU` when a CPU is given.
pub fn pinned(program: &str, cpu: Option<usize>) -> Command {
    match cpu {
        Some(c) => {
            let mut t = Command::new("taskset");
            t.args(["-c", &c.to_string(), program]);
            t
        }
        None => Command::new(program),
    }
}

/// Starts the release daemon on `data` (pinned to `cpu` if given), waits until it is ready
/// and returns it with its listeners (name, address as printed).
pub fn start_daemon(data: &Path, cpu: Option<usize>) -> (Child, Vec<(String, String)>) {
    let mut child = pinned(env!("CARGO_BIN_EXE_sealgated"), cpu)
        .arg("--data-dir")
        .arg(data)
        .arg("--danger-software-sealer")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sealgated");
    let mut listeners = Vec::new();
    for line in BufReader::new(child.stdout.take().expect("stdout")).lines() {
        let line = line.expect("line");
        if let Some((name, addr)) = line
            .strip_prefix("sealgated: listening ")
            .and_then(|l| l.split_once(' '))
        {
            listeners.push((name.to_string(), addr.to_string()));
        }
        if line == "sealgated: ready" {
            break;
        }
    }
    (child, listeners)
}

/// Makes a panic print one line on stderr, `NAME: message (file:line)`, never a backtrace.
#[allow(dead_code)] // not every bench target uses every helper
pub fn one_line_panics(name: &'static str) {
    std::panic::set_hook(Box::new(move |info| {
        let msg = info.payload_as_str().unwrap_or("panic");
        let at = info
            .location()
            .map(|l| format!(" ({}:{})", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "{name}: {}{at}",
            msg.split_whitespace().collect::<Vec<_>>().join(" ")
        );
    }));
}

/// Ends the run with one line naming the Debian package when `tool` is not on the path.
#[allow(dead_code)]
pub fn require(name: &str, tool: &str, package: &str) {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("{name}: `{tool}` is missing: install the Debian package `{package}`");
        std::process::exit(2);
    }
}

/// The `--json FILE` argument (after `cargo bench ... --`), if given.
#[allow(dead_code)]
pub fn json_arg() -> Option<std::path::PathBuf> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == "--json")?;
    match args.get(i + 1) {
        Some(f) => Some(f.into()),
        None => {
            eprintln!("--json needs a FILE");
            std::process::exit(2);
        }
    }
}

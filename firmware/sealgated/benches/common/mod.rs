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

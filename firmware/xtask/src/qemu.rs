//! `cargo xtask qemu`: README's "run the product" command. Builds the image if it is
//! missing, starts swtpm (its state kept in the VM folder) and boots the box under QEMU with
//! the serial console on this terminal, forwarding host ports to the box's services.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use sealgate_qemu::{BootOptions, ConsoleMode, GUEST_PORTS, PortForwards, READY_LINE, Vm, VmDir};

use crate::image;
use crate::test::{ensure_debian_packages, workspace_root};

/// Debian packages that boot the image (and that the system tests need).
pub(crate) const QEMU_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "ovmf",
    "qemu-utils",
    "swtpm",
    "swtpm-tools",
    "curl",
];

/// What boots the aarch64 box besides [`QEMU_PACKAGES`]: its emulator and firmware (AAVMF).
const AARCH64_QEMU_PACKAGES: &[&str] = &["qemu-system-arm", "qemu-efi-aarch64"];

/// Everything `cargo xtask qemu` installs: what boots the box, and when the image is to be
/// built first, what that needs (installed up front, so a fresh machine fails early or not at
/// all; the aarch64 image's own build tools are installed by its build).
pub(crate) fn run_packages(board: image::Board, build_image: bool) -> Vec<&'static str> {
    let mut p = QEMU_PACKAGES.to_vec();
    if board.name == "qemu-aarch64" {
        p.extend(AARCH64_QEMU_PACKAGES);
    }
    if build_image {
        p.extend(image::build_packages());
    }
    p
}

/// Arguments of `cargo xtask qemu`.
#[derive(clap::Args)]
pub struct Args {
    /// The board (a folder of board/).
    #[arg(long, default_value = "qemu-x86_64")]
    board: String,
    /// Host port N forwards to the admin HTTPS port, N+1 to SMTP (25), N+2 to submission
    /// (587), N+3 to IMAPS (993), N+4 to the docking API.
    #[arg(long, default_value_t = sealgate_qemu::DEFAULT_PORTS_BASE)]
    ports_base: u16,
    /// Start from a new disk and a new TPM (a box fresh from the factory).
    #[arg(long)]
    fresh: bool,
    /// Rebuild the image first even if one exists.
    #[arg(long)]
    rebuild: bool,
    /// Boot this disk image instead of the board's built one (e.g. another branch's, to
    /// compare timelines); its `efivars.fd` beside it is used if there is one. A VM folder
    /// made from another image needs `--fresh`.
    #[arg(long, value_name = "FILE", conflicts_with = "rebuild")]
    image: Option<PathBuf>,
    /// No terminal: the console goes to a Unix socket and a log file in the VM folder (both
    /// printed); QEMU runs until killed (its pid is printed).
    #[arg(long)]
    headless: bool,
    /// The VM folder (disk overlay, UEFI variables, TPM state, console log).
    #[arg(long, value_name = "DIR")]
    vm_dir: Option<PathBuf>,
    /// Boot without a TPM (to see what a box without one says).
    #[arg(long)]
    no_tpm: bool,
    /// Guest memory, MiB.
    #[arg(long, default_value_t = 512)]
    memory: u32,
    /// No terminal: boot the box N times (a reboot through the console menu between boots),
    /// each until the daemon is ready or the vault locked, and print each boot's timeline
    /// (when each stage started, from the console); then power the box off.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "2")]
    timeline: Option<u32>,
    /// With --timeline: also print every console line with the time it arrived.
    #[arg(long, requires = "timeline")]
    lines: bool,
}

/// `cargo xtask qemu`.
pub fn run(args: Args) -> Result<()> {
    let board = image::Board::named(&args.board)?;
    let qboard = sealgate_qemu::Board::named(board.name)?;
    let image_path = args
        .image
        .clone()
        .unwrap_or_else(|| sealgate_qemu::image_path(qboard));
    let build = args.image.is_none() && (args.rebuild || !image_path.is_file());
    ensure_debian_packages(&run_packages(board, build))?;
    if build {
        image::build(
            board,
            &image::Args {
                board: args.board.clone(),
                binaries: Vec::new(),
            },
        )?;
    }
    let vm_path = match args.vm_dir {
        Some(p) => p,
        None => workspace_root()?.join("target/vm").join(board.name),
    };
    let dir = VmDir::prepare(&vm_path, qboard, &image_path, args.fresh)
        .context("preparing the VM folder")?;
    let ports = PortForwards {
        base: args.ports_base,
    };
    for (name, guest) in GUEST_PORTS {
        let host = ports.host_port(name).unwrap_or_default();
        println!("forward 127.0.0.1:{host} -> box {name} ({guest})");
    }
    if let Some(boots) = args.timeline {
        let opts = BootOptions {
            ports: Some(ports),
            memory_mib: args.memory,
            tpm: !args.no_tpm,
            console: ConsoleMode::Harness,
            ..Default::default()
        };
        println!("VM folder: {}", dir.path.display());
        return timeline(&dir, &opts, boots.max(1), args.lines);
    }
    let console = if args.headless {
        ConsoleMode::Headless
    } else {
        ConsoleMode::Terminal
    };
    let opts = BootOptions {
        ports: Some(ports),
        memory_mib: args.memory,
        tpm: !args.no_tpm,
        console,
        ..Default::default()
    };
    println!("VM folder: {}", dir.path.display());
    if !args.headless {
        println!("console on this terminal; Ctrl-A X quits QEMU\n");
    }
    let mut vm = Vm::boot(&dir, &opts)?;
    if args.headless {
        println!("QEMU pid {}", vm.pid());
        println!("console socket: {}", dir.console_socket().display());
        println!("console log:    {}", dir.console_log().display());
        // The caller owns the box now: keep QEMU and swtpm running after we exit.
        std::mem::forget(vm);
        return Ok(());
    }
    // QEMU runs with -no-reboot (a reboot inside one QEMU is slow and flaky under TCG): when
    // the box rebooted, boot it again with a fresh QEMU.
    loop {
        let status = vm.wait()?;
        let log = std::fs::read_to_string(dir.console_log()).unwrap_or_default();
        if !log.trim_end().ends_with("reboot: Restarting system") {
            println!("\nQEMU exited ({status})");
            return Ok(());
        }
        println!("\nthe box rebooted; starting it again");
        vm = Vm::boot(&dir, &opts)?;
    }
}

/// How long one boot may take to be ready (a first boot creates the vault and TLS key).
const TIMELINE_BOOT: Duration = Duration::from_secs(300);
/// The console menu's answer.
const MENU: Duration = Duration::from_secs(60);
/// How a boot ends: the daemon ready, or the box saying why it serves nothing.
const VERDICTS: [&str; 3] = [READY_LINE, "VAULT LOCKED", "NO TPM FOUND"];

/// `cargo xtask qemu --timeline N`: N boots of the box, each one's timeline printed.
fn timeline(dir: &VmDir, opts: &BootOptions, boots: u32, lines: bool) -> Result<()> {
    for boot in 1..=boots {
        let mut vm = Vm::boot(dir, opts)?;
        let c = vm.console()?;
        let (which, _) = c
            .expect_any(&VERDICTS, TIMELINE_BOOT)
            .with_context(|| format!("boot {boot}: neither ready nor locked"))?;
        if lines {
            println!("\nboot {boot} of {boots}, every console line (s after QEMU started):");
            for (t, line) in c.timed_lines() {
                println!("{:8.2}  {line}", t.as_secs_f64());
            }
        }
        println!("\nboot {boot} of {boots}:\n{}", c.timeline());
        if which > 0 {
            println!(
                "boot {boot}: {} (see {}); the box serves nothing, so no more boots",
                VERDICTS[which],
                dir.console_log().display()
            );
            return Ok(());
        }
        if boot == boots {
            break;
        }
        // A clean reboot through the console menu (QEMU runs with -no-reboot: a new QEMU).
        c.send_line("x")?;
        c.expect("Not a menu entry", MENU)?;
        c.expect("Choose 1-10: ", MENU)?;
        c.send_line("6")?;
        c.expect("Type yes to confirm: ", MENU)?;
        c.send_line("yes")?;
        c.expect("Restarting system", MENU)?;
        vm.wait_exit(Duration::from_secs(30))?;
    }
    Ok(())
}

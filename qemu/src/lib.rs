//! Boots Sealgate disk images under QEMU with a software TPM, for the system tests and for
//! `cargo xtask qemu`.
//!
//! A [`VmDir`] holds everything one virtual box keeps between boots: its disk (a qcow2
//! overlay on the built image), its UEFI variables, its swtpm state. [`Vm::boot`] starts
//! swtpm and QEMU for one boot; the serial console is a Unix socket that [`Console`] reads
//! with bounded polling (`expect`) and writes lines to (`send_line`). Dropping a [`Vm`]
//! kills QEMU and swtpm. Each boot is a fresh QEMU process (`-no-reboot`): under TCG a
//! reboot inside one QEMU is slow and sometimes hangs in GRUB.
#![forbid(unsafe_code)]

mod timeline;
pub use timeline::{BOOT_STAGES, Stage, Timeline};

use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The guest's ports that [`PortForwards`] map, in the order of `--ports-base N`:
/// N admin HTTPS (sealgated's admin listener), N+1 SMTP, N+2 submission, N+3 IMAPS,
/// N+4 the docking API (sealgated's docking listener).
pub const GUEST_PORTS: [(&str, u16); 5] = [
    ("admin-https", 8440),
    ("smtp", 25),
    ("submission", 587),
    ("imaps", 993),
    ("docking", 8444),
];

/// The default `--ports-base`.
pub const DEFAULT_PORTS_BASE: u16 = 8440;

/// The line sealgated prints on the console when it is ready.
pub const READY_LINE: &str = "sealgated: ready";

/// A board QEMU can boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Board {
    /// `board/qemu-x86_64`: q35, OVMF, virtio, TPM TIS.
    X86_64,
    /// `board/qemu-aarch64`: `virt` (device tree, no ACPI), AAVMF, virtio, `tpm-tis-device`.
    Aarch64,
}

impl Board {
    /// The board's folder name under `board/`.
    pub fn name(self) -> &'static str {
        match self {
            Board::X86_64 => "qemu-x86_64",
            Board::Aarch64 => "qemu-aarch64",
        }
    }

    /// The board named `name`.
    pub fn named(name: &str) -> Result<Board> {
        match name {
            "qemu-x86_64" => Ok(Board::X86_64),
            "qemu-aarch64" => Ok(Board::Aarch64),
            _ => bail!("unknown board {name:?}; known: qemu-x86_64, qemu-aarch64"),
        }
    }

    fn qemu(self) -> &'static str {
        match self {
            Board::X86_64 => "qemu-system-x86_64",
            Board::Aarch64 => "qemu-system-aarch64",
        }
    }

    /// UEFI firmware code and the variables template (Debian paths).
    fn firmware(self) -> (&'static str, &'static str) {
        match self {
            Board::X86_64 => (
                "/usr/share/OVMF/OVMF_CODE_4M.fd",
                "/usr/share/OVMF/OVMF_VARS_4M.fd",
            ),
            Board::Aarch64 => (
                "/usr/share/AAVMF/AAVMF_CODE.fd",
                "/usr/share/AAVMF/AAVMF_VARS.fd",
            ),
        }
    }

    /// The peers this board needs: (program or file, Debian package).
    pub fn peers(self) -> Vec<(&'static str, &'static str)> {
        let (code, _) = self.firmware();
        let mut p = match self {
            Board::X86_64 => vec![(self.qemu(), "qemu-system-x86"), (code, "ovmf")],
            Board::Aarch64 => vec![(self.qemu(), "qemu-system-arm"), (code, "qemu-efi-aarch64")],
        };
        p.extend([
            ("qemu-img", "qemu-utils"),
            ("swtpm", "swtpm"),
            ("swtpm_setup", "swtpm-tools"),
        ]);
        p
    }
}

/// Fails, naming the Debian package, unless every peer the board needs is installed.
pub fn require_peers(board: Board) -> Result<()> {
    let mut missing = Vec::new();
    for (what, package) in board.peers() {
        let found = if what.starts_with('/') {
            Path::new(what).exists()
        } else {
            find_program(what).is_some()
        };
        if !found {
            missing.push(format!("{what} (Debian package {package})"));
        }
    }
    if !missing.is_empty() {
        bail!(
            "missing for {}: {}; apt-get install them",
            board.name(),
            missing.join(", ")
        );
    }
    Ok(())
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The workspace root (this crate is `qemu/` in it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Where `cargo xtask image` puts a board's disk image.
pub fn image_path(board: Board) -> PathBuf {
    workspace_root()
        .join("target/image")
        .join(board.name())
        .join(format!("sealgate-{}.img", board.name()))
}

/// The board's image, built by `cargo xtask image` if it is not there yet. A nested build
/// uses its own target directory: the calling `cargo test` holds the lock of the usual one.
pub fn ensure_image(board: Board) -> Result<PathBuf> {
    let image = image_path(board);
    if image.is_file() {
        return Ok(image);
    }
    let root = workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", root.join("target/image/cargo"))
        .args([
            "run",
            "--quiet",
            "--package",
            "xtask",
            "--",
            "image",
            "--board",
            board.name(),
        ])
        .status()
        .context("running cargo xtask image")?;
    if !status.success() || !image.is_file() {
        bail!("cargo xtask image --board {} failed", board.name());
    }
    Ok(image)
}

/// The UEFI variable store an image build writes beside the image: the box's Secure Boot
/// keys enrolled and Secure Boot on, as a box leaves the factory.
pub const ENROLLED_VARS: &str = "efivars.fd";

/// virt-firmware from PyPI (pinned), which edits UEFI variable stores offline.
pub const VIRT_FIRMWARE: &str = "virt-firmware==26.10";

/// `virt-fw-vars`, installed on first use into a virtual environment under `target/tools/`.
pub fn virt_fw_vars() -> Result<PathBuf> {
    let venv = workspace_root().join("target/tools/virt-firmware");
    let bin = venv.join("bin/virt-fw-vars");
    if bin.is_file() {
        return Ok(bin);
    }
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .context("python3 -m venv")?;
    if !status.success() {
        bail!(
            "python3 -m venv {} failed (Debian package python3-venv)",
            venv.display()
        );
    }
    let status = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", VIRT_FIRMWARE])
        .status()
        .context("pip install virt-firmware")?;
    if !status.success() || !bin.is_file() {
        bail!("pip install {VIRT_FIRMWARE} failed");
    }
    Ok(bin)
}

/// One virtual box's persistent state: disk, UEFI variables, TPM.
#[derive(Debug, Clone)]
pub struct VmDir {
    /// The folder.
    pub path: PathBuf,
    /// The board.
    pub board: Board,
}

impl VmDir {
    /// Opens (or, with `fresh` or when empty, creates) the VM folder `path` for `image`.
    pub fn prepare(path: &Path, board: Board, image: &Path, fresh: bool) -> Result<VmDir> {
        if fresh && path.exists() {
            fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))?;
        }
        fs::create_dir_all(path.join("tpm"))
            .with_context(|| format!("creating {}", path.display()))?;
        let dir = VmDir {
            path: path.to_path_buf(),
            board,
        };
        if !dir.disk().exists() {
            let image = image
                .canonicalize()
                .with_context(|| format!("no image at {}", image.display()))?;
            let out = Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
                .arg(&image)
                .arg(dir.disk())
                .output()
                .context("qemu-img (Debian package qemu-utils)")?;
            if !out.status.success() {
                bail!(
                    "qemu-img create failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        dir.manufacture_tpm()?;
        if !dir.vars().exists() {
            // The image's own variable store (its Secure Boot keys enrolled, Secure Boot on),
            // else the firmware's empty one.
            let enrolled = image.with_file_name(ENROLLED_VARS);
            let vars = if enrolled.is_file() {
                enrolled
            } else {
                PathBuf::from(board.firmware().1)
            };
            fs::copy(&vars, dir.vars()).with_context(|| format!("copying {}", vars.display()))?;
        }
        Ok(dir)
    }

    /// The disk (a qcow2 overlay over the image).
    pub fn disk(&self) -> PathBuf {
        self.path.join("disk.qcow2")
    }

    /// This box's UEFI variables.
    pub fn vars(&self) -> PathBuf {
        self.path.join("efivars.fd")
    }

    /// Adds an entry to the Secure Boot revocation list (dbx) in this box's UEFI variables,
    /// as a firmware's dbx update does. OVMF measures dbx into PCR 7, so a vault sealed to
    /// PCR 7 no longer unseals. The entry names no binary of the box, so the box still boots.
    pub fn add_dbx_entry(&self) -> Result<()> {
        let tool = virt_fw_vars()?;
        let tmp = self.path.join("efivars.new");
        let out = Command::new(tool)
            .arg("--input")
            .arg(self.vars())
            .arg("--output")
            .arg(&tmp)
            .args(["--add-dbx-hash", "5ea19a7e-0000-4000-8000-000000000001"])
            .arg("5ea1".repeat(16))
            .output()
            .context("running virt-fw-vars")?;
        if !out.status.success() {
            bail!(
                "virt-fw-vars failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        fs::rename(&tmp, self.vars())?;
        Ok(())
    }

    /// swtpm's state folder.
    pub fn tpm_state(&self) -> PathBuf {
        self.path.join("tpm")
    }

    /// Makes this box's TPM (once, when its state folder is empty) with only the SHA-256
    /// PCR bank active, as the box's TPM is provisioned: the vault is sealed to SHA-256 PCRs,
    /// and the firmware hashes every image it measures once per active bank (swtpm's own
    /// default has more banks active, which costs seconds per boot under TCG).
    pub fn manufacture_tpm(&self) -> Result<()> {
        if self.tpm_state().join("tpm2-00.permall").exists() {
            return Ok(());
        }
        let out = Command::new("swtpm_setup")
            .arg("--tpm2")
            .arg("--tpmstate")
            .arg(self.tpm_state())
            .args(["--pcr-banks", "sha256"])
            .output()
            .context("swtpm_setup (Debian package swtpm-tools)")?;
        if !out.status.success() {
            bail!(
                "swtpm_setup --pcr-banks sha256 failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// The console log of the current boot (every byte the box printed).
    pub fn console_log(&self) -> PathBuf {
        self.path.join("console.log")
    }

    /// The console socket of a `--headless` boot.
    pub fn console_socket(&self) -> PathBuf {
        self.path.join("console.sock")
    }
}

/// A running swtpm for one boot; killed on drop.
pub struct Swtpm {
    child: Child,
    ctrl: PathBuf,
}

impl Swtpm {
    /// Starts swtpm on the VM folder's TPM state, its control socket in that folder.
    pub fn start(dir: &VmDir) -> Result<Swtpm> {
        Swtpm::start_in(&dir.tpm_state(), &dir.path)
    }

    /// Starts swtpm with its state in `state`, its control socket and log in `dir`.
    pub fn start_in(state: &Path, dir: &Path) -> Result<Swtpm> {
        let ctrl = dir.join("swtpm.sock");
        let _ = fs::remove_file(&ctrl);
        let log = dir.join("swtpm.log");
        let child = Command::new("swtpm")
            .arg("socket")
            .arg("--tpm2")
            .arg("--tpmstate")
            .arg(format!("dir={}", state.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}", ctrl.display()))
            .arg("--log")
            .arg(format!("file={},level=1", log.display()))
            .arg("--terminate")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting swtpm (Debian package swtpm)")?;
        let mut tpm = Swtpm { child, ctrl };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !tpm.ctrl.exists() {
            if let Some(status) = tpm.child.try_wait()? {
                bail!("swtpm exited ({status}); see {}", log.display());
            }
            if Instant::now() > deadline {
                bail!("swtpm did not create {} within 10 s", tpm.ctrl.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(tpm)
    }

    /// Its control socket (QEMU's `-chardev socket,path=`).
    pub fn socket(&self) -> &Path {
        &self.ctrl
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Host ports forwarded to the box's [`GUEST_PORTS`].
#[derive(Debug, Clone, Copy)]
pub struct PortForwards {
    /// Host port of the first guest port; the others follow.
    pub base: u16,
}

impl PortForwards {
    /// The host port that reaches guest port `name` (see [`GUEST_PORTS`]).
    pub fn host_port(&self, name: &str) -> Option<u16> {
        GUEST_PORTS
            .iter()
            .position(|(n, _)| *n == name)
            .map(|i| self.base + i as u16)
    }

    /// A base whose five ports are free now (for tests running side by side). Taken below
    /// the kernel's ephemeral range, so that other tests' `bind(0)` and outgoing connections
    /// (which draw from that range) do not take a forwarded port between this check and
    /// QEMU's own bind, nor between one boot of the box and the next.
    pub fn free() -> Result<PortForwards> {
        let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
            .unwrap_or(32768);
        let (low, high) = (10000u16, ephemeral_low.saturating_sub(5));
        if high > low {
            let mut seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos() as u64)
                ^ (u64::from(std::process::id()) << 20)
                | 1;
            for _ in 0..200 {
                // xorshift: spread the bases of tests started side by side.
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let base = low + (seed % u64::from(high - low)) as u16;
                if (0..5).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
                    return Ok(PortForwards { base });
                }
            }
        }
        for _ in 0..50 {
            let l = TcpListener::bind("127.0.0.1:0")?;
            let base = l.local_addr()?.port();
            drop(l);
            if base > 65000 {
                continue;
            }
            if (0..5).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
                return Ok(PortForwards { base });
            }
        }
        bail!("found no five free consecutive ports")
    }

    fn netdev(&self) -> String {
        let mut s = String::from("user,id=net0");
        for (i, (_, guest)) in GUEST_PORTS.iter().enumerate() {
            s.push_str(&format!(
                ",hostfwd=tcp:127.0.0.1:{}-:{guest}",
                self.base + i as u16
            ));
        }
        s
    }
}

/// Where the serial console goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleMode {
    /// The harness's own socket (tests): nothing the box prints is lost.
    Harness,
    /// This terminal (`cargo xtask qemu`); Ctrl-A X quits QEMU.
    Terminal,
    /// A Unix socket in the VM folder plus its log file (`cargo xtask qemu --headless`).
    Headless,
}

/// How to boot.
#[derive(Debug, Clone)]
pub struct BootOptions {
    /// Port forwards, if any.
    pub ports: Option<PortForwards>,
    /// Guest memory, MiB.
    pub memory_mib: u32,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Start swtpm and give the box a TPM (boards that have one).
    pub tpm: bool,
    /// Where the console goes.
    pub console: ConsoleMode,
}

impl Default for BootOptions {
    fn default() -> Self {
        BootOptions {
            ports: None,
            memory_mib: 512,
            cpus: 2,
            tpm: true,
            console: ConsoleMode::Harness,
        }
    }
}

/// One boot of a box: QEMU (and swtpm); both killed on drop.
pub struct Vm {
    qemu: Child,
    // Dropped after QEMU (fields drop in order): swtpm outlives the VM that uses it.
    _swtpm: Option<Swtpm>,
    /// The serial console (harness mode only).
    pub console: Option<Console>,
    /// The VM folder.
    pub dir: VmDir,
    started: Instant,
}

impl Vm {
    /// Starts swtpm and QEMU for one boot of `dir`.
    pub fn boot(dir: &VmDir, opts: &BootOptions) -> Result<Vm> {
        require_peers(dir.board)?;
        let swtpm = if opts.tpm {
            Some(Swtpm::start(dir)?)
        } else {
            None
        };
        let mut cmd = Command::new(dir.board.qemu());
        cmd.args(qemu_args(dir, opts, swtpm.as_ref()));
        let _ = fs::remove_file(dir.console_log());
        let listener = if opts.console == ConsoleMode::Harness {
            let sock = dir.path.join("harness-console.sock");
            let _ = fs::remove_file(&sock);
            let l =
                UnixListener::bind(&sock).with_context(|| format!("binding {}", sock.display()))?;
            l.set_nonblocking(true)?;
            Some(l)
        } else {
            None
        };
        match opts.console {
            ConsoleMode::Terminal => cmd
                .stdin(Stdio::inherit())
                .stdout(Stdio::inherit())
                .stderr(Stdio::inherit()),
            _ => cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(
                fs::File::create(dir.path.join("qemu.stderr")).context("creating qemu.stderr")?,
            ),
        };
        let started = Instant::now();
        let mut qemu = cmd
            .spawn()
            .with_context(|| format!("starting {}", dir.board.qemu()))?;
        let console = match listener {
            Some(l) => {
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    match l.accept() {
                        Ok((stream, _)) => {
                            break Some(Console::new(stream, &dir.console_log(), started)?);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e).context("accepting QEMU's console connection"),
                    }
                    if let Some(status) = qemu.try_wait()? {
                        let err =
                            fs::read_to_string(dir.path.join("qemu.stderr")).unwrap_or_default();
                        bail!("QEMU exited ({status}) before connecting its console:\n{err}");
                    }
                    if Instant::now() > deadline {
                        let _ = qemu.kill();
                        bail!("QEMU did not connect its console within 20 s");
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            None => None,
        };
        Ok(Vm {
            qemu,
            _swtpm: swtpm,
            console,
            dir: dir.clone(),
            started,
        })
    }

    /// The console (fails for a boot without [`ConsoleMode::Harness`]).
    pub fn console(&mut self) -> Result<&mut Console> {
        self.console
            .as_mut()
            .context("this boot has no harness console")
    }

    /// Time since QEMU started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits (bounded) for QEMU to exit by itself, e.g. after the box rebooted or powered
    /// off (QEMU runs with `-no-reboot`). Keeps reading the console meanwhile.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = self.console.as_mut() {
                c.pump(Duration::from_millis(100))?;
            } else {
                std::thread::sleep(Duration::from_millis(100));
            }
            if self.qemu.try_wait()?.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("QEMU did not exit within {} s", timeout.as_secs());
            }
        }
    }

    /// Waits for QEMU to exit (the terminal mode of `cargo xtask qemu`).
    pub fn wait(mut self) -> Result<std::process::ExitStatus> {
        Ok(self.qemu.wait()?)
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.qemu.id()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
    }
}

/// The QEMU command line of one boot.
fn qemu_args(dir: &VmDir, opts: &BootOptions, swtpm: Option<&Swtpm>) -> Vec<String> {
    let (code, _) = dir.board.firmware();
    let accel = std::env::var("SEALGATE_QEMU_ACCEL").unwrap_or_else(|_| "tcg".into());
    let mut a: Vec<String> = Vec::new();
    let mut push = |s: &[&str]| a.extend(s.iter().map(|x| x.to_string()));
    match dir.board {
        Board::X86_64 => push(&["-machine", &format!("q35,accel={accel}")]),
        // Not `max`: its pointer authentication is slow to emulate and the binaries (Debian's
        // arm64 baseline) do not need it. No ACPI tables: AAVMF then hands the kernel QEMU's
        // device tree, which the board's kernel (no ACPI support) describes its devices by.
        Board::Aarch64 => push(&[
            "-machine",
            &format!("virt,accel={accel},acpi=off"),
            "-cpu",
            "cortex-a72",
        ]),
    }
    push(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    push(&[
        "-m",
        &opts.memory_mib.to_string(),
        "-smp",
        &opts.cpus.to_string(),
    ]);
    push(&[
        "-drive",
        &format!("if=pflash,format=raw,unit=0,readonly=on,file={code}"),
    ]);
    push(&[
        "-drive",
        &format!("if=pflash,format=raw,unit=1,file={}", dir.vars().display()),
    ]);
    push(&[
        "-drive",
        &format!(
            "if=none,id=disk0,format=qcow2,file={}",
            dir.disk().display()
        ),
    ]);
    push(&["-device", "virtio-blk-pci,drive=disk0,bootindex=0"]);
    push(&["-device", "virtio-rng-pci"]);
    // The boot's watchdog (stage-1 arms it, the health gate disarms it); its reset ends
    // this QEMU (`-no-reboot`), as any reboot does.
    push(&["-device", "i6300esb", "-action", "watchdog=reset"]);
    // No option ROM on the NIC (`romfile=`): QEMU would give it iPXE, which the firmware
    // starts at every boot for a network boot the box never does (about a second under TCG).
    let nic = "virtio-net-pci,netdev=net0,romfile=";
    if let Some(ports) = opts.ports {
        push(&["-netdev", &ports.netdev(), "-device", nic]);
    } else {
        push(&["-netdev", "user,id=net0", "-device", nic]);
    }
    if let Some(tpm) = swtpm {
        push(&[
            "-chardev",
            &format!("socket,id=chrtpm,path={}", tpm.ctrl.display()),
        ]);
        // virt has no ISA bus: its TPM is the MMIO `tpm-tis-device` (from the device tree).
        let device = match dir.board {
            Board::X86_64 => "tpm-tis,tpmdev=tpm0",
            Board::Aarch64 => "tpm-tis-device,tpmdev=tpm0",
        };
        push(&[
            "-tpmdev",
            "emulator,id=tpm0,chardev=chrtpm",
            "-device",
            device,
        ]);
    }
    let log = dir.console_log();
    match opts.console {
        ConsoleMode::Harness => {
            let sock = dir.path.join("harness-console.sock");
            push(&[
                "-chardev",
                &format!("socket,id=con0,path={},server=off", sock.display()),
            ]);
            push(&["-serial", "chardev:con0"]);
        }
        ConsoleMode::Terminal => {
            push(&[
                "-chardev",
                &format!("stdio,id=con0,mux=on,signal=off,logfile={}", log.display()),
            ]);
            push(&[
                "-serial",
                "chardev:con0",
                "-mon",
                "chardev=con0,mode=readline",
            ]);
        }
        ConsoleMode::Headless => {
            push(&[
                "-chardev",
                &format!(
                    "socket,id=con0,path={},server=on,wait=off,logfile={}",
                    dir.console_socket().display(),
                    log.display()
                ),
            ]);
            push(&["-serial", "chardev:con0"]);
        }
    }
    a
}

/// The box's serial console: everything read is kept (and logged) so `expect` can search it.
///
/// A reader thread takes the console's output as it comes, whether or not a test is waiting
/// for something: QEMU's serial port writes to the socket a byte at a time, so a few hundred
/// unread bytes fill the socket's buffer, after which every writer to the box's console
/// (the daemon included) blocks.
pub struct Console {
    stream: UnixStream,
    seen: Vec<u8>,
    cursor: usize,
    /// What the reader thread took: bytes and when they arrived, or the end of the stream.
    incoming: std::sync::mpsc::Receiver<Incoming>,
    open: bool,
    /// When each read ended: (length of `seen` then, time since QEMU started).
    arrivals: Vec<(usize, Duration)>,
}

enum Incoming {
    Bytes(Vec<u8>, Duration),
    End(Option<String>),
}

impl Console {
    fn new(stream: UnixStream, log: &Path, started: Instant) -> Result<Console> {
        stream.set_read_timeout(Some(Duration::from_millis(100)))?;
        let mut log =
            fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut reader = stream.try_clone().context("the console socket")?;
        let (tx, incoming) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let end = loop {
                match reader.read(&mut buf) {
                    Ok(0) => break None,
                    Ok(n) => {
                        let _ = log.write_all(&buf[..n]);
                        if tx
                            .send(Incoming::Bytes(buf[..n].to_vec(), started.elapsed()))
                            .is_err()
                        {
                            return; // The console is gone.
                        }
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(e) if e.kind() == ErrorKind::ConnectionReset => break None,
                    Err(e) => break Some(format!("reading the console: {e}")),
                }
            };
            let _ = tx.send(Incoming::End(end));
        });
        Ok(Console {
            stream,
            seen: Vec::new(),
            cursor: 0,
            incoming,
            open: true,
            arrivals: Vec::new(),
        })
    }

    /// The boot's timeline so far: when each stage of [`BOOT_STAGES`] first showed on the
    /// console (host clock, from QEMU's start; bytes are stamped as they are read).
    pub fn timeline(&mut self) -> Timeline {
        let _ = self.pump(Duration::ZERO);
        Timeline::from_console(&self.seen, &self.arrivals)
    }

    /// Every line the box printed so far, each with the time its end arrived (from QEMU's
    /// start), for finding where a boot's time goes between the timeline's stages.
    pub fn timed_lines(&mut self) -> Vec<(Duration, String)> {
        let _ = self.pump(Duration::ZERO);
        let mut out = Vec::new();
        let mut start = 0;
        for (i, &b) in self.seen.iter().enumerate() {
            if b != b'\n' {
                continue;
            }
            let when = timeline::arrived(&self.arrivals, i + 1).unwrap_or_default();
            let line = String::from_utf8_lossy(&self.seen[start..i]);
            let line = line.trim_end_matches('\r').trim_start_matches('\r');
            if !line.is_empty() {
                out.push((when, line.to_string()));
            }
            start = i + 1;
        }
        out
    }

    /// Takes what the reader thread has read, waiting up to `wait` for the first of it.
    /// Returns false at end of stream.
    fn pump(&mut self, wait: Duration) -> Result<bool> {
        let mut first = true;
        while self.open {
            let next = if first {
                first = false;
                self.incoming.recv_timeout(wait)
            } else {
                self.incoming
                    .try_recv()
                    .map_err(|_| std::sync::mpsc::RecvTimeoutError::Timeout)
            };
            match next {
                Ok(Incoming::Bytes(b, at)) => {
                    self.seen.extend_from_slice(&b);
                    self.arrivals.push((self.seen.len(), at));
                }
                Ok(Incoming::End(None)) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    self.open = false
                }
                Ok(Incoming::End(Some(e))) => {
                    self.open = false;
                    bail!(e);
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
            }
        }
        Ok(self.open)
    }

    /// Waits up to `timeout` for `needle` in what the box prints after the last match;
    /// returns the text from there through the match and moves past it.
    pub fn expect(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        self.expect_any(&[needle], timeout).map(|(_, text)| text)
    }

    /// Like [`Console::expect`] for the first of several needles; returns which one matched.
    pub fn expect_any(&mut self, needles: &[&str], timeout: Duration) -> Result<(usize, String)> {
        let deadline = Instant::now() + timeout;
        let mut open = true;
        loop {
            // Matched with the kernel messages that broke into a line taken out: the kernel
            // writes to the serial port directly, between the bytes of a line being drained.
            let (hay, raw_at) = without_interruptions(&self.seen[self.cursor..]);
            let found = needles
                .iter()
                .enumerate()
                .filter_map(|(i, n)| find(&hay, n.as_bytes()).map(|at| (at, i, n.len())))
                .min();
            if let Some((at, i, len)) = found {
                let end = self.cursor
                    + match at + len {
                        0 => 0,
                        n => raw_at[n - 1] + 1,
                    };
                let text = String::from_utf8_lossy(&self.seen[self.cursor..end]).into_owned();
                self.cursor = end;
                return Ok((i, text));
            }
            if !open || Instant::now() >= deadline {
                let tail_from = self.seen.len().saturating_sub(3000);
                bail!(
                    "console: none of {needles:?} within {} s{}; last output:\n{}",
                    timeout.as_secs(),
                    if open { "" } else { " (the console closed)" },
                    String::from_utf8_lossy(&self.seen[tail_from..])
                );
            }
            open = self.pump(Duration::from_millis(100))?;
        }
    }

    /// Sends one line (with a carriage return, as a terminal's Enter key).
    pub fn send_line(&mut self, line: &str) -> Result<()> {
        self.stream.write_all(line.as_bytes())?;
        self.stream.write_all(b"\r")?;
        self.stream.flush()?;
        Ok(())
    }

    /// Everything the box printed so far in this boot.
    pub fn transcript(&mut self) -> String {
        let _ = self.pump(Duration::ZERO);
        String::from_utf8_lossy(&self.seen).into_owned()
    }
}

/// `raw` without the kernel messages that interrupt a line (`UPDATE[    7.610694] watchdog:
/// ...\n TRIAL FAILED` reads `UPDATE TRIAL FAILED`), and for each byte kept its offset in
/// `raw`. A kernel message at the start of a line is kept (tests wait for some).
fn without_interruptions(raw: &[u8]) -> (Vec<u8>, Vec<usize>) {
    let mut text = Vec::with_capacity(raw.len());
    let mut at = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let mid_line = i > 0 && raw[i - 1] != b'\n' && raw[i - 1] != b'\r';
        if mid_line && let Some(len) = printk_header(&raw[i..]) {
            match raw[i + len..].iter().position(|&b| b == b'\n') {
                Some(nl) => {
                    i += len + nl + 1;
                    continue;
                }
                // The message is still arriving: nothing after it can match yet.
                None => break,
            }
        }
        text.push(raw[i]);
        at.push(i);
        i += 1;
    }
    (text, at)
}

/// The length of a kernel message's time stamp (`[    7.610694] `) at the start of `b`.
fn printk_header(b: &[u8]) -> Option<usize> {
    let mut i = 1;
    if b.first() != Some(&b'[') {
        return None;
    }
    while b.get(i) == Some(&b' ') {
        i += 1;
    }
    let digits = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let n = digits(i);
    if n == 0 || b.get(i + n) != Some(&b'.') {
        return None;
    }
    i += n + 1;
    let n = digits(i);
    if n == 0 || b.get(i + n) != Some(&b']') || b.get(i + n + 1) != Some(&b' ') {
        return None;
    }
    Some(i + n + 2)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_below_the_ephemeral_range_and_differ_between_calls() {
        let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let bases: Vec<u16> = (0..4).map(|_| PortForwards::free().unwrap().base).collect();
        for b in &bases {
            assert!((10000..low).contains(b), "{b} not below {low}");
        }
        assert!(bases.windows(2).any(|w| w[0] != w[1]), "{bases:?}");
    }

    #[test]
    fn ports_follow_the_base_in_the_documented_order() {
        let p = PortForwards { base: 8440 };
        assert_eq!(p.host_port("admin-https"), Some(8440));
        assert_eq!(p.host_port("smtp"), Some(8441));
        assert_eq!(p.host_port("submission"), Some(8442));
        assert_eq!(p.host_port("imaps"), Some(8443));
        assert_eq!(p.host_port("docking"), Some(8444));
        assert!(p.netdev().contains("hostfwd=tcp:127.0.0.1:8444-:8444"));
    }

    #[test]
    fn finds_needles() {
        assert_eq!(
            find(b"abc sealgated: ready\n", READY_LINE.as_bytes()),
            Some(4)
        );
        assert_eq!(find(b"abc", b"x"), None);
    }

    #[test]
    fn kernel_messages_breaking_into_a_line_are_not_in_the_way() {
        let raw = b"Choose 1-10: sealgate: UPDATE[    7.610694] watchdog: watchdog0: watchdog \
                    did not stop!\r\n TRIAL FAILED: boot slot A\r\n[    9.691434] reboot: \
                    Restarting system\r\n";
        let (text, at) = without_interruptions(raw);
        let t = String::from_utf8_lossy(&text);
        assert!(
            t.contains("sealgate: UPDATE TRIAL FAILED: boot slot A"),
            "{t}"
        );
        // A kernel message at the start of a line stays.
        assert!(
            t.contains("[    9.691434] reboot: Restarting system"),
            "{t}"
        );
        let end = find(&text, b"TRIAL FAILED").unwrap() + "TRIAL FAILED".len();
        assert_eq!(&raw[at[end - 1] - 11..=at[end - 1]], b"TRIAL FAILED");
        // A message still arriving hides what follows it, not what came before.
        let (text, _) = without_interruptions(b"abc[    1.000000] partial");
        assert_eq!(text, b"abc");
        // Brackets that are no time stamp are text.
        let (text, _) = without_interruptions(b"x[1] y [ 1.2]z\n");
        assert_eq!(text, b"x[1] y [ 1.2]z\n");
    }

    #[test]
    fn boards_name_their_debian_packages() {
        let peers = Board::X86_64.peers();
        assert!(peers.contains(&("qemu-system-x86_64", "qemu-system-x86")));
        assert!(peers.contains(&("swtpm", "swtpm")));
        assert!(peers.contains(&("swtpm_setup", "swtpm-tools")));
        assert!(peers.iter().any(|(_, p)| *p == "ovmf"));
        assert!(Board::named("qemu-aarch64").is_ok());
        assert!(Board::named("pc").is_err());
    }
}

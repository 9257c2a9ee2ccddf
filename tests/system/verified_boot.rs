//! The boot chain's own tests (issue 14): someone who holds the box, or its disk, changes
//! what boots; the TPM must then keep the vault key, so the box says `VAULT LOCKED` and
//! serves nothing. And the owner's own change (the disk on a new board): locked too, until
//! the console's recovery with the recovery secret.
//!
//! Each test makes a box from its own copy of the image (so the ESP and the slots can be
//! edited as an attacker with the disk would), first-booted as the factory ships it (the
//! vault created and sealed; the boot's writes merged into the copy with `qemu-img commit`:
//! one such boot per run, copied by every test, see [`Template`]), applies the attack and
//! boots again.

use super::*;

/// The ESP's offset in the image (board/qemu-x86_64/genimage.cfg: `offset = 1M`).
const ESP_OFFSET: &str = "1M";

/// A box on its own copy of the image, which the test may edit between boots.
struct OwnImage {
    bx: Appliance,
    image: PathBuf,
}

/// The factory's first boot, made once per test run (under the machine's lock, by the
/// first test that needs it) and copied by each test: its image copy with the boot's writes
/// merged in, its UEFI variables and its TPM state. Every attack starts from the same
/// shipped, first-booted box without booting one per test. Kept in the build's temporary
/// folder (`target/tmp/`), replaced by the next run.
struct Template {
    dir: PathBuf,
    /// The first boot's console, up to `ready` (the recovery secret is on it).
    console: String,
}

static TEMPLATE: std::sync::OnceLock<Template> = std::sync::OnceLock::new();

fn template() -> &'static Template {
    TEMPLATE.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("verified-boot-template");
        let own = std::mem::ManuallyDrop::new(OwnImage::at(dir.clone()));
        let console = own.first_boot();
        // `own` is not dropped: its folder is the template.
        Template { dir, console }
    })
}

impl OwnImage {
    /// A box on its own copy of the template's first-booted image.
    fn booted(name: &str) -> OwnImage {
        let t = template();
        let path =
            std::env::temp_dir().join(format!("sealgate-system-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(path.join("vm")).unwrap();
        let image = path.join("image.raw");
        run(Command::new("cp")
            .arg("--sparse=always")
            .arg(t.dir.join("image.raw"))
            .arg(&image));
        // VmDir::vars(): the box's own variable store, as the first boot left it.
        let vars = "efivars.fd";
        std::fs::copy(t.dir.join("vm").join(vars), path.join("vm").join(vars)).unwrap();
        run(Command::new("cp")
            .arg("-a")
            .arg(t.dir.join("vm").join("tpm"))
            .arg(path.join("vm")));
        OwnImage::with_vm(path, image, false)
    }

    /// The box of `image` in `path` (its VM folder `path/vm`, made `fresh` or kept).
    fn with_vm(path: PathBuf, image: PathBuf, fresh: bool) -> OwnImage {
        let dir =
            VmDir::prepare(&path.join("vm"), Board::X86_64, &image, fresh).expect("VM folder");
        OwnImage {
            bx: Appliance {
                dir,
                ports: PortForwards::free().expect("free ports"),
                keep: path,
            },
            image,
        }
    }

    /// A box at `path` on a fresh copy of the built image, not booted yet.
    fn at(path: PathBuf) -> OwnImage {
        require_peers(Board::X86_64).expect("peers");
        require_program("curl", "curl");
        require_program("mcopy", "mtools");
        let built = ensure_image(Board::X86_64).expect("the x86_64 image");
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        let image = path.join("image.raw");
        run(Command::new("cp")
            .arg("--sparse=always")
            .arg(&built)
            .arg(&image));
        // The image's UEFI variables (its keys enrolled) go with it.
        let vars = built.with_file_name(sealgate_qemu::ENROLLED_VARS);
        if vars.is_file() {
            std::fs::copy(&vars, path.join(sealgate_qemu::ENROLLED_VARS)).unwrap();
        }
        OwnImage::with_vm(path, image, true)
    }

    /// First boot as shipped (the vault is created and sealed), a reboot through the menu,
    /// then the disk's writes merged into the image copy. Returns the console up to `ready`.
    fn first_boot(&self) -> String {
        let mut vm = self.bx.boot();
        // What the signed chain costs: from GRUB's choice to the kernel's EFI stub, GRUB reads
        // the UKI and checks its OpenPGP signature, the firmware its Authenticode signature
        // (and measures it into PCR 4).
        let c = vm.console().unwrap();
        c.expect("sealgate: booting slot", READY)
            .expect("GRUB chose a slot");
        let t = Instant::now();
        // GRUB prints the image's device path once it has read and checked it, just before
        // the firmware's LoadImage (Authenticode check, PCR 4 measurement).
        c.expect("file path:", READY).expect("GRUB read the UKI");
        let read = t.elapsed().as_secs_f64();
        c.expect("EFI stub:", READY).expect("the UKI started");
        eprintln!(
            "signed chain: GRUB's choice to the EFI stub in {:.2} s (GRUB read and checked the \
             UKI in {read:.2} s, then the firmware)",
            t.elapsed().as_secs_f64()
        );
        let text = wait_ready(&mut vm, FIRST_READY);
        assert!(
            text.contains("first boot: creating the key vault"),
            "{text}"
        );
        // Stage-1 read the slot through dm-verity and says how long that took.
        let verified = line_value(&text, "sealgate stage-1: rootA verified")
            .unwrap_or_else(|| panic!("stage-1 did not verify the slot:\n{text}"));
        eprintln!("dm-verity: rootA verified {verified}");
        assert_eq!(
            wait_https(&self.bx.url("/api/v1/health"), Duration::from_secs(30)),
            200
        );
        reboot(vm);
        run(Command::new("qemu-img")
            .args(["commit", "-q"])
            .arg(self.bx.dir.disk()));
        text
    }

    /// A key and self-signed certificate of the attacker's own (`NAME.key`, `NAME.pem`).
    fn attacker_key(&self, name: &str) -> (PathBuf, PathBuf) {
        let work = &self.bx.keep;
        let (key, cert) = (
            work.join(format!("{name}.key")),
            work.join(format!("{name}.pem")),
        );
        run(Command::new("openssl")
            .args([
                "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
            ])
            .args(["-days", "30", "-subj", "/CN=attacker db/", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert));
        (key, cert)
    }

    /// The ESP's signed EFI binary `path`, copied out twice: without its signature, and
    /// signed with a key of the attacker's own (a new self-signed certificate the box's db
    /// does not hold). Returns (unsigned, foreign-signed), named after `name`.
    fn resigned(&self, path: &str, name: &str) -> (PathBuf, PathBuf) {
        let work = &self.bx.keep;
        let bare = work.join(format!("{name}.bare.efi"));
        self.esp_get(path, &bare);
        run(Command::new("sbattach").arg("--remove").arg(&bare));
        let (key, cert) = self.attacker_key("foreign");
        let foreign = work.join(format!("{name}.foreign.efi"));
        run(Command::new("sbsign")
            .arg("--key")
            .arg(&key)
            .arg("--cert")
            .arg(&cert)
            .arg("--output")
            .arg(&foreign)
            .arg(&bare));
        (bare, foreign)
    }

    /// Reads a file of the ESP.
    fn esp_read(&self, path: &str) -> String {
        let out = self.bx.keep.join("esp-file");
        let _ = std::fs::remove_file(&out);
        run(Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(format!("{}@@{ESP_OFFSET}", self.image.display()))
            .arg(format!("::{path}"))
            .arg(&out));
        std::fs::read_to_string(&out).unwrap()
    }

    /// Replaces a file of the ESP.
    fn esp_write(&self, path: &str, text: &str) {
        self.esp_write_bytes(path, text.as_bytes());
    }

    /// Copies a file of the ESP out to `to`.
    fn esp_get(&self, path: &str, to: &std::path::Path) {
        let _ = std::fs::remove_file(to);
        run(Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(format!("{}@@{ESP_OFFSET}", self.image.display()))
            .arg(format!("::{path}"))
            .arg(to));
    }

    fn esp_write_bytes(&self, path: &str, bytes: &[u8]) {
        let src = self.bx.keep.join("esp-file");
        std::fs::write(&src, bytes).unwrap();
        run(Command::new("mcopy")
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-o")
            .arg("-i")
            .arg(format!("{}@@{ESP_OFFSET}", self.image.display()))
            .arg(&src)
            .arg(format!("::{path}")));
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The console's verdict on a boot the attacker changed: the vault must stay locked and
/// nothing may listen. Returns the console text.
fn assert_locked(bx: &Appliance, vm: &mut Vm, what: &str) -> String {
    let c = vm.console().unwrap();
    let (which, text) = c
        .expect_any(&["VAULT LOCKED", READY_LINE], READY)
        .unwrap_or_else(|e| panic!("{what}: no verdict on the vault: {e}"));
    assert_eq!(which, 0, "{what}: the TPM unsealed the vault:\n{text}");
    let (code, _) = https("GET", &bx.url("/api/v1/health"), None);
    assert_eq!(code, 0, "{what}: nothing listens with a locked vault");
    text
}

/// The attacker edits `grub.cfg` on the ESP to boot the slot's kernel with their own command
/// line, `rdinit=/bin/sh`: a root shell before anything of the box runs. From that shell they
/// let the box's own boot go on (`exec /init`), which asks the TPM for the vault key.
///
/// The signed chain refuses the edited `grub.cfg` (GRUB checks its signature). At GRUB's
/// prompt the attacker tries by hand: the slot's kernel with their command line (refused:
/// GRUB starts nothing unverified under Secure Boot), then the slot's signed kernel image
/// with their command line appended (it starts, but with its own signed command line: no
/// shell). If a shell ever appears, `exec /init` must end in `VAULT LOCKED`, nothing served.
#[test]
fn edited_boot_command_line_gets_no_shell_and_no_key() {
    let _m = machine();
    require_program("objcopy", "binutils");
    let own = OwnImage::booted("cmdline");

    // The slot's own kernel and stage-1, taken out of its signed image (they are not in the
    // slot), put on the ESP beside it, unsigned.
    let work = own.bx.keep.clone();
    let uki = work.join("uki.efi");
    own.esp_get("/EFI/Linux/sealgate-A.efi", &uki);
    for (section, name) in [(".linux", "vmlinuz"), (".initrd", "initrd.img")] {
        let out = work.join(name);
        run(Command::new("objcopy")
            .args(["-O", "binary", "--only-section", section])
            .arg(&uki)
            .arg(&out));
        own.esp_write_bytes(&format!("/{name}"), &std::fs::read(&out).unwrap());
    }

    let original = own.esp_read("/EFI/BOOT/grub.cfg");
    let attack = "set timeout=0\n\
        regexp --set 1:disk '^([^,]+),' \"$root\"\n\
        echo \"attacker: booting slot A with rdinit=/bin/sh\"\n\
        linux ($disk,gpt1)/vmlinuz console=ttyS0,115200 sealgate.slot=A rdinit=/bin/sh\n\
        initrd ($disk,gpt1)/initrd.img\n\
        boot\n";
    assert_ne!(original, attack);
    own.esp_write("/EFI/BOOT/grub.cfg", attack);

    let mut vm = own.bx.boot();
    let c = vm.console().unwrap();
    let needles = ["can't access tty", "VAULT LOCKED", READY_LINE, "grub> "];
    let (mut which, mut text) = c
        .expect_any(&needles, READY)
        .expect("a verdict on the edited boot");
    if which == 3 {
        assert!(
            !text.contains("attacker: booting"),
            "GRUB ran the edited grub.cfg:\n{text}"
        );
        eprintln!("edited grub.cfg refused by GRUB:\n{text}");
        // By hand at GRUB's prompt: the slot's kernel with the attacker's command line.
        c.send_line("linux (hd0,gpt1)/vmlinuz console=ttyS0,115200 sealgate.slot=A rdinit=/bin/sh")
            .unwrap();
        let answer = c.expect("grub> ", MENU).expect("GRUB answers");
        assert!(
            answer.contains("error"),
            "GRUB loaded an unsigned kernel:\n{answer}"
        );
        eprintln!("linux by hand: {answer}");
        // The slot's signed image with the attacker's command line appended.
        c.send_line("chainloader (hd0,gpt1)/EFI/Linux/sealgate-A.efi rdinit=/bin/sh")
            .unwrap();
        let answer = c.expect("grub> ", MENU).expect("GRUB answers");
        eprintln!("chainloader by hand: {answer}");
        c.send_line("boot").unwrap();
        (which, text) = c
            .expect_any(&needles[..3], READY)
            .expect("a verdict on the hand-made boot");
        if which == 2 {
            // The box's own signed command line booted: no shell, the box as shipped.
            assert!(!text.contains("can't access tty"), "{text}");
            eprintln!("the signed kernel image ignored the appended command line");
            return;
        }
    }
    match which {
        0 => {
            // The attacker's shell: go on with the box's own boot from here.
            c.send_line("exec /init").unwrap();
            assert_locked(&own.bx, &mut vm, "rdinit=/bin/sh, then /init");
        }
        1 => {
            let (code, _) = https("GET", &own.bx.url("/api/v1/health"), None);
            assert_eq!(code, 0, "nothing listens with a locked vault");
        }
        _ => panic!("the box served after its command line was edited:\n{text}"),
    }
}

/// Secure Boot turned off in the UEFI variables (as from the firmware's setup, by someone
/// holding the box). The box's own chain still boots, but PCR 7 (which records the Secure
/// Boot state) changed: the vault stays locked and nothing is served.
#[test]
fn secure_boot_turned_off_leaves_the_vault_locked() {
    let _m = machine();
    let own = OwnImage::booted("sboff");
    let vars = own.bx.dir.vars();
    let tmp = vars.with_extension("new");
    run(
        Command::new(sealgate_qemu::virt_fw_vars().expect("virt-fw-vars"))
            .arg("--input")
            .arg(&vars)
            .arg("--output")
            .arg(&tmp)
            .args(["--set-false", "SecureBootEnable"]),
    );
    std::fs::rename(&tmp, &vars).unwrap();
    let mut vm = own.bx.boot();
    let text = assert_locked(&own.bx, &mut vm, "Secure Boot off");
    assert!(
        !text.contains("UEFI Secure Boot is enabled"),
        "Secure Boot is still on:\n{text}"
    );
    // Even with the recovery secret, the console does not seal the vault key to a chain
    // that nothing verifies.
    let secret = recovery_secret(&template().console);
    let answer = recover_at_console(&mut vm, &secret);
    assert!(
        answer.contains("Failed: Secure Boot is off"),
        "recovery with Secure Boot off: {answer}"
    );
    let (code, _) = https("GET", &own.bx.url("/api/v1/health"), None);
    assert_eq!(code, 0, "still nothing served");
}

/// A db key of someone else's added to the UEFI variables (as a KEK holder, or anyone with the
/// firmware's setup, could): the box's own chain still boots, but PCR 7 (which records db)
/// changed, so the vault stays locked.
#[test]
fn foreign_db_key_added_leaves_the_vault_locked() {
    let _m = machine();
    require_program("openssl", "openssl");
    let own = OwnImage::booted("foreigndb");
    let (_, cert) = own.attacker_key("db2");
    let vars = own.bx.dir.vars();
    let tmp = vars.with_extension("new");
    run(
        Command::new(sealgate_qemu::virt_fw_vars().expect("virt-fw-vars"))
            .arg("--input")
            .arg(&vars)
            .arg("--output")
            .arg(&tmp)
            .args(["--add-db", "5ea19a7e-0000-4000-8000-00000000a77a"])
            .arg(&cert),
    );
    std::fs::rename(&tmp, &vars).unwrap();
    let mut vm = own.bx.boot();
    assert_locked(&own.bx, &mut vm, "foreign db key");
}

/// The slot's kernel image replaced by one signed with a key of the attacker's own (the
/// same kernel, initramfs and command line: only the signature differs). Nothing starts it:
/// GRUB refuses it (its OpenPGP signature no longer matches) and, with GRUB's signature check
/// switched off at its prompt, Secure Boot's lockdown starts nothing unverified; the box
/// stays at GRUB's prompt, serving nothing.
#[test]
fn foreign_signed_kernel_image_does_not_start() {
    let _m = machine();
    require_program("sbsign", "sbsigntool");
    require_program("openssl", "openssl");
    let own = OwnImage::booted("foreign");
    let (_, foreign) = own.resigned("/EFI/Linux/sealgate-A.efi", "uki");
    own.esp_write_bytes(
        "/EFI/Linux/sealgate-A.efi",
        &std::fs::read(&foreign).unwrap(),
    );

    let mut vm = own.bx.boot();
    let c = vm.console().unwrap();
    let needles = ["grub> ", "EFI stub:", READY_LINE];
    let (which, text) = c
        .expect_any(&needles, READY)
        .expect("a verdict on the foreign-signed image");
    assert_eq!(which, 0, "the foreign-signed image started:\n{text}");
    c.send_line("set check_signatures=no").unwrap();
    c.expect("grub> ", MENU).expect("GRUB answers");
    c.send_line("chainloader (hd0,gpt1)/EFI/Linux/sealgate-A.efi")
        .unwrap();
    let answer = c.expect("grub> ", MENU).expect("GRUB answers");
    assert!(
        answer.contains("error"),
        "GRUB loaded the foreign-signed image:\n{answer}"
    );
    c.send_line("boot").unwrap();
    let got = c.expect_any(&needles[1..], Duration::from_secs(60));
    assert!(got.is_err(), "the foreign-signed image started: {got:?}");
    let (code, _) = https("GET", &own.bx.url("/api/v1/health"), None);
    assert_eq!(code, 0, "nothing listens");
}

/// The boot loader on the ESP replaced by one the box's db does not trust: the box's own GRUB
/// with its signature taken off, then signed with a key of the attacker's own (someone with
/// the disk could put any boot loader there). The firmware starts neither under Secure Boot:
/// nothing of the box runs, so nothing asks the TPM for the vault key, and nothing listens.
#[test]
fn unsigned_or_foreign_signed_boot_loader_does_not_start() {
    let _m = machine();
    require_program("sbsign", "sbsigntool");
    require_program("openssl", "openssl");
    let own = OwnImage::booted("bootloader");
    let (bare, foreign) = own.resigned("/EFI/BOOT/BOOTX64.EFI", "grub");
    for (what, file) in [("unsigned", &bare), ("foreign-signed", &foreign)] {
        own.esp_write_bytes("/EFI/BOOT/BOOTX64.EFI", &std::fs::read(file).unwrap());
        let mut vm = own.bx.boot();
        let c = vm.console().unwrap();
        let needles = [
            "Access Denied",
            "Security Violation",
            "Welcome to GRUB",
            READY_LINE,
        ];
        let (which, text) = c
            .expect_any(&needles, READY)
            .unwrap_or_else(|e| panic!("{what} boot loader: no verdict from the firmware: {e}"));
        assert!(which < 2, "the {what} boot loader started:\n{text}");
        eprintln!(
            "{what} boot loader: {}",
            text.lines().last().unwrap_or_default()
        );
        let (code, _) = https("GET", &own.bx.url("/api/v1/health"), None);
        assert_eq!(code, 0, "{what} boot loader: nothing listens");
    }
}

/// The box's disk on a new board: another TPM (a new swtpm, made as the factory makes one),
/// the same firmware and keys. The old TPM's sealed copy of the vault key means nothing to
/// it, so the vault is locked; the console's recovery with the first boot's secret seals the
/// key to the new TPM, and after the reboot the box unseals by itself and serves.
#[test]
fn disk_on_a_new_board_is_recovered_at_the_console() {
    let _m = machine();
    let own = OwnImage::booted("newboard");
    let tpm = own.bx.dir.tpm_state();
    std::fs::remove_dir_all(&tpm).unwrap();
    std::fs::create_dir_all(&tpm).unwrap();
    own.bx.dir.manufacture_tpm().expect("a new TPM");
    let mut vm = own.bx.boot();
    assert_locked(&own.bx, &mut vm, "another TPM");
    let answer = recover_at_console(&mut vm, &recovery_secret(&template().console));
    assert!(answer.contains("VAULT RECOVERED"), "recovery: {answer}");
    vm.wait_exit(Duration::from_secs(30))
        .expect("QEMU exits on the reboot after recovery");
    let mut vm = own.bx.boot();
    let text = wait_ready(&mut vm, READY);
    assert!(!text.contains("VAULT LOCKED"), "{text}");
    assert_eq!(
        wait_https(&own.bx.url("/api/v1/health"), Duration::from_secs(30)),
        200
    );
}

/// One byte of root slot A changed on the disk (an attacker's edit of a binary, or a bad
/// sector). The slot's dm-verity root hash is in its signed command line: stage-1 reads the
/// slot through once, refuses it, and nothing of it runs; the vault key stays in the TPM.
#[test]
fn changed_root_slot_byte_is_refused() {
    let _m = machine();
    require_program("partx", "util-linux");
    let own = OwnImage::booted("slotbyte");
    let out = Command::new("partx")
        .args(["-g", "-o", "START", "-n", "2"])
        .arg(&own.image)
        .output()
        .unwrap();
    let start: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("rootA's start sector");
    // 1 MiB into the slot: inside the squashfs, well before its hash tree.
    let at = start * 512 + (1 << 20);
    {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&own.image)
            .unwrap();
        let mut b = [0u8; 1];
        f.seek(SeekFrom::Start(at)).unwrap();
        f.read_exact(&mut b).unwrap();
        b[0] ^= 0x01;
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&b).unwrap();
    }
    let mut vm = own.bx.boot();
    let c = vm.console().unwrap();
    let (which, text) = c
        .expect_any(&["DOES NOT VERIFY", "VAULT LOCKED", READY_LINE], READY)
        .expect("a verdict on the changed slot");
    assert_eq!(which, 0, "the changed slot was used:\n{text}");
    let (code, _) = https("GET", &own.bx.url("/api/v1/health"), None);
    assert_eq!(code, 0, "nothing listens");
}

/// The data partition swapped for one the attacker made: a fresh, empty ext4 named `data`
/// in its place on the disk (its GPT entry with a partition GUID of its own, as any tool
/// that makes a partition gives it). Found by its name, the box would take it for a factory
/// fresh one, create a new vault on it and hand out a new setup token: a box serving
/// whatever the attacker put there. Stage-1 uses only the partition whose GPT GUID the image
/// build wrote into the signed command line: it refuses this one, nothing on it is read, and
/// the vault stays locked, nothing served.
#[test]
fn swapped_data_partition_leaves_the_vault_locked() {
    let _m = machine();
    require_program("partx", "util-linux");
    require_program("mke2fs", "e2fsprogs");
    let own = OwnImage::booted("dataswap");
    let out = Command::new("partx")
        .args(["-g", "-o", "START,SECTORS", "-n", "4"])
        .arg(&own.image)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut f = text.split_whitespace().map(|v| v.parse::<u64>().unwrap());
    let (start, sectors) = (f.next().unwrap(), f.next().unwrap());
    run(Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-L", "data", "-E"])
        .arg(format!("offset={},nodiscard", start * 512))
        .arg(&own.image)
        .arg(format!("{}k", sectors / 2)));
    gpt_set_partition_guid(&own.image, 4, [0xa7; 16]);
    // The table is valid (its CRCs check) and names the new GUID.
    let out = Command::new("partx")
        .args(["-g", "-o", "UUID", "-n", "4"])
        .arg(&own.image)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "a7a7a7a7-a7a7-a7a7-a7a7-a7a7a7a7a7a7"
    );

    let mut vm = own.bx.boot();
    let text = assert_locked(&own.bx, &mut vm, "swapped data partition");
    assert!(
        text.contains("NOT THIS BOX'S OWN"),
        "stage-1 did not refuse the data partition:\n{text}"
    );
    assert!(
        !text.contains("creating the key vault"),
        "a vault was created on the attacker's partition:\n{text}"
    );
    // No recovery is offered for it: recovering would make the attacker's partition the
    // box's own.
    let (which, menu) = sync_menu(&mut vm);
    assert_eq!(
        which, 0,
        "recovery offered for a foreign partition:\n{menu}"
    );
}

/// Sets partition `n`'s unique GUID in both GPT copies of `image` (entries and header CRCs
/// recomputed), as a partitioning tool does.
fn gpt_set_partition_guid(image: &std::path::Path, n: u64, guid: [u8; 16]) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .unwrap();
    let read_at = |f: &mut std::fs::File, at: u64, len: usize| {
        let mut b = vec![0u8; len];
        f.seek(SeekFrom::Start(at)).unwrap();
        f.read_exact(&mut b).unwrap();
        b
    };
    let primary = read_at(&mut f, 512, 512);
    assert_eq!(&primary[..8], b"EFI PART", "no GPT");
    let backup_lba = u64::from_le_bytes(primary[32..40].try_into().unwrap());
    for header_lba in [1, backup_lba] {
        let mut h = read_at(&mut f, header_lba * 512, 512);
        assert_eq!(&h[..8], b"EFI PART", "no GPT header at LBA {header_lba}");
        let header_size = u32::from_le_bytes(h[12..16].try_into().unwrap()) as usize;
        let entries_lba = u64::from_le_bytes(h[72..80].try_into().unwrap());
        let count = u32::from_le_bytes(h[80..84].try_into().unwrap()) as usize;
        let size = u32::from_le_bytes(h[84..88].try_into().unwrap()) as usize;
        let mut entries = read_at(&mut f, entries_lba * 512, count * size);
        let at = (n as usize - 1) * size + 16;
        entries[at..at + 16].copy_from_slice(&guid);
        h[88..92].copy_from_slice(&crc32(&entries).to_le_bytes());
        h[16..20].copy_from_slice(&[0; 4]);
        let crc = crc32(&h[..header_size]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        f.seek(SeekFrom::Start(entries_lba * 512)).unwrap();
        f.write_all(&entries).unwrap();
        f.seek(SeekFrom::Start(header_lba * 512)).unwrap();
        f.write_all(&h).unwrap();
    }
    f.sync_all().unwrap();
}

/// CRC-32 (IEEE), as GPT uses.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

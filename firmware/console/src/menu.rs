//! The technician's menu: line-based and numbered so it works on any serial terminal.
//! Input is parsed into a [`Choice`] or refused; nothing typed here ever reaches a shell.
//! What the menu does to the box goes through [`BoxActions`], so the dialogue is tested
//! without a box.

use std::io::{BufRead, Write};
use std::net::{IpAddr, Ipv4Addr};

use anyhow::Result;

use crate::network::{Ipv4Cidr, NetworkSettings};

/// The typed confirmation of the full wipe.
pub const WIPE_CONFIRMATION: &str = "ERASE ALL KEYS";

/// A main-menu entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// 1: version, boot slot, addresses, services, TPM and vault, disk.
    Status,
    /// 2: show or change the network settings.
    Network,
    /// 3: ping an address or host name.
    Ping,
    /// 4: show the first-boot setup token again.
    SetupToken,
    /// 5: reset admin access (a new setup token).
    ResetAdmin,
    /// 6.
    Reboot,
    /// 7.
    PowerOff,
    /// 8: factory reset, settings only.
    ResetSettings,
    /// 9: factory reset, full wipe with key destruction.
    Wipe,
    /// 10: the slots and the update's state; install from a USB stick.
    Updates,
    /// 11, offered only while the TPM refuses the vault key: open the vault with its recovery
    /// secret and seal its key again to this boot's chain.
    RecoverVault,
}

impl Choice {
    /// Whether the entry asks the running daemon (through its admin socket).
    pub fn needs_daemon(self) -> bool {
        matches!(self, Choice::SetupToken | Choice::ResetAdmin)
    }
}

/// What the menu says when an entry needs the daemon and it does not answer.
pub const DAEMON_DOWN: &str = "sealgated is not running (see Status for why), and this entry asks it. \
Without it these work: Status, Network settings (a one-time address only), Ping, Reboot, Power off and the factory resets.";

/// The network page's heading when the daemon does not answer.
pub const NETWORK_DAEMON_DOWN: &str = "sealgated is not running (see Status for why); the box's network \
settings are its own. Without it the entries below set the first NIC once, until sealgated \
runs again; nothing is saved.";

/// The main menu, in order (entry n is `MENU[n - 1]`).
pub const MENU: [(Choice, &str); 10] = [
    (Choice::Status, "Status"),
    (Choice::Network, "Network settings"),
    (Choice::Ping, "Ping"),
    (Choice::SetupToken, "Show the setup token again"),
    (Choice::ResetAdmin, "Reset admin access"),
    (Choice::Reboot, "Reboot"),
    (Choice::PowerOff, "Power off"),
    (
        Choice::ResetSettings,
        "Factory reset, tier 1: settings only (keys are kept)",
    ),
    (
        Choice::Wipe,
        "Factory reset, tier 2: full wipe, DESTROYS ALL KEYS",
    ),
    (Choice::Updates, "Updates: slots, install from a USB stick"),
];

/// The entry offered after [`MENU`] while the vault is locked.
pub const RECOVER_ENTRY: (Choice, &str) = (
    Choice::RecoverVault,
    "Recover the locked vault with its recovery secret",
);

/// What the recovery entry says before it asks for the secret.
pub const RECOVER_WARNING: &str = "Recovery opens the vault with its recovery secret and seals \
its key again to this boot: the Secure Boot state and keys (PCR 7) and the signed boot loader and \
kernel image that started (PCR 4). Do it only after a change you know of (new Secure Boot keys, a \
firmware update, a new board): if someone else changed how this box boots, recovering hands them \
the keys. The box reboots afterwards.";

/// Parses a menu number from 1 to `count`; anything else is `None`.
pub fn parse_number(line: &str, count: usize) -> Option<usize> {
    let t = line.trim();
    if t.is_empty() || t.len() > 3 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: usize = t.parse().ok()?;
    (1..=count).contains(&n).then_some(n)
}

/// Parses a main-menu line (entry 11 exists only while the vault is `locked`).
pub fn parse_choice(line: &str, locked: bool) -> Option<Choice> {
    let menu = entries(locked);
    parse_number(line, menu.len()).map(|n| menu[n - 1].0)
}

/// The main menu's entries: [`MENU`], and [`RECOVER_ENTRY`] while the vault is locked.
fn entries(locked: bool) -> Vec<(Choice, &'static str)> {
    let mut e = MENU.to_vec();
    if locked {
        e.push(RECOVER_ENTRY);
    }
    e
}

/// A ping target: an IP address or a DNS name (letters, digits, `-` and `.` only), so it
/// can never be mistaken for an option of `ping`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingTarget(String);

impl PingTarget {
    /// Parses a target.
    pub fn parse(s: &str) -> Option<PingTarget> {
        let t = s.trim();
        if t.parse::<IpAddr>().is_ok() {
            return Some(PingTarget(t.to_string()));
        }
        let ok = !t.is_empty()
            && t.len() <= 253
            && !t.starts_with(['-', '.'])
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        ok.then(|| PingTarget(t.to_string()))
    }

    /// The target.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What the menu can do to the box.
pub trait BoxActions {
    /// Whether the daemon answers on its admin socket.
    fn daemon_running(&mut self) -> bool;
    /// The status page.
    fn status(&mut self) -> String;
    /// The network page's text: the settings (the daemon's, through its admin API) and the
    /// live state (links, addresses, leases, clock), or why the daemon cannot say.
    fn network(&mut self) -> String;
    /// Changes the box's first NIC to `settings` through the daemon's admin API (saved and
    /// applied by the daemon); what to tell the technician.
    fn set_network(&mut self, settings: &NetworkSettings) -> Result<String>;
    /// Without the daemon: applies `settings` to the first NIC once, not saved (DHCP: one
    /// lease, not renewed); the daemon's settings apply again when it runs.
    fn network_fallback(&mut self, settings: &NetworkSettings) -> Result<String>;
    /// Pings `target` a few times; the output.
    fn ping(&mut self, target: &PingTarget) -> String;
    /// Has the daemon show a setup token again, if setup is still pending (the daemon keeps
    /// only the token's hash, so it issues a new one); what to tell the technician. Asks the
    /// running daemon.
    fn setup_token(&mut self) -> Result<Option<String>>;
    /// Revokes the admin access made at setup and opens setup again; what to tell the
    /// technician. Asks the running daemon.
    fn reset_admin_access(&mut self) -> Result<String>;
    /// Reboots.
    fn reboot(&mut self) -> Result<()>;
    /// Powers off.
    fn power_off(&mut self) -> Result<()>;
    /// Tier 1: removes settings (network and daemon), keeps keys; then reboots.
    fn reset_settings(&mut self) -> Result<()>;
    /// Tier 2: destroys the vault and everything on the data partition; then reboots.
    fn wipe(&mut self) -> Result<()>;
    /// The update page: the slot table and the update's state.
    fn update_status(&mut self) -> String;
    /// Mounts a USB stick (read-only) and lists the bundles in its top folder.
    fn usb_bundles(&mut self) -> Result<Vec<std::path::PathBuf>>;
    /// Hands `bundle` to the daemon's upload (its checks, re-seal and install); what to
    /// tell the technician.
    fn install_bundle(&mut self, bundle: &std::path::Path) -> Result<String>;
    /// Unmounts the USB stick, if mounted.
    fn usb_release(&mut self);
    /// Asks the daemon to install the bundle an administrator staged through the admin API
    /// (`POST /update/staged`: checked again first); what to tell the technician.
    fn install_staged(&mut self) -> Result<String>;
    /// Why the vault is locked, if the TPM refused its key this boot (the case recovery is
    /// for); `None` otherwise (open, never created, or a data partition that is not the
    /// box's own).
    fn vault_locked(&mut self) -> Option<String>;
    /// Opens the vault with its recovery secret and seals its key again to this boot's
    /// chain; what to tell the technician. Refused when Secure Boot is off.
    fn recover_vault(&mut self, secret: &str) -> Result<String>;
    /// Reads one line without echoing it where the terminal can (the recovery secret).
    fn hide_input(&mut self, hidden: bool);
}

/// The menu session over a terminal.
pub struct Menu<'a, R: BufRead, W: Write> {
    input: R,
    out: W,
    actions: &'a mut dyn BoxActions,
    title: String,
}

impl<'a, R: BufRead, W: Write> Menu<'a, R, W> {
    /// A menu titled `title` (host name and version).
    pub fn new(input: R, out: W, actions: &'a mut dyn BoxActions, title: String) -> Self {
        Menu {
            input,
            out,
            actions,
            title,
        }
    }

    /// Reads one line; `None` at end of input.
    fn line(&mut self) -> Result<Option<String>> {
        self.out.flush()?;
        let mut s = String::new();
        if self.input.read_line(&mut s)? == 0 {
            return Ok(None);
        }
        // Drop what a terminal may send besides the text (CR, stray control characters).
        Ok(Some(s.chars().filter(|c| !c.is_control()).collect()))
    }

    fn ask(&mut self, prompt: &str) -> Result<Option<String>> {
        write!(self.out, "{prompt}")?;
        self.line()
    }

    /// Runs until the input ends.
    pub fn run(&mut self) -> Result<()> {
        loop {
            writeln!(self.out, "\n=== Sealgate console: {} ===", self.title)?;
            let up = self.actions.daemon_running();
            let locked = self.actions.vault_locked().is_some();
            let menu = entries(locked);
            for (i, (c, label)) in menu.iter().enumerate() {
                let note = if c.needs_daemon() && !up {
                    " (needs sealgated: not running)"
                } else {
                    ""
                };
                writeln!(self.out, " {}) {label}{note}", i + 1)?;
            }
            let Some(line) = self.ask(&format!("Choose 1-{}: ", menu.len()))? else {
                return Ok(());
            };
            if line.trim().is_empty() {
                continue;
            }
            match parse_choice(&line, locked) {
                None => writeln!(
                    self.out,
                    "Not a menu entry: type a number from 1 to {}.",
                    menu.len()
                )?,
                Some(c) => {
                    if let Err(e) = self.dispatch(c) {
                        writeln!(self.out, "Failed: {e:#}")?;
                    }
                }
            }
        }
    }

    fn dispatch(&mut self, c: Choice) -> Result<()> {
        if c.needs_daemon() && !self.actions.daemon_running() {
            writeln!(self.out, "{DAEMON_DOWN}")?;
            return Ok(());
        }
        match c {
            Choice::Status => {
                let s = self.actions.status();
                writeln!(self.out, "{s}")?;
            }
            Choice::Network => self.network()?,
            Choice::Ping => {
                let Some(t) = self.ask("Address or host name to ping: ")? else { return Ok(()) };
                match PingTarget::parse(&t) {
                    Some(target) => {
                        let out = self.actions.ping(&target);
                        writeln!(self.out, "{out}")?;
                    }
                    None => writeln!(self.out, "Not an address or host name.")?,
                }
            }
            Choice::SetupToken => match self.actions.setup_token()? {
                Some(t) => writeln!(self.out, "{t}")?,
                None => writeln!(
                    self.out,
                    "No setup token: admin access has been set up. Use \"Reset admin access\" for a new one."
                )?,
            },
            Choice::ResetAdmin => {
                if self.confirm("Reset admin access? The admin accounts are disabled until setup is done again.")? {
                    let t = self.actions.reset_admin_access()?;
                    writeln!(self.out, "{t}")?;
                }
            }
            Choice::Reboot => {
                if self.confirm("Reboot now?")? {
                    writeln!(self.out, "Rebooting.")?;
                    self.actions.reboot()?;
                }
            }
            Choice::PowerOff => {
                if self.confirm("Power off now?")? {
                    writeln!(self.out, "Powering off.")?;
                    self.actions.power_off()?;
                }
            }
            Choice::ResetSettings => {
                if self.confirm("Reset all settings (network, gateway settings) to factory defaults and reboot? Keys are kept.")? {
                    writeln!(self.out, "Resetting settings; the box reboots.")?;
                    self.actions.reset_settings()?;
                }
            }
            Choice::Updates => self.updates()?,
            Choice::RecoverVault => self.recover()?,
            Choice::Wipe => {
                writeln!(self.out, "FULL WIPE: every key, certificate, setting and log on this box is destroyed.")?;
                writeln!(self.out, "Mail encrypted to these keys can no longer be read here. This cannot be undone.")?;
                let Some(t) = self.ask(&format!("Type {WIPE_CONFIRMATION} to wipe, anything else to cancel: "))? else {
                    return Ok(());
                };
                if t.trim() == WIPE_CONFIRMATION {
                    writeln!(self.out, "Wiping; the box reboots into first boot.")?;
                    self.actions.wipe()?;
                } else {
                    writeln!(self.out, "Cancelled.")?;
                }
            }
        }
        Ok(())
    }

    fn recover(&mut self) -> Result<()> {
        let Some(why) = self.actions.vault_locked() else {
            writeln!(self.out, "The vault is not locked: nothing to recover.")?;
            return Ok(());
        };
        writeln!(self.out, "The vault is locked: {why}")?;
        writeln!(self.out, "{RECOVER_WARNING}")?;
        self.actions.hide_input(true);
        let secret = self.ask("Recovery secret (shown once at first boot; empty to cancel): ");
        self.actions.hide_input(false);
        // The secret never goes back to the terminal or into a log; only its copy here.
        let secret = zeroize::Zeroizing::new(secret?.unwrap_or_default());
        writeln!(self.out)?;
        if secret.trim().is_empty() {
            writeln!(self.out, "Cancelled.")?;
            return Ok(());
        }
        let done = self.actions.recover_vault(&secret)?;
        writeln!(self.out, "{done}")?;
        writeln!(self.out, "Rebooting to start the box's services.")?;
        self.actions.reboot()
    }

    fn confirm(&mut self, question: &str) -> Result<bool> {
        let answer = self.ask(&format!("{question} Type yes to confirm: "))?;
        let yes = answer.as_deref().map(str::trim) == Some("yes");
        if !yes {
            writeln!(self.out, "Cancelled.")?;
        }
        Ok(yes)
    }

    fn updates(&mut self) -> Result<()> {
        loop {
            let page = self.actions.update_status();
            writeln!(self.out, "\n{}", page.trim_end())?;
            writeln!(
                self.out,
                " 1) Install from a USB stick (FAT or ext, *.raucb in its top folder)"
            )?;
            writeln!(
                self.out,
                " 2) Install the bundle staged through the admin API"
            )?;
            writeln!(self.out, " 3) Refresh")?;
            writeln!(self.out, " 4) Back")?;
            let Some(line) = self.ask("Choose 1-4: ")? else {
                return Ok(());
            };
            match parse_number(&line, 4) {
                Some(1) => {
                    let r = self.install_from_usb();
                    self.actions.usb_release();
                    r?;
                }
                Some(2) => self.install_staged()?,
                Some(3) => {}
                Some(_) => return Ok(()),
                None => writeln!(self.out, "Not a menu entry.")?,
            }
        }
    }

    fn install_staged(&mut self) -> Result<()> {
        if !self.actions.daemon_running() {
            writeln!(self.out, "{DAEMON_DOWN}")?;
            return Ok(());
        }
        let q = "Install the staged bundle into the other slot? It is checked again first (signature, board, version); reboot afterwards to run it.";
        if self.confirm(q)? {
            match self.actions.install_staged() {
                Ok(t) => writeln!(self.out, "{t}")?,
                Err(e) => writeln!(self.out, "Not installed: {e:#}")?,
            }
        }
        Ok(())
    }

    fn install_from_usb(&mut self) -> Result<()> {
        if !self.actions.daemon_running() {
            writeln!(self.out, "{DAEMON_DOWN}")?;
            return Ok(());
        }
        let found = match self.actions.usb_bundles() {
            Ok(f) => f,
            Err(e) => {
                writeln!(self.out, "No USB stick read: {e:#}")?;
                return Ok(());
            }
        };
        if found.is_empty() {
            writeln!(self.out, "No *.raucb file in the USB stick's top folder.")?;
            return Ok(());
        }
        for (i, b) in found.iter().enumerate() {
            writeln!(self.out, " {}) {}", i + 1, crate::update::shown_name(b))?;
        }
        let Some(line) = self.ask(&format!(
            "Bundle to install, 1-{} (anything else cancels): ",
            found.len()
        ))?
        else {
            return Ok(());
        };
        let Some(n) = parse_number(&line, found.len()) else {
            writeln!(self.out, "Cancelled.")?;
            return Ok(());
        };
        let b = &found[n - 1];
        let q = format!(
            "Install {} into the other slot? It is checked first (signature, board, version); reboot afterwards to run it.",
            crate::update::shown_name(b)
        );
        if self.confirm(&q)? {
            match self.actions.install_bundle(b) {
                Ok(t) => writeln!(self.out, "{t}")?,
                Err(e) => writeln!(self.out, "Not installed: {e:#}")?,
            }
        }
        Ok(())
    }

    fn network(&mut self) -> Result<()> {
        loop {
            let up = self.actions.daemon_running();
            let page = self.actions.network();
            writeln!(self.out, "\n{}", page.trim_end())?;
            if up {
                writeln!(self.out, " 1) Use DHCP")?;
                writeln!(self.out, " 2) Set a static address")?;
            } else {
                writeln!(self.out, "{NETWORK_DAEMON_DOWN}")?;
                writeln!(self.out, " 1) Get an address by DHCP once")?;
                writeln!(self.out, " 2) Set a static address once")?;
            }
            writeln!(self.out, " 3) Back")?;
            let Some(line) = self.ask("Choose 1-3: ")? else {
                return Ok(());
            };
            let wanted = match parse_number(&line, 3) {
                Some(1) => NetworkSettings::Dhcp,
                Some(2) => match self.ask_static()? {
                    Some(s) => s,
                    None => continue,
                },
                Some(_) => return Ok(()),
                None => {
                    writeln!(self.out, "Not a menu entry.")?;
                    continue;
                }
            };
            // Asked again: the daemon may have stopped or started while the technician typed.
            let said = if self.actions.daemon_running() {
                self.actions.set_network(&wanted)
            } else {
                self.actions.network_fallback(&wanted)
            };
            match said {
                Ok(t) => writeln!(self.out, "{t}")?,
                Err(e) => writeln!(self.out, "Not changed: {e:#}")?,
            }
        }
    }

    fn ask_static(&mut self) -> Result<Option<NetworkSettings>> {
        let Some(addr) = self.ask("Address (a.b.c.d/nn, or a.b.c.d): ")? else {
            return Ok(None);
        };
        let mask = if addr.contains('/') {
            None
        } else {
            let Some(m) = self.ask("Netmask (e.g. 255.255.255.0): ")? else {
                return Ok(None);
            };
            Some(m)
        };
        let address = match Ipv4Cidr::parse_with_mask(&addr, mask.as_deref()) {
            Ok(a) => a,
            Err(e) => {
                writeln!(self.out, "Not saved: {e:#}")?;
                return Ok(None);
            }
        };
        let Some(gw) = self.ask("Gateway (empty for none): ")? else {
            return Ok(None);
        };
        let gateway = match gw.trim() {
            "" => None,
            g => match g.parse::<Ipv4Addr>() {
                Ok(g) => Some(g),
                Err(_) => {
                    writeln!(self.out, "Not saved: {g:?} is not an IPv4 address")?;
                    return Ok(None);
                }
            },
        };
        let Some(dns_line) = self.ask("DNS servers, separated by spaces (empty for none): ")?
        else {
            return Ok(None);
        };
        let mut dns = Vec::new();
        for d in dns_line.split_whitespace() {
            match d.parse::<IpAddr>() {
                Ok(d) => dns.push(d),
                Err(_) => {
                    writeln!(self.out, "Not saved: {d:?} is not an IP address")?;
                    return Ok(None);
                }
            }
        }
        match NetworkSettings::new_static(address, gateway, dns) {
            Ok(s) => Ok(Some(s)),
            Err(e) => {
                writeln!(self.out, "Not saved: {e:#}")?;
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        log: Vec<String>,
        network: Option<NetworkSettings>,
        daemon_down: bool,
        refuse_network: bool,
        bundles: Vec<std::path::PathBuf>,
        locked: bool,
    }

    impl BoxActions for Recorder {
        fn daemon_running(&mut self) -> bool {
            !self.daemon_down
        }
        fn status(&mut self) -> String {
            self.log.push("status".into());
            "all good".into()
        }
        fn network(&mut self) -> String {
            format!(
                "Network: {}",
                self.network.clone().unwrap_or(NetworkSettings::Dhcp)
            )
        }
        fn set_network(&mut self, s: &NetworkSettings) -> Result<String> {
            if self.refuse_network {
                anyhow::bail!("sealgated refused (422): no link eth0");
            }
            self.log.push(format!("network {s}"));
            self.network = Some(s.clone());
            Ok(format!("Saved and applied: {s}"))
        }
        fn network_fallback(&mut self, s: &NetworkSettings) -> Result<String> {
            self.log.push(format!("once {s}"));
            Ok(format!("Applied once: {s}"))
        }
        fn ping(&mut self, t: &PingTarget) -> String {
            self.log.push(format!("ping {}", t.as_str()));
            "pong".into()
        }
        fn setup_token(&mut self) -> Result<Option<String>> {
            Ok(Some("Setup token: TOKEN-1".into()))
        }
        fn reset_admin_access(&mut self) -> Result<String> {
            self.log.push("reset-admin".into());
            Ok("New setup token: TOKEN-2".into())
        }
        fn reboot(&mut self) -> Result<()> {
            self.log.push("reboot".into());
            Ok(())
        }
        fn power_off(&mut self) -> Result<()> {
            self.log.push("poweroff".into());
            Ok(())
        }
        fn reset_settings(&mut self) -> Result<()> {
            self.log.push("reset-settings".into());
            Ok(())
        }
        fn wipe(&mut self) -> Result<()> {
            self.log.push("wipe".into());
            Ok(())
        }
        fn update_status(&mut self) -> String {
            "Running:   0.1.0 in slot A".into()
        }
        fn usb_bundles(&mut self) -> Result<Vec<std::path::PathBuf>> {
            self.log.push("usb".into());
            Ok(self.bundles.clone())
        }
        fn install_bundle(&mut self, b: &std::path::Path) -> Result<String> {
            self.log.push(format!("install {}", b.display()));
            Ok("Installing 0.2.0 into the other slot".into())
        }
        fn usb_release(&mut self) {
            self.log.push("release".into());
        }
        fn install_staged(&mut self) -> Result<String> {
            self.log.push("install staged".into());
            Ok("Installing 0.3.0 into the other slot".into())
        }
        fn vault_locked(&mut self) -> Option<String> {
            self.locked
                .then(|| "the TPM refused to unseal the vault key".into())
        }
        fn recover_vault(&mut self, secret: &str) -> Result<String> {
            if secret.trim() != "GOOD-SECRET" {
                self.log.push("recover refused".into());
                anyhow::bail!("the recovery secret is not valid: checksum mismatch");
            }
            self.log.push("recovered".into());
            self.locked = false;
            Ok("Vault recovered.".into())
        }
        fn hide_input(&mut self, hidden: bool) {
            self.log.push(format!("hide {hidden}"));
        }
    }

    fn session(input: &str) -> (Recorder, String) {
        session_with(Recorder::default(), input)
    }

    fn session_with(mut r: Recorder, input: &str) -> (Recorder, String) {
        let mut out = Vec::new();
        Menu::new(input.as_bytes(), &mut out, &mut r, "test".into())
            .run()
            .unwrap();
        (r, String::from_utf8(out).unwrap())
    }

    #[test]
    fn parses_only_menu_numbers() {
        assert_eq!(parse_choice("1", false), Some(Choice::Status));
        assert_eq!(parse_choice(" 9 \r", false), Some(Choice::Wipe));
        assert_eq!(parse_choice("11", true), Some(Choice::RecoverVault));
        assert_eq!(parse_choice("12", true), None);
        for bad in [
            "0",
            "11",
            "-1",
            "1;reboot",
            "$(reboot)",
            "1 2",
            "status",
            "",
            "０",
            "0001",
        ] {
            assert_eq!(parse_choice(bad, false), None, "{bad:?}");
        }
    }

    #[test]
    fn ping_targets_cannot_be_options_or_shell() {
        assert!(PingTarget::parse("10.0.2.2").is_some());
        assert!(PingTarget::parse("fe80::1").is_some());
        assert!(PingTarget::parse("mail.example.org").is_some());
        for bad in [
            "-f",
            "-c 1000 x",
            "a;reboot",
            "$(id)",
            "a b",
            "",
            ".x",
            "`x`",
        ] {
            assert_eq!(PingTarget::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn recovery_is_offered_only_while_the_vault_is_locked() {
        let (r, out) = session("11\n");
        assert!(r.log.is_empty(), "{:?}", r.log);
        assert!(out.contains("Choose 1-10: "), "{out}");
        assert!(!out.contains("Recover the locked vault"), "{out}");
        assert!(out.contains("Not a menu entry: type a number from 1 to 10."));

        let locked = || Recorder {
            locked: true,
            ..Recorder::default()
        };
        // Cancelled with an empty line; a wrong secret is refused and nothing reboots.
        let (r, out) = session_with(locked(), "11\n\n11\nWRONG-SECRET\n");
        assert!(out.contains("11) Recover the locked vault with its recovery secret"));
        assert!(out.contains("Choose 1-11: "), "{out}");
        assert!(out.contains("Cancelled."), "{out}");
        assert!(
            out.contains("Failed: the recovery secret is not valid"),
            "{out}"
        );
        assert!(
            !out.contains("WRONG-SECRET"),
            "the secret is never echoed: {out}"
        );
        assert_eq!(
            r.log,
            [
                "hide true",
                "hide false",
                "hide true",
                "hide false",
                "recover refused"
            ]
        );
        // The right one: recovered, then the box reboots.
        let (r, out) = session_with(locked(), "11\nGOOD-SECRET\n");
        assert!(out.contains("Vault recovered."), "{out}");
        assert!(!out.contains("GOOD-SECRET"), "{out}");
        assert_eq!(r.log, ["hide true", "hide false", "recovered", "reboot"]);
    }

    #[test]
    fn unknown_input_only_reprompts() {
        let (r, out) = session("sh\n/bin/sh\n; reboot\n42\n\n1\n");
        assert_eq!(r.log, ["status"]);
        assert_eq!(out.matches("Not a menu entry").count(), 4);
        assert!(out.contains("all good"));
    }

    #[test]
    fn static_network_is_validated_then_applied() {
        let (r, out) = session("2\n2\n10.0.2.77\n255.255.255.0\n10.0.2.2\n10.0.2.3\n3\n");
        assert_eq!(
            r.log,
            ["network static 10.0.2.77/24, gateway 10.0.2.2, DNS 10.0.2.3"]
        );
        assert!(out.contains("Saved and applied"));
        let (r, out) = session("2\n2\n10.0.2.77/24\n10.9.9.9\n\n3\n");
        assert!(r.log.is_empty());
        assert!(out.contains("not in 10.0.2.77/24's subnet"));
        let (r, _) = session("2\n2\n300.1.1.1/24\n3\n");
        assert!(r.log.is_empty());
    }

    #[test]
    fn destructive_entries_need_their_confirmation() {
        let (r, _) = session("6\nno\n7\ny\n8\nYES\n9\nerase all keys\n9\nyes\n");
        assert!(r.log.is_empty(), "{:?}", r.log);
        let (r, _) = session("8\nyes\n9\nERASE ALL KEYS\n6\nyes\n");
        assert_eq!(r.log, ["reset-settings", "wipe", "reboot"]);
    }

    #[test]
    fn shows_and_resets_the_setup_token() {
        let (r, out) = session("4\n5\nyes\n");
        assert!(out.contains("Setup token: TOKEN-1"));
        assert!(out.contains("New setup token: TOKEN-2"));
        assert_eq!(r.log, ["reset-admin"]);
    }

    #[test]
    fn without_the_daemon_its_entries_say_so_and_the_rest_works() {
        let down = Recorder {
            daemon_down: true,
            ..Recorder::default()
        };
        let (r, out) = session_with(down, "4\n5\nyes\n1\n8\nyes\n");
        assert_eq!(r.log, ["status", "reset-settings"], "{out}");
        assert_eq!(out.matches("sealgated is not running").count(), 2, "{out}");
        assert!(!out.contains("TOKEN"), "{out}");
        assert!(out.contains("Show the setup token again (needs sealgated: not running)"));
        let (_, out) = session("1\n");
        assert!(!out.contains("not running"), "{out}");
    }

    #[test]
    fn the_network_page_asks_the_daemon_or_offers_a_one_time_address() {
        let (r, out) = session("2\n1\n3\n");
        assert_eq!(r.log, ["network DHCP"]);
        assert!(out.contains("Saved and applied: DHCP"), "{out}");
        let down = Recorder {
            daemon_down: true,
            ..Recorder::default()
        };
        let (r, out) = session_with(down, "2\n1\n2\n10.0.2.77/24\n\n\n3\n");
        assert_eq!(r.log, ["once DHCP", "once static 10.0.2.77/24"], "{out}");
        assert!(out.contains("sealgated is not running"), "{out}");
        assert!(out.contains("Get an address by DHCP once"), "{out}");
        // A refusal is said and nothing is taken for done.
        let refusing = Recorder {
            refuse_network: true,
            ..Recorder::default()
        };
        let (r, out) = session_with(refusing, "2\n1\n3\n");
        assert!(r.log.is_empty());
        assert!(
            out.contains("Not changed: sealgated refused (422)"),
            "{out}"
        );
        assert!(!out.contains("Saved and applied"), "{out}");
    }

    #[test]
    fn the_update_page_installs_a_confirmed_bundle_from_the_stick_only() {
        let with = |bundles: &[&str]| Recorder {
            bundles: bundles.iter().map(std::path::PathBuf::from).collect(),
            ..Recorder::default()
        };
        let two = ["/run/sealgate/usb/a.raucb", "/run/sealgate/usb/b.raucb"];
        let (r, out) = session_with(with(&two), "10\n1\n2\nyes\n4\n");
        assert!(out.contains("Running:   0.1.0 in slot A"), "{out}");
        assert!(out.contains(" 2) b.raucb"), "{out}");
        assert_eq!(
            r.log,
            ["usb", "install /run/sealgate/usb/b.raucb", "release"],
            "{out}"
        );
        assert!(out.contains("Installing 0.2.0"), "{out}");
        // Not confirmed, a number out of range, garbage: nothing installed, the stick released.
        let (r, _) = session_with(with(&two), "10\n1\n1\nno\n1\n3\n1\n$(reboot)\n4\n");
        assert_eq!(
            r.log,
            ["usb", "release", "usb", "release", "usb", "release"]
        );
        let (r, out) = session_with(with(&[]), "10\n1\n4\n");
        assert_eq!(r.log, ["usb", "release"]);
        assert!(out.contains("No *.raucb file"), "{out}");
        // Without the daemon nothing is installed (its checks and re-seal are needed).
        let down = Recorder {
            daemon_down: true,
            ..with(&two)
        };
        let (r, out) = session_with(down, "10\n1\n4\n");
        assert_eq!(r.log, ["release"], "{out}");
        assert!(out.contains("sealgated is not running"), "{out}");
    }

    #[test]
    fn the_update_page_installs_the_staged_bundle_once_confirmed() {
        let (r, out) = session_with(Recorder::default(), "10\n2\nno\n2\nyes\n4\n");
        assert_eq!(r.log, ["install staged"], "{out}");
        assert!(out.contains("Installing 0.3.0"), "{out}");
        let down = Recorder {
            daemon_down: true,
            ..Recorder::default()
        };
        let (r, out) = session_with(down, "10\n2\n4\n");
        assert!(r.log.is_empty(), "{out}");
        assert!(out.contains("sealgated is not running"), "{out}");
    }
}

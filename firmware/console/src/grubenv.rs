//! GRUB's environment block (`EFI/BOOT/grubenv` on the ESP): where GRUB counts boot tries
//! per root slot (RAUC's grub backend variables `ORDER`, `A_OK`, `A_TRY`, `B_OK`, `B_TRY`).
//! Rewritten in place at exactly 1024 bytes: GRUB's `save_env` writes into the file's
//! existing blocks and refuses a block of another size.

use anyhow::{Result, bail};

/// The block's size.
pub const SIZE: usize = 1024;
const HEADER: &str = "# GRUB Environment Block\n";

/// The variables of an environment block, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrubEnv {
    vars: Vec<(String, String)>,
}

impl GrubEnv {
    /// Parses a 1024-byte block.
    pub fn parse(block: &[u8]) -> Result<GrubEnv> {
        if block.len() != SIZE || !block.starts_with(HEADER.as_bytes()) {
            bail!("not a GRUB environment block");
        }
        let text = String::from_utf8_lossy(&block[HEADER.len()..]);
        let mut vars = Vec::new();
        for line in text.split('\n') {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            if let Some((k, v)) = line.split_once('=') {
                vars.push((k.to_string(), v.to_string()));
            }
        }
        Ok(GrubEnv { vars })
    }

    /// A block for a box whose block was missing or damaged: `slot` (the one that booted
    /// and was found healthy) good, the other slot off (its state is unknown, so it is not
    /// tried), order `A B`.
    pub fn fresh(slot: char) -> Result<GrubEnv> {
        let other = match slot {
            'A' => 'B',
            'B' => 'A',
            _ => bail!("no slot {slot}"),
        };
        let mut env = GrubEnv { vars: Vec::new() };
        env.set("ORDER", "A B");
        for s in ['A', 'B'] {
            env.set(&format!("{s}_OK"), "0");
            env.set(&format!("{s}_TRY"), "0");
        }
        env.mark_good(slot)?;
        env.set(&format!("{other}_OK"), "0");
        Ok(env)
    }

    /// A variable's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets a variable (appended if new).
    pub fn set(&mut self, key: &str, value: &str) {
        match self.vars.iter_mut().find(|(k, _)| k == key) {
            Some(kv) => kv.1 = value.to_string(),
            None => self.vars.push((key.to_string(), value.to_string())),
        }
    }

    /// Marks `slot` (A or B) good: OK=1, TRY=0.
    pub fn mark_good(&mut self, slot: char) -> Result<()> {
        if slot != 'A' && slot != 'B' {
            bail!("no slot {slot}");
        }
        self.set(&format!("{slot}_OK"), "1");
        self.set(&format!("{slot}_TRY"), "0");
        Ok(())
    }

    /// The slots in boot order (`ORDER`, default `A B`), A and B only.
    pub fn order(&self) -> Vec<char> {
        let order: Vec<char> = self
            .get("ORDER")
            .unwrap_or("A B")
            .split_whitespace()
            .filter_map(|s| match s {
                "A" => Some('A'),
                "B" => Some('B'),
                _ => None,
            })
            .collect();
        if order.is_empty() {
            vec!['A', 'B']
        } else {
            order
        }
    }

    /// Whether `slot` is marked good (`OK=1`; its tries may still run out).
    pub fn is_good(&self, slot: char) -> bool {
        self.get(&format!("{slot}_OK")) == Some("1")
    }

    /// RAUC's primary slot: the first good slot in `ORDER`.
    pub fn primary(&self) -> Option<char> {
        self.order().into_iter().find(|s| self.is_good(*s))
    }

    /// RAUC's `set-primary`: `slot` first in `ORDER`, good, with fresh tries.
    pub fn set_primary(&mut self, slot: char) -> Result<()> {
        let other = other_slot(slot)?;
        self.set("ORDER", &format!("{slot} {other}"));
        self.mark_good(slot)
    }

    /// RAUC's `set-state`: good (`OK=1`, `TRY=0`) or bad (`OK=0`, `TRY=0`).
    pub fn set_state(&mut self, slot: char, good: bool) -> Result<()> {
        other_slot(slot)?;
        self.set(&format!("{slot}_OK"), if good { "1" } else { "0" });
        self.set(&format!("{slot}_TRY"), "0");
        Ok(())
    }

    /// After a healthy boot of `booted`: the slot GRUB gave up on to boot this one, if any
    /// (it came first in `ORDER` and was still marked good, so its tries ran out: an update
    /// that did not pass its health gate). [`GrubEnv::settle_fallback`] marks it bad.
    pub fn fell_back_from(&self, booted: char) -> Option<char> {
        let first = *self.order().first()?;
        (first != booted && self.is_good(first)).then_some(first)
    }

    /// Marks the slot GRUB fell back from bad and puts `booted` first.
    pub fn settle_fallback(&mut self, booted: char) -> Result<Option<char>> {
        let failed = self.fell_back_from(booted);
        if let Some(f) = failed {
            self.set_state(f, false)?;
            self.set("ORDER", &format!("{booted} {f}"));
        }
        Ok(failed)
    }

    /// The 1024-byte block.
    pub fn to_block(&self) -> Result<Vec<u8>> {
        let mut s = String::from(HEADER);
        for (k, v) in &self.vars {
            s.push_str(&format!("{k}={v}\n"));
        }
        if s.len() > SIZE {
            bail!("the GRUB environment does not fit in {SIZE} bytes");
        }
        let mut b = s.into_bytes();
        b.resize(SIZE, b'#');
        Ok(b)
    }
}

/// The other root slot.
pub fn other_slot(slot: char) -> Result<char> {
    match slot {
        'A' => Ok('B'),
        'B' => Ok('A'),
        _ => bail!("no slot {slot}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn block(body: &str) -> Vec<u8> {
        let mut b = format!("{HEADER}{body}").into_bytes();
        b.resize(SIZE, b'#');
        b
    }

    #[test]
    fn marks_a_slot_good_keeping_the_rest() {
        let mut env =
            GrubEnv::parse(&block("ORDER=A B\nA_OK=1\nA_TRY=2\nB_OK=0\nB_TRY=0\n")).unwrap();
        env.mark_good('A').unwrap();
        let out = env.to_block().unwrap();
        assert_eq!(out.len(), SIZE);
        let again = GrubEnv::parse(&out).unwrap();
        assert_eq!(again.get("A_TRY"), Some("0"));
        assert_eq!(again.get("ORDER"), Some("A B"));
        assert_eq!(again.get("B_OK"), Some("0"));
        assert!(env.mark_good('C').is_err());
    }

    #[test]
    fn a_fresh_block_boots_the_healthy_slot_only() {
        let env = GrubEnv::parse(&GrubEnv::fresh('B').unwrap().to_block().unwrap()).unwrap();
        assert_eq!(env.get("ORDER"), Some("A B"));
        assert_eq!(env.get("B_OK"), Some("1"));
        assert_eq!(env.get("B_TRY"), Some("0"));
        assert_eq!(env.get("A_OK"), Some("0"));
        assert!(GrubEnv::fresh('C').is_err());
    }

    #[test]
    fn rauc_backend_operations_speak_the_ladders_variables() {
        let mut env =
            GrubEnv::parse(&block("ORDER=A B\nA_OK=1\nA_TRY=0\nB_OK=0\nB_TRY=0\n")).unwrap();
        assert_eq!(env.primary(), Some('A'));
        env.set_primary('B').unwrap();
        assert_eq!(env.get("ORDER"), Some("B A"));
        assert_eq!((env.get("B_OK"), env.get("B_TRY")), (Some("1"), Some("0")));
        assert_eq!(env.primary(), Some('B'));
        env.set_state('B', false).unwrap();
        assert_eq!(env.primary(), Some('A'));
        assert!(env.set_state('C', true).is_err());
        assert!(env.set_primary('x').is_err());
        // Garbage in ORDER is ignored, never a slot.
        env.set("ORDER", "C D");
        assert_eq!(env.order(), vec!['A', 'B']);
    }

    #[test]
    fn a_fallback_boot_marks_the_failed_update_bad() {
        // An update to B whose three tries ran out: GRUB booted A.
        let mut env =
            GrubEnv::parse(&block("ORDER=B A\nA_OK=1\nA_TRY=1\nB_OK=1\nB_TRY=3\n")).unwrap();
        assert_eq!(env.fell_back_from('B'), None);
        assert_eq!(env.settle_fallback('A').unwrap(), Some('B'));
        assert_eq!(env.get("B_OK"), Some("0"));
        assert_eq!(env.get("ORDER"), Some("A B"));
        // Settled: nothing more to report.
        assert_eq!(env.settle_fallback('A').unwrap(), None);
        // A normal boot of the primary slot is no fallback.
        let mut env =
            GrubEnv::parse(&block("ORDER=A B\nA_OK=1\nA_TRY=1\nB_OK=0\nB_TRY=0\n")).unwrap();
        assert_eq!(env.settle_fallback('A').unwrap(), None);
    }

    #[test]
    fn refuses_what_is_not_a_block() {
        assert!(GrubEnv::parse(b"ORDER=A").is_err());
        assert!(GrubEnv::parse(&[b'#'; SIZE]).is_err());
    }
}

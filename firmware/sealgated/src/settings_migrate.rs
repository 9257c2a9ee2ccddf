//! The settings file's version and its migrations forward, kept safe for A/B updates.
//!
//! The box's settings file (`DATA/settings.toml`) has a version in `FILE.version` (beside it,
//! so the file itself stays readable by every release; no version file: version 1). A release
//! whose settings format changed adds a [`Migration`] to [`MIGRATIONS`] (the one from version
//! `n` to `n + 1` at index `n - 1`) and raises [`VERSION`]; each migration is a pure function
//! of the TOML table, idempotent (it may meet a file already in the new shape, e.g. written by
//! a settings change during an update's trial), with a unit test of its own.
//!
//! When it happens: an older file is migrated **in memory** wherever settings are read
//! (the boot's settings check, the daemon's start), and written back only when the running
//! slot is committed (`POST /update/commit`, the health gate's verdict): so a new slot's
//! trial never changes the file the old slot reads after a fallback. At the write the old file
//! is kept as `FILE.vN`, and a release that finds a newer version than its own (run after a
//! deliberate rollback) reads that copy of its own version if there is one (the settings as
//! it last saw them) instead of a file it may not understand.
//!
//! Invariants: the file is replaced atomically (`fsio::write_atomic`), the copy first, the
//! version last (a cut in between migrates again, harmlessly: migrations are idempotent); a
//! migration that fails leaves everything as it was and the box on its shipped settings with
//! the reason (`Settings::load_box`).

use std::path::{Path, PathBuf};

use sealgate_local::fsio::{Mode, write_atomic};

/// One step forward: the settings table of version `n` made version `n + 1`.
pub type Migration = fn(&mut toml::Table) -> Result<(), String>;

/// The settings format this release writes.
pub const VERSION: u32 = 1;

/// The migrations, from version 1 up (none yet: version 1 is the first versioned format).
pub const MIGRATIONS: &[Migration] = &[];

const _: () = assert!(MIGRATIONS.len() + 1 == VERSION as usize);

/// `FILE.version`.
pub fn version_path(file: &Path) -> PathBuf {
    with_suffix(file, ".version")
}

/// `FILE.vN`: the file as it was at version `n`, kept when it was migrated.
pub fn backup_path(file: &Path, n: u32) -> PathBuf {
    with_suffix(file, &format!(".v{n}"))
}

fn with_suffix(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    file.with_file_name(name)
}

/// The version of the settings in `file` (1 without a readable version file).
pub fn file_version(file: &Path) -> u32 {
    std::fs::read_to_string(version_path(file))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|v| *v >= 1)
        .unwrap_or(1)
}

/// What to read for `file` whose bytes are `text`: see the module documentation.
pub fn effective(file: &Path, text: &[u8]) -> Result<Vec<u8>, String> {
    effective_with(file, text, VERSION, MIGRATIONS)
}

fn effective_with(
    file: &Path,
    text: &[u8],
    current: u32,
    migrations: &[Migration],
) -> Result<Vec<u8>, String> {
    let v = file_version(file);
    if v > current {
        // Written by a newer release: its copy of our version, if it kept one.
        return Ok(std::fs::read(backup_path(file, current)).unwrap_or_else(|_| text.to_vec()));
    }
    if v == current {
        return Ok(text.to_vec());
    }
    let text = std::str::from_utf8(text)
        .map_err(|_| "not UTF-8 text (damaged, e.g. half-written)".to_string())?;
    migrate(text, v, current, migrations).map(String::into_bytes)
}

/// `text` of version `from` migrated to `to`.
fn migrate(text: &str, from: u32, to: u32, migrations: &[Migration]) -> Result<String, String> {
    let mut table: toml::Table =
        toml::from_str(text).map_err(|e| format!("settings version {from}: {e}"))?;
    for n in from..to {
        let step = usize::try_from(n - 1)
            .ok()
            .and_then(|i| migrations.get(i))
            .ok_or_else(|| format!("no migration from settings version {n}"))?;
        step(&mut table).map_err(|e| format!("migrating settings version {n}: {e}"))?;
    }
    toml::to_string(&table).map_err(|e| e.to_string())
}

/// Writes the migration of `file` (if it is older than this release's version): the old
/// file kept as `FILE.vN`, the migrated one in its place, the version last. `Ok(Some(n))`
/// when a file of version `n` was migrated.
pub fn persist(file: &Path) -> Result<Option<u32>, String> {
    persist_with(file, VERSION, MIGRATIONS)
}

fn persist_with(
    file: &Path,
    current: u32,
    migrations: &[Migration],
) -> Result<Option<u32>, String> {
    let v = file_version(file);
    if v >= current {
        return Ok(None);
    }
    let old = match std::fs::read(file) {
        Ok(b) => b,
        // No file: nothing to migrate; the version says what the next write will be.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            mark(file, current).map_err(|e| e.to_string())?;
            return Ok(None);
        }
        Err(e) => return Err(format!("{}: {e}", file.display())),
    };
    let text =
        std::str::from_utf8(&old).map_err(|_| "the settings file is not UTF-8".to_string())?;
    let new = migrate(text, v, current, migrations)?;
    let io = |e: std::io::Error| format!("{}: {e}", file.display());
    write_atomic(&backup_path(file, v), &old, Mode::KeepOr(0o600)).map_err(io)?;
    write_atomic(file, new.as_bytes(), Mode::KeepOr(0o600)).map_err(io)?;
    mark(file, current).map_err(io)?;
    Ok(Some(v))
}

/// Records that `file` holds this release's version (after a settings change wrote it).
pub fn mark_current(file: &Path) -> std::io::Result<()> {
    if file_version(file) == VERSION {
        return Ok(());
    }
    mark(file, VERSION)
}

fn mark(file: &Path, v: u32) -> std::io::Result<()> {
    write_atomic(
        &version_path(file),
        format!("{v}\n").as_bytes(),
        Mode::KeepOr(0o644),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A made-up change of format, as a release would add one: `[smtp] old_name` became
    /// `[smtp] new_name`.
    fn rename(t: &mut toml::Table) -> Result<(), String> {
        if let Some(toml::Value::Table(smtp)) = t.get_mut("smtp")
            && let Some(v) = smtp.remove("old_name")
        {
            smtp.entry("new_name").or_insert(v);
        }
        Ok(())
    }

    fn refuse(_: &mut toml::Table) -> Result<(), String> {
        Err("cannot".into())
    }

    const OLD: &str = "[smtp]\nold_name = 5\n";

    #[test]
    fn an_old_file_is_read_migrated_and_written_only_when_persisted() {
        let d = tempfile::tempdir().expect("tmp");
        let f = d.path().join("settings.toml");
        std::fs::write(&f, OLD).expect("write");
        let seen = effective_with(&f, OLD.as_bytes(), 2, &[rename]).expect("migrates");
        let seen: toml::Table =
            toml::from_str(std::str::from_utf8(&seen).expect("utf8")).expect("toml");
        assert_eq!(seen["smtp"]["new_name"].as_integer(), Some(5));
        // Read, not written: the old slot still reads its own file.
        assert_eq!(std::fs::read_to_string(&f).expect("read"), OLD);
        assert_eq!(file_version(&f), 1);
        assert_eq!(persist_with(&f, 2, &[rename]), Ok(Some(1)));
        assert_eq!(file_version(&f), 2);
        assert_eq!(
            std::fs::read_to_string(backup_path(&f, 1)).expect("kept"),
            OLD
        );
        assert!(
            std::fs::read_to_string(&f)
                .expect("read")
                .contains("new_name = 5")
        );
        // Again: nothing to do; a file already in the new shape migrates to itself.
        assert_eq!(persist_with(&f, 2, &[rename]), Ok(None));
        let again = migrate("[smtp]\nnew_name = 7\n", 1, 2, &[rename]).expect("idempotent");
        assert!(
            again.contains("new_name = 7") && !again.contains("old_name"),
            "{again}"
        );
    }

    #[test]
    fn an_older_release_reads_the_copy_of_its_own_version() {
        let d = tempfile::tempdir().expect("tmp");
        let f = d.path().join("settings.toml");
        std::fs::write(&f, OLD).expect("write");
        persist_with(&f, 2, &[rename]).expect("persist");
        // Version 1 software (after a rollback) reads what it last wrote.
        let seen = effective_with(&f, &std::fs::read(&f).expect("read"), 1, &[]).expect("read");
        assert_eq!(seen, OLD.as_bytes());
        // Without that copy: the file as it is.
        std::fs::remove_file(backup_path(&f, 1)).expect("rm");
        let now = std::fs::read(&f).expect("read");
        assert_eq!(effective_with(&f, &now, 1, &[]).expect("read"), now);
    }

    #[test]
    fn a_failed_migration_changes_nothing() {
        let d = tempfile::tempdir().expect("tmp");
        let f = d.path().join("settings.toml");
        std::fs::write(&f, OLD).expect("write");
        assert!(effective_with(&f, OLD.as_bytes(), 2, &[refuse]).is_err());
        assert!(persist_with(&f, 2, &[refuse]).is_err());
        assert_eq!(std::fs::read_to_string(&f).expect("read"), OLD);
        assert_eq!(file_version(&f), 1);
        assert!(!backup_path(&f, 1).exists());
        // A version with no migration to it is an error, not a guess.
        assert!(migrate(OLD, 1, 3, &[rename]).is_err());
    }

    #[test]
    fn this_release_is_version_one_and_a_change_marks_it() {
        let d = tempfile::tempdir().expect("tmp");
        let f = d.path().join("settings.toml");
        assert_eq!(file_version(&f), 1);
        mark_current(&f).expect("mark");
        assert_eq!(file_version(&f), VERSION);
        assert_eq!(persist(&f), Ok(None));
    }
}

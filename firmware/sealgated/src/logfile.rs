//! The daemon's log file, rotated by size: `sealgated.log` grows to [`MAX_BYTES`], then
//! becomes `sealgated.log.1` (the older ones move up to `.KEEP`, the oldest is dropped), so
//! the log never holds more than `(KEEP + 1) × MAX_BYTES` of the data partition. A line is
//! never split across files: `tracing`'s formatter hands over one whole line per write.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Size at which the file is rotated.
pub const MAX_BYTES: u64 = 4 * 1024 * 1024;
/// Rotated files kept.
pub const KEEP: u32 = 3;

/// An append-only file that rotates itself.
pub struct RotatingFile {
    path: PathBuf,
    max: u64,
    keep: u32,
    file: File,
    size: u64,
}

impl RotatingFile {
    /// Opens (appends to) `path`, creating its folder.
    pub fn open(path: &Path, max: u64, keep: u32) -> io::Result<RotatingFile> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_path_buf(),
            max: max.max(1),
            keep,
            file,
            size,
        })
    }

    fn numbered(&self, n: u32) -> PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.keep == 0 {
            let _ = fs::remove_file(&self.path);
        } else {
            let _ = fs::remove_file(self.numbered(self.keep));
            for n in (1..self.keep).rev() {
                let from = self.numbered(n);
                if from.exists() {
                    fs::rename(&from, self.numbered(n + 1))?;
                }
            }
            fs::rename(&self.path, self.numbered(1))?;
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.size > 0 && self.size + buf.len() as u64 > self.max {
            self.rotate()?;
        }
        let n = self.file.write(buf)?;
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_log_stays_within_its_cap_and_keeps_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log/sealgated.log");
        let mut f = RotatingFile::open(&path, 1000, 2).unwrap();
        let line = format!("{}\n", "x".repeat(99));
        for _ in 0..100 {
            f.write_all(line.as_bytes()).unwrap();
        }
        let mut total = 0;
        for name in ["sealgated.log", "sealgated.log.1", "sealgated.log.2"] {
            let text = fs::read_to_string(dir.path().join("log").join(name)).unwrap();
            assert!(text.len() <= 1000, "{name}: {}", text.len());
            assert!(text.lines().all(|l| l.len() == 99), "{name}: a split line");
            total += text.len();
        }
        assert!(!dir.path().join("log/sealgated.log.3").exists());
        assert_eq!(total, 3000);
        // Reopening continues the current file's size.
        drop(f);
        let f = RotatingFile::open(&path, 1000, 2).unwrap();
        assert_eq!(f.size, 1000);
    }
}

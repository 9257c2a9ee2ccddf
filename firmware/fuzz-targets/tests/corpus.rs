//! Every fuzz target's committed corpus, and deterministic mutations of it
//! (`SEALGATE_FUZZ_MUTATIONS`, default [`replay::DEFAULT_MUTATIONS`] per target), through the
//! target's body; and the four places a target lives agree (its body here, its cargo-fuzz
//! entry, its `[[bin]]`, its seeds).

use sealgate_fuzz_targets::{TARGETS, replay};

macro_rules! replays {
    ($($name:ident),* $(,)?) => {
        /// The names of the replay tests, in order (a target added to `TARGETS` but not to
        /// `replays!` fails `every_target_has_its_entry_bin_seeds_and_replay`).
        const REPLAYED: &[&str] = &[$(stringify!($name)),*];
        $(
        #[test]
        fn $name() {
            let fed = replay::replay(
                stringify!($name),
                sealgate_fuzz_targets::$name::run,
                replay::mutations_from_env(),
            );
            eprintln!(
                "{}: {} seeds, {} mutations",
                stringify!($name),
                fed.seeds,
                fed.mutations
            );
        }
    )*};
}

replays!(
    admin_answer,
    classifier,
    cms,
    directory,
    dns,
    gateway_address,
    imap,
    loop_marker,
    measured,
    mime,
    netproto,
    scan,
    smtp,
    update_url,
);

#[test]
fn every_target_has_its_entry_bin_seeds_and_replay() {
    let fuzz = replay::fuzz_dir();
    let names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, REPLAYED, "every target in TARGETS is replayed above");

    let mut entries: Vec<String> = std::fs::read_dir(fuzz.join("fuzz_targets"))
        .expect("fuzz/fuzz_targets")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".rs")
                .map(String::from)
        })
        .collect();
    entries.sort();
    assert_eq!(
        entries, names,
        "fuzz/fuzz_targets/ has one entry per target"
    );

    let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for name in &names {
        // The cargo-fuzz entry only calls the body (it is built by cargo-fuzz alone, not by
        // the workspace: it must stay too small to break).
        let entry =
            std::fs::read_to_string(fuzz.join(format!("fuzz_targets/{name}.rs"))).expect("entry");
        let code: Vec<&str> = entry
            .lines()
            .filter(|l| !l.starts_with("//") && !l.trim().is_empty())
            .collect();
        assert_eq!(
            code,
            [
                "#![no_main]".to_string(),
                format!(
                    "libfuzzer_sys::fuzz_target!(|data: &[u8]| sealgate_fuzz_targets::{name}::run(data));"
                )
            ],
            "fuzz/fuzz_targets/{name}.rs"
        );
        let bin = format!(
            "[[bin]]\nname = \"{name}\"\npath = \"fuzz_targets/{name}.rs\"\ntest = false\n"
        );
        assert!(
            manifest.contains(&bin),
            "fuzz/Cargo.toml has no [[bin]] for {name}"
        );
        assert!(
            fuzz.join("corpus").join(name).is_dir(),
            "fuzz/corpus/{name}/ is missing"
        );
    }
}

//! Writes the seed corpus of the `fast_path_differential` fuzz target: one file per seed
//! of `refold_oracles::differential::seeds`, into the directory given (by default
//! `fuzz/corpus/fast_path_differential`).

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = std::env::args_os().nth(1).map_or_else(
        || PathBuf::from("fuzz/corpus/fast_path_differential"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&dir)?;
    let seeds = refold_oracles::differential::seeds();
    for (name, bytes) in &seeds {
        std::fs::write(dir.join(name), bytes)?;
    }
    println!("{} seeds written to {}", seeds.len(), dir.display());
    Ok(())
}

//! Embeds the shipped rule files (`signatures/*.toml`) into the binary, so
//! palisade has its default rule set wherever it runs.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    // Read at run time: a build script binary may be reused across checkouts.
    let dir =
        Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")).join("signatures");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("the signatures/ folder exists")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    let mut out = String::from(
        "/// The shipped rule files: (name, contents).\npub const BUILTIN_RULE_FILES: &[(&str, &str)] = &[\n",
    );
    for path in files {
        println!("cargo:rerun-if-changed={}", path.display());
        let name = format!("signatures/{}", path.file_name().unwrap().to_string_lossy());
        writeln!(out, "    ({name:?}, include_str!({:?})),", path.display().to_string()).unwrap();
    }
    out.push_str("];\n");
    let target = Path::new(&std::env::var("OUT_DIR").unwrap()).join("builtin_signatures.rs");
    std::fs::write(target, out).unwrap();
}

//! Writes `docs/benchmarks/<section>.json` from the tables of each section of
//! `docs/benchmarks.md` (sections whose benchmark writes its own JSON are left alone).
//! `bash benches/run.sh` runs it last. Run: `cargo run -p quiver-benches --bin bench-json`.

use quiver_benches::tables::{OWN_JSON, section_json, sections};
use quiver_benches::{docs_path, json_path, write_json};

fn main() -> anyhow::Result<()> {
    let page = std::fs::read_to_string(docs_path())?;
    for (name, body) in sections(&page) {
        if OWN_JSON.contains(&name.as_str()) {
            continue;
        }
        let path = json_path(&name);
        write_json(&path, &section_json(&name, &body))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

//! Writes the Quiver CRDs to `charts/quiver/crds/` (or to the directory given as the only
//! argument), one file per CRD.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(quiver_crds::generate::default_dir, PathBuf::from);
    std::fs::create_dir_all(&dir)?;
    for file in quiver_crds::generate::render()? {
        let path = dir.join(&file.file_name);
        std::fs::write(&path, file.yaml)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

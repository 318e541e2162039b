//! Copies a `.drv` and the `.drv`s it depends on from the Nix store into a
//! b3 local store (manual testing of `b3 build` before `b3 instantiate`
//! writes derivations): `import_drv STORE_ROOT /nix/store/…drv`.

use std::path::Path;

use b3_store::derivation::aterm;
use b3_store::local::{LocalStore, LocalStoreConfig};
use b3_store::path::{StoreDir, StorePath};

fn copy(store: &LocalStore, drv: &str) -> Result<StorePath, Box<dyn std::error::Error>> {
    let sd = StoreDir::default();
    let path = sd.parse(drv)?;
    let text = std::fs::read(drv)?;
    let parsed = aterm::parse(&sd, &text)?;
    for input in parsed.input_drvs.keys() {
        copy(store, &sd.display(input))?;
    }
    Ok(store.add_text_sync(path.name(), &text, &parsed.references())?)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [root, drv] = args.as_slice() else {
        return Err("usage: import_drv STORE_ROOT DRV".into());
    };
    let store = LocalStore::open(LocalStoreConfig::new(Path::new(root)))?;
    println!("{}", store.print_path(&copy(&store, drv)?));
    Ok(())
}

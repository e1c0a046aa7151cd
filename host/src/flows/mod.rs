//! Flows: `<name>.wasm` files (and their `<name>.toml` manifests) in the
//! flows folder, compiled and kept in a registry that the inbox reads.
//!
//! This module deals in files, names, versions and manifests; compiling and
//! running are the runtime's business, and a [`ReadyFlow`] is opaque here.

pub mod build;
mod loader;
mod manifest;
mod registry;

use std::path::PathBuf;

pub use self::loader::{FlowLoadError, Loader};
pub use self::manifest::Manifest;
pub use self::registry::Registry;

use crate::runtime::ReadyFlow;

/// One version of a flow, compiled and ready to run.
pub struct LoadedFlow {
    /// The flow's name: its file's stem.
    pub name: String,
    /// The version: the first 16 hex digits of the SHA-256 of the file.
    pub version: String,
    /// The compiled component, with its limits and permissions.
    pub ready: ReadyFlow,
    /// The file it came from.
    pub path: PathBuf,
    /// The file's size in bytes.
    pub size: u64,
    /// When it was loaded, in milliseconds since the Unix epoch.
    pub loaded_at: i64,
}

impl std::fmt::Debug for LoadedFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedFlow")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The flow name of a path: the stem of a `.wasm` file, when it is a valid
/// name. Other files (manifests, editor droppings) have none.
pub fn flow_name(path: &std::path::Path) -> Option<String> {
    if path.extension()? != "wasm" {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    crate::config::is_name(stem).then(|| stem.to_owned())
}

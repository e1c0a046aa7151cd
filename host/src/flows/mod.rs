//! Flows: `<name>.wasm` files (and their `<name>.toml` manifests) in the
//! flows folder, compiled and kept in a registry that the inbox reads.
//!
//! This module deals in files, names, versions and manifests; compiling and
//! running are the runtime's business, and a [`ReadyFlow`] is opaque here.

mod background;
pub mod build;
mod cache;
pub mod compiler;
mod folder;
mod loader;
mod manifest;
mod registry;
pub mod watch_build;

use std::path::PathBuf;
use std::time::Duration;

pub use self::cache::CompileCache;
pub use self::compiler::Compiler;
pub use self::folder::FlowFolder;
pub use self::loader::{FlowFiles, FlowLoadError, Loader};
pub use self::manifest::Manifest;
pub use self::registry::{LoadFailure, Registry};

use crate::runtime::{CompiledFlow, ReadyFlow};

/// One version of a flow, compiled and ready to run.
pub struct LoadedFlow {
    /// The flow's name: its file's stem.
    pub name: String,
    /// The version: the first 16 hex digits of the SHA-256 of the file.
    pub version: String,
    /// The compiled component, with its limits and permissions.
    pub ready: ReadyFlow,
    /// The compiled component alone, to prepare again with new defaults.
    pub compiled: CompiledFlow,
    /// Its manifest (empty if it has none).
    pub manifest: Manifest,
    /// The hash of the component and manifest together.
    pub fingerprint: [u8; 32],
    /// The file it came from.
    pub path: PathBuf,
    /// The file's size in bytes.
    pub size: u64,
    /// When it was loaded, in milliseconds since the Unix epoch.
    pub loaded_at: i64,
    /// Whether its compiled code came from the compile cache.
    pub from_cache: bool,
    /// How long compiling (or loading from the cache) took.
    pub load_time: Duration,
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

/// The flow a path belongs to: `<name>.wasm` or its manifest `<name>.toml`,
/// when the name is valid. Other files (editor droppings, temporary files)
/// belong to none.
pub fn flow_of(path: &std::path::Path) -> Option<String> {
    let extension = path.extension()?;
    if extension != "wasm" && extension != "toml" {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    is_name(stem).then(|| stem.to_owned())
}

/// The flow name of a path: the stem of a `.wasm` file, when it is a valid
/// name. Other files (manifests, editor droppings) have none.
pub fn flow_name(path: &std::path::Path) -> Option<String> {
    if path.extension()? != "wasm" {
        return None;
    }
    flow_of(path)
}

/// The rule for flow file names, as error messages and logs state it.
pub const NAME_RULE: &str = "a flow file is <name>.wasm, its name of a-z, 0-9, '-' and '_' (at most 64; no dots or capitals)";

/// A `.wasm` file that is not hidden but whose name is not a flow name
/// (`Order.Help.wasm`): worth a log line saying why it is not loaded, where
/// editor droppings and temporary files are ignored quietly.
pub fn is_misnamed_flow(path: &std::path::Path) -> bool {
    path.extension().is_some_and(|e| e == "wasm")
        && path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| !n.starts_with('.'))
        && flow_name(path).is_none()
}

/// Whether `name` can name an endpoint or a flow: it appears in file names,
/// URLs and logs, so it is kept plain.
pub fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn editor_droppings_and_temporary_files_belong_to_no_flow() {
        assert_eq!(
            flow_of(Path::new("flows/order-help.wasm")).as_deref(),
            Some("order-help")
        );
        assert_eq!(
            flow_of(Path::new("flows/order-help.toml")).as_deref(),
            Some("order-help")
        );
        for ignored in [
            "flows/.order-help.wasm.swp",
            "flows/order-help.wasm~",
            "flows/order-help.wasm.partial",
            "flows/.#order-help.wasm",
            "flows/4913",
            "flows/order-help.wasm.tmp1234",
            "flows/Order.wasm",
            "flows/notes.txt",
        ] {
            assert_eq!(flow_of(Path::new(ignored)), None, "{ignored}");
        }
        assert_eq!(flow_name(Path::new("flows/order-help.toml")), None);
    }

    #[test]
    fn a_wasm_file_with_a_name_that_is_not_a_flow_name_is_told_apart() {
        for misnamed in [
            "flows/Order.wasm",
            "flows/order.help.wasm",
            "flows/my flow.wasm",
        ] {
            assert!(is_misnamed_flow(Path::new(misnamed)), "{misnamed}");
        }
        for quiet in [
            "flows/order-help.wasm",
            "flows/.order-help.wasm",
            "flows/order-help.wasm.partial",
            "flows/order-help.toml",
        ] {
            assert!(!is_misnamed_flow(Path::new(quiet)), "{quiet}");
        }
    }
}

//! `flowhost new`: a flow project to start from, in Rust, Python,
//! JavaScript or C.
//!
//! Each project builds with one command into a flow component, carries a
//! conversation that `flowhost test` holds it to, pins its toolchain, and
//! has a README saying how to build, test and serve it. The templates are
//! the files in `templates/<language>/`, with `{{name}}`, `{{wasm}}` (the
//! component the build makes) and the toolchain versions filled in; the
//! Python, JavaScript and C projects get `wit/flow.wit`, this host's WIT,
//! the JavaScript one `types/flowhost.d.ts`, made from it ([`typescript`]),
//! and the C one wit-bindgen's bindings in `bindings/` ([`c`]).

pub mod c;
pub mod typescript;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The languages `flowhost new` writes projects in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    /// Rust, with the `flowhost-sdk` crate.
    Rust,
    /// Python, with componentize-py.
    Python,
    /// JavaScript, with ComponentizeJS.
    Js,
    /// C, with a clang for wasm32-wasi and `flowhost componentize`.
    C,
}

/// componentize-py, as the Python template pins it.
pub const COMPONENTIZE_PY: &str = "0.25.1";
/// ComponentizeJS, as the JavaScript template pins it.
pub const COMPONENTIZE_JS: &str = "0.23.0";
/// TypeScript, which checks a JavaScript flow (`npm run check`): the
/// version ComponentizeJS brings.
pub const TYPESCRIPT: &str = "7.0.2";

/// Where a Rust project takes `flowhost-sdk` from when not told otherwise.
const SDK_GIT: &str = concat!(env!("CARGO_PKG_REPOSITORY"), ".git");

/// This host's WIT, which the Python and JavaScript builds read.
const WIT: &str = include_str!("../../../wit/flow.wit");

/// `world` of the WIT `source`, resolved: what the bindings ([`c`]) and
/// the declarations ([`typescript`]) are made from.
fn resolve_world(
    source: &str,
    world: &str,
) -> anyhow::Result<(wit_parser::Resolve, wit_parser::WorldId)> {
    let mut resolve = wit_parser::Resolve::default();
    let package = resolve
        .push_str("flow.wit", source)
        .context("reading the WIT")?;
    let world = resolve.select_world(&[package], Some(world))?;
    Ok((resolve, world))
}

/// One file of a template: its path in the project, and its text.
type Template = (&'static str, &'static str);

const RUST: &[Template] = &[
    ("Cargo.toml", include_str!("templates/rust/Cargo.toml")),
    (
        ".cargo/config.toml",
        include_str!("templates/rust/.cargo/config.toml"),
    ),
    ("src/lib.rs", include_str!("templates/rust/src/lib.rs")),
    (
        "conversations/hello.toml",
        include_str!("templates/rust/conversations/hello.toml"),
    ),
    (".gitignore", include_str!("templates/rust/gitignore")),
    ("README.md", include_str!("templates/rust/README.md")),
];

const PYTHON: &[Template] = &[
    ("app.py", include_str!("templates/python/app.py")),
    ("build.sh", include_str!("templates/python/build.sh")),
    (
        "requirements.txt",
        include_str!("templates/python/requirements.txt"),
    ),
    (
        "conversations/hello.toml",
        include_str!("templates/python/conversations/hello.toml"),
    ),
    (".gitignore", include_str!("templates/python/gitignore")),
    ("README.md", include_str!("templates/python/README.md")),
    ("wit/flow.wit", WIT),
];

const JS: &[Template] = &[
    ("flow.js", include_str!("templates/js/flow.js")),
    ("package.json", include_str!("templates/js/package.json")),
    ("jsconfig.json", include_str!("templates/js/jsconfig.json")),
    (
        "conversations/hello.toml",
        include_str!("templates/js/conversations/hello.toml"),
    ),
    (".gitignore", include_str!("templates/js/gitignore")),
    ("README.md", include_str!("templates/js/README.md")),
    ("wit/flow.wit", WIT),
];

const C: &[Template] = &[
    ("flow.c", include_str!("templates/c/flow.c")),
    ("Makefile", include_str!("templates/c/Makefile")),
    (
        "conversations/hello.toml",
        include_str!("templates/c/conversations/hello.toml"),
    ),
    (".gitignore", include_str!("templates/c/gitignore")),
    ("README.md", include_str!("templates/c/README.md")),
    ("wit/flow.wit", WIT),
];

/// What to make.
#[derive(Debug, Clone)]
pub struct NewFlow {
    /// The flow's name: the project's folder and the component's name.
    pub name: String,
    /// The language.
    pub language: Language,
    /// For Rust: a local `flowhost-sdk` to use instead of the repository's.
    pub sdk: Option<PathBuf>,
}

impl NewFlow {
    /// The component the project's build makes, relative to the project.
    pub fn component(&self) -> String {
        match self.language {
            // Cargo names the library after the package, `-` made `_`.
            Language::Rust => format!(
                "target/wasm32-wasip2/release/{}.wasm",
                self.name.replace('-', "_")
            ),
            Language::Python | Language::Js | Language::C => format!("{}.wasm", self.name),
        }
    }

    /// Writes the project into `dir`, which must not exist or be empty.
    /// Returns the files written.
    pub fn write(&self, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
        if !crate::flows::is_name(&self.name) {
            bail!(
                "{:?} cannot name a flow: {}",
                self.name,
                crate::flows::NAME_RULE
            );
        }
        if dir
            .read_dir()
            .is_ok_and(|mut entries| entries.next().is_some())
        {
            bail!(
                "{} exists and is not empty: flowhost new writes only into a new folder",
                dir.display()
            );
        }
        let sdk = match &self.sdk {
            Some(path) => {
                let path = std::path::absolute(path)
                    .with_context(|| format!("finding {}", path.display()))?;
                format!("{{ path = {:?} }}", path.display().to_string())
            }
            None => format!("{{ git = {SDK_GIT:?} }}"),
        };
        let wasm = self.component();
        let fill = |text: &str| {
            text.replace("{{name}}", &self.name)
                .replace("{{wasm}}", &wasm)
                .replace("{{sdk}}", &sdk)
                .replace("{{componentize_py}}", COMPONENTIZE_PY)
                .replace("{{componentize_js}}", COMPONENTIZE_JS)
                .replace("{{typescript}}", TYPESCRIPT)
        };
        let templates = match self.language {
            Language::Rust => RUST,
            Language::Python => PYTHON,
            Language::Js => JS,
            Language::C => C,
        };
        let mut written = Vec::new();
        for (file, text) in templates {
            let path = dir.join(file);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            // The WIT is the host's, as it is.
            let text = if *file == "wit/flow.wit" {
                text.to_string()
            } else {
                fill(text)
            };
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            if file.ends_with(".sh") {
                make_executable(&path)?;
            }
            written.push(path);
        }
        let generated = match self.language {
            Language::Js => vec![(
                "types/flowhost.d.ts".to_owned(),
                typescript::declarations(WIT, "flow")?,
            )],
            Language::C => c::bindings(WIT, "flow")?
                .into_iter()
                .map(|(file, text)| (format!("bindings/{file}"), text))
                .collect(),
            Language::Rust | Language::Python => Vec::new(),
        };
        for (file, text) in generated {
            let path = dir.join(file);
            std::fs::create_dir_all(path.parent().expect("a file in a folder"))?;
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            written.push(path);
        }
        Ok(written)
    }

    /// The commands that build and test the project, for the user.
    pub fn next_steps(&self) -> Vec<String> {
        let build = match self.language {
            Language::Rust => "rustup target add wasm32-wasip2 && cargo build --release",
            Language::Python => "./build.sh",
            Language::Js => "npm run build",
            Language::C => "make",
        };
        vec![
            format!("cd {}", self.name),
            build.to_owned(),
            format!("flowhost test {} conversations/*.toml", self.component()),
        ]
    }
}

#[cfg(unix)]
fn make_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", path.display()))
}

#[cfg(not(unix))]
fn make_executable(_: &Path) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_is_filled_and_the_toml_files_parse() {
        for language in [Language::Rust, Language::Python, Language::Js, Language::C] {
            let dir = tempfile::tempdir().unwrap();
            let project = dir.path().join("my-flow");
            let new = NewFlow {
                name: "my-flow".into(),
                language,
                sdk: None,
            };
            for path in new.write(&project).unwrap() {
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(!text.contains("{{"), "{}: {text}", path.display());
                if path.extension().is_some_and(|e| e == "toml") {
                    toml::from_str::<toml::Value>(&text)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                }
                if path.ends_with("conversations/hello.toml") {
                    crate::local::conversation::Conversation::parse(&text).unwrap();
                }
            }
        }
    }

    #[test]
    fn a_bad_name_or_a_folder_in_use_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let bad = NewFlow {
            name: "My.Flow".into(),
            language: Language::Python,
            sdk: None,
        };
        let refused = bad.write(&dir.path().join("x")).unwrap_err().to_string();
        assert!(refused.contains("no dots or capitals"), "{refused}");
        std::fs::write(dir.path().join("keep.txt"), "mine").unwrap();
        let good = NewFlow {
            name: "x".into(),
            ..bad
        };
        let refused = good.write(dir.path()).unwrap_err().to_string();
        assert!(refused.contains("is not empty"), "{refused}");
    }
}

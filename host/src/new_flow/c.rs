//! A C flow's two halves that no C compiler makes: the bindings to the
//! host's interfaces, and the component around the compiled module.
//!
//! A C compiler for `wasm32-wasi` (wasi-sdk's clang, or Debian's `clang-19`
//! with `wasi-libc`) makes a core module; a flow is a component. Rust,
//! Python and JavaScript toolchains do both steps themselves, while C
//! usually needs two more tools, `wit-bindgen c` and `wasm-tools component
//! new`. flowhost does them instead, with the same libraries those tools
//! are made of, at the versions that share wasmtime 48's `wit-parser`:
//!
//! - [`bindings`]: `flowhost new --lang c` writes wit-bindgen's C bindings
//!   (`flow.h`, `flow.c`) into the project. Without wit-bindgen's object
//!   file, which would be the one binary in a project of text: the world's
//!   type travels as the project's `wit/flow.wit`, and an empty C function
//!   stands in for the symbol the bindings link the object file by.
//! - [`componentize`]: `flowhost componentize` embeds that world into the
//!   module and wraps it with wasmtime's WASI 0.1 adapter (what wasi-libc's
//!   calls are made against), as `wasm-tools component embed` and
//!   `component new` would.

use std::path::Path;

use anyhow::{Context, bail};
use wit_parser::Resolve;

/// The files of wit-bindgen's C bindings for `world` of the WIT `source`,
/// as (file name, text): `<world>.c`, `<world>.h`, and
/// `<world>_component_type.c`, in place of wit-bindgen's object file.
pub fn bindings(source: &str, world: &str) -> anyhow::Result<Vec<(String, String)>> {
    let (mut resolve, world) = super::resolve_world(source, world)?;
    let opts = wit_bindgen_c::Opts {
        no_object_file: true,
        ..Default::default()
    };
    let mut files = wit_bindgen_core::Files::default();
    opts.build()
        .generate(&mut resolve, world, &mut files)
        .context("generating the C bindings")?;
    let mut written = files
        .iter()
        .map(|(name, bytes)| {
            let text = String::from_utf8(bytes.to_vec())
                .with_context(|| format!("wit-bindgen's {name} is not UTF-8"))?;
            Ok((name.to_owned(), text))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let snake = resolve.worlds[world].name.replace('-', "_");
    written.push((
        format!("{snake}_component_type.c"),
        format!(
            "// Stands in for wit-bindgen's `{snake}_component_type.o`, which `{snake}.c`\n\
             // links in by this symbol: `flowhost componentize --wit wit` gives the\n\
             // component its type from the WIT instead.\n\
             void __component_type_object_force_link_{snake}(void) {{}}\n"
        ),
    ));
    Ok(written)
}

/// Makes a flow component of a core module: embeds `world` of the WIT at
/// `wit` (a file or a folder) unless the module carries its type already,
/// and adapts its WASI 0.1 imports, if it has any, to WASI 0.2.
pub fn componentize(module: &[u8], wit: Option<&Path>, world: &str) -> anyhow::Result<Vec<u8>> {
    if wasmparser::Parser::is_component(module) {
        bail!("this is a component already: flowhost componentize takes a core module");
    }
    if !wasmparser::Parser::is_core_wasm(module) {
        bail!("this is not a WebAssembly module");
    }
    let mut module = module.to_vec();
    match wit {
        Some(wit) => {
            let mut resolve = Resolve::default();
            let (package, _) = resolve
                .push_path(wit)
                .with_context(|| format!("reading the WIT at {}", wit.display()))?;
            let world = resolve.select_world(&[package], Some(world))?;
            wit_component::embed_component_metadata(
                &mut module,
                &resolve,
                world,
                wit_component::StringEncoding::UTF8,
            )
            .context("embedding the world into the module")?;
        }
        None if !has_component_type(&module) => bail!(
            "the module carries no component type: give the WIT it was built against with --wit"
        ),
        None => {}
    }
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&module)
        .context("reading the module")?
        .adapter(
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )
        .context("reading the WASI adapter")?
        .encode()
        .context("making the component")
}

/// Whether a module has the custom section wit-bindgen's object file (or
/// `wasm-tools component embed`) puts the world's type in.
fn has_component_type(module: &[u8]) -> bool {
    wasmparser::Parser::new(0)
        .parse_all(module)
        .any(|payload| match payload {
            Ok(wasmparser::Payload::CustomSection(section)) => {
                section.name().starts_with("component-type")
            }
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WIT: &str = include_str!("../../../wit/flow.wit");

    #[test]
    fn the_bindings_declare_the_export_and_every_import() {
        let files = bindings(WIT, "flow").unwrap();
        let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["flow.c", "flow.h", "flow_component_type.c"]);
        assert!(
            files[0]
                .1
                .contains("__component_type_object_force_link_flow()")
                && files[2]
                    .1
                    .contains("void __component_type_object_force_link_flow(void) {}")
        );
        let header = &files[1].1;
        for declaration in [
            "exports_flow_handle(",
            "flowhost_flow_output_say(",
            "flowhost_flow_context_get(",
            "flowhost_flow_context_set(",
            "flowhost_flow_profile_set(",
            "flowhost_flow_session_end(",
            "flowhost_flow_log_log(",
        ] {
            assert!(header.contains(declaration), "{declaration} missing");
        }
    }

    #[test]
    fn the_c_example_carries_the_bindings_flowhost_new_writes() {
        let example =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../example-flows/order-help-c/bindings");
        for (file, text) in bindings(WIT, "flow").unwrap() {
            let committed = std::fs::read_to_string(example.join(&file)).unwrap();
            assert!(
                committed == text,
                "example-flows/order-help-c/bindings/{file} is not what \
                 `flowhost new --lang c` writes: copy it from a new project"
            );
        }
    }

    #[test]
    fn a_component_or_a_module_without_its_type_is_refused() {
        let refused = componentize(b"\0asm\x0d\0\x01\0", None, "flow").unwrap_err();
        assert!(refused.to_string().contains("a component already"));
        let empty_module = b"\0asm\x01\0\0\0";
        let refused = componentize(empty_module, None, "flow").unwrap_err();
        assert!(refused.to_string().contains("--wit"), "{refused:#}");
        let refused = componentize(b"hello", None, "flow").unwrap_err();
        assert!(refused.to_string().contains("not a WebAssembly module"));
    }
}

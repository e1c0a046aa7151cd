//! The `flow` world's imports, linked by hand rather than through the
//! generated bindings, for one reason: a string a flow passes to `say`,
//! `context.set`, `profile.set` or `log` is measured while it is still in the
//! flow's memory, and refused there if it is over its limit. The generated
//! bindings copy every string into the host first, so a flow that said a
//! 50 MB string made the host allocate and copy 50 MB to refuse it, holding
//! a flow thread (and every message waiting for it) for tens of
//! milliseconds.

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, WasmStr};

use super::bindings::VERSIONS;
use super::bindings::log::Level;
use super::limits::LimitExceeded;
use super::state::{HostState, State};

/// Defines the imports of every version of `flowhost:flow` in `linker`:
/// the same functions under each version's names, and what a version added
/// under its own and later ones.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    for version in VERSIONS {
        add_version(linker, version)?;
    }
    Ok(())
}

fn add_version(linker: &mut Linker<HostState>, version: &str) -> wasmtime::Result<()> {
    linker.instance(&format!("flowhost:flow/types@{version}"))?;

    let mut output = linker.instance(&format!("flowhost:flow/output@{version}"))?;
    output.func_wrap(
        "say",
        |mut store: StoreContextMut<'_, HostState>,
         (text, data): (Option<WasmStr>, Option<WasmStr>)| {
            let max = store.data().limits().max_output_size;
            let over = || LimitExceeded::OutputSize(max);
            let text = text.map(|s| within(&store, &s, max, over)).transpose()?;
            let data = data.map(|s| within(&store, &s, max, over)).transpose()?;
            store.data_mut().say(text, data)
        },
    )?;

    for (interface, what) in [("context", State::Context), ("profile", State::Profile)] {
        let mut instance = linker.instance(&format!("flowhost:flow/{interface}@{version}"))?;
        instance.func_wrap("get", move |store: StoreContextMut<'_, HostState>, ()| {
            Ok((store.data().state(what).to_owned(),))
        })?;
        instance.func_wrap(
            "set",
            move |mut store: StoreContextMut<'_, HostState>, (json,): (WasmStr,)| {
                let max = store.data().limits().max_state_size;
                let over = || LimitExceeded::StateSize {
                    what: what.name(),
                    limit: max,
                };
                let json = within(&store, &json, max, over)?;
                store.data_mut().set_state(what, json)
            },
        )?;
    }

    // The enum is the same in every version: a component type is its
    // cases' names.
    let mut log = linker.instance(&format!("flowhost:flow/log@{version}"))?;
    log.func_wrap(
        "log",
        |mut store: StoreContextMut<'_, HostState>, (level, message): (Level, WasmStr)| {
            let left = store.data().log_left();
            let message = within(&store, &message, left, || {
                LimitExceeded::Log(store.data().limits().max_log_size)
            })?;
            store.data_mut().log(level, message)
        },
    )?;

    if version == VERSIONS[0] {
        // The transformer world's own: its manifest's settings.
        let mut config = linker.instance(&format!("flowhost:flow/config@{version}"))?;
        config.func_wrap(
            "get",
            |store: StoreContextMut<'_, HostState>, (key,): (WasmStr,)| {
                let key = key.to_str(&store)?;
                Ok((store.data().config(&key),))
            },
        )?;
        linker.instance(&format!("flowhost:flow/channel@{version}"))?;
    }

    if version != "0.1.0" {
        let mut session = linker.instance(&format!("flowhost:flow/session@{version}"))?;
        session.func_wrap("end", |mut store: StoreContextMut<'_, HostState>, ()| {
            store.data_mut().end_session();
            Ok(())
        })?;
    }
    Ok(())
}

/// The string, copied into the host only if it is at most `max` bytes.
fn within(
    store: &StoreContextMut<'_, HostState>,
    string: &WasmStr,
    max: u64,
    over: impl FnOnce() -> LimitExceeded,
) -> wasmtime::Result<String> {
    let text = string.to_str(store)?;
    if text.len() as u64 > max {
        return Err(over().into());
    }
    Ok(text.into_owned())
}

//! TypeScript declarations of a world's imports and exports, made from the
//! WIT as ComponentizeJS maps it to JavaScript, for an editor (or `tsc`) to
//! check a JavaScript flow against: `types/flowhost.d.ts` in a project
//! that `flowhost new --lang js` writes.
//!
//! The mapping (jco's): each imported interface is a module named
//! `<package>/<interface>@<version>`; names in kebab-case become camelCase
//! (functions, parameters, fields) or PascalCase (types); an `option<T>` is
//! `T | undefined`, an `enum` a union of its cases' names as strings, a
//! `list<u8>` a `Uint8Array`; a function returning `result<T, E>` returns
//! `T` and throws `E`. The world's exports, which the flow's own module
//! provides, are declared as types in the module `<package>/exports`.

use std::fmt::Write as _;

use anyhow::Context;
use wit_parser::{Docs, Function, Resolve, Type, TypeDefKind, TypeOwner, WorldItem};

/// The declarations of `world` in the WIT `source`.
pub fn declarations(source: &str, world: &str) -> anyhow::Result<String> {
    let (resolve, world_id) = super::resolve_world(source, world)?;
    let world = &resolve.worlds[world_id];
    let package = world.package.context("a world of a package")?;
    let package_name = resolve.packages[package].name.clone();
    let mut out = format!(
        "// The `{world}` world of {package}, for checking a JavaScript flow with TypeScript.\n\
         // Made by `flowhost new` from wit/flow.wit: edit that, not this.\n",
        world = world.name,
        package = package_name,
    );
    let ts = Ts { resolve: &resolve };
    for (key, item) in &world.imports {
        if let WorldItem::Interface { id, .. } = item {
            let interface = &resolve.interfaces[*id];
            let module = resolve.name_world_key(key);
            out.push('\n');
            out.push_str(&doc_comment(&interface.docs, ""));
            writeln!(out, "declare module {module:?} {{").unwrap();
            for (name, &type_id) in &interface.types {
                let def = &resolve.types[type_id];
                match (&def.kind, def.owner) {
                    // A `use` of another interface's type.
                    (TypeDefKind::Type(Type::Id(used)), _)
                        if resolve.types[*used].owner != TypeOwner::Interface(*id) =>
                    {
                        let TypeOwner::Interface(from) = resolve.types[*used].owner else {
                            continue;
                        };
                        let from = resolve.id_of(from).unwrap_or_default();
                        writeln!(
                            out,
                            "  export type {} = import({from:?}).{};",
                            pascal(name),
                            pascal(resolve.types[*used].name.as_deref().unwrap_or(name))
                        )
                        .unwrap();
                    }
                    _ => out.push_str(&ts.type_declaration(name, type_id)),
                }
            }
            for function in interface.functions.values() {
                out.push_str(&doc_comment(&function.docs, "  "));
                writeln!(out, "  export function {};", ts.signature(function)).unwrap();
            }
            out.push_str("}\n");
        }
    }
    let exports: Vec<&Function> = world
        .exports
        .values()
        .filter_map(|item| match item {
            WorldItem::Function(function) => Some(function),
            _ => None,
        })
        .collect();
    if !exports.is_empty() {
        let module = format!("{}:{}/exports", package_name.namespace, package_name.name);
        writeln!(
            out,
            "\n/** What the flow's own module exports. */\ndeclare module {module:?} {{"
        )
        .unwrap();
        for (name, type_id) in world_uses(&resolve, world) {
            let def = &resolve.types[type_id];
            if let TypeOwner::Interface(from) = def.owner {
                let from = resolve.id_of(from).unwrap_or_default();
                writeln!(
                    out,
                    "  export type {} = import({from:?}).{};",
                    pascal(&name),
                    pascal(def.name.as_deref().unwrap_or(&name))
                )
                .unwrap();
            }
        }
        for function in exports {
            out.push_str(&doc_comment(&function.docs, "  "));
            writeln!(
                out,
                "  export type {} = {};",
                pascal(&function.name),
                ts.arrow(function)
            )
            .unwrap();
        }
        out.push_str("}\n");
    }
    Ok(out)
}

/// The types a world `use`s, by the name they have in the world, each with
/// the type it names.
fn world_uses(resolve: &Resolve, world: &wit_parser::World) -> Vec<(String, wit_parser::TypeId)> {
    world
        .imports
        .values()
        .filter_map(|item| match item {
            WorldItem::Type { id, .. } => {
                let def = &resolve.types[*id];
                let target = match def.kind {
                    TypeDefKind::Type(Type::Id(target)) => target,
                    _ => *id,
                };
                Some((def.name.clone()?, target))
            }
            _ => None,
        })
        .collect()
}

struct Ts<'a> {
    resolve: &'a Resolve,
}

impl Ts<'_> {
    /// `export interface …` or `export type … = …;` for a named type.
    fn type_declaration(&self, name: &str, id: wit_parser::TypeId) -> String {
        let def = &self.resolve.types[id];
        let mut out = doc_comment(&def.docs, "  ");
        let name = pascal(name);
        match &def.kind {
            TypeDefKind::Record(record) => {
                writeln!(out, "  export interface {name} {{").unwrap();
                for field in &record.fields {
                    out.push_str(&doc_comment(&field.docs, "    "));
                    let (optional, ty) = match self.option_of(&field.ty) {
                        Some(inner) => ("?", self.ty(&inner)),
                        None => ("", self.ty(&field.ty)),
                    };
                    writeln!(out, "    {}{optional}: {ty};", camel(&field.name)).unwrap();
                }
                out.push_str("  }\n");
            }
            TypeDefKind::Enum(cases) => {
                let cases: Vec<String> = cases
                    .cases
                    .iter()
                    .map(|case| format!("{:?}", case.name))
                    .collect();
                writeln!(out, "  export type {name} = {};", cases.join(" | ")).unwrap();
            }
            _ => writeln!(out, "  export type {name} = {};", self.anonymous(&def.kind)).unwrap(),
        }
        out
    }

    /// `name(a: A, b: B): R` of a function.
    fn signature(&self, function: &Function) -> String {
        format!(
            "{}({}): {}",
            camel(&function.name),
            self.params(function),
            self.returns(function)
        )
    }

    /// `(a: A, b: B) => R` of a function.
    fn arrow(&self, function: &Function) -> String {
        format!("({}) => {}", self.params(function), self.returns(function))
    }

    fn params(&self, function: &Function) -> String {
        function
            .params
            .iter()
            .map(|param| format!("{}: {}", camel(&param.name), self.ty(&param.ty)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The return type: a `result`'s `ok` (its `err` is thrown).
    fn returns(&self, function: &Function) -> String {
        match &function.result {
            None => "void".into(),
            Some(Type::Id(id)) => match &self.resolve.types[*id].kind {
                TypeDefKind::Result(result) if self.resolve.types[*id].name.is_none() => result
                    .ok
                    .as_ref()
                    .map_or_else(|| "void".into(), |ok| self.ty(ok)),
                _ => self.ty(&Type::Id(*id)),
            },
            Some(ty) => self.ty(ty),
        }
    }

    fn option_of(&self, ty: &Type) -> Option<Type> {
        match ty {
            Type::Id(id) => match &self.resolve.types[*id].kind {
                TypeDefKind::Option(inner) => Some(*inner),
                _ => None,
            },
            _ => None,
        }
    }

    fn ty(&self, ty: &Type) -> String {
        match ty {
            Type::Bool => "boolean".into(),
            Type::U8
            | Type::U16
            | Type::U32
            | Type::S8
            | Type::S16
            | Type::S32
            | Type::F32
            | Type::F64 => "number".into(),
            Type::U64 | Type::S64 => "bigint".into(),
            Type::Char | Type::String => "string".into(),
            Type::ErrorContext => "unknown".into(),
            Type::Id(id) => {
                let def = &self.resolve.types[*id];
                match &def.name {
                    Some(name) => pascal(name),
                    None => self.anonymous(&def.kind),
                }
            }
        }
    }

    fn anonymous(&self, kind: &TypeDefKind) -> String {
        match kind {
            TypeDefKind::Option(inner) => format!("{} | undefined", self.ty(inner)),
            TypeDefKind::List(Type::U8) => "Uint8Array".into(),
            TypeDefKind::List(inner) => format!("Array<{}>", self.ty(inner)),
            TypeDefKind::Tuple(tuple) => format!(
                "[{}]",
                tuple
                    .types
                    .iter()
                    .map(|t| self.ty(t))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            TypeDefKind::Type(inner) => self.ty(inner),
            TypeDefKind::Result(result) => {
                let side = |t: &Option<Type>| t.as_ref().map_or("undefined".into(), |t| self.ty(t));
                format!(
                    "{{ tag: \"ok\", val: {} }} | {{ tag: \"err\", val: {} }}",
                    side(&result.ok),
                    side(&result.err)
                )
            }
            TypeDefKind::Variant(variant) => variant
                .cases
                .iter()
                .map(|case| match &case.ty {
                    Some(ty) => format!("{{ tag: {:?}, val: {} }}", case.name, self.ty(ty)),
                    None => format!("{{ tag: {:?} }}", case.name),
                })
                .collect::<Vec<_>>()
                .join(" | "),
            TypeDefKind::Enum(cases) => cases
                .cases
                .iter()
                .map(|case| format!("{:?}", case.name))
                .collect::<Vec<_>>()
                .join(" | "),
            // Not in flowhost's worlds; loose rather than wrong.
            _ => "unknown".into(),
        }
    }
}

/// A `/** … */` comment of `docs`, indented, or nothing.
fn doc_comment(docs: &Docs, indent: &str) -> String {
    let Some(text) = docs.contents.as_deref().filter(|t| !t.trim().is_empty()) else {
        return String::new();
    };
    let mut out = format!("{indent}/**\n");
    for line in text.trim_end().lines() {
        let line = line.replace("*/", "*\\/");
        if line.is_empty() {
            writeln!(out, "{indent} *").unwrap();
        } else {
            writeln!(out, "{indent} * {line}").unwrap();
        }
    }
    writeln!(out, "{indent} */").unwrap();
    out
}

/// `user-id` → `userId`.
fn camel(kebab: &str) -> String {
    let mut out = String::new();
    for (i, word) in kebab.split('-').enumerate() {
        if i == 0 {
            out.push_str(word);
        } else {
            out.push_str(&capitalized(word));
        }
    }
    out
}

/// `webhook-request` → `WebhookRequest`.
fn pascal(kebab: &str) -> String {
    kebab.split('-').map(capitalized).collect()
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flow_world_is_declared_as_componentize_js_maps_it() {
        let declared = declarations(super::super::WIT, "flow").unwrap();
        for expected in [
            "declare module \"flowhost:flow/output@0.3.0\" {",
            "  export function say(text: string | undefined, data: string | undefined): void;",
            "declare module \"flowhost:flow/context@0.3.0\" {",
            "  export function get(): string;",
            "  export function set(json: string): void;",
            "  export type Source = \"user\" | \"inject\";",
            "  export interface Message {",
            "    userId: string;",
            "    text?: string;",
            "  export type Level = \"trace\" | \"debug\" | \"info\" | \"warn\" | \"error\";",
            "  export function log(level: Level, message: string): void;",
            "declare module \"flowhost:flow/exports\" {",
            "  export type Message = import(\"flowhost:flow/types@0.3.0\").Message;",
            "  export type Handle = (message: Message) => void;",
        ] {
            assert!(declared.contains(expected), "{expected:?} in:\n{declared}");
        }
    }

    #[test]
    fn names_change_case_as_jco_changes_them() {
        assert_eq!(camel("user-id"), "userId");
        assert_eq!(camel("say"), "say");
        assert_eq!(pascal("webhook-request"), "WebhookRequest");
    }
}

//! The generated crate: one Rust package per system, with one binary that runs the controller,
//! a named box, or the whole system in one process (`ovid::launch`).
//!
//! ```text
//! Cargo.toml         the package; path dependencies on ovid, ovid-stdlib and `impl rust` crates
//! deployment.json    boxes, agents, routes and the LATT (read by the controller)
//! src/main.rs        the binary
//! src/messages.rs    one struct per message
//! src/agents.rs      one struct per inline-handler agent, its handlers under #[ovid::agent]
//! src/system.rs      how a box makes each kind of agent; what proxies need to know of messages
//! src/check.rs       what `ovidc test` checks: request generators and refinement mappings
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::handlers::{agent_ident, ident, message_ident};
use super::{format_file, rust};
use crate::check::model::{Behaviour, Model};
use crate::expand::Expanded;
use ovid::deployment::Deployment;

/// One generated file: its path inside the crate and its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedFile {
    /// Relative to the crate's root (`src/main.rs`).
    pub path: PathBuf,
    /// The contents.
    pub contents: String,
}

/// Where the crates the generated one depends on live.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The `ovid` runtime crate.
    pub runtime: PathBuf,
    /// The `ovid-stdlib` crate.
    pub stdlib: PathBuf,
    /// The `ovid-sim` crate (the `test` command).
    pub sim: PathBuf,
    /// `impl rust` crates: crate name → its directory.
    pub rust_crates: BTreeMap<String, PathBuf>,
    /// The `.ovid` file the crate is generated from (relative to the workspace when inside
    /// it): it names the package, so that two files declaring systems of one name never
    /// share cargo's build of it in the shared target directory.
    pub source: Option<PathBuf>,
}

impl Paths {
    /// The runtime, stdlib and simulator of the Ovid checkout this `ovidc` was built from.
    pub fn of_this_checkout() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap_or(Path::new("."))
            .to_path_buf();
        Paths {
            runtime: root.join("runtime"),
            stdlib: root.join("stdlib"),
            sim: root.join("sim"),
            rust_crates: BTreeMap::new(),
            source: None,
        }
    }
}

/// The lock file of the Ovid workspace this `ovidc` was built from.
const WORKSPACE_LOCK: &str = include_str!("../../../Cargo.lock");

/// The package name of a system (`WebKvs` → `web_kvs`).
pub fn package_name(system: &str) -> String {
    rust::snake(system)
}

/// Generates every file of the crate for a checked, expanded and placed system.
pub fn generate(
    model: &Model,
    expanded: &Expanded,
    deployment: &Deployment,
    paths: &Paths,
) -> Result<Vec<GeneratedFile>, String> {
    let file = |path: &str, contents: String| GeneratedFile {
        path: PathBuf::from(path),
        contents,
    };
    let deployment_json =
        serde_json::to_string_pretty(deployment).map_err(|e| e.to_string())? + "\n";
    let mut files = vec![
        file("deployment.json", deployment_json),
        file("src/messages.rs", format_file(messages_rs(model))?),
        file("src/agents.rs", format_file(agents_rs(model))?),
        file("src/system.rs", format_file(system_rs(model, expanded))?),
        file(
            "src/check.rs",
            format_file(super::check::check_rs(model, expanded))?,
        ),
    ];
    let fingerprint = fingerprint(&files);
    files.extend([
        file("Cargo.toml", cargo_toml(&expanded.system, paths)),
        // The Ovid workspace's lock file: the same dependency versions, so a shared target
        // directory already holds them compiled.
        file("Cargo.lock", WORKSPACE_LOCK.to_string()),
        file(
            "src/main.rs",
            format_file(main_rs(&expanded.system, &fingerprint))?,
        ),
    ]);
    Ok(files)
}

fn cargo_toml(system: &str, paths: &Paths) -> String {
    let name = package_name(system);
    // The binary keeps the system's name; the package is told apart by its source file.
    let package = match &paths.source {
        Some(file) => {
            let key = ovid_stdlib::proxy::fnv1a(file.to_string_lossy().as_bytes());
            format!("{name}-{:08x}", key as u32)
        }
        None => name.clone(),
    };
    let mut deps = format!(
        "ovid = {{ path = {:?} }}\novid-sim = {{ path = {:?} }}\novid-stdlib = {{ path = {:?} }}\nserde = {{ version = \"1\", features = [\"derive\"] }}\nserde_json = \"1\"\n",
        paths.runtime.display().to_string(),
        paths.sim.display().to_string(),
        paths.stdlib.display().to_string(),
    );
    for (krate, dir) in &paths.rust_crates {
        deps.push_str(&format!(
            "{krate} = {{ path = {:?} }}\n",
            dir.display().to_string()
        ));
    }
    format!(
        "# Generated by ovidc from a .ovid file. Do not edit: change the .ovid source and rebuild.\n\n\
         [package]\nname = \"{package}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
         [[bin]]\nname = \"{name}\"\npath = \"src/main.rs\"\n\n\
         [dependencies]\n{deps}\n\
         # Same settings as the Ovid workspace, so a shared target directory reuses its builds.\n\
         [profile.dev.package.\"*\"]\ndebug = false\n\n\
         # A crate of its own, even when generated inside another workspace.\n[workspace]\n"
    )
}

/// What a generated binary says it runs (`<bin> fingerprint`): a hash of its system's files
/// (the deployment and every source but `main.rs`, which holds it), so that a binary built
/// from another system of the same name is told apart.
pub fn fingerprint(files: &[GeneratedFile]) -> String {
    let all: String = files
        .iter()
        .filter(|f| !OUTSIDE_FINGERPRINT.contains(&f.path.to_string_lossy().as_ref()))
        .map(|f| f.contents.as_str())
        .collect();
    format!("{:016x}", ovid_stdlib::proxy::fnv1a(all.as_bytes()))
}

/// The files the fingerprint leaves out: the one holding it, and those naming paths of this
/// machine or the workspace's versions.
const OUTSIDE_FINGERPRINT: &[&str] = &["src/main.rs", "Cargo.toml", "Cargo.lock"];

fn main_rs(system: &str, fingerprint: &str) -> TokenStream {
    let doc = format!(
        " The `{system}` system, generated by ovidc: `{} controller`, `{} box NAME`, or `{} local`.",
        package_name(system),
        package_name(system),
        package_name(system)
    );
    quote! {
        #![doc = #doc]

        mod agents;
        mod check;
        mod messages;
        mod system;

        fn main() -> std::process::ExitCode {
            ovid::launch::main(ovid::launch::System {
                deployment: system::DEPLOYMENT,
                kinds: system::kinds,
                test: Some(check::test),
                fingerprint: #fingerprint,
            })
        }
    }
}

fn messages_rs(model: &Model) -> TokenStream {
    let messages = rust::messages(model);
    let maps = model
        .messages
        .values()
        .flatten()
        .any(|(_, t)| t.to_string().starts_with("Map<"));
    let map_import = maps.then(|| {
        quote!(
            use std::collections::BTreeMap;
        )
    });
    quote! {
        //! The messages of the system.
        #![allow(
            dead_code,
            non_camel_case_types,
            non_snake_case,
            reason = "the names are the .ovid program's, and it may declare a message no agent of this system sends"
        )]
        #map_import
        use ovid::Message;
        use serde::{Deserialize, Serialize};
        #messages
    }
}

fn agents_rs(model: &Model) -> TokenStream {
    let agents: Vec<TokenStream> = model
        .agents
        .iter()
        .filter(|(_, a)| matches!(a.behaviour, Behaviour::Handlers { .. }))
        .map(|(name, a)| rust::inline_agent(name, a))
        .collect();
    let text = agents.iter().map(ToString::to_string).collect::<String>();
    let map_import = text.contains("BTreeMap").then(|| {
        quote!(
            use std::collections::BTreeMap;
        )
    });
    let messages = model
        .messages
        .keys()
        .map(|m| message_ident(m))
        .filter(|m| mentions(&text, &m.to_string()));
    quote! {
        //! The agents written with inline handlers, compiled to Rust.
        #![allow(
            non_camel_case_types,
            non_snake_case,
            unused_variables,
            reason = "the names of agents, state and locals are the .ovid program's, which may bind a local it does not read"
        )]
        #map_import
        use ovid::Context;
        use serde::{Deserialize, Serialize};
        use crate::messages::{#(#messages),*};
        #(#agents)*
    }
}

/// Whether `name` appears as a whole identifier in tokens printed as text.
fn mentions(text: &str, name: &str) -> bool {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|w| w == name)
}

fn system_rs(model: &Model, expanded: &Expanded) -> TokenStream {
    let used_kinds: BTreeSet<&str> = expanded
        .agents
        .iter()
        .filter_map(|a| a.agent_type())
        .collect();
    let mut needs_json = false;
    let mut registrations = Vec::new();
    let makers: Vec<TokenStream> = used_kinds
        .iter()
        .filter_map(|kind| model.agents.get(*kind).map(|a| (*kind, a)))
        .map(|(kind, agent)| {
            let uses: Vec<TokenStream> = agent.uses.keys().map(|u| quote!(uses.get(#u))).collect();
            let needs_uses =
                !agent.uses.is_empty() || !matches!(agent.behaviour, Behaviour::Handlers { .. });
            let make = match &agent.behaviour {
                Behaviour::Handlers { .. } => {
                    let t = agent_ident(kind);
                    quote!(agents::#t::new(#(#uses),*))
                }
                Behaviour::Rust { path } => {
                    let p: syn::Path = syn::parse_str(path)
                        .unwrap_or_else(|_| syn::parse_quote!(invalid_rust_path));
                    quote!(#p::from_bindings(&uses))
                }
                Behaviour::Process { command } => {
                    needs_json = true;
                    quote!(ovid::process::ProcessAgent::new(#command, uses, Arc::new(Json)))
                }
            };
            let maker = format_ident!("make_{}", rust::snake(kind));
            registrations.push(quote!(.kind_boxed(#kind, Arc::new(#maker))));
            let doc =
                format!(" Makes a `{kind}` agent from its configuration (its `uses` bindings).");
            let (config, uses) = if needs_uses {
                (
                    quote!(config),
                    quote!(let uses = Bindings::from_config(config)?;),
                )
            } else {
                (quote!(_config), quote!())
            };
            quote! {
                #[doc = #doc]
                fn #maker(#config: &[u8]) -> Result<Box<dyn Agent>, ovid::Error> {
                    #uses
                    Ok(Box::new(#make))
                }
            }
        })
        .collect();

    let key_arms = key_hash_arms(model);
    let hooks_uses_payload = !key_arms.is_empty();
    let (by, payload) = if hooks_uses_payload {
        (quote!(by), quote!(payload))
    } else {
        (quote!(_by), quote!(_payload))
    };
    let key_body = if hooks_uses_payload {
        quote! {
            match (by, payload.name()) {
                #(#key_arms)*
                _ => None,
            }
        }
    } else {
        quote!(None)
    };
    let json = needs_json.then(|| json_codec(model));
    let uses_messages = hooks_uses_payload || needs_json;
    let message_import = uses_messages.then(|| {
        quote!(
            use crate::messages::*;
        )
    });
    let stable_hash = hooks_uses_payload.then(|| {
        quote!(
            use ovid_stdlib::proxy::stable_hash;
        )
    });
    let json_import = needs_json.then(|| {
        quote!(
            use ovid::process::JsonCodec;
        )
    });
    let handler_import = makers
        .iter()
        .any(|k| k.to_string().contains("agents ::"))
        .then(|| {
            quote!(
                use crate::agents;
            )
        });
    let bindings = makers
        .iter()
        .any(|k| k.to_string().contains("Bindings"))
        .then(|| quote!(Bindings,));
    quote! {
        //! How a box of this system makes each kind of agent, and what the transformations'
        //! proxies need to know of its messages.
        use std::sync::Arc;
        use ovid::{Agent, #bindings BoxBuilder, Payload};
        #json_import
        use ovid_stdlib::proxy::Hooks;
        #stable_hash
        #handler_import
        #message_import

        /// The deployment: boxes, agents, routes and the LATT, as `ovidc build` wrote it.
        pub const DEPLOYMENT: &str = include_str!("../deployment.json");

        /// Teaches a box every kind of agent of the system, and every proxy of the standard
        /// library.
        pub fn kinds(b: BoxBuilder) -> BoxBuilder {
            let mut b = b #(#registrations)*;
            for (kind, factory) in ovid_stdlib::proxy::kinds(Arc::new(SystemHooks)) {
                b = b.kind_boxed(kind, factory);
            }
            b
        }

        #(#makers)*

        /// What proxies read inside the system's messages.
        struct SystemHooks;

        impl Hooks for SystemHooks {
            fn key_hash(&self, #by: &str, #payload: &Payload) -> Option<u64> {
                #key_body
            }
        }

        #json
    }
}

/// `("key", "Put") => payload.peek::<Put>().map(|m| stable_hash(&m.key)),` for every field
/// the proxies of the system's transformations read and every message that has it.
fn key_hash_arms(model: &Model) -> Vec<TokenStream> {
    let mut fields = BTreeSet::new();
    if let Some(system) = &model.system {
        for t in system.pipelines.iter().flat_map(|p| &p.transforms) {
            if let Some(transformation) = ovid_stdlib::lookup(&t.name) {
                fields.extend(transformation.key_fields(&t.transform().args));
            }
        }
    }
    let mut arms = Vec::new();
    for field in &fields {
        for (message, fs) in &model.messages {
            if fs.iter().any(|(f, _)| f == field) {
                let m = message_ident(message);
                let f = ident(field);
                arms.push(
                    quote!((#field, #message) => payload.peek::<#m>().map(|m| stable_hash(&m.#f)),),
                );
            }
        }
    }
    arms
}

/// The JSON form of every message, for external agents.
fn json_codec(model: &Model) -> TokenStream {
    let to = model.messages.keys().map(|m| {
        let t = message_ident(m);
        quote!(#m => serde_json::to_value(payload.decode::<#t>()?),)
    });
    let from = model.messages.keys().map(|m| {
        let t = message_ident(m);
        quote!(#m => serde_json::from_value::<#t>(body).map(Payload::new),)
    });
    quote! {
        /// The JSON bodies of the system's messages, for agents in other languages.
        struct Json;

        impl JsonCodec for Json {
            fn to_json(&self, payload: Payload) -> Result<serde_json::Value, ovid::Error> {
                let value = match payload.name() {
                    #(#to)*
                    other => return Err(ovid::Error::Invalid(format!("no JSON form for message `{other}`"))),
                };
                value.map_err(|e| ovid::Error::Invalid(e.to_string()))
            }

            fn from_json(&self, name: &str, body: serde_json::Value) -> Result<Payload, ovid::Error> {
                let payload = match name {
                    #(#from)*
                    other => return Err(ovid::Error::Invalid(format!("unknown message type `{other}`"))),
                };
                payload.map_err(|e| ovid::Error::Invalid(format!("bad `{name}`: {e}")))
            }
        }
    }
}

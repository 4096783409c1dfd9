//! `src/check.rs` of the generated crate: what `ovidc test` needs to check each transformed
//! agent — a generator of the requests it accepts, and its refinement mapping.
//!
//! The refinement mapping follows the LATT: a copy's state is its snapshot; a shard node's
//! state is the union of its shards' keyed state (the rest is taken from the first shard); any
//! other node's copies must agree (replicas at quiescence, stateless workers, the single copy
//! behind a monitor or an audit log), and their common state is the node's.

use std::collections::BTreeMap;

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::handlers::{ident, rust_type};
use super::rust::snake;
use crate::check::model::{AgentInfo, Behaviour, Model};
use crate::check::types::Type;
use crate::expand::{Expanded, LattNode, NodeKind};

/// An agent `ovidc test` can check: inline handlers, no `uses` (its requests alone decide its
/// replies), deterministic, and at least one request with a reply.
fn checkable(agent: &AgentInfo) -> bool {
    matches!(agent.behaviour, Behaviour::Handlers { .. })
        && agent.uses.is_empty()
        && agent.deterministic
        && agent.accepts.values().any(Option::is_some)
}

/// The generated `src/check.rs`.
pub fn check_rs(model: &Model, expanded: &Expanded) -> TokenStream {
    let mut targets = Vec::new();
    let mut items = Vec::new();
    let mut merged_types = BTreeMap::new();
    for node in &expanded.latt.children {
        let NodeKind::Transformed { agent, .. } = &node.kind else {
            continue;
        };
        let Some(info) = model.agents.get(agent) else {
            continue;
        };
        if !checkable(info) {
            continue;
        }
        let requests: Vec<&String> = info
            .accepts
            .iter()
            .filter(|(_, r)| r.is_some())
            .map(|(m, _)| m)
            .collect();
        let id = &node.id;
        let request_fn = format_ident!("request_{}", rust_name(id));
        let refine_fn = format_ident!("refine_{}", rust_name(id));
        let node_fn = node_fn_name(id);
        let ty = format_ident!("{}", agent);
        let n = requests.len() as u64;
        let arms = requests.iter().enumerate().map(|(i, m)| {
            let value = message_value(model, m, 0);
            if i as u64 + 1 == n {
                quote!(_ => Payload::new(#value),)
            } else {
                let i = proc_macro2::Literal::u64_unsuffixed(i as u64);
                quote!(#i => Payload::new(#value),)
            }
        });
        let names = requests.iter().map(|m| quote!(#m.to_string()));
        let names = quote!(Vec::from([#(#names),*]));
        targets.push(quote! {
            Target {
                id: #id.to_string(),
                spec_kind: #agent.to_string(),
                requests: #names,
                request: #request_fn,
                refine: #refine_fn,
            }
        });
        let count = proc_macro2::Literal::u64_unsuffixed(n);
        let request_doc = format!(
            " A request `{id}` accepts, with values from small ranges so that requests meet."
        );
        let refine_doc =
            format!(" The refinement mapping of `{id}`: its physical agents' snapshots → its own.");
        let body = if n == 1 {
            let value = message_value(model, requests[0], 0);
            quote!(Payload::new(#value))
        } else {
            quote!(match rng.below(#count) { #(#arms)* })
        };
        let rng = if body.to_string().contains("rng") {
            quote!(rng)
        } else {
            quote!(_rng)
        };
        items.push(quote! {
            #[doc = #request_doc]
            fn #request_fn(#rng: &mut Rng) -> Payload {
                #body
            }

            #[doc = #refine_doc]
            fn #refine_fn(states: &BTreeMap<String, Vec<u8>>) -> Result<Vec<u8>, Error> {
                serde_snapshot(&#node_fn(states)?)
            }
        });
        node_fns(node, &ty, info, &mut items, &mut merged_types);
    }
    for (agent, info) in &merged_types {
        items.push(merge_fn(agent, info));
    }
    let has_targets = !targets.is_empty();
    let imports = has_targets.then(|| {
        quote! {
            use std::collections::BTreeMap;
            use ovid::agent::{serde_restore, serde_snapshot};
            use ovid::sim::Rng;
            use ovid::{Error, Payload};
            use crate::agents::*;
            use crate::messages::*;
        }
    });
    let used = items.iter().map(ToString::to_string).collect::<String>();
    let helpers = has_targets.then(|| helpers(&used));
    quote! {
        //! What `ovidc test` checks: for each transformed agent, requests to drive it with and
        //! the refinement mapping from its physical agents' states to its own.
        #imports
        use ovid::sim::Target;

        /// The transformed agents `ovidc test` checks against their own code.
        pub fn targets() -> Vec<Target> {
            Vec::from([#(#targets),*])
        }

        #(#items)*
        #helpers
    }
}

fn rust_name(id: &str) -> String {
    let s: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    s.trim_matches('_').to_string()
}

fn node_fn_name(id: &str) -> proc_macro2::Ident {
    format_ident!("state_of_{}", rust_name(id))
}

/// One function per LATT node of the agent's subtree that runs or combines its code.
fn node_fns<'a>(
    node: &LattNode,
    ty: &proc_macro2::Ident,
    info: &'a AgentInfo,
    items: &mut Vec<TokenStream>,
    merged: &mut BTreeMap<String, &'a AgentInfo>,
) {
    let name = node_fn_name(&node.id);
    let id = &node.id;
    let doc = format!(" The state of `{id}`.");
    let body = match &node.kind {
        NodeKind::Transformed { transform, .. } => {
            let copies: Vec<&LattNode> = node
                .children
                .iter()
                .filter(|c| {
                    matches!(
                        c.kind,
                        NodeKind::Agent { .. } | NodeKind::Transformed { .. }
                    )
                })
                .collect();
            for c in &copies {
                node_fns(c, ty, info, items, merged);
            }
            let fns: Vec<proc_macro2::Ident> = copies.iter().map(|c| node_fn_name(&c.id)).collect();
            if transform.starts_with("shard") {
                let merge = format_ident!("merge_{}", snake(&ty.to_string()));
                merged.insert(ty.to_string(), info);
                quote!(Ok(#merge(Vec::from([#(#fns(states)?),*]))))
            } else {
                quote!(agree(#id, [#(#fns(states)),*]))
            }
        }
        _ => quote!(state(states, #id)),
    };
    items.push(quote! {
        #[doc = #doc]
        fn #name(states: &BTreeMap<String, Vec<u8>>) -> Result<#ty, Error> {
            #body
        }
    });
}

/// `merge_key_value_store(parts)`: the union of the shards' keyed state.
fn merge_fn(agent: &str, info: &AgentInfo) -> TokenStream {
    let ty = format_ident!("{}", agent);
    let merge = format_ident!("merge_{}", snake(agent));
    let keyed: Vec<TokenStream> = info
        .state
        .iter()
        .filter(|s| s.keyed_by.is_some() && matches!(s.ty, Type::Map(..) | Type::List(_)))
        .map(|s| {
            let f = ident(&s.name);
            quote!(whole.#f.extend(part.#f);)
        })
        .collect();
    let doc = format!(
        " The union of `{agent}` shards: keyed state from every shard, the rest from the first."
    );
    let part = if keyed.is_empty() {
        quote!(_part)
    } else {
        quote!(part)
    };
    quote! {
        #[doc = #doc]
        fn #merge(parts: Vec<#ty>) -> #ty {
            let mut parts = parts.into_iter();
            let mut whole = parts.next().expect("a shard node has shards");
            for #part in parts {
                #(#keyed)*
            }
            whole
        }
    }
}

/// The helpers the generated functions (`used`, as text) call.
fn helpers(used: &str) -> TokenStream {
    let calls = |name: &str| used.contains(&format!("{name} ("));
    let agree = calls("agree").then(|| {
        quote! {
            /// The common state of copies that must agree (replicas at quiescence, stateless
            /// workers); copies on a crashed box are left out.
            fn agree<T: serde::Serialize, const N: usize>(id: &str, copies: [Result<T, Error>; N]) -> Result<T, Error> {
                let mut live = Vec::new();
                for copy in copies {
                    match copy {
                        Ok(state) => live.push(state),
                        Err(Error::DeadAgent(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
                let first = live.first().ok_or_else(|| Error::DeadAgent(id.to_string()))?;
                let bytes = serde_snapshot(first)?;
                for copy in &live[1..] {
                    if serde_snapshot(copy)? != bytes {
                        return Err(Error::Invalid(format!("the copies of `{id}` disagree")));
                    }
                }
                Ok(live.swap_remove(0))
            }
        }
    });
    let string = calls("string").then(|| {
        quote! {
            /// A string from a small set, so that requests meet on the same keys.
            fn string(rng: &mut Rng) -> String {
                format!("s{}", rng.below(4))
            }
        }
    });
    quote! {
        /// The state of the physical agent `id`, from its snapshot.
        fn state<T: serde::de::DeserializeOwned>(states: &BTreeMap<String, Vec<u8>>, id: &str) -> Result<T, Error> {
            let bytes = states.get(id).ok_or_else(|| Error::DeadAgent(id.to_string()))?;
            serde_restore(bytes)
        }

        #agree
        #string
    }
}

/// A generated value of message `m`, as a struct literal.
fn message_value(model: &Model, m: &str, depth: usize) -> TokenStream {
    let ty = format_ident!("{}", m);
    let fields = model
        .messages
        .get(m)
        .map(|fs| fs.as_slice())
        .unwrap_or_default();
    let fs = fields.iter().map(|(f, t)| {
        let f = ident(f);
        let v = value(model, t, depth + 1);
        quote!(#f: #v)
    });
    quote!(#ty { #(#fs),* })
}

/// A generated value of type `t`.
fn value(model: &Model, t: &Type, depth: usize) -> TokenStream {
    if depth > 4 {
        return quote!(Default::default());
    }
    match t {
        Type::String => quote!(string(rng)),
        Type::Int(i) => {
            let ty = rust_type(&Type::Int(*i));
            quote!(rng.below(8) as #ty)
        }
        Type::IntLiteral => quote!(rng.below(8) as i64),
        Type::Bool => quote!(rng.chance(50)),
        Type::Bytes => quote!(vec![rng.below(4) as u8]),
        Type::Option(inner) => {
            let v = value(model, inner, depth + 1);
            quote!(if rng.chance(50) { Some(#v) } else { None })
        }
        Type::List(inner) => {
            let v = value(model, inner, depth + 1);
            quote!((0..rng.below(3)).map(|_| #v).collect())
        }
        Type::Map(k, v) => {
            let (k, v) = (value(model, k, depth + 1), value(model, v, depth + 1));
            quote!((0..rng.below(3)).map(|_| (#k, #v)).collect())
        }
        Type::Message(m) => message_value(model, m, depth),
        Type::Unit | Type::Unknown => quote!(Default::default()),
    }
}

//! `src/check.rs` of the generated crate: what `ovidc test` needs to check each transformed
//! agent — a generator of the requests it accepts, and its refinement mapping.
//!
//! The refinement mapping is the standard library's (`ovid_stdlib::refinement`), which walks
//! the LATT and calls each node's transformation; the generated code only tells it how to take
//! the agent's state apart (`impl State`: its keyed maps and the rest).

use std::collections::BTreeMap;

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use ovid::latt::NodeKind;

use super::handlers::{agent_ident, ident, message_ident, rust_type};
use crate::check::model::{AgentInfo, Behaviour, Model};
use crate::check::types::Type;
use crate::expand::Expanded;

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
    let mut states = BTreeMap::new();
    // A transformed channel into an agent is checked with the agent: the agent behind the
    // channel's proxies must answer as the agent alone (every message arrives once, in each
    // sender's order).
    // A channel's identifier is `{receiver}/{sender}`, and an element's has no `/`.
    let receivers: std::collections::BTreeSet<&str> = expanded
        .latt
        .children
        .iter()
        .filter(|c| matches!(c.kind, NodeKind::Channel { .. }))
        .filter_map(|c| c.id.split_once('/').map(|(to, _)| to))
        .collect();
    let behind_channel = |id: &str| receivers.contains(id);
    for node in &expanded.latt.children {
        let agent = match &node.kind {
            NodeKind::Transformed { agent, .. } => agent,
            NodeKind::Agent { agent } if behind_channel(&node.id) => agent,
            _ => continue,
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
        let ty = agent_ident(agent);
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
                refine: refine_snapshot::<#ty>,
            }
        });
        let count = proc_macro2::Literal::u64_unsuffixed(n);
        let request_doc = format!(
            " A request `{id}` accepts, with values from small ranges so that requests meet."
        );
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
        });
        states.insert(agent.clone(), info);
    }
    for (agent, info) in &states {
        items.push(state_impl(agent, info));
    }
    let has_targets = !targets.is_empty();
    let imports = has_targets.then(|| {
        quote! {
            use ovid::agent::{serde_restore, serde_snapshot};
            use ovid::{Error, Payload};
            use ovid_sim::Rng;
            use ovid_stdlib::refinement::{Parts, State, refine_snapshot};
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
        use ovid_sim::Target;

        /// `test`: the simulator, over the transformed agents below.
        pub fn test(system: &ovid::launch::System, args: Vec<String>) -> std::process::ExitCode {
            ovid_sim::cli::run(&ovid_sim::System::of(system, targets), args)
        }

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

/// `impl State for Agent`: its keyed maps taken out entry by entry, the rest as one snapshot.
fn state_impl(agent: &str, info: &AgentInfo) -> TokenStream {
    let ty = agent_ident(agent);
    let keyed: Vec<(proc_macro2::Ident, &str)> = info
        .state
        .iter()
        .filter(|s| s.keyed_by.is_some() && matches!(s.ty, Type::Map(..)))
        .map(|s| (ident(&s.name), s.name.as_str()))
        .collect();
    let doc = format!(" How the refinement mappings take a `{agent}` apart and put it back.");
    if keyed.is_empty() {
        return quote! {
            #[doc = #doc]
            impl State for #ty {
                fn into_parts(self) -> Result<Parts, Error> {
                    Ok(Parts::new(serde_snapshot(&self)?))
                }

                fn from_parts(parts: Parts) -> Result<Self, Error> {
                    serde_restore(&parts.rest)
                }
            }
        };
    }
    let fields: Vec<&proc_macro2::Ident> = keyed.iter().map(|(f, _)| f).collect();
    let names: Vec<&str> = keyed.iter().map(|(_, n)| *n).collect();
    quote! {
        #[doc = #doc]
        impl State for #ty {
            fn into_parts(mut self) -> Result<Parts, Error> {
                #(let #fields = std::mem::take(&mut self.#fields);)*
                let mut parts = Parts::new(serde_snapshot(&self)?);
                #(parts.put_map(#names, #fields)?;)*
                Ok(parts)
            }

            fn from_parts(mut parts: Parts) -> Result<Self, Error> {
                let mut state: Self = serde_restore(&parts.rest)?;
                #(state.#fields = parts.take_map(#names)?;)*
                Ok(state)
            }
        }
    }
}

/// The helpers the generated functions (`used`, as text) call.
fn helpers(used: &str) -> TokenStream {
    let calls = |name: &str| used.contains(&format!("{name} ("));
    let string = calls("string").then(|| {
        quote! {
            /// A string from a small set, so that requests meet on the same keys.
            fn string(rng: &mut Rng) -> String {
                format!("s{}", rng.below(4))
            }
        }
    });
    quote! {
        #string
    }
}

/// A generated value of message `m`, as a struct literal.
fn message_value(model: &Model, m: &str, depth: usize) -> TokenStream {
    let ty = message_ident(m);
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

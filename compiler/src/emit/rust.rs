//! Rust items for the declarations of a program: message structs and inline-handler agents.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::handlers::{HandlerCompiler, agent_ident, ident, message_ident, rust_type};
use crate::check::model::{AgentInfo, Model};
use crate::syntax::ast::Trigger;

/// `#[derive(.., Message)] pub struct Put { pub key: String, .. }` for every message.
pub fn messages(model: &Model) -> TokenStream {
    let items = model.messages.iter().map(|(name, fields)| {
        let n = message_ident(name);
        let doc = format!(" The `{name}` message.");
        let fs = fields.iter().map(|(f, t)| {
            let fi = ident(f);
            let ft = rust_type(t);
            let fdoc = format!(" `{f}: {t}`");
            // Its name on the wire stays the field's, whatever Rust calls it.
            let rename = (fi.to_string().trim_start_matches("r#") != f.as_str())
                .then(|| quote!(#[serde(rename = #f)]));
            quote!(#[doc = #fdoc] #rename pub #fi: #ft)
        });
        let rename = (n != name.as_str()).then(|| quote!(#[message(name = #name)]));
        quote! {
            #[doc = #doc]
            #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, Message)]
            #rename
            pub struct #n { #(#fs,)* }
        }
    });
    quote!(#(#items)*)
}

/// The struct of an inline-handler agent: its state fields and its `uses` identifiers, with
/// a constructor taking the wiring and one method per handler.
pub fn inline_agent(name: &str, agent: &AgentInfo) -> TokenStream {
    let n = agent_ident(name);
    let mut compiler = HandlerCompiler::new(agent);
    let doc = format!(" The `{name}` agent, compiled from its inline handlers.");
    let state_fields = agent.state.iter().map(|s| {
        let f = ident(&s.name);
        let t = rust_type(&s.ty);
        let d = format!(" State `{}: {}`.", s.name, s.ty);
        quote!(#[doc = #d] pub #f: #t)
    });
    let uses_fields = agent.uses.keys().map(|u| {
        let f = ident(u);
        let d = format!(" The identifier `{u}` is bound to.");
        quote!(#[doc = #d] #[serde(skip)] pub #f: String)
    });
    let use_params = agent.uses.keys().map(|u| {
        let f = ident(u);
        quote!(#f: impl Into<String>)
    });
    let use_inits = agent.uses.keys().map(|u| {
        let f = ident(u);
        quote!(#f: #f.into())
    });
    let state_inits: Vec<TokenStream> = agent
        .ast
        .state
        .iter()
        .map(|s| {
            let f = ident(&s.name.name);
            match &s.init {
                Some(e) => {
                    let v = compiler.init(e);
                    quote!(#f: #v)
                }
                None => quote!(#f: Default::default()),
            }
        })
        .collect();
    let handlers = agent.ast.handlers.iter().map(|h| match &h.trigger {
        Trigger::Start => {
            let body = compiler.body(&h.body, None);
            let ctx = used_or_underscore("ctx", &body);
            quote! {
                /// Runs once, when the agent starts.
                pub fn on_start(&mut self, #ctx: &mut Context) { #body }
            }
        }
        Trigger::Message { message, binding } => {
            let m = message_ident(&message.name);
            let method = format_ident!("on_{}", snake(&message.name));
            let body = compiler.body(&h.body, Some((&binding.name, &message.name)));
            let b = used_or_underscore(&binding.name, &body);
            let ctx = used_or_underscore("ctx", &body);
            let d = format!(" Handles a `{}`.", message.name);
            quote! {
                #[doc = #d]
                pub fn #method(&mut self, #ctx: &mut Context, #b: #m) { #body }
            }
        }
    });
    quote! {
        #[doc = #doc]
        #[derive(Debug, Clone, Serialize, Deserialize)]
        pub struct #n {
            #(#state_fields,)*
            #(#uses_fields,)*
        }

        impl #n {
            /// A new agent in its initial state, sending to the given identifiers.
            pub fn new(#(#use_params),*) -> Self {
                #n { #(#state_inits,)* #(#use_inits,)* }
            }
        }

        #[ovid::agent]
        impl #n {
            #(#handlers)*
        }
    }
}

/// The parameter name, prefixed with `_` when the body never uses it (no unused warnings).
fn used_or_underscore(name: &str, body: &TokenStream) -> proc_macro2::Ident {
    fn uses(tokens: TokenStream, name: &str) -> bool {
        tokens.into_iter().any(|t| match t {
            proc_macro2::TokenTree::Ident(i) => i == name,
            proc_macro2::TokenTree::Group(g) => uses(g.stream(), name),
            _ => false,
        })
    }
    if uses(body.clone(), name) {
        // `ctx` is the context parameter's own name (a language name `ctx` is `ctx_`).
        if name == "ctx" {
            format_ident!("ctx")
        } else {
            ident(name)
        }
    } else {
        format_ident!("_{}", name)
    }
}

/// `GetOk` → `get_ok`.
pub fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 && !out.ends_with('_') {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

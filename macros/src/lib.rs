//! Procedural macros of Ovid, re-exported by the `ovid` crate as `ovid::agent` and
//! `ovid::Message`.
//!
//! `#[ovid::agent]` goes on the `impl` block of a struct and turns its handler methods into an
//! implementation of `ovid::Agent`:
//!
//! ```ignore
//! #[ovid::agent]
//! impl KeyValueStore {
//!     fn on_put(&mut self, ctx: &mut Context, put: Put) -> PutOk { .. } // the result is the reply
//!     fn on_get(&mut self, ctx: &mut Context, get: Get) { ctx.reply(..) }
//!     fn on_start(&mut self, ctx: &mut Context) { .. }                // optional
//!     fn on_timer(&mut self, ctx: &mut Context, name: &str) { .. }    // optional
//!     #[handler] fn any_name(&mut self, ctx: &mut Context, m: Other) { .. }
//! }
//! ```
//!
//! Every method named `on_<something>` (other than `on_start` and `on_timer`) or marked
//! `#[handler]` handles the message type of its third parameter. Other methods are left alone.
//! Snapshots are the serde encoding of the whole struct; `#[ovid::agent(no_snapshot)]` turns
//! that off for agents whose state is not serde.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ImplItem, ImplItemFn, Item, ReturnType, Type};

/// Turns the `impl` block of a struct's handlers into an Ovid agent (see the crate docs).
#[proc_macro_attribute]
pub fn agent(attr: TokenStream, item: TokenStream) -> TokenStream {
    match expand_agent(attr.into(), item.into()) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

/// Implements `ovid::Message` for a struct or enum, named after the type (or
/// `#[message(name = "...")]`).
#[proc_macro_derive(Message, attributes(message))]
pub fn derive_message(item: TokenStream) -> TokenStream {
    match expand_message(item.into()) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand_message(item: TokenStream2) -> syn::Result<TokenStream2> {
    let input: syn::DeriveInput = syn::parse2(item)?;
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new(
            input.generics.span(),
            "a message type cannot be generic: its name must be the same in every box",
        ));
    }
    let ident = &input.ident;
    let mut name = ident.to_string();
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("message")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                name = meta.value()?.parse::<syn::LitStr>()?.value();
                Ok(())
            } else {
                Err(meta.error("expected `name = \"...\"`"))
            }
        })?;
    }
    Ok(quote! {
        impl ::ovid::Message for #ident {
            const NAME: &'static str = #name;
        }
    })
}

/// What a method of the impl block is to the agent.
enum Role {
    Start,
    Timer,
    Handler { message: Box<Type> },
}

struct Method {
    ident: syn::Ident,
    role: Role,
    output: ReturnType,
}

fn expand_agent(attr: TokenStream2, item: TokenStream2) -> syn::Result<TokenStream2> {
    let mut snapshot = true;
    if !attr.is_empty() {
        let parser = syn::meta::parser(|meta| {
            if meta.path.is_ident("no_snapshot") {
                snapshot = false;
                Ok(())
            } else {
                Err(meta.error("unknown option: `#[ovid::agent]` takes only `no_snapshot`"))
            }
        });
        syn::parse::Parser::parse2(parser, attr)?;
    }

    let item: Item = syn::parse2(item)?;
    let mut imp = match item {
        Item::Impl(imp) => imp,
        Item::Struct(s) => {
            return Err(syn::Error::new(
                s.ident.span(),
                format!(
                    "`#[ovid::agent]` goes on the impl block of the handlers, not on the struct\n\
                     help: write `#[ovid::agent] impl {} {{ fn on_<message>(&mut self, ctx: &mut Context, msg: Message) {{ .. }} }}`",
                    s.ident
                ),
            ));
        }
        other => {
            return Err(syn::Error::new(
                other.span(),
                "`#[ovid::agent]` goes on the impl block of an agent's handlers",
            ));
        }
    };
    if let Some((_, path, _)) = &imp.trait_ {
        return Err(syn::Error::new(
            path.span(),
            "`#[ovid::agent]` goes on an inherent impl block, not a trait impl",
        ));
    }
    if !imp.generics.params.is_empty() {
        return Err(syn::Error::new(
            imp.generics.span(),
            "generic agents are not supported",
        ));
    }

    let mut methods = Vec::new();
    let mut errors: Option<syn::Error> = None;
    let push_err = |e: syn::Error, errors: &mut Option<syn::Error>| match errors {
        Some(all) => all.combine(e),
        None => *errors = Some(e),
    };
    for it in &mut imp.items {
        let ImplItem::Fn(f) = it else { continue };
        let marked = take_handler_attr(f);
        match classify(f, marked) {
            Ok(Some(m)) => methods.push(m),
            Ok(None) => {}
            Err(e) => push_err(e, &mut errors),
        }
    }
    // Two handlers for one message type.
    let mut seen: Vec<(String, &Method)> = Vec::new();
    for m in &methods {
        if let Role::Handler { message } = &m.role {
            let key = quote!(#message).to_string();
            if let Some((_, first)) = seen.iter().find(|(k, _)| *k == key) {
                push_err(
                    syn::Error::new(
                        message.span(),
                        format!(
                            "`{key}` already has a handler: `{}`; an agent has one handler per message type",
                            first.ident
                        ),
                    ),
                    &mut errors,
                );
            } else {
                seen.push((key, m));
            }
        }
    }
    if let Some(e) = errors {
        return Err(e);
    }
    // An agent that only acts when it starts (or on timers) is fine; one that does nothing is
    // a mistake.
    if methods.is_empty() {
        return Err(syn::Error::new(
            imp.self_ty.span(),
            "this agent has no handlers\n\
             help: add a method `fn on_<message>(&mut self, ctx: &mut ovid::Context, msg: SomeMessage)`, \
             or mark one with `#[handler]`",
        ));
    }

    let self_ty = &imp.self_ty;
    let mut dispatch = Vec::new();
    let mut accepts = Vec::new();
    let mut on_start = TokenStream2::new();
    let mut on_timer = TokenStream2::new();
    for m in &methods {
        let ident = &m.ident;
        match &m.role {
            Role::Start => {
                on_start = quote! {
                    fn on_start(&mut self, ctx: &mut ::ovid::Context) { #self_ty::#ident(self, ctx) }
                }
            }
            Role::Timer => {
                on_timer = quote! {
                    fn on_timer(&mut self, ctx: &mut ::ovid::Context, name: &str) { #self_ty::#ident(self, ctx, name) }
                }
            }
            Role::Handler { message } => {
                let span = message.span();
                let call = quote!(#self_ty::#ident(self, ctx, decoded));
                let body = match &m.output {
                    ReturnType::Type(_, ty) if !is_unit(ty) => {
                        let span = ty.span();
                        quote_spanned!(span=> {
                            let reply = #call;
                            ::ovid::Context::reply(ctx, reply);
                        })
                    }
                    _ => quote!({ #call; }),
                };
                let take = quote_spanned!(span=> ::ovid::__private::take::<#message>(message));
                accepts.push(quote_spanned!(span=> <#message as ::ovid::Message>::NAME));
                dispatch.push(quote! {
                    let message = match #take {
                        ::ovid::__private::Take::Hit(decoded) => {
                            let decoded = decoded?;
                            #body
                            return ::core::result::Result::Ok(());
                        }
                        ::ovid::__private::Take::Miss(message) => message,
                    };
                });
            }
        }
    }
    let snapshot_fns = if snapshot {
        let span = self_ty.span();
        quote_spanned! {span=>
            fn snapshot(&self) -> ::core::result::Result<::std::vec::Vec<u8>, ::ovid::Error> {
                ::ovid::__private::serde_snapshot(self)
            }
            fn restore(&mut self, bytes: &[u8]) -> ::core::result::Result<(), ::ovid::Error> {
                *self = ::ovid::__private::serde_restore(bytes)?;
                ::core::result::Result::Ok(())
            }
        }
    } else {
        TokenStream2::new()
    };

    Ok(quote! {
        #imp

        impl ::ovid::Agent for #self_ty {
            #on_start
            #on_timer

            fn on_message(
                &mut self,
                ctx: &mut ::ovid::Context,
                message: ::ovid::Payload,
            ) -> ::core::result::Result<(), ::ovid::Error> {
                #(#dispatch)*
                ::core::result::Result::Err(::ovid::Error::UnknownMessage {
                    agent: ::std::string::ToString::to_string(ctx.me()),
                    name: ::std::string::ToString::to_string(message.name()),
                })
            }

            fn accepts(&self) -> &'static [&'static str] {
                &[#(#accepts),*]
            }

            #snapshot_fns
        }
    })
}

/// Removes a `#[handler]` attribute from the method, saying whether there was one.
fn take_handler_attr(f: &mut ImplItemFn) -> bool {
    let before = f.attrs.len();
    f.attrs.retain(|a| !a.path().is_ident("handler"));
    f.attrs.len() != before
}

fn is_unit(ty: &Type) -> bool {
    matches!(ty, Type::Tuple(t) if t.elems.is_empty())
}

/// Decides what a method is, checking its signature if it is an event method.
fn classify(f: &ImplItemFn, marked: bool) -> syn::Result<Option<Method>> {
    let name = f.sig.ident.to_string();
    let role_name = match (marked, name.as_str()) {
        (true, _) => "handler",
        (false, "on_start") => "on_start",
        (false, "on_timer") => "on_timer",
        (false, n) if n.starts_with("on_") => "handler",
        _ => return Ok(None),
    };
    let sig = &f.sig;
    if let Some(a) = &sig.asyncness {
        return Err(syn::Error::new(
            a.span(),
            "agent handlers are synchronous: an agent never blocks; remove `async`",
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "agent handlers cannot be generic",
        ));
    }
    let expected = match role_name {
        "on_start" => "fn on_start(&mut self, ctx: &mut ovid::Context)",
        "on_timer" => "fn on_timer(&mut self, ctx: &mut ovid::Context, name: &str)",
        _ => "fn on_<message>(&mut self, ctx: &mut ovid::Context, msg: Message)",
    };
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_some() => {}
        Some(FnArg::Receiver(r)) => {
            return Err(syn::Error::new(
                r.self_token.span(),
                format!(
                    "an agent's `{name}` takes `&mut self`: the agent's state changes one message at a time\nhelp: {expected}"
                ),
            ));
        }
        _ => {
            return Err(syn::Error::new(
                sig.ident.span(),
                format!(
                    "`{name}` needs a `&mut self` receiver to be an agent handler\nhelp: {expected}"
                ),
            ));
        }
    }
    let rest: Vec<&FnArg> = inputs.collect();
    let want = if role_name == "on_start" { 1 } else { 2 };
    if rest.len() != want {
        let span = if rest.len() > want {
            rest[want].span()
        } else {
            sig.ident.span()
        };
        return Err(syn::Error::new(
            span,
            format!(
                "`{name}` takes {} parameter(s) besides `&mut self`, found {}\nhelp: {expected}",
                want,
                rest.len()
            ),
        ));
    }
    let typed = |arg: &FnArg| -> syn::Result<Type> {
        match arg {
            FnArg::Typed(t) => Ok((*t.ty).clone()),
            FnArg::Receiver(r) => Err(syn::Error::new(r.span(), "unexpected receiver")),
        }
    };
    let ctx_ty = typed(rest[0])?;
    if !matches!(&ctx_ty, Type::Reference(r) if r.mutability.is_some()) {
        return Err(syn::Error::new(
            ctx_ty.span(),
            format!(
                "the second parameter of `{name}` is the context and must be `&mut ovid::Context`\nhelp: {expected}"
            ),
        ));
    }
    let role = match role_name {
        "on_start" => Role::Start,
        "on_timer" => Role::Timer,
        _ => {
            let message = typed(rest[1])?;
            if let Type::Reference(r) = &message {
                return Err(syn::Error::new(
                    r.span(),
                    format!(
                        "`{name}` must take its message by value, not by reference\nhelp: {expected}"
                    ),
                ));
            }
            Role::Handler {
                message: Box::new(message),
            }
        }
    };
    if !matches!(role, Role::Handler { .. })
        && let ReturnType::Type(_, ty) = &sig.output
        && !is_unit(ty)
    {
        return Err(syn::Error::new(
            ty.span(),
            format!("`{name}` returns nothing: there is no message to reply to"),
        ));
    }
    Ok(Some(Method {
        ident: sig.ident.clone(),
        role,
        output: sig.output.clone(),
    }))
}

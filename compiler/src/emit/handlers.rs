//! Compiles the handler language to Rust. Values have copy semantics in the language, so a
//! read of a non-`Copy` value clones it; integer arithmetic wraps and division by zero gives
//! zero, so generated handlers never panic.

use std::collections::{HashMap, HashSet};

use proc_macro2::{Span as RustSpan, TokenStream};
use quote::{format_ident, quote};

use crate::check::model::AgentInfo;
use crate::check::types::{IntTy, Type};
use crate::syntax::ast::*;

/// The Rust type of a language type.
pub fn rust_type(t: &Type) -> TokenStream {
    match t {
        Type::String => quote!(String),
        Type::Int(i) => int_type(*i),
        Type::IntLiteral => quote!(i64),
        Type::Bool => quote!(bool),
        Type::Bytes => quote!(Vec<u8>),
        Type::Option(t) => {
            let t = rust_type(t);
            quote!(Option<#t>)
        }
        Type::List(t) => {
            let t = rust_type(t);
            quote!(Vec<#t>)
        }
        Type::Map(k, v) => {
            let (k, v) = (rust_type(k), rust_type(v));
            quote!(BTreeMap<#k, #v>)
        }
        Type::Message(m) => {
            let m = message_ident(m);
            quote!(#m)
        }
        Type::Unit => quote!(()),
        Type::Unknown => quote!(_),
    }
}

fn int_type(i: IntTy) -> TokenStream {
    match i {
        IntTy::Int | IntTy::I64 => quote!(i64),
        IntTy::I32 => quote!(i32),
        IntTy::U8 => quote!(u8),
        IntTy::U16 => quote!(u16),
        IntTy::U32 => quote!(u32),
        IntTy::U64 => quote!(u64),
    }
}

fn is_copy(t: &Type) -> bool {
    matches!(t, Type::Int(_) | Type::IntLiteral | Type::Bool | Type::Unit)
}

/// Names the generated code uses for items of its own (the prelude, the runtime's and the
/// standard library's types): a message or an agent of one of these names gets a suffixed
/// Rust name (`Option` → `OptionMessage`), its name in the system unchanged.
const TAKEN_TYPES: &[&str] = &[
    "Agent",
    "Arc",
    "BTreeMap",
    "Bindings",
    "Box",
    "BoxBuilder",
    "Context",
    "Deserialize",
    "Err",
    "Error",
    "Hooks",
    "Json",
    "JsonCodec",
    "Message",
    "None",
    "Ok",
    "Option",
    "Parts",
    "Payload",
    "Result",
    "Rng",
    "Self",
    "Serialize",
    "Some",
    "State",
    "String",
    "SystemHooks",
    "Target",
    "Vec",
];

/// The Rust name of the message `name`.
pub fn message_ident(name: &str) -> proc_macro2::Ident {
    type_ident(name, "Message")
}

/// The Rust name of the agent type `name`.
pub fn agent_ident(name: &str) -> proc_macro2::Ident {
    type_ident(name, "Agent")
}

fn type_ident(name: &str, suffix: &str) -> proc_macro2::Ident {
    if TAKEN_TYPES.contains(&name) {
        format_ident!("{name}{suffix}")
    } else {
        ident(name)
    }
}

/// Rust names for language names that are Rust keywords, or that generated code uses itself
/// (`ctx`, the context of every handler).
pub fn ident(name: &str) -> proc_macro2::Ident {
    const RESERVED: &[&str] = &[
        "as", "async", "await", "break", "const", "continue", "dyn", "enum", "extern", "fn", "gen",
        "impl", "loop", "mod", "move", "mut", "pub", "ref", "return", "static", "struct", "trait",
        "type", "unsafe", "use", "where", "while", "yield", "box", "abstract", "become", "do",
        "final", "macro", "override", "priv", "try", "typeof", "unsized", "virtual",
    ];
    // These cannot be raw identifiers.
    if matches!(name, "self" | "Self" | "super" | "crate" | "ctx") {
        format_ident!("{}_", name)
    } else if RESERVED.contains(&name) {
        proc_macro2::Ident::new_raw(name, RustSpan::call_site())
    } else {
        format_ident!("{}", name)
    }
}

/// The value of an integer expression of literals alone (`-5`, `0 - 1`, `2 * 3`), if it has
/// one that fits an `i64` at every step, as the wrapping arithmetic of the generated code
/// would compute it then.
fn literal_value(e: &Expr) -> Option<i128> {
    let fits = |v: i128| (i128::from(i64::MIN)..=i128::from(i64::MAX)).contains(&v);
    let v = match &e.kind {
        ExprKind::Literal(Literal::Int(v)) => *v,
        ExprKind::Unary(UnOp::Neg, inner) => literal_value(inner)?.checked_neg()?,
        ExprKind::Binary(op, l, r) => {
            let (a, b) = (literal_value(l)?, literal_value(r)?);
            match op {
                BinOp::Add => a.checked_add(b)?,
                BinOp::Sub => a.checked_sub(b)?,
                BinOp::Mul => a.checked_mul(b)?,
                // As the generated code does: dividing by zero gives zero.
                BinOp::Div => a.checked_div(b).unwrap_or(0),
                BinOp::Rem => a.checked_rem(b).unwrap_or(0),
                _ => return None,
            }
        }
        _ => return None,
    };
    fits(v).then_some(v)
}

/// `v` wrapped into the integer type `t`, as its wrapping arithmetic would leave it.
fn wrap(v: i128, t: &Type) -> i128 {
    let bits = match t {
        Type::Int(IntTy::U8) => 8,
        Type::Int(IntTy::U16) => 16,
        Type::Int(IntTy::U32) => 32,
        Type::Int(IntTy::U64) => 64,
        Type::Int(IntTy::I32) => return i128::from(v as i32),
        _ => return v,
    };
    v.rem_euclid(1 << bits)
}

/// An integer literal: unsuffixed, its type inferred where it stands (`-5`); or, as the
/// receiver of a method, with the suffix of type `t` (`(-5i64)`).
fn typed_literal(v: i128, t: Option<&Type>) -> TokenStream {
    let suffix = match t {
        Some(Type::Int(IntTy::I32)) => "i32",
        Some(Type::Int(IntTy::U8)) => "u8",
        Some(Type::Int(IntTy::U16)) => "u16",
        Some(Type::Int(IntTy::U32)) => "u32",
        Some(Type::Int(IntTy::U64)) => "u64",
        Some(_) => "i64",
        None => "",
    };
    let lit = syn::LitInt::new(
        &format!("{}{suffix}", v.unsigned_abs()),
        RustSpan::call_site(),
    );
    match (v < 0, t.is_some()) {
        (false, _) => quote!(#lit),
        (true, false) => quote!(-#lit),
        (true, true) => quote!((-#lit)),
    }
}

/// A literal of type `t` that is an argument, not a receiver: `-5i64`, no parentheses.
fn typed_argument(v: i128, t: &Type) -> TokenStream {
    if v < 0 {
        let lit = typed_literal(-v, Some(t));
        quote!(-#lit)
    } else {
        typed_literal(v, Some(t))
    }
}

/// Compiles the body of one handler. `ctx` is the name of the context parameter.
pub struct HandlerCompiler<'a> {
    agent: &'a AgentInfo,
    state: HashSet<String>,
    /// Locals in scope with their types (innermost last).
    scopes: Vec<HashMap<String, Type>>,
    fresh: usize,
}

impl<'a> HandlerCompiler<'a> {
    /// A compiler for the handlers of `agent`.
    pub fn new(agent: &'a AgentInfo) -> Self {
        HandlerCompiler {
            agent,
            state: agent.state.iter().map(|s| s.name.clone()).collect(),
            scopes: Vec::new(),
            fresh: 0,
        }
    }

    /// Compiles a handler body; `message` is the handled message's binding and type, if any.
    pub fn body(&mut self, block: &Block, message: Option<(&str, &str)>) -> TokenStream {
        self.scopes = vec![HashMap::new()];
        if let Some((binding, ty)) = message {
            self.scopes[0].insert(binding.to_string(), Type::Message(ty.to_string()));
        }
        let stmts = self.stmts(&block.stmts);
        quote!(#(#stmts)*)
    }

    /// Compiles a state field's initial value.
    pub fn init(&mut self, e: &Expr) -> TokenStream {
        self.scopes = vec![HashMap::new()];
        self.value(e)
    }

    fn ty(&self, e: &Expr) -> Type {
        self.agent
            .expr_types
            .get(&e.span)
            .cloned()
            .unwrap_or(Type::Unknown)
    }

    fn local(&self, name: &str) -> Option<&Type> {
        self.scopes.iter().rev().find_map(|s| s.get(name))
    }

    fn block(&mut self, b: &Block) -> TokenStream {
        self.scopes.push(HashMap::new());
        let stmts = self.stmts(&b.stmts);
        self.scopes.pop();
        quote!({ #(#stmts)* })
    }

    fn stmts(&mut self, stmts: &[Stmt]) -> Vec<TokenStream> {
        let mut out = Vec::new();
        for (i, s) in stmts.iter().enumerate() {
            out.push(self.stmt(s, &stmts[i + 1..]));
        }
        out
    }

    fn stmt(&mut self, s: &Stmt, rest: &[Stmt]) -> TokenStream {
        match s {
            Stmt::Let { name, value, .. } => {
                let t = self
                    .agent
                    .binding_types
                    .get(&name.span)
                    .cloned()
                    .unwrap_or_else(|| self.ty(value));
                let v = self.value(value);
                let n = ident(&name.name);
                let rt = rust_type(&t);
                let m = if mutated(&name.name, rest) {
                    quote!(mut)
                } else {
                    quote!()
                };
                self.scopes
                    .last_mut()
                    .expect("scope")
                    .insert(name.name.clone(), t);
                quote!(let #m #n: #rt = #v;)
            }
            Stmt::Assign { target, value } => {
                let v = self.value(value);
                let place = self.name_place(&target.name);
                quote!(#place = #v;)
            }
            Stmt::Expr(e) => {
                let e = self.value(e);
                quote!(#e;)
            }
            Stmt::If {
                cond,
                then,
                otherwise,
            } => {
                let c = self.value(cond);
                let t = self.block(then);
                match otherwise {
                    None => quote!(if #c #t),
                    // `else { if .. }` and `else if ..` mean the same; write the shorter.
                    Some(o) if o.stmts.len() == 1 && matches!(o.stmts[0], Stmt::If { .. }) => {
                        let e = self.stmt(&o.stmts[0], &[]);
                        quote!(if #c #t else #e)
                    }
                    Some(o) => {
                        let e = self.block(o);
                        quote!(if #c #t else #e)
                    }
                }
            }
            Stmt::Match {
                scrutinee, arms, ..
            } => self.match_stmt(scrutinee, arms),
            Stmt::For { var, iter, body } => {
                let t = self
                    .agent
                    .binding_types
                    .get(&var.span)
                    .cloned()
                    .unwrap_or(Type::Unknown);
                let it = self.value(iter);
                self.scopes.push(HashMap::from([(var.name.clone(), t)]));
                let b = self.block(body);
                self.scopes.pop();
                let v = ident(&var.name);
                quote!(for #v in #it #b)
            }
            Stmt::Send {
                target, message, ..
            } => {
                let m = self.value(message);
                let to = ident(&target.name);
                quote!(ctx.send(&self.#to, #m);)
            }
            Stmt::Reply { message, .. } => {
                let m = self.value(message);
                quote!(ctx.reply(#m);)
            }
            Stmt::Finish(_) => quote!(ctx.finish();),
            Stmt::Print(args) => {
                let args: Vec<&Expr> = args.iter().collect();
                let (fmt, values) = self.format_args(&args, " ");
                quote!(ctx.print(format!(#fmt #(, #values)*));)
            }
        }
    }

    /// A format string and its arguments; string literals go into the format string itself.
    fn format_args(&mut self, args: &[&Expr], sep: &str) -> (String, Vec<TokenStream>) {
        let mut fmt = Vec::new();
        let mut values = Vec::new();
        for a in args {
            if let ExprKind::Literal(Literal::String(s)) = &a.kind {
                fmt.push(s.replace('{', "{{").replace('}', "}}"));
                continue;
            }
            let t = self.ty(a);
            fmt.push(
                if matches!(
                    t,
                    Type::String | Type::Int(_) | Type::IntLiteral | Type::Bool
                ) {
                    "{}"
                } else {
                    "{:?}"
                }
                .to_string(),
            );
            // `me()` and `sender()` are `&str` already: formatting needs no `String`.
            values.push(match &a.kind {
                ExprKind::Call(name, args) if args.is_empty() && name.name == "me" => {
                    quote!(ctx.identity())
                }
                ExprKind::Call(name, args) if args.is_empty() && name.name == "sender" => {
                    quote!(ctx.sender())
                }
                _ => self.place_or_value(a),
            });
        }
        (fmt.join(sep), values)
    }

    fn match_stmt(&mut self, scrutinee: &Expr, arms: &[MatchArm]) -> TokenStream {
        let t = self.ty(scrutinee);
        let s = match &scrutinee.kind {
            // `match none { .. }`, `match some(5) { .. }`: Rust needs the option's type.
            ExprKind::None | ExprKind::Some(_) => self.place_or_value(scrutinee),
            _ => self.value(scrutinee),
        };
        let mut exhaustive = false;
        let mut has_none = false;
        let mut has_some_all = false;
        let (mut has_true, mut has_false) = (false, false);
        let mut out = Vec::new();
        for arm in arms {
            self.scopes.push(HashMap::new());
            let mut guards = Vec::new();
            let pat = self.pattern(&arm.pattern, &t, &mut guards);
            let body = self.block(&arm.body);
            self.scopes.pop();
            if guards.is_empty() {
                match &arm.pattern {
                    Pattern::Wildcard(_) | Pattern::Bind(_) => exhaustive = true,
                    Pattern::None(_) => has_none = true,
                    Pattern::Some(inner, _)
                        if matches!(**inner, Pattern::Wildcard(_) | Pattern::Bind(_)) =>
                    {
                        has_some_all = true
                    }
                    Pattern::Literal(Literal::Bool(true), _) => has_true = true,
                    Pattern::Literal(Literal::Bool(false), _) => has_false = true,
                    _ => {}
                }
            }
            let guard = if guards.is_empty() {
                quote!()
            } else {
                quote!(if #(#guards)&&*)
            };
            out.push(quote!(#pat #guard => #body));
            if exhaustive {
                break; // later arms cannot match
            }
        }
        if !(exhaustive || (has_none && has_some_all) || (has_true && has_false)) {
            out.push(quote!(_ => {}));
        }
        quote!(match #s { #(#out)* })
    }

    fn pattern(&mut self, p: &Pattern, t: &Type, guards: &mut Vec<TokenStream>) -> TokenStream {
        match p {
            Pattern::Wildcard(_) => quote!(_),
            Pattern::Bind(n) => {
                self.scopes
                    .last_mut()
                    .expect("scope")
                    .insert(n.name.clone(), t.clone());
                let i = ident(&n.name);
                quote!(#i)
            }
            Pattern::None(_) => quote!(None),
            Pattern::Some(inner, _) => {
                let it = match t {
                    Type::Option(i) => i.as_ref().clone(),
                    _ => Type::Unknown,
                };
                let i = self.pattern(inner, &it, guards);
                quote!(Some(#i))
            }
            Pattern::Literal(Literal::String(s), _) => {
                // A String cannot be matched against a literal: bind it and compare.
                let b = format_ident!("text{}", self.fresh);
                self.fresh += 1;
                guards.push(quote!(#b == #s));
                quote!(#b)
            }
            Pattern::Literal(Literal::Int(v), _) => {
                let lit = proc_macro2::Literal::i128_unsuffixed(*v);
                quote!(#lit)
            }
            Pattern::Literal(Literal::Bool(b), _) => quote!(#b),
        }
    }

    /// The Rust place a name denotes: a local, the message, or `self.field`.
    fn name_place(&self, name: &str) -> TokenStream {
        let i = ident(name);
        if self.local(name).is_none() && self.state.contains(name) {
            quote!(self.#i)
        } else {
            quote!(#i)
        }
    }

    /// A place expression (no clone) if `e` is a name or a field path, else its value.
    /// A place, or a value that methods can be called on (a literal gets its type).
    fn place_or_value(&mut self, e: &Expr) -> TokenStream {
        let t = self.ty(e);
        if let Some(v) = literal_value(e) {
            return typed_literal(wrap(v, &t), Some(&t));
        }
        if let Some(p) = self.place(e) {
            return p;
        }
        match (&e.kind, &t) {
            // A method needs the option's type: `None::<i64>`, `Some(8i64)`.
            (ExprKind::None, Type::Option(inner)) => {
                // Nothing says what a bare `none` holds: any type does, the integer one will.
                let inner = match **inner {
                    Type::Unknown | Type::IntLiteral => quote!(i64),
                    ref t => rust_type(t),
                };
                quote!(None::<#inner>)
            }
            (ExprKind::Some(inner), Type::Option(it)) if literal_value(inner).is_some() => {
                let v = literal_value(inner).map_or(0, |v| wrap(v, it));
                let lit = typed_argument(v, it);
                quote!(Some(#lit))
            }
            // `[2, 5].first()`: the first element says the list's type.
            (ExprKind::List(items), Type::List(it))
                if items.first().is_some_and(|i| literal_value(i).is_some()) =>
            {
                let first = literal_value(&items[0]).map_or(0, |v| wrap(v, it));
                let first = typed_argument(first, it);
                let rest: Vec<TokenStream> = items[1..].iter().map(|i| self.value(i)).collect();
                quote!(vec![#first #(, #rest)*])
            }
            // `!b` and comparisons bind looser than a method call.
            (ExprKind::Unary(UnOp::Not, _), _) => {
                let v = self.value(e);
                quote!((#v))
            }
            _ => self.operand(e),
        }
    }

    fn place(&self, e: &Expr) -> Option<TokenStream> {
        match &e.kind {
            ExprKind::Name(n) => Some(self.name_place(&n.name)),
            ExprKind::Field(base, f) => {
                let b = self.place(base)?;
                let f = ident(&f.name);
                Some(quote!(#b.#f))
            }
            _ => None,
        }
    }

    /// `&place`, or `&(value)` for a computed value.
    fn reference(&mut self, e: &Expr) -> TokenStream {
        match self.place(e) {
            Some(p) => quote!(&#p),
            None => {
                let v = self.value(e);
                quote!(&#v)
            }
        }
    }

    /// An owned value.
    fn value(&mut self, e: &Expr) -> TokenStream {
        let t = self.ty(e);
        if let Some(p) = self.place(e) {
            return if is_copy(&t) { p } else { quote!(#p.clone()) };
        }
        // Integer arithmetic on literals alone is computed here: Rust cannot call
        // `wrapping_add` on a literal whose type it has not inferred yet.
        if !matches!(e.kind, ExprKind::Literal(_))
            && let Some(v) = literal_value(e)
        {
            return typed_literal(wrap(v, &t), None);
        }
        match &e.kind {
            ExprKind::Literal(Literal::String(s)) => quote!(#s.to_string()),
            ExprKind::Literal(Literal::Int(v)) => {
                let lit = proc_macro2::Literal::i128_unsuffixed(*v);
                quote!(#lit)
            }
            ExprKind::Literal(Literal::Bool(b)) => quote!(#b),
            ExprKind::None => quote!(None),
            ExprKind::Some(inner) => {
                let v = self.value(inner);
                quote!(Some(#v))
            }
            ExprKind::Name(_) | ExprKind::Field(..) => unreachable!("places are handled above"),
            ExprKind::Record(name, fields) => {
                let n = message_ident(&name.name);
                let fs: Vec<TokenStream> = fields
                    .iter()
                    .map(|(f, v)| {
                        let fi = ident(&f.name);
                        let shorthand = matches!(&v.kind, ExprKind::Name(n) if n.name == f.name)
                            && self.local(&f.name).is_some();
                        let val = self.value(v);
                        if shorthand && is_copy(&self.ty(v)) {
                            quote!(#fi)
                        } else {
                            quote!(#fi: #val)
                        }
                    })
                    .collect();
                quote!(#n { #(#fs),* })
            }
            ExprKind::List(items) => {
                let vs: Vec<TokenStream> = items.iter().map(|i| self.value(i)).collect();
                quote!(vec![#(#vs),*])
            }
            ExprKind::Unary(UnOp::Not, inner) => {
                let v = self.operand(inner);
                quote!(!#v)
            }
            ExprKind::Unary(UnOp::Neg, inner) => {
                let v = self.operand(inner);
                quote!(#v.wrapping_neg())
            }
            ExprKind::Binary(op, l, r) => self.binary(*op, l, r),
            ExprKind::Call(f, args) => self.call(f, args),
            ExprKind::Method(recv, m, args) => self.method(recv, m, args),
        }
    }

    /// A value as the operand of an operator: comparisons and logic in parentheses
    /// (arithmetic is a method call chain, string `+` a `format!`, neither needs them).
    fn operand(&mut self, e: &Expr) -> TokenStream {
        let v = self.value(e);
        let arithmetic = |op: &BinOp| {
            matches!(
                op,
                BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem
            )
        };
        match &e.kind {
            ExprKind::Binary(op, ..) if !arithmetic(op) => quote!((#v)),
            _ => v,
        }
    }

    /// The operands of a chain of string `+`, left to right.
    fn concatenated<'e>(&mut self, e: &'e Expr, out: &mut Vec<&'e Expr>) {
        match &e.kind {
            ExprKind::Binary(BinOp::Add, l, r) if self.ty(l) == Type::String => {
                self.concatenated(l, out);
                self.concatenated(r, out);
            }
            _ => out.push(e),
        }
    }

    fn binary(&mut self, op: BinOp, l: &Expr, r: &Expr) -> TokenStream {
        let lt = self.ty(l);
        if op == BinOp::Add && lt == Type::String {
            // `a + b + c` is one `format!`, not one per `+`.
            let mut parts = Vec::new();
            self.concatenated(l, &mut parts);
            self.concatenated(r, &mut parts);
            let (fmt, values) = self.format_args(&parts, "");
            return quote!(format!(#fmt #(, #values)*));
        }
        let arithmetic = matches!(
            op,
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem
        );
        let (a, b) = if arithmetic {
            // A method call: the receiver is a call chain or a place, the other side an
            // argument, so neither needs parentheses; but a literal receiver needs its type
            // spelled out (the other side's).
            let a = match literal_value(l) {
                Some(v) if matches!(self.ty(r), Type::Int(_)) => {
                    typed_literal(wrap(v, &self.ty(r)), Some(&self.ty(r)))
                }
                Some(v) => typed_literal(v, Some(&Type::IntLiteral)),
                None => self.value(l),
            };
            (a, self.value(r))
        } else {
            (self.operand(l), self.operand(r))
        };
        match op {
            BinOp::Add => quote!(#a.wrapping_add(#b)),
            BinOp::Sub => quote!(#a.wrapping_sub(#b)),
            BinOp::Mul => quote!(#a.wrapping_mul(#b)),
            BinOp::Div => quote!(#a.checked_div(#b).unwrap_or(0)),
            BinOp::Rem => quote!(#a.checked_rem(#b).unwrap_or(0)),
            BinOp::And => quote!(#a && #b),
            BinOp::Or => quote!(#a || #b),
            BinOp::Eq => quote!(#a == #b),
            BinOp::Ne => quote!(#a != #b),
            BinOp::Lt => quote!(#a < #b),
            BinOp::Le => quote!(#a <= #b),
            BinOp::Gt => quote!(#a > #b),
            BinOp::Ge => quote!(#a >= #b),
        }
    }

    fn call(&mut self, f: &Ident, args: &[Expr]) -> TokenStream {
        let vs: Vec<TokenStream> = args.iter().map(|a| self.value(a)).collect();
        match (f.name.as_str(), vs.as_slice()) {
            ("now", []) => quote!(ctx.now_millis()),
            ("random", [n]) => quote!(ctx.random_below(#n)),
            ("str", [_]) => {
                let p = self.place_or_value(&args[0]);
                quote!(#p.to_string())
            }
            ("min" | "max", [a, b]) => {
                let m = format_ident!("{}", f.name);
                // A literal receiver needs its type spelled out: the other argument's.
                let a = match literal_value(&args[0]) {
                    Some(v) => typed_literal(wrap(v, &self.ty(&args[1])), Some(&self.ty(&args[1]))),
                    None => a.clone(),
                };
                quote!(#a.#m(#b))
            }
            ("sender", []) => quote!(ctx.sender().to_string()),
            // What the agent stands for, not which copy of it runs (docs/language.md).
            ("me", []) => quote!(ctx.identity().to_string()),
            _ => unreachable!("the checker admits only known builtins"),
        }
    }

    fn method(&mut self, recv: &Expr, m: &Ident, args: &[Expr]) -> TokenStream {
        let rt = self.ty(recv);
        let r = self.place_or_value(recv);
        let name = m.name.as_str();
        let mut arg = |i: usize| self.value(&args[i]);
        match (&rt, name) {
            // A call, not a cast: it stands as a receiver or an argument without parentheses.
            (_, "len") => quote!(i64::try_from(#r.len()).unwrap_or(i64::MAX)),
            (_, "is_empty") => quote!(#r.is_empty()),
            (Type::String, "contains" | "starts_with" | "ends_with") => {
                let f = format_ident!("{}", name);
                let a = self.reference(&args[0]);
                quote!(#r.#f(#a.as_str()))
            }
            (Type::String, "to_upper") => quote!(#r.to_uppercase()),
            (Type::String, "to_lower") => quote!(#r.to_lowercase()),
            (Type::String, "trim") => quote!(#r.trim().to_string()),
            (Type::Int(IntTy::U8 | IntTy::U16 | IntTy::U32 | IntTy::U64), "abs") => quote!(#r),
            (_, "abs") => quote!(#r.wrapping_abs()),
            (_, "is_some") => quote!(#r.is_some()),
            (_, "is_none") => quote!(#r.is_none()),
            (_, "unwrap_or") => {
                let d = arg(0);
                quote!(#r.clone().unwrap_or(#d))
            }
            (Type::List(_), "get") => {
                let i = arg(0);
                quote!(usize::try_from(#i).ok().and_then(|i| #r.get(i)).cloned())
            }
            (Type::List(_), "contains") => {
                let a = self.reference(&args[0]);
                quote!(#r.contains(#a))
            }
            (Type::List(_), "first") => quote!(#r.first().cloned()),
            (Type::List(_), "last") => quote!(#r.last().cloned()),
            (Type::List(_), "push") => {
                let a = arg(0);
                quote!(#r.push(#a))
            }
            (Type::List(_), "pop") => quote!(#r.pop()),
            (_, "clear") => quote!(#r.clear()),
            (Type::Map(..), "get") => {
                let k = self.reference(&args[0]);
                quote!(#r.get(#k).cloned())
            }
            (Type::Map(..), "contains_key") => {
                let k = self.reference(&args[0]);
                quote!(#r.contains_key(#k))
            }
            (Type::Map(..), "insert") => {
                let (k, v) = (arg(0), arg(1));
                quote!(#r.insert(#k, #v))
            }
            (Type::Map(..), "remove") => {
                let k = self.reference(&args[0]);
                quote!(#r.remove(#k))
            }
            (Type::Map(..), "keys") => quote!(#r.keys().cloned().collect::<Vec<_>>()),
            (Type::Map(..), "values") => quote!(#r.values().cloned().collect::<Vec<_>>()),
            _ => unreachable!("the checker admits only known methods"),
        }
    }
}

/// Whether a later statement assigns to, or mutates through a method, the local `name`.
fn mutated(name: &str, stmts: &[Stmt]) -> bool {
    stmts.iter().any(|s| stmt_mutates(name, s))
}

fn stmt_mutates(name: &str, s: &Stmt) -> bool {
    let block = |b: &Block| {
        // A `let` of the same name shadows it for the rest of that block.
        for s in &b.stmts {
            if let Stmt::Let { name: n, value, .. } = s {
                if expr_mutates(name, value) {
                    return true;
                }
                if n.name == name {
                    return false;
                }
            } else if stmt_mutates(name, s) {
                return true;
            }
        }
        false
    };
    match s {
        Stmt::Let { value, .. } => expr_mutates(name, value),
        Stmt::Assign { target, value } => target.name == name || expr_mutates(name, value),
        Stmt::Expr(e) => expr_mutates(name, e),
        Stmt::If {
            cond,
            then,
            otherwise,
        } => expr_mutates(name, cond) || block(then) || otherwise.as_ref().is_some_and(block),
        Stmt::Match {
            scrutinee, arms, ..
        } => expr_mutates(name, scrutinee) || arms.iter().any(|a| block(&a.body)),
        Stmt::For { iter, body, var } => {
            expr_mutates(name, iter) || (var.name != name && block(body))
        }
        Stmt::Send { message, .. } | Stmt::Reply { message, .. } => expr_mutates(name, message),
        Stmt::Print(args) => args.iter().any(|a| expr_mutates(name, a)),
        Stmt::Finish(_) => false,
    }
}

fn expr_mutates(name: &str, e: &Expr) -> bool {
    match &e.kind {
        ExprKind::Method(recv, m, args) => {
            let direct = matches!(&recv.kind, ExprKind::Name(n) if n.name == name)
                && matches!(
                    m.name.as_str(),
                    "insert" | "remove" | "push" | "pop" | "clear"
                );
            direct || expr_mutates(name, recv) || args.iter().any(|a| expr_mutates(name, a))
        }
        ExprKind::Some(i) | ExprKind::Unary(_, i) | ExprKind::Field(i, _) => expr_mutates(name, i),
        ExprKind::Binary(_, a, b) => expr_mutates(name, a) || expr_mutates(name, b),
        ExprKind::Call(_, args) | ExprKind::List(args) => {
            args.iter().any(|a| expr_mutates(name, a))
        }
        ExprKind::Record(_, fields) => fields.iter().any(|(_, v)| expr_mutates(name, v)),
        ExprKind::Literal(_) | ExprKind::None | ExprKind::Name(_) => false,
    }
}

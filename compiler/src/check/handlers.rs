//! Type-checks the handlers of one agent and records what the later checks need: what is sent
//! through each `uses` identifier, what makes the agent nondeterministic, and how state maps
//! are indexed (for `shard`).

use std::collections::{BTreeMap, HashMap};

use super::types::{IntTy, Type};
use crate::diagnostic::{Code, Diagnostic};
use crate::syntax::ast::*;

/// How a handler touched a state map, for the `shard` precondition.
#[derive(Debug, Clone)]
pub struct StateAccess {
    /// The state field.
    pub field: String,
    /// `Some(f)` when indexed by field `f` of the handler's own message; `None` when the access
    /// spans keys (`len()`, `keys()`, iteration, whole-map use) or uses any other key.
    pub key_field: Option<String>,
    /// Where.
    pub span: Span,
}

/// What checking an agent's handlers found out.
#[derive(Debug, Default)]
pub struct Facts {
    /// `uses` identifier → messages sent through it, with where.
    pub sends: BTreeMap<String, Vec<(String, Span)>>,
    /// The first use of a nondeterministic builtin, if any.
    pub nondeterminism: Option<(Span, String)>,
    /// Every access to a state field declared `by` a key.
    pub state_accesses: Vec<StateAccess>,
    /// The type of every expression, by its span; code generation reads it.
    pub expr_types: HashMap<Span, Type>,
    /// The type of every `let` binding and `for` variable, by the span of its name.
    pub binding_types: HashMap<Span, Type>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum VarKind {
    Local,
    Message,
    State,
}

/// The tables a handler is checked against.
pub struct Env<'a> {
    /// Declared messages.
    pub messages: &'a BTreeMap<String, Vec<(String, Type)>>,
    /// The agent's state: name → (type, keyed by).
    pub state: &'a [(String, Type, Option<String>)],
    /// The agent's `uses` identifiers.
    pub uses: &'a [String],
    /// Accepted message → declared reply.
    pub accepts: &'a BTreeMap<String, Option<String>>,
}

struct Checker<'a, 'e> {
    env: &'e Env<'a>,
    scopes: Vec<HashMap<String, (Type, VarKind)>>,
    /// The message being handled: (message type, binding), `None` in `on start` and in
    /// state initial values.
    current: Option<(String, String)>,
    /// Whether this is a state field's initial value rather than a handler.
    in_init: bool,
    facts: &'e mut Facts,
    out: &'e mut Vec<Diagnostic>,
}

/// Checks one handler, adding to `facts` and reporting into `out`.
pub fn check_handler(env: &Env, handler: &Handler, facts: &mut Facts, out: &mut Vec<Diagnostic>) {
    let mut scope = HashMap::new();
    for (name, ty, _) in env.state {
        scope.insert(name.clone(), (ty.clone(), VarKind::State));
    }
    let current = match &handler.trigger {
        Trigger::Start => None,
        Trigger::Message { message, binding } => {
            let ty = if env.messages.contains_key(&message.name) {
                Type::Message(message.name.clone())
            } else {
                Type::Unknown
            };
            scope.insert(binding.name.clone(), (ty, VarKind::Message));
            Some((message.name.clone(), binding.name.clone()))
        }
    };
    let mut c = Checker {
        env,
        scopes: vec![scope],
        current,
        in_init: false,
        facts,
        out,
    };
    c.block(&handler.body);
    c.check_literals_in_block(&handler.body);
}

/// Type-checks a state field's initial value, which may use literals and builtins only.
pub fn check_init(env: &Env, expr: &Expr, ty: &Type, facts: &mut Facts, out: &mut Vec<Diagnostic>) {
    let mut c = Checker {
        env,
        scopes: vec![HashMap::new()],
        current: None,
        in_init: true,
        facts,
        out,
    };
    let got = c.expr(expr, Some(ty));
    c.expect(ty, &got, expr.span);
    c.check_literals(expr);
}

impl Checker<'_, '_> {
    fn error(&mut self, d: Diagnostic) {
        self.out.push(d);
    }

    fn expect(&mut self, expected: &Type, got: &Type, span: Span) {
        if !got.fits(expected) {
            self.error(
                Diagnostic::new(
                    Code::TypeMismatch,
                    format!("expected `{expected}`, found `{got}`"),
                    span,
                    format!("this is `{got}`"),
                )
                .help(format!("use a value of type `{expected}` here")),
            );
        }
    }

    fn lookup(&self, name: &str) -> Option<(Type, VarKind)> {
        self.scopes.iter().rev().find_map(|s| s.get(name).cloned())
    }

    fn bind(&mut self, name: &str, ty: Type) {
        self.scopes
            .last_mut()
            .expect("a scope is open")
            .insert(name.to_string(), (ty, VarKind::Local));
    }

    fn block(&mut self, b: &Block) {
        self.scopes.push(HashMap::new());
        for s in &b.stmts {
            self.stmt(s);
        }
        self.scopes.pop();
    }

    fn stmt(&mut self, s: &Stmt) {
        match s {
            Stmt::Let { name, ty, value } => {
                let declared = ty
                    .as_ref()
                    .map(|t| super::types::resolve(t, self.env.messages, self.out));
                let got = self.expr(value, declared.as_ref());
                let bound = match declared {
                    Some(d) => {
                        self.expect(&d, &got, value.span);
                        d
                    }
                    None if got == Type::IntLiteral => Type::Int(IntTy::Int),
                    None if undetermined(value) => {
                        // `[]` and `none` take their type from the context, and a `let` without
                        // a type gives none.
                        // `_` is how an unknown part displays; no type name contains it.
                        let (shape, example) = (
                            got.to_string().replace('_', "T"),
                            got.to_string().replace('_', "String"),
                        );
                        self.error(
                            Diagnostic::new(
                                Code::NeedsAnnotation,
                                format!("the type of `{}` is unknown", name.name),
                                value.span,
                                format!("`{shape}` with `T` unknown"),
                            )
                            .help(format!(
                                "write the type: `let {}: {example} = ..;`",
                                name.name
                            )),
                        );
                        Type::Unknown
                    }
                    None => got,
                };
                self.facts.binding_types.insert(name.span, bound.clone());
                self.bind(&name.name, bound);
            }
            Stmt::Assign { target, value } => match self.lookup(&target.name) {
                Some((ty, VarKind::Local | VarKind::State)) => {
                    self.note_whole_state_use(&target.name, target.span);
                    let got = self.expr(value, Some(&ty));
                    self.expect(&ty, &got, value.span);
                }
                Some((_, VarKind::Message)) => {
                    self.error(
                        Diagnostic::new(
                            Code::NotAssignable,
                            format!("cannot assign to the message `{}`", target.name),
                            target.span,
                            "the received message is read-only",
                        )
                        .help("copy what you need into a `let` binding or a state field"),
                    );
                    self.expr(value, None);
                }
                None => {
                    self.unknown_variable(&target.name, target.span);
                    self.expr(value, None);
                }
            },
            Stmt::Expr(e) => {
                if !matches!(e.kind, ExprKind::Method(..) | ExprKind::Call(..)) {
                    self.error(
                        Diagnostic::new(Code::TypeMismatch, "this expression does nothing", e.span, "its value is unused")
                            .help("bind it with `let`, or call a mutating method such as `insert` or `push`"),
                    );
                }
                self.expr(e, None);
            }
            Stmt::If { .. } => {
                for (cond, then, last) in if_chain(s) {
                    let t = self.expr(cond, Some(&Type::Bool));
                    self.expect(&Type::Bool, &t, cond.span);
                    self.block(then);
                    if let Some(o) = last {
                        self.block(o);
                    }
                }
            }
            Stmt::Match {
                scrutinee, arms, ..
            } => {
                let t = self.expr(scrutinee, None);
                for arm in arms {
                    self.scopes.push(HashMap::new());
                    self.pattern(&arm.pattern, &t);
                    self.block(&arm.body);
                    self.scopes.pop();
                }
            }
            Stmt::For { var, iter, body } => {
                let t = self.expr(iter, None);
                let elem = match t {
                    Type::List(e) => *e,
                    Type::Unknown => Type::Unknown,
                    other => {
                        self.error(
                            Diagnostic::new(
                                Code::TypeMismatch,
                                format!("cannot iterate over `{other}`"),
                                iter.span,
                                "not a list",
                            )
                            .help(
                                "`for` walks a List; for a map, iterate `m.keys()` or `m.values()`",
                            ),
                        );
                        Type::Unknown
                    }
                };
                self.scopes.push(HashMap::new());
                self.facts.binding_types.insert(var.span, elem.clone());
                self.bind(&var.name, elem);
                self.block(body);
                self.scopes.pop();
            }
            Stmt::Send {
                target,
                message,
                span,
            } => {
                let t = self.expr(message, None);
                if !self.env.uses.contains(&target.name) {
                    let help = if self.env.uses.is_empty() {
                        format!(
                            "declare it with `uses {};` in the agent, and bind it in the system",
                            target.name
                        )
                    } else {
                        format!(
                            "this agent uses {}; add `{}` to its `uses`",
                            list(self.env.uses),
                            target.name
                        )
                    };
                    self.error(
                        Diagnostic::new(
                            Code::SendTarget,
                            format!("`{}` is not an identifier this agent uses", target.name),
                            target.span,
                            "not in `uses`",
                        )
                        .help(help),
                    );
                } else if let Type::Message(m) = t {
                    self.facts
                        .sends
                        .entry(target.name.clone())
                        .or_default()
                        .push((m, *span));
                }
            }
            Stmt::Reply { message, span } => {
                let current = self.current.clone();
                let expected = match &current {
                    Some((m, _)) => match self.env.accepts.get(m) {
                        Some(Some(reply)) => Some(reply.clone()),
                        Some(None) => {
                            let got = self.expr(message, None);
                            self.error(
                                Diagnostic::new(
                                    Code::ReplyType,
                                    format!("`{m}` declares no reply"),
                                    *span,
                                    format!("replies with `{got}`"),
                                )
                                .help(format!("declare the reply: `accepts {m} -> {got};`")),
                            );
                            return;
                        }
                        None => {
                            self.expr(message, None);
                            self.error(
                                Diagnostic::new(Code::ReplyOutsideHandler, format!("`{m}` is not a request this agent accepts"), *span, "nothing to reply to")
                                    .help(format!("only handlers of accepted messages reply; to answer `{m}`, declare `accepts {m} -> ..;`")),
                            );
                            return;
                        }
                    },
                    None => {
                        self.expr(message, None);
                        self.error(
                            Diagnostic::new(
                                Code::ReplyOutsideHandler,
                                "`reply` in `on start`",
                                *span,
                                "there is no request to reply to",
                            )
                            .help("use `send` to message another agent from `on start`"),
                        );
                        return;
                    }
                };
                let expected_ty = expected.map(Type::Message);
                let got = self.expr(message, expected_ty.as_ref());
                if let Some(e) = expected_ty
                    && !got.fits(&e)
                {
                    let m = self
                        .current
                        .as_ref()
                        .map(|(m, _)| m.clone())
                        .unwrap_or_default();
                    self.error(
                        Diagnostic::new(Code::ReplyType, format!("`{m}` is answered with `{e}`, not `{got}`"), message.span, format!("this is `{got}`"))
                            .help(format!("reply `{e} {{ .. }}`, or change the declaration `accepts {m} -> {got};`")),
                    );
                }
            }
            Stmt::Finish(_) => {}
            Stmt::Print(args) => {
                for a in args {
                    self.expr(a, None);
                }
            }
        }
    }

    fn pattern(&mut self, p: &Pattern, t: &Type) {
        match p {
            Pattern::Wildcard(_) => {}
            Pattern::Bind(name) => {
                self.facts.binding_types.insert(name.span, t.clone());
                self.bind(&name.name, t.clone());
            }
            Pattern::None(span) => {
                if !matches!(t, Type::Option(_) | Type::Unknown) {
                    self.pattern_mismatch(*span, "none", t);
                }
            }
            Pattern::Some(inner, span) => match t {
                Type::Option(i) => self.pattern(inner, i),
                Type::Unknown => self.pattern(inner, &Type::Unknown),
                _ => {
                    self.pattern_mismatch(*span, "some(..)", t);
                    self.pattern(inner, &Type::Unknown);
                }
            },
            Pattern::Literal(l, span) => {
                let lt = literal_type(l);
                if !lt.fits(t) {
                    self.pattern_mismatch(*span, &lt.to_string(), t);
                } else if let (Literal::Int(v), Type::Int(it)) = (l, t) {
                    let (lo, hi) = it.range();
                    if !(lo..=hi).contains(v) {
                        self.error(
                            Diagnostic::new(
                                Code::TypeMismatch,
                                format!("{v} does not fit in `{}`", it.name()),
                                *span,
                                "no value matches",
                            )
                            .help(format!(
                                "the value is a `{}`, which holds {lo} to {hi}",
                                it.name()
                            )),
                        );
                    }
                }
            }
        }
    }

    /// Checks every integer literal against the type it ended up with (recorded by `expr`
    /// and `settle`): a literal without a context is an `Int`.
    fn check_literals_in_block(&mut self, b: &Block) {
        for s in &b.stmts {
            match s {
                Stmt::Let { value, .. } | Stmt::Assign { value, .. } | Stmt::Expr(value) => {
                    self.check_literals(value)
                }
                Stmt::If { .. } => {
                    for (cond, then, last) in if_chain(s) {
                        self.check_literals(cond);
                        self.check_literals_in_block(then);
                        if let Some(o) = last {
                            self.check_literals_in_block(o);
                        }
                    }
                }
                Stmt::Match {
                    scrutinee, arms, ..
                } => {
                    self.check_literals(scrutinee);
                    for arm in arms {
                        self.check_literals_in_block(&arm.body);
                    }
                }
                Stmt::For { iter, body, .. } => {
                    self.check_literals(iter);
                    self.check_literals_in_block(body);
                }
                Stmt::Send { message, .. } | Stmt::Reply { message, .. } => {
                    self.check_literals(message)
                }
                Stmt::Finish(_) => {}
                Stmt::Print(args) => {
                    for a in args {
                        self.check_literals(a);
                    }
                }
            }
        }
    }

    fn check_literals(&mut self, e: &Expr) {
        match &e.kind {
            ExprKind::Literal(Literal::Int(v)) => {
                self.check_literal(*v, e.span, e.span);
            }
            ExprKind::Unary(UnOp::Neg, _) if negated_literal(e).is_some() => {
                // `-5` is the negation of the literal `5`: the literal must fit its type (the
                // generated code spells it), and so must the negative value.
                let (literal, negations) = negated_literal(e).expect("checked by the guard");
                let ExprKind::Literal(Literal::Int(v)) = literal.kind else {
                    unreachable!("negated_literal returns a literal")
                };
                if self.check_literal(v, literal.span, literal.span) {
                    let value = if negations % 2 == 1 { -v } else { v };
                    self.check_literal(value, e.span, literal.span);
                }
            }
            ExprKind::Literal(_) | ExprKind::None | ExprKind::Name(_) => {}
            ExprKind::Some(inner) | ExprKind::Field(inner, _) | ExprKind::Unary(_, inner) => {
                self.check_literals(inner)
            }
            ExprKind::Method(recv, _, args) => {
                self.check_literals(recv);
                for a in args {
                    self.check_literals(a);
                }
            }
            ExprKind::Call(_, args) | ExprKind::List(args) => {
                for a in args {
                    self.check_literals(a);
                }
            }
            ExprKind::Record(_, fields) => {
                for (_, v) in fields {
                    self.check_literals(v);
                }
            }
            ExprKind::Binary(_, l, r) => {
                self.check_literals(l);
                self.check_literals(r);
            }
        }
    }

    /// Reports `value` (written at `span`) if it does not fit the integer type recorded for
    /// the expression at `typed`; whether it fits.
    fn check_literal(&mut self, value: i128, span: Span, typed: Span) -> bool {
        let Some(Type::Int(it)) = self.facts.expr_types.get(&typed).cloned() else {
            return true;
        };
        let (lo, hi) = it.range();
        if (lo..=hi).contains(&value) {
            return true;
        }
        let name = it.name();
        let (message, label, help) = if value < 0 && lo == 0 {
            (
                format!("{value} does not fit in `{name}`"),
                "negative".to_string(),
                format!("`{name}` is unsigned: it holds 0 to {hi}"),
            )
        } else {
            // The lexer saturates absurdly long literals at the largest i128.
            let shown = if value.unsigned_abs() == i128::MAX.unsigned_abs() {
                "this literal".to_string()
            } else {
                value.to_string()
            };
            let wider = if matches!(it, IntTy::Int | IntTy::I64)
                && (0..=i128::from(u64::MAX)).contains(&value)
            {
                format!("; `U64` holds 0 to {}", u64::MAX)
            } else {
                String::new()
            };
            (
                format!("{shown} does not fit in `{name}`"),
                "out of range".to_string(),
                format!("`{name}` holds {lo} to {hi}{wider}"),
            )
        };
        self.error(Diagnostic::new(Code::TypeMismatch, message, span, label).help(help));
        false
    }

    fn pattern_mismatch(&mut self, span: Span, what: &str, t: &Type) {
        self.error(
            Diagnostic::new(
                Code::TypeMismatch,
                format!("a `{what}` pattern cannot match a `{t}`"),
                span,
                format!("the value is `{t}`"),
            )
            .help("patterns are `_`, a name, a literal, `none` or `some(p)` for an Option"),
        );
    }

    fn unknown_variable(&mut self, name: &str, span: Span) {
        let mut names: Vec<String> = self.scopes.iter().flat_map(|s| s.keys().cloned()).collect();
        names.sort();
        names.dedup();
        let help = match closest(name, names.iter().map(String::as_str)) {
            Some(c) => format!("did you mean `{c}`?"),
            None if names.is_empty() => {
                "declare it with `let`, or as a `state` field of the agent".to_string()
            }
            None => format!("names in scope here: {}", list(&names)),
        };
        self.error(
            Diagnostic::new(
                Code::UnknownVariable,
                format!("unknown name `{name}`"),
                span,
                "not in scope",
            )
            .help(help),
        );
    }

    /// Records that a keyed state map is used as a whole (not through one key).
    fn note_whole_state_use(&mut self, name: &str, span: Span) {
        if let Some((_, VarKind::State)) = self.lookup(name)
            && self
                .env
                .state
                .iter()
                .any(|(n, _, k)| n == name && k.is_some())
        {
            self.facts.state_accesses.push(StateAccess {
                field: name.to_string(),
                key_field: None,
                span,
            });
        }
    }

    fn expr(&mut self, e: &Expr, expected: Option<&Type>) -> Type {
        let t = self.expr_kind(e, expected);
        // A literal takes the type the context expects, so generated code can spell it and
        // its range can be checked; without one it is an `Int` unless a parent settles it.
        match (&t, expected) {
            (Type::IntLiteral, Some(x @ Type::Int(_))) => self.settle(e, x),
            (Type::IntLiteral, _) => {
                self.facts.expr_types.insert(e.span, Type::Int(IntTy::Int));
            }
            _ => {
                self.facts.expr_types.insert(e.span, t.clone());
            }
        }
        t
    }

    /// Gives an integer-literal expression (`1`, `-1`, `2 * 3`, `min(1, 2)`) and its literal
    /// parts the integer type `ty`, when the context decides it after the fact (`1 == m.u8`).
    fn settle_if_literal(&mut self, e: &Expr, got: &Type, ty: &Type) {
        if *got == Type::IntLiteral && matches!(ty, Type::Int(_)) {
            self.settle(e, ty);
        }
    }

    fn settle(&mut self, e: &Expr, ty: &Type) {
        self.facts.expr_types.insert(e.span, ty.clone());
        // Only parts that are themselves integer literals: an expression has the literal type
        // only when all of these parts have it.
        match &e.kind {
            ExprKind::Unary(UnOp::Neg, inner) => self.settle(inner, ty),
            ExprKind::Binary(
                BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem,
                l,
                r,
            ) => {
                self.settle(l, ty);
                self.settle(r, ty);
            }
            ExprKind::Method(recv, m, _) if m.name == "abs" => self.settle(recv, ty),
            ExprKind::Call(f, args) if matches!(f.name.as_str(), "min" | "max") => {
                for a in args {
                    self.settle(a, ty);
                }
            }
            _ => {}
        }
    }

    fn expr_kind(&mut self, e: &Expr, expected: Option<&Type>) -> Type {
        match &e.kind {
            // Range is checked by `check_literals`, once the literal's type is known.
            ExprKind::Literal(l) => literal_type(l),
            ExprKind::None => match expected {
                Some(t @ Type::Option(_)) => t.clone(),
                _ => Type::Option(Box::new(Type::Unknown)),
            },
            ExprKind::Some(inner) => {
                let want = match expected {
                    Some(Type::Option(t)) => Some(t.as_ref().clone()),
                    _ => None,
                };
                Type::Option(Box::new(self.expr(inner, want.as_ref())))
            }
            ExprKind::Name(n) => match self.lookup(&n.name) {
                Some((t, _)) => {
                    self.note_whole_state_use(&n.name, n.span);
                    t
                }
                None => {
                    self.unknown_variable(&n.name, n.span);
                    Type::Unknown
                }
            },
            ExprKind::Field(base, field) => {
                let t = self.expr(base, None);
                match &t {
                    Type::Message(m) => match self
                        .env
                        .messages
                        .get(m)
                        .and_then(|fs| fs.iter().find(|(f, _)| *f == field.name))
                    {
                        Some((_, ft)) => ft.clone(),
                        None => {
                            let fields: Vec<String> = self
                                .env
                                .messages
                                .get(m)
                                .map(|fs| fs.iter().map(|(f, _)| f.clone()).collect())
                                .unwrap_or_default();
                            let help = match closest(&field.name, fields.iter().map(String::as_str))
                            {
                                Some(c) => format!("did you mean `{c}`?"),
                                None if fields.is_empty() => format!("`{m}` has no fields"),
                                None => format!("`{m}` has fields {}", list(&fields)),
                            };
                            self.error(
                                Diagnostic::new(
                                    Code::UnknownField,
                                    format!("`{m}` has no field `{}`", field.name),
                                    field.span,
                                    "unknown field",
                                )
                                .help(help),
                            );
                            Type::Unknown
                        }
                    },
                    Type::Unknown => Type::Unknown,
                    other => {
                        self.error(
                            Diagnostic::new(
                                Code::UnknownField,
                                format!("`{other}` has no fields"),
                                field.span,
                                format!("`.{}` on a `{other}`", field.name),
                            )
                            .help("only messages have fields; call a method with `()`"),
                        );
                        Type::Unknown
                    }
                }
            }
            ExprKind::Method(recv, method, args) => self.method(e, recv, method, args),
            ExprKind::Call(f, args) => self.call(f, args),
            ExprKind::Record(name, fields) => self.record(e, name, fields),
            ExprKind::List(items) => {
                let mut elem = match expected {
                    Some(Type::List(t)) => t.as_ref().clone(),
                    _ => Type::Unknown,
                };
                let mut literals = Vec::new();
                for item in items {
                    let t = self.expr(item, Some(&elem));
                    if t == Type::IntLiteral {
                        literals.push(item);
                    }
                    if t.fits(&elem) {
                        elem = elem.join(&t);
                    } else {
                        self.expect(&elem, &t, item.span);
                    }
                }
                if elem == Type::IntLiteral {
                    elem = Type::Int(IntTy::Int);
                }
                for item in literals {
                    self.settle_if_literal(item, &Type::IntLiteral, &elem);
                }
                Type::List(Box::new(elem))
            }
            ExprKind::Unary(op, inner) => match op {
                UnOp::Not => {
                    let t = self.expr(inner, Some(&Type::Bool));
                    self.expect(&Type::Bool, &t, inner.span);
                    Type::Bool
                }
                UnOp::Neg => {
                    let t = self.expr(inner, expected);
                    if !t.is_int() {
                        self.expect(&Type::Int(IntTy::Int), &t, inner.span);
                    }
                    t
                }
            },
            ExprKind::Binary(op, l, r) => self.binary(e, *op, l, r, expected),
        }
    }

    fn binary(&mut self, e: &Expr, op: BinOp, l: &Expr, r: &Expr, expected: Option<&Type>) -> Type {
        match op {
            BinOp::And | BinOp::Or => {
                for side in [l, r] {
                    let t = self.expr(side, Some(&Type::Bool));
                    self.expect(&Type::Bool, &t, side.span);
                }
                Type::Bool
            }
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                let lt = self.expr(l, None);
                let rt = self.expr(r, Some(&lt));
                self.settle_if_literal(l, &lt, &rt);
                if !lt.fits(&rt) {
                    self.error(
                        Diagnostic::new(
                            Code::TypeMismatch,
                            format!("cannot compare `{lt}` with `{rt}`"),
                            e.span,
                            format!("`{lt}` {} `{rt}`", op.symbol()),
                        )
                        .help("both sides of a comparison have the same type"),
                    );
                } else if !matches!(op, BinOp::Eq | BinOp::Ne) && !lt.is_int() && lt != Type::String
                {
                    self.error(
                        Diagnostic::new(
                            Code::TypeMismatch,
                            format!("`{}` does not order `{lt}`", op.symbol()),
                            e.span,
                            "not ordered",
                        )
                        .help("`<`, `<=`, `>` and `>=` compare integers or strings"),
                    );
                }
                Type::Bool
            }
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem => {
                let lt = self.expr(l, expected);
                let rt = self.expr(r, Some(&lt));
                self.settle_if_literal(l, &lt, &rt);
                if op == BinOp::Add && lt == Type::String && rt == Type::String {
                    return Type::String;
                }
                if !(lt.is_int() && rt.is_int() && lt.fits(&rt)) {
                    let help = if op == BinOp::Add && (lt == Type::String || rt == Type::String) {
                        "`+` joins two Strings; turn a number into a String with `str(n)`"
                            .to_string()
                    } else {
                        "arithmetic takes two integers of the same type".to_string()
                    };
                    self.error(
                        Diagnostic::new(
                            Code::TypeMismatch,
                            format!("cannot apply `{}` to `{lt}` and `{rt}`", op.symbol()),
                            e.span,
                            format!("`{lt}` {} `{rt}`", op.symbol()),
                        )
                        .help(help),
                    );
                    return Type::Unknown;
                }
                lt.join(&rt)
            }
        }
    }

    fn record(&mut self, e: &Expr, name: &Ident, fields: &[(Ident, Expr)]) -> Type {
        let Some(decl) = self.env.messages.get(&name.name) else {
            let help = match closest(&name.name, self.env.messages.keys().map(String::as_str)) {
                Some(c) => format!("did you mean `{c}`?"),
                None => format!("declare it: `message {} {{ .. }}`", name.name),
            };
            self.error(
                Diagnostic::new(
                    Code::UnknownMessage,
                    format!("unknown message `{}`", name.name),
                    name.span,
                    "not a declared message",
                )
                .help(help),
            );
            for (_, v) in fields {
                self.expr(v, None);
            }
            return Type::Unknown;
        };
        let decl = decl.clone();
        let mut seen: Vec<&str> = Vec::new();
        for (f, v) in fields {
            match decl.iter().find(|(n, _)| *n == f.name) {
                Some((_, ft)) => {
                    if seen.contains(&f.name.as_str()) {
                        self.error(
                            Diagnostic::new(
                                Code::Duplicate,
                                format!("field `{}` given twice", f.name),
                                f.span,
                                "given again here",
                            )
                            .help("give each field once"),
                        );
                    }
                    seen.push(&f.name);
                    let t = self.expr(v, Some(ft));
                    self.expect(ft, &t, v.span);
                }
                None => {
                    let names: Vec<String> = decl.iter().map(|(n, _)| n.clone()).collect();
                    let help = match closest(&f.name, names.iter().map(String::as_str)) {
                        Some(c) => format!("did you mean `{c}`?"),
                        None => format!("`{}` has fields {}", name.name, list(&names)),
                    };
                    self.error(
                        Diagnostic::new(
                            Code::UnknownField,
                            format!("`{}` has no field `{}`", name.name, f.name),
                            f.span,
                            "unknown field",
                        )
                        .help(help),
                    );
                    self.expr(v, None);
                }
            }
        }
        let missing: Vec<String> = decl
            .iter()
            .filter(|(n, _)| !seen.contains(&n.as_str()))
            .map(|(n, _)| n.clone())
            .collect();
        if !missing.is_empty() {
            self.error(
                Diagnostic::new(
                    Code::MissingField,
                    format!("`{}` needs {}", name.name, list(&missing)),
                    e.span,
                    "fields missing",
                )
                .help(format!(
                    "give every field a value, e.g. `{}: ..`",
                    missing[0]
                )),
            );
        }
        Type::Message(name.name.clone())
    }

    fn call(&mut self, f: &Ident, args: &[Expr]) -> Type {
        let arg_types: Vec<Type> = args.iter().map(|a| self.expr(a, None)).collect();
        let (params, result): (Vec<Type>, Type) = match f.name.as_str() {
            "now" | "random" => {
                if self.facts.nondeterminism.is_none() {
                    let why = if f.name == "now" {
                        "reads the clock"
                    } else {
                        "draws a random number"
                    };
                    self.facts.nondeterminism = Some((f.span, format!("`{}()` {why}", f.name)));
                }
                if f.name == "now" {
                    (vec![], Type::Int(IntTy::U64))
                } else {
                    (vec![Type::Int(IntTy::U64)], Type::Int(IntTy::U64))
                }
            }
            "str" => {
                if let [t] = arg_types.as_slice()
                    && !matches!(
                        t,
                        Type::String | Type::Int(_) | Type::IntLiteral | Type::Bool | Type::Unknown
                    )
                {
                    self.error(
                        Diagnostic::new(
                            Code::TypeMismatch,
                            format!("`str` cannot show a `{t}`"),
                            args[0].span,
                            "not a String, integer or Bool",
                        )
                        .help("`str` turns a String, an integer or a Bool into text"),
                    );
                    return Type::String;
                }
                (vec![Type::Unknown], Type::String)
            }
            "min" | "max" => {
                let t = arg_types.first().cloned().unwrap_or(Type::Unknown);
                let t = if t == Type::IntLiteral {
                    arg_types.get(1).cloned().unwrap_or(t)
                } else {
                    t
                };
                if !t.is_int() {
                    self.expect(&Type::Int(IntTy::Int), &t, args[0].span);
                }
                (vec![t.clone(), t.clone()], t)
            }
            "me" => (vec![], Type::String),
            "sender" => {
                if self.current.is_none() {
                    let (message, label) = if self.in_init {
                        (
                            "`sender()` in a state's initial value: no message is being handled",
                            "evaluated when the agent starts, before any message",
                        )
                    } else {
                        (
                            "`sender()` in `on start`: no message is being handled",
                            "no message has arrived here",
                        )
                    };
                    self.error(
                        Diagnostic::new(Code::SenderOutsideHandler, message, f.span, label)
                            .help("`sender()` names who sent the message being handled, so it works in `on M(m)` handlers; `me()` names this agent"),
                    );
                }
                (vec![], Type::String)
            }
            other => {
                let builtins = ["now", "random", "str", "min", "max", "sender", "me"];
                let help = match closest(other, builtins.iter().copied()) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None => "the builtin functions are now(), random(n), str(x), min(a, b), max(a, b), sender() and me()".to_string(),
                };
                self.error(
                    Diagnostic::new(
                        Code::UnknownMethod,
                        format!("unknown function `{other}`"),
                        f.span,
                        "not a builtin",
                    )
                    .help(help),
                );
                return Type::Unknown;
            }
        };
        self.check_args(f, args, &arg_types, &params);
        result
    }

    fn check_args(&mut self, f: &Ident, args: &[Expr], got: &[Type], params: &[Type]) {
        if got.len() != params.len() {
            self.error(
                Diagnostic::new(
                    Code::TypeMismatch,
                    format!(
                        "`{}` takes {}, {} given",
                        f.name,
                        crate::diagnostic::count(params.len(), "argument"),
                        got.len()
                    ),
                    f.span,
                    "wrong number of arguments",
                )
                .help("see docs/language.md for the builtins and their arguments"),
            );
            return;
        }
        for ((a, g), p) in args.iter().zip(got).zip(params) {
            self.expect(p, g, a.span);
            self.settle_if_literal(a, g, p);
        }
    }

    fn method(&mut self, e: &Expr, recv: &Expr, method: &Ident, args: &[Expr]) -> Type {
        // A keyed state map reached directly: record how it is indexed (for `shard`).
        let state_map = match &recv.kind {
            ExprKind::Name(n) => match self.lookup(&n.name) {
                Some((t @ Type::Map(..), VarKind::State)) => Some((n, t)),
                _ => None,
            },
            _ => None,
        };
        let recv_ty = match state_map {
            Some((n, ref t)) => {
                let keyed_method = matches!(
                    method.name.as_str(),
                    "get" | "insert" | "remove" | "contains_key"
                );
                if !keyed_method {
                    self.note_whole_state_use(&n.name, n.span);
                } else if self
                    .env
                    .state
                    .iter()
                    .any(|(s, _, k)| *s == n.name && k.is_some())
                {
                    let key_field = args.first().and_then(|k| self.message_field(k));
                    self.facts.state_accesses.push(StateAccess {
                        field: n.name.clone(),
                        key_field,
                        span: e.span,
                    });
                }
                self.facts.expr_types.insert(recv.span, t.clone());
                t.clone()
            }
            None => self.expr(recv, None),
        };
        let mutating = matches!(
            method.name.as_str(),
            "insert" | "remove" | "push" | "pop" | "clear"
        );
        if mutating && !self.is_place(recv) {
            self.error(
                Diagnostic::new(
                    Code::NotAssignable,
                    format!(
                        "`{}` changes its receiver, which is not a local or a state field",
                        method.name
                    ),
                    recv.span,
                    "cannot be changed",
                )
                .help("call it on a `let` binding or a state field"),
            );
        }
        let (params, result): (Vec<Type>, Type) = match (&recv_ty, method.name.as_str()) {
            (Type::Unknown, _) => {
                for a in args {
                    self.expr(a, None);
                }
                return Type::Unknown;
            }
            (Type::String, "len") | (Type::Bytes, "len") => (vec![], Type::Int(IntTy::Int)),
            (Type::String, "is_empty") | (Type::Bytes, "is_empty") => (vec![], Type::Bool),
            (Type::String, "contains" | "starts_with" | "ends_with") => {
                (vec![Type::String], Type::Bool)
            }
            (Type::String, "to_upper" | "to_lower" | "trim") => (vec![], Type::String),
            (Type::Int(_) | Type::IntLiteral, "abs") => (vec![], recv_ty.clone()),
            (Type::Option(_), "is_some" | "is_none") => (vec![], Type::Bool),
            (Type::Option(t), "unwrap_or") => (vec![t.as_ref().clone()], t.as_ref().clone()),
            (Type::List(_) | Type::Map(..), "len") => (vec![], Type::Int(IntTy::Int)),
            (Type::List(_) | Type::Map(..), "is_empty") => (vec![], Type::Bool),
            (Type::List(_) | Type::Map(..), "clear") => (vec![], Type::Unit),
            (Type::List(t), "get") => (vec![Type::Int(IntTy::Int)], Type::Option(t.clone())),
            (Type::List(t), "contains") => (vec![t.as_ref().clone()], Type::Bool),
            (Type::List(t), "first" | "last" | "pop") => (vec![], Type::Option(t.clone())),
            (Type::List(t), "push") => (vec![t.as_ref().clone()], Type::Unit),
            (Type::Map(k, v), "get" | "remove") => {
                (vec![k.as_ref().clone()], Type::Option(v.clone()))
            }
            (Type::Map(k, _), "contains_key") => (vec![k.as_ref().clone()], Type::Bool),
            (Type::Map(k, v), "insert") => {
                (vec![k.as_ref().clone(), v.as_ref().clone()], Type::Unit)
            }
            (Type::Map(k, _), "keys") => (vec![], Type::List(k.clone())),
            (Type::Map(_, v), "values") => (vec![], Type::List(v.clone())),
            (t, name) => {
                let known = methods_of(t);
                let help = match closest(name, known.iter().copied()) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None if known.is_empty() => format!("`{t}` has no methods"),
                    None => format!(
                        "`{t}` has {}",
                        known
                            .iter()
                            .map(|m| format!("`{m}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                self.error(
                    Diagnostic::new(
                        Code::UnknownMethod,
                        format!("`{t}` has no method `{name}`"),
                        method.span,
                        "unknown method",
                    )
                    .help(help),
                );
                for a in args {
                    self.expr(a, None);
                }
                return Type::Unknown;
            }
        };
        let got: Vec<Type> = args
            .iter()
            .zip(params.iter().map(Some).chain(std::iter::repeat(None)))
            .map(|(a, p)| self.expr(a, p))
            .collect();
        self.check_args(method, args, &got, &params);
        result
    }

    /// `m.f` where `m` is the message being handled: returns `f`.
    fn message_field(&self, e: &Expr) -> Option<String> {
        let ExprKind::Field(base, field) = &e.kind else {
            return None;
        };
        let ExprKind::Name(n) = &base.kind else {
            return None;
        };
        let (_, binding) = self.current.as_ref()?;
        (n.name == *binding && matches!(self.lookup(&n.name), Some((_, VarKind::Message))))
            .then(|| field.name.clone())
    }

    fn is_place(&self, e: &Expr) -> bool {
        match &e.kind {
            ExprKind::Name(n) => matches!(
                self.lookup(&n.name),
                Some((_, VarKind::Local | VarKind::State)) | None
            ),
            _ => false,
        }
    }
}

/// The links of an `if` / `else if` chain, in order: condition, body, and for the last link
/// its `else` block. Walking it this way instead of recursing keeps a long chain off the stack.
fn if_chain(s: &Stmt) -> impl Iterator<Item = (&Expr, &Block, Option<&Block>)> {
    let mut next = Some(s);
    std::iter::from_fn(move || {
        let Some(Stmt::If {
            cond,
            then,
            otherwise,
        }) = next
        else {
            return None;
        };
        next = None;
        match otherwise {
            // `else if`: a block holding just another `if` (its scope binds nothing).
            Some(b) if matches!(b.stmts.as_slice(), [Stmt::If { .. }]) => {
                next = b.stmts.first();
                Some((cond, then, None))
            }
            o => Some((cond, then, o.as_ref())),
        }
    })
}

/// `[]`, `none`, `some(none)`, `[[], []]`: a value whose type has a part only the context
/// can give.
fn undetermined(e: &Expr) -> bool {
    match &e.kind {
        ExprKind::None => true,
        ExprKind::List(items) => items.iter().all(undetermined),
        ExprKind::Some(inner) => undetermined(inner),
        _ => false,
    }
}

/// `-5`, `--5`: the literal under a run of negations, and how many there are.
fn negated_literal(e: &Expr) -> Option<(&Expr, usize)> {
    let mut e = e;
    let mut negations = 0;
    while let ExprKind::Unary(UnOp::Neg, inner) = &e.kind {
        negations += 1;
        e = inner;
    }
    matches!(e.kind, ExprKind::Literal(Literal::Int(_))).then_some((e, negations))
}

fn literal_type(l: &Literal) -> Type {
    match l {
        Literal::String(_) => Type::String,
        Literal::Int(_) => Type::IntLiteral,
        Literal::Bool(_) => Type::Bool,
    }
}

fn methods_of(t: &Type) -> &'static [&'static str] {
    match t {
        Type::String => &[
            "len",
            "is_empty",
            "contains",
            "starts_with",
            "ends_with",
            "to_upper",
            "to_lower",
            "trim",
        ],
        Type::Bytes => &["len", "is_empty"],
        Type::Int(_) | Type::IntLiteral => &["abs"],
        Type::Option(_) => &["is_some", "is_none", "unwrap_or"],
        Type::List(_) => &[
            "len", "is_empty", "get", "contains", "first", "last", "push", "pop", "clear",
        ],
        Type::Map(..) => &[
            "len",
            "is_empty",
            "get",
            "contains_key",
            "insert",
            "remove",
            "keys",
            "values",
            "clear",
        ],
        _ => &[],
    }
}

/// `a`, `b` and `c` as a readable list of code names.
pub fn list<S: AsRef<str>>(names: &[S]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{}`", n.as_ref())).collect();
    match quoted.as_slice() {
        [] => "nothing".to_string(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// The candidate closest to `name` by edit distance, if close enough to be a likely typo.
pub fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, c)| *d > 0 && *d <= (name.len().max(c.len()) / 3).max(1))
        .min()
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for j in 0..b.len() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != b[j]))
                .min(row[j] + 1)
                .min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

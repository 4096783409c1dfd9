//! Lowers pest's parse tree to the [`ast`](super::ast). The grammar guarantees the shapes
//! matched here, so a mismatch is a bug in this file, never in the user's input.

use pest::iterators::Pair;

use super::ast::*;
use super::grammar::Rule;
use crate::diagnostic::{Code, Diagnostic};

type P<'a> = Pair<'a, Rule>;

fn span(file: FileId, pair: &P) -> Span {
    let s = pair.as_span();
    Span {
        file,
        start: s.start(),
        end: s.end(),
    }
}

fn ident(file: FileId, pair: P) -> Ident {
    debug_assert_eq!(pair.as_rule(), Rule::ident);
    Ident {
        name: pair.as_str().to_string(),
        span: span(file, &pair),
    }
}

fn string(pair: P) -> String {
    let body = pair.into_inner().next().map_or("", |p| p.as_str());
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('0') => out.push('\0'),
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

fn int(pair: &P) -> i128 {
    // Digits only (the grammar says so); saturate rather than fail on absurd lengths, the
    // checker reports values out of range for their type.
    pair.as_str().parse().unwrap_or(i128::MAX)
}

/// The deepest expression tree lowering builds. Operator chains (`a + b + ..`), prefix
/// operators and `.method()` chains nest without brackets, so the bracket pre-check does not
/// bound them, and every later phase walks expressions recursively.
pub const MAX_EXPR_DEPTH: usize = 128;

/// What lowering carries along: the file, and the first expression found too deep.
struct Cx {
    file: FileId,
    too_deep: Option<Diagnostic>,
}

impl Cx {
    /// Whether an expression `depth` deep is still accepted; reports it once if not.
    fn within_limit(&mut self, depth: usize, at: Span) -> bool {
        if depth <= MAX_EXPR_DEPTH {
            return true;
        }
        if self.too_deep.is_none() {
            self.too_deep = Some(
                Diagnostic::new(
                    Code::TooDeep,
                    format!("expression nested more than {MAX_EXPR_DEPTH} deep"),
                    at,
                    "this operation is too deep",
                )
                .help("split the expression with `let` bindings"),
            );
        }
        false
    }
}

/// How deep an expression tree is; lowering never builds one deeper than
/// [`MAX_EXPR_DEPTH`] plus one level, so the recursion is bounded.
fn depth(e: &Expr) -> usize {
    1 + match &e.kind {
        ExprKind::Literal(_) | ExprKind::None | ExprKind::Name(_) => 0,
        ExprKind::Some(inner) | ExprKind::Field(inner, _) | ExprKind::Unary(_, inner) => {
            depth(inner)
        }
        ExprKind::Method(recv, _, args) => {
            args.iter().map(depth).max().unwrap_or(0).max(depth(recv))
        }
        ExprKind::Call(_, args) | ExprKind::List(args) => args.iter().map(depth).max().unwrap_or(0),
        ExprKind::Record(_, fields) => fields.iter().map(|(_, v)| depth(v)).max().unwrap_or(0),
        ExprKind::Binary(_, l, r) => depth(l).max(depth(r)),
    }
}

/// What stands in for an expression refused as too deep (the file is not used then).
fn refused(at: Span) -> Expr {
    Expr {
        kind: ExprKind::Literal(Literal::Int(0)),
        span: at,
    }
}

/// Lowers the `file` rule; `Err` for an expression nested deeper than [`MAX_EXPR_DEPTH`].
#[allow(clippy::result_large_err)] // a diagnostic is returned once per file, on the error path
pub fn file(file: FileId, pair: P) -> Result<File, Diagnostic> {
    let mut cx = Cx {
        file,
        too_deep: None,
    };
    let cx = &mut cx;
    let mut out = File::default();
    for item in pair.into_inner() {
        match item.as_rule() {
            Rule::import => {
                let s = item.into_inner().next().expect("import path");
                out.imports.push(Import {
                    span: span(file, &s),
                    path: string(s),
                });
            }
            Rule::message => out.messages.push(message(file, item)),
            Rule::agent => out.agents.push(agent(cx, item)),
            Rule::system => out.systems.push(system(file, item)),
            _ => {}
        }
    }
    match cx.too_deep.take() {
        Some(d) => Err(d),
        None => Ok(out),
    }
}

fn ty(file: FileId, pair: P) -> TypeExpr {
    let sp = span(file, &pair);
    let mut inner = pair.into_inner();
    let name = ident(file, inner.next().expect("type name"));
    let args = inner
        .next()
        .map_or_else(Vec::new, |a| a.into_inner().map(|t| ty(file, t)).collect());
    TypeExpr {
        name,
        args,
        span: sp,
    }
}

fn message(file: FileId, pair: P) -> Message {
    let sp = span(file, &pair);
    let mut inner = pair.into_inner();
    let name = ident(file, inner.next().expect("message name"));
    let fields = inner
        .map(|f| {
            let mut fi = f.into_inner();
            Field {
                name: ident(file, fi.next().expect("field name")),
                ty: ty(file, fi.next().expect("field type")),
            }
        })
        .collect();
    Message {
        name,
        fields,
        span: sp,
    }
}

fn agent(cx: &mut Cx, pair: P) -> Agent {
    let sp = span(cx.file, &pair);
    let mut inner = pair.into_inner();
    let name = ident(cx.file, inner.next().expect("agent name"));
    let mut agent = Agent {
        name,
        accepts: Vec::new(),
        uses: Vec::new(),
        state: Vec::new(),
        implementation: Vec::new(),
        determinism: Vec::new(),
        handlers: Vec::new(),
        span: sp,
    };
    for item in inner {
        let isp = span(cx.file, &item);
        match item.as_rule() {
            Rule::accepts => {
                let mut i = item.into_inner();
                let message = ident(cx.file, i.next().expect("accepted message"));
                let reply = i.next().map(|r| ident(cx.file, r));
                agent.accepts.push(Accepts {
                    message,
                    reply,
                    span: isp,
                });
            }
            Rule::uses => agent.uses.extend(item.into_inner().map(|u| {
                let mut i = u.into_inner();
                let name = ident(cx.file, i.next().expect("use name"));
                let listed: Vec<Ident> = i.map(|m| ident(cx.file, m)).collect();
                Use {
                    name,
                    sends: (!listed.is_empty()).then_some(listed),
                }
            })),
            Rule::state => {
                let mut i = item.into_inner();
                let name = ident(cx.file, i.next().expect("state name"));
                let ty = ty(cx.file, i.next().expect("state type"));
                let mut keyed_by = None;
                let mut init = None;
                for rest in i {
                    match rest.as_rule() {
                        Rule::key_annotation => {
                            keyed_by =
                                Some(ident(cx.file, rest.into_inner().next().expect("key field")));
                        }
                        _ => init = Some(expr(cx, rest)),
                    }
                }
                agent.state.push(StateField {
                    name,
                    ty,
                    keyed_by,
                    init,
                    span: isp,
                });
            }
            Rule::impl_rust | Rule::impl_process => {
                let kind = if item.as_rule() == Rule::impl_rust {
                    ImplKind::Rust
                } else {
                    ImplKind::Process
                };
                let target = string(item.into_inner().next().expect("impl target"));
                agent.implementation.push(Implementation {
                    kind,
                    target,
                    span: isp,
                });
            }
            Rule::determinism => {
                let word = item.into_inner().next().expect("determinism keyword");
                agent
                    .determinism
                    .push((word.as_str() == "deterministic", isp));
            }
            Rule::handler => agent.handlers.push(handler(cx, item)),
            _ => {}
        }
    }
    agent
}

fn handler(cx: &mut Cx, pair: P) -> Handler {
    let mut inner = pair.into_inner();
    let trigger_pair = inner.next().expect("handler trigger");
    let head_span = span(cx.file, &trigger_pair);
    let trigger = match trigger_pair.as_rule() {
        Rule::start_trigger => Trigger::Start,
        _ => {
            let mut t = trigger_pair.into_inner();
            let message = ident(cx.file, t.next().expect("handler message"));
            let binding = ident(cx.file, t.next().expect("handler binding"));
            Trigger::Message { message, binding }
        }
    };
    let body = block(cx, inner.next().expect("handler body"));
    Handler {
        trigger,
        body,
        head_span,
    }
}

fn block(cx: &mut Cx, pair: P) -> Block {
    let sp = span(cx.file, &pair);
    Block {
        stmts: pair.into_inner().map(|s| stmt(cx, s)).collect(),
        span: sp,
    }
}

fn stmt(cx: &mut Cx, pair: P) -> Stmt {
    let sp = span(cx.file, &pair);
    let rule = pair.as_rule();
    let mut inner = pair.into_inner();
    match rule {
        Rule::let_stmt => {
            let name = ident(cx.file, inner.next().expect("let name"));
            let next = inner.next().expect("let value");
            let (ty_ann, value) = if next.as_rule() == Rule::ty {
                (
                    Some(ty(cx.file, next)),
                    expr(cx, inner.next().expect("let value")),
                )
            } else {
                (None, expr(cx, next))
            };
            Stmt::Let {
                name,
                ty: ty_ann,
                value,
            }
        }
        Rule::assign_stmt => {
            let target = ident(cx.file, inner.next().expect("assign target"));
            Stmt::Assign {
                target,
                value: expr(cx, inner.next().expect("assign value")),
            }
        }
        Rule::expr_stmt => Stmt::Expr(expr(cx, inner.next().expect("expression"))),
        Rule::if_stmt => {
            // `if .. else if .. else if ..` nests in the grammar; walk the chain in a loop, so
            // that a long chain does not recurse here, then build it from its end.
            let mut links: Vec<(Expr, Block, Span)> = Vec::new();
            let mut link_span = sp;
            let mut last = None;
            loop {
                let cond = expr(cx, inner.next().expect("if condition"));
                let then = block(cx, inner.next().expect("if body"));
                links.push((cond, then, link_span));
                match inner.next() {
                    Some(e) if e.as_rule() == Rule::if_stmt => {
                        link_span = span(cx.file, &e);
                        inner = e.into_inner();
                    }
                    Some(e) => {
                        last = Some(block(cx, e));
                        break;
                    }
                    None => break,
                }
            }
            let (cond, then, _) = links.remove(0);
            let mut otherwise = last;
            // An `else if` is a block holding one `If`, spanning the inner `if` statement.
            while let Some((c, t, link)) = links.pop() {
                otherwise = Some(Block {
                    stmts: vec![Stmt::If {
                        cond: c,
                        then: t,
                        otherwise,
                    }],
                    span: link,
                });
            }
            Stmt::If {
                cond,
                then,
                otherwise,
            }
        }
        Rule::match_stmt => {
            let scrutinee = expr(cx, inner.next().expect("match scrutinee"));
            let arms = inner
                .map(|arm| {
                    let mut a = arm.into_inner();
                    let pattern = pattern(cx.file, a.next().expect("arm pattern"));
                    MatchArm {
                        pattern,
                        body: block(cx, a.next().expect("arm body")),
                    }
                })
                .collect();
            Stmt::Match {
                scrutinee,
                arms,
                span: sp,
            }
        }
        Rule::for_stmt => {
            let var = ident(cx.file, inner.next().expect("for variable"));
            let iter = expr(cx, inner.next().expect("for iterable"));
            Stmt::For {
                var,
                iter,
                body: block(cx, inner.next().expect("for body")),
            }
        }
        Rule::send_stmt => {
            let target = ident(cx.file, inner.next().expect("send target"));
            Stmt::Send {
                target,
                message: primary(cx, inner.next().expect("send message")),
                span: sp,
            }
        }
        Rule::reply_stmt => Stmt::Reply {
            message: primary(cx, inner.next().expect("reply message")),
            span: sp,
        },
        Rule::finish_stmt => Stmt::Finish(sp),
        Rule::print_stmt => Stmt::Print(inner.map(|e| expr(cx, e)).collect()),
        other => unreachable!("not a statement rule: {other:?}"),
    }
}

fn pattern(file: FileId, pair: P) -> Pattern {
    let p = pair.into_inner().next().expect("pattern body");
    let sp = span(file, &p);
    match p.as_rule() {
        Rule::some_pattern => Pattern::Some(
            Box::new(pattern(file, p.into_inner().next().expect("inner pattern"))),
            sp,
        ),
        Rule::none_lit => Pattern::None(sp),
        Rule::wildcard => Pattern::Wildcard(sp),
        Rule::ident => Pattern::Bind(ident(file, p)),
        _ => Pattern::Literal(literal(p), sp),
    }
}

fn literal(pair: P) -> Literal {
    match pair.as_rule() {
        Rule::string => Literal::String(string(pair)),
        Rule::int => Literal::Int(int(&pair)),
        Rule::bool_lit => Literal::Bool(pair.as_str() == "true"),
        other => unreachable!("not a literal rule: {other:?}"),
    }
}

/// Lowers `expr` / `cond`: operands and operators are flat in the grammar; precedence is
/// applied here by precedence climbing.
fn expr(cx: &mut Cx, pair: P) -> Expr {
    let whole = span(cx.file, &pair);
    // Operands with their depth, and operators with where they are written.
    let mut operands: Vec<(Expr, usize)> = Vec::new();
    let mut operators: Vec<(BinOp, Span)> = Vec::new();
    let mut prefix: Vec<(UnOp, Span)> = Vec::new();
    for part in pair.into_inner() {
        match part.as_rule() {
            Rule::unary => {
                let op = if part.as_str() == "!" {
                    UnOp::Not
                } else {
                    UnOp::Neg
                };
                prefix.push((op, span(cx.file, &part)));
            }
            Rule::binop => operators.push((binop(part.as_str()), span(cx.file, &part))),
            _ => {
                let mut e = postfix(cx, part);
                let mut d = depth(&e);
                while let Some((op, sp)) = prefix.pop() {
                    d += 1;
                    if !cx.within_limit(d, sp) {
                        return refused(whole);
                    }
                    e = Expr {
                        span: sp.to(e.span),
                        kind: ExprKind::Unary(op, Box::new(e)),
                    };
                }
                operands.push((e, d));
            }
        }
    }
    climb(cx, operands, operators).unwrap_or_else(|| refused(whole))
}

/// Applies precedence to a flat chain; `None` when the tree would be too deep (reported).
fn climb(cx: &mut Cx, operands: Vec<(Expr, usize)>, operators: Vec<(BinOp, Span)>) -> Option<Expr> {
    // Shunting-yard: left-associative, by [`BinOp::precedence`].
    let mut out: Vec<(Expr, usize)> = Vec::new();
    let mut ops: Vec<(BinOp, Span)> = Vec::new();
    let reduce = |cx: &mut Cx, out: &mut Vec<(Expr, usize)>, (op, at): (BinOp, Span)| {
        let (rhs, rd) = out.pop().expect("right operand");
        let (lhs, ld) = out.pop().expect("left operand");
        let d = ld.max(rd) + 1;
        out.push((
            Expr {
                span: lhs.span.to(rhs.span),
                kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)),
            },
            d,
        ));
        cx.within_limit(d, at)
    };
    let mut operands = operands.into_iter();
    out.push(operands.next().expect("an expression has an operand"));
    for (op, operand) in operators.into_iter().zip(operands) {
        while ops
            .last()
            .is_some_and(|(top, _)| top.precedence() >= op.0.precedence())
        {
            let top = ops.pop().expect("checked");
            if !reduce(cx, &mut out, top) {
                return None;
            }
        }
        ops.push(op);
        out.push(operand);
    }
    while let Some(op) = ops.pop() {
        if !reduce(cx, &mut out, op) {
            return None;
        }
    }
    let (e, d) = out.pop().expect("one expression remains");
    cx.within_limit(d, e.span).then_some(e)
}

fn binop(s: &str) -> BinOp {
    match s {
        "||" => BinOp::Or,
        "&&" => BinOp::And,
        "==" => BinOp::Eq,
        "!=" => BinOp::Ne,
        "<" => BinOp::Lt,
        "<=" => BinOp::Le,
        ">" => BinOp::Gt,
        ">=" => BinOp::Ge,
        "+" => BinOp::Add,
        "-" => BinOp::Sub,
        "*" => BinOp::Mul,
        "/" => BinOp::Div,
        _ => BinOp::Rem,
    }
}

fn postfix(cx: &mut Cx, pair: P) -> Expr {
    let mut inner = pair.into_inner();
    let mut e = primary(cx, inner.next().expect("postfix operand"));
    let mut d = depth(&e);
    for op in inner {
        let op_span = span(cx.file, &op);
        let sp = e.span.to(op_span);
        let rule = op.as_rule();
        let mut o = op.into_inner();
        let name = ident(cx.file, o.next().expect("member name"));
        e = match rule {
            Rule::method_call => {
                let args: Vec<Expr> = o.map(|a| expr(cx, a)).collect();
                d = d.max(args.iter().map(depth).max().unwrap_or(0));
                Expr {
                    span: sp,
                    kind: ExprKind::Method(Box::new(e), name, args),
                }
            }
            _ => Expr {
                span: sp,
                kind: ExprKind::Field(Box::new(e), name),
            },
        };
        d += 1;
        if !cx.within_limit(d, op_span) {
            return refused(sp);
        }
    }
    e
}

fn primary(cx: &mut Cx, pair: P) -> Expr {
    let sp = span(cx.file, &pair);
    let kind = match pair.as_rule() {
        Rule::string | Rule::int | Rule::bool_lit => ExprKind::Literal(literal(pair)),
        Rule::none_lit => ExprKind::None,
        Rule::some_lit => ExprKind::Some(Box::new(expr(
            cx,
            pair.into_inner().next().expect("some value"),
        ))),
        Rule::record_lit => {
            let mut inner = pair.into_inner();
            let name = ident(cx.file, inner.next().expect("record name"));
            let fields = inner
                .map(|fi| {
                    let mut f = fi.into_inner();
                    let field = ident(cx.file, f.next().expect("field name"));
                    let value = match f.next() {
                        Some(v) => expr(cx, v),
                        // `Put { key }` is `Put { key: key }`.
                        None => Expr {
                            span: field.span,
                            kind: ExprKind::Name(field.clone()),
                        },
                    };
                    (field, value)
                })
                .collect();
            ExprKind::Record(name, fields)
        }
        Rule::list_lit => ExprKind::List(pair.into_inner().map(|e| expr(cx, e)).collect()),
        Rule::call => {
            let mut inner = pair.into_inner();
            let name = ident(cx.file, inner.next().expect("function name"));
            ExprKind::Call(name, inner.map(|e| expr(cx, e)).collect())
        }
        Rule::ident => ExprKind::Name(ident(cx.file, pair)),
        Rule::paren => {
            return expr(
                cx,
                pair.into_inner().next().expect("parenthesized expression"),
            );
        }
        other => unreachable!("not a primary rule: {other:?}"),
    };
    Expr { kind, span: sp }
}

fn system(file: FileId, pair: P) -> System {
    let sp = span(file, &pair);
    let mut inner = pair.into_inner();
    let name = ident(file, inner.next().expect("system name"));
    let mut sys = System {
        name,
        instances: Vec::new(),
        pipelines: Vec::new(),
        boxes: Vec::new(),
        span: sp,
    };
    for item in inner {
        let isp = span(file, &item);
        match item.as_rule() {
            Rule::instance => {
                let mut i = item.into_inner();
                let name = ident(file, i.next().expect("instance name"));
                let mut count = None;
                let mut next = i.next().expect("instance agent");
                if next.as_rule() == Rule::array_len {
                    let n = next.into_inner().next().expect("array length");
                    count = Some((u32::try_from(int(&n)).unwrap_or(u32::MAX), span(file, &n)));
                    next = i.next().expect("instance agent");
                }
                let agent = ident(file, next);
                let bindings = i
                    .next()
                    .map(|w| {
                        w.into_inner()
                            .map(|b| {
                                let mut b = b.into_inner();
                                let name = ident(file, b.next().expect("binding name"));
                                Binding {
                                    name,
                                    target: instance_ref(file, b.next().expect("binding target")),
                                }
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                sys.instances.push(Instance {
                    name,
                    count,
                    agent,
                    bindings,
                    span: isp,
                });
            }
            Rule::pipeline => {
                let mut i = item.into_inner();
                let t = i.next().expect("pipeline target");
                let target = match t.as_rule() {
                    Rule::channel => {
                        let mut c = t.into_inner();
                        let from = instance_ref(file, c.next().expect("channel sender"));
                        PipelineTarget::Channel(
                            from,
                            instance_ref(file, c.next().expect("channel receiver")),
                        )
                    }
                    _ => PipelineTarget::Agent(instance_ref(file, t)),
                };
                let transforms = i.map(|t| transform(file, t)).collect();
                sys.pipelines.push(Pipeline {
                    target,
                    transforms,
                    span: isp,
                });
            }
            Rule::box_decl => {
                let mut i = item.into_inner();
                let name = ident(file, i.next().expect("box name"));
                let mut address = None;
                let mut patterns = Vec::new();
                for s in i {
                    if s.as_rule() == Rule::box_address {
                        let lit = s.into_inner().next().expect("box address");
                        let asp = span(file, &lit);
                        address = Some((string(lit), asp));
                    } else {
                        let ssp = span(file, &s);
                        patterns.push((string(s), ssp));
                    }
                }
                sys.boxes.push(BoxDecl {
                    name,
                    address,
                    patterns,
                    span: isp,
                });
            }
            _ => {}
        }
    }
    sys
}

fn instance_ref(file: FileId, pair: P) -> InstanceRef {
    let sp = span(file, &pair);
    let mut i = pair.into_inner();
    let name = ident(file, i.next().expect("instance name"));
    let index = i.next().map(|n| u32::try_from(int(&n)).unwrap_or(u32::MAX));
    InstanceRef {
        name,
        index,
        span: sp,
    }
}

fn transform(file: FileId, pair: P) -> Transform {
    let sp = span(file, &pair);
    let mut i = pair.into_inner();
    let name = ident(file, i.next().expect("transform name"));
    let args = i
        .map(|a| {
            let asp = span(file, &a);
            let mut parts: Vec<P> = a.into_inner().collect();
            let value = parts.pop().expect("argument value");
            let name = parts.pop().map(|n| Ident {
                name: n.as_str().to_string(),
                span: span(file, &n),
            });
            let value = match value.as_rule() {
                Rule::duration => {
                    let s = value.as_str();
                    let (digits, scale) = match s.strip_suffix("ms") {
                        Some(d) => (d, 1),
                        None => (&s[..s.len() - 1], 1000),
                    };
                    ArgValue::DurationMs(
                        digits
                            .parse::<u64>()
                            .unwrap_or(u64::MAX)
                            .saturating_mul(scale),
                    )
                }
                Rule::int => ArgValue::Int(int(&value)),
                Rule::string => ArgValue::String(string(value)),
                Rule::bool_lit => ArgValue::Bool(value.as_str() == "true"),
                _ => ArgValue::Name(value.as_str().to_string()),
            };
            Arg {
                name,
                value,
                span: asp,
            }
        })
        .collect();
    Transform {
        name,
        args,
        span: sp,
    }
}

//! The syntax tree of a `.ovid` file: plain data, every node carrying the span it came from.

use serde::Serialize;

pub use crate::source::{FileId, Span};

/// A name and where it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ident {
    /// The name.
    pub name: String,
    /// Where it was written.
    #[serde(skip)]
    pub span: Span,
}

/// One parsed file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct File {
    /// `import "path";` items, in order.
    pub imports: Vec<Import>,
    /// Message declarations.
    pub messages: Vec<Message>,
    /// Agent declarations.
    pub agents: Vec<Agent>,
    /// System declarations.
    pub systems: Vec<System>,
}

/// `import "other.ovid";`
#[derive(Debug, Clone, Serialize)]
pub struct Import {
    /// The path as written, relative to the importing file.
    pub path: String,
    /// Span of the path literal.
    #[serde(skip)]
    pub span: Span,
}

/// A type as written: `Map<String, List<Int>>`.
#[derive(Debug, Clone, Serialize)]
pub struct TypeExpr {
    /// The head name (`Map`).
    pub name: Ident,
    /// Type arguments (`String`, `List<Int>`).
    pub args: Vec<TypeExpr>,
    /// The whole type.
    #[serde(skip)]
    pub span: Span,
}

/// `message Put { key: String, value: String }`
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    /// Message name.
    pub name: Ident,
    /// Fields in declaration order.
    pub fields: Vec<Field>,
    /// The whole declaration.
    #[serde(skip)]
    pub span: Span,
}

/// A typed field of a message.
#[derive(Debug, Clone, Serialize)]
pub struct Field {
    /// Field name.
    pub name: Ident,
    /// Field type.
    pub ty: TypeExpr,
}

/// `agent KVS { ... }`
#[derive(Debug, Clone, Serialize)]
pub struct Agent {
    /// Agent name.
    pub name: Ident,
    /// `accepts Put -> PutOk;`
    pub accepts: Vec<Accepts>,
    /// `uses kvs, log(Line);`: identifiers this agent sends to, bound by the system.
    pub uses: Vec<Use>,
    /// `state store: Map<String, String> by key;`
    pub state: Vec<StateField>,
    /// `impl rust "..."` or `impl process "..."`.
    pub implementation: Vec<Implementation>,
    /// Every `deterministic;` (`true`) or `nondeterministic;` (`false`) line, in order; the
    /// checker accepts at most one.
    pub determinism: Vec<(bool, Span)>,
    /// `on Msg(m) { ... }` and `on start { ... }`.
    pub handlers: Vec<Handler>,
    /// The whole declaration.
    #[serde(skip)]
    pub span: Span,
}

/// One identifier of `uses`: `kvs`, or `kvs(Put, Get)` listing what is sent through it
/// (needed for `impl rust` and `impl process` agents, whose sends the checker cannot see).
#[derive(Debug, Clone, Serialize)]
pub struct Use {
    /// The identifier, bound to an instance by the system's wiring.
    pub name: Ident,
    /// The messages sent through it, if listed.
    pub sends: Option<Vec<Ident>>,
}

/// `accepts Msg -> Reply;`
#[derive(Debug, Clone, Serialize)]
pub struct Accepts {
    /// The accepted message.
    pub message: Ident,
    /// The reply it gets, if any.
    pub reply: Option<Ident>,
    /// The whole clause.
    #[serde(skip)]
    pub span: Span,
}

/// One field of an agent's state.
#[derive(Debug, Clone, Serialize)]
pub struct StateField {
    /// Field name.
    pub name: Ident,
    /// Field type.
    pub ty: TypeExpr,
    /// `by key`: the message field this (map) state is partitioned by.
    pub keyed_by: Option<Ident>,
    /// Initial value; the type's default when absent.
    pub init: Option<Expr>,
    /// The whole clause.
    #[serde(skip)]
    pub span: Span,
}

/// How an agent is implemented when not by inline handlers.
#[derive(Debug, Clone, Serialize)]
pub enum ImplKind {
    /// `impl rust "crate::path::Type"`.
    Rust,
    /// `impl process "cmd args"`, speaking the JSON line protocol.
    Process,
}

/// `impl rust "..."` / `impl process "..."`.
#[derive(Debug, Clone, Serialize)]
pub struct Implementation {
    /// Rust or external process.
    pub kind: ImplKind,
    /// The Rust path or the command line.
    pub target: String,
    /// The whole clause.
    #[serde(skip)]
    pub span: Span,
}

/// What starts a handler.
#[derive(Debug, Clone, Serialize)]
pub enum Trigger {
    /// `on start`: once, when the agent starts.
    Start,
    /// `on Msg(binding)`.
    Message {
        /// The message type.
        message: Ident,
        /// The name the message is bound to in the body.
        binding: Ident,
    },
}

/// `on ... { body }`
#[derive(Debug, Clone, Serialize)]
pub struct Handler {
    /// What runs it.
    pub trigger: Trigger,
    /// Its statements.
    pub body: Block,
    /// The `on ...` head, for diagnostics.
    #[serde(skip)]
    pub head_span: Span,
}

/// A braced list of statements.
#[derive(Debug, Clone, Serialize)]
pub struct Block {
    /// The statements in order.
    pub stmts: Vec<Stmt>,
    /// Braces included.
    #[serde(skip)]
    pub span: Span,
}

/// A statement of the handler language.
#[derive(Debug, Clone, Serialize)]
pub enum Stmt {
    /// `let x: T = e;`
    Let {
        /// Bound name.
        name: Ident,
        /// Optional annotation.
        ty: Option<TypeExpr>,
        /// Value.
        value: Expr,
    },
    /// `x = e;` (a local or a state field).
    Assign {
        /// Assigned name.
        target: Ident,
        /// Value.
        value: Expr,
    },
    /// `e;` (a mutating method call such as `store.insert(k, v)`).
    Expr(Expr),
    /// `if c { } else { }`
    If {
        /// Condition.
        cond: Expr,
        /// Taken when true.
        then: Block,
        /// Taken when false: a block (an `else if` is a block holding one `If`).
        otherwise: Option<Block>,
    },
    /// `match e { p => { } }`
    Match {
        /// Scrutinee.
        scrutinee: Expr,
        /// Arms in order; the first that matches runs.
        arms: Vec<MatchArm>,
        /// The whole statement.
        #[serde(skip)]
        span: Span,
    },
    /// `for x in list { }`
    For {
        /// Loop variable.
        var: Ident,
        /// A list.
        iter: Expr,
        /// Body.
        body: Block,
    },
    /// `send target Msg { .. };`
    Send {
        /// A `uses` identifier.
        target: Ident,
        /// The message.
        message: Expr,
        /// The whole statement.
        #[serde(skip)]
        span: Span,
    },
    /// `reply Msg { .. };`
    Reply {
        /// The reply.
        message: Expr,
        /// The whole statement.
        #[serde(skip)]
        span: Span,
    },
    /// `finish;`: this agent's work is done (ends `ovidc run` when a client finishes).
    Finish(#[serde(skip)] Span),
    /// `print(a, b);`: a line of output through the context.
    Print(Vec<Expr>),
}

/// `pattern => { body }`
#[derive(Debug, Clone, Serialize)]
pub struct MatchArm {
    /// What it matches.
    pub pattern: Pattern,
    /// What runs.
    pub body: Block,
}

/// A match pattern.
#[derive(Debug, Clone, Serialize)]
pub enum Pattern {
    /// `_`
    Wildcard(#[serde(skip)] Span),
    /// A name: binds the value.
    Bind(Ident),
    /// `none`
    None(#[serde(skip)] Span),
    /// `some(p)`
    Some(Box<Pattern>, Span),
    /// A literal.
    Literal(Literal, Span),
}

impl Pattern {
    /// Where the pattern was written.
    pub fn span(&self) -> Span {
        match self {
            Pattern::Wildcard(s)
            | Pattern::None(s)
            | Pattern::Some(_, s)
            | Pattern::Literal(_, s) => *s,
            Pattern::Bind(i) => i.span,
        }
    }
}

/// A literal value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Literal {
    /// `"text"` (escapes resolved).
    String(String),
    /// `42`
    Int(i128),
    /// `true` / `false`
    Bool(bool),
}

/// A binary operator, loosest binding last in [`BinOp::precedence`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BinOp {
    /// `||`
    Or,
    /// `&&`
    And,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Rem,
}

impl BinOp {
    /// Binding strength: higher binds tighter.
    pub fn precedence(self) -> u8 {
        match self {
            BinOp::Or => 1,
            BinOp::And => 2,
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => 3,
            BinOp::Add | BinOp::Sub => 4,
            BinOp::Mul | BinOp::Div | BinOp::Rem => 5,
        }
    }

    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "||",
            BinOp::And => "&&",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
        }
    }
}

/// A unary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum UnOp {
    /// `!`
    Not,
    /// `-`
    Neg,
}

/// An expression with its span.
#[derive(Debug, Clone, Serialize)]
pub struct Expr {
    /// What kind of expression.
    pub kind: ExprKind,
    /// Where it was written.
    #[serde(skip)]
    pub span: Span,
}

/// The kinds of expression of the handler language.
#[derive(Debug, Clone, Serialize)]
pub enum ExprKind {
    /// A literal.
    Literal(Literal),
    /// `none`
    None,
    /// `some(e)`
    Some(Box<Expr>),
    /// A local, the handler's message, or a state field.
    Name(Ident),
    /// `e.field`
    Field(Box<Expr>, Ident),
    /// `e.method(args)`
    Method(Box<Expr>, Ident, Vec<Expr>),
    /// `function(args)`: a builtin.
    Call(Ident, Vec<Expr>),
    /// `Msg { field: e, .. }`
    Record(Ident, Vec<(Ident, Expr)>),
    /// `[a, b]`
    List(Vec<Expr>),
    /// `a op b`
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `op e`
    Unary(UnOp, Box<Expr>),
}

/// `system Name { ... }`
#[derive(Debug, Clone, Serialize)]
pub struct System {
    /// System name.
    pub name: Ident,
    /// `instance kvs: KVS { .. };`
    pub instances: Vec<Instance>,
    /// `KVS |> shard(..);` and `a -> b |> batch(..);`
    pub pipelines: Vec<Pipeline>,
    /// `box b1 at ".." { "pattern", .. }`
    pub boxes: Vec<BoxDecl>,
    /// The whole declaration.
    #[serde(skip)]
    pub span: Span,
}

/// `instance client[3]: Client { kvs = KVS };`
#[derive(Debug, Clone, Serialize)]
pub struct Instance {
    /// Instance name: the identifier other agents and pipelines use.
    pub name: Ident,
    /// `[n]`: an array of `n` instances named `name[0]` ...
    pub count: Option<(u32, Span)>,
    /// The agent it instantiates.
    pub agent: Ident,
    /// `uses` name → instance.
    pub bindings: Vec<Binding>,
    /// The whole declaration.
    #[serde(skip)]
    pub span: Span,
}

/// `kvs = KVS` inside an instance's wiring.
#[derive(Debug, Clone, Serialize)]
pub struct Binding {
    /// The `uses` name of the instance's agent.
    pub name: Ident,
    /// The instance it is bound to.
    pub target: InstanceRef,
}

/// A reference to an instance or one element of an instance array.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceRef {
    /// Instance name.
    pub name: Ident,
    /// `[i]`, for one element of an array.
    pub index: Option<u32>,
    /// The whole reference.
    #[serde(skip)]
    pub span: Span,
}

/// What a pipeline transforms.
#[derive(Debug, Clone, Serialize)]
pub enum PipelineTarget {
    /// An agent instance.
    Agent(InstanceRef),
    /// The channel from one instance to another.
    Channel(InstanceRef, InstanceRef),
}

/// `target |> t1 |> t2;`
#[derive(Debug, Clone, Serialize)]
pub struct Pipeline {
    /// What is transformed.
    pub target: PipelineTarget,
    /// Transformations, innermost first.
    pub transforms: Vec<Transform>,
    /// The whole statement.
    #[serde(skip)]
    pub span: Span,
}

/// `shard(4, by: key)`
#[derive(Debug, Clone, Serialize)]
pub struct Transform {
    /// Transformation name.
    pub name: Ident,
    /// Arguments as written.
    pub args: Vec<Arg>,
    /// The whole call.
    #[serde(skip)]
    pub span: Span,
}

/// One transformation argument, positional or named.
#[derive(Debug, Clone, Serialize)]
pub struct Arg {
    /// `by:` for a named argument.
    pub name: Option<Ident>,
    /// The value.
    pub value: ArgValue,
    /// The whole argument.
    #[serde(skip)]
    pub span: Span,
}

/// An argument value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum ArgValue {
    /// `4`
    Int(i128),
    /// `5ms`, in milliseconds.
    DurationMs(u64),
    /// `"text"`
    String(String),
    /// `true`
    Bool(bool),
    /// A bare name: a field (`key`) or an option (`zstd`).
    Name(String),
}

/// `box edge at "127.0.0.1:7000" { "client*", "KVS/ShardIngressProxy*" }`
#[derive(Debug, Clone, Serialize)]
pub struct BoxDecl {
    /// Box name.
    pub name: Ident,
    /// Its address, if fixed.
    pub address: Option<(String, Span)>,
    /// Identifier patterns (`*` matches any run of characters) of the agents it runs.
    pub patterns: Vec<(String, Span)>,
    /// The whole declaration.
    #[serde(skip)]
    pub span: Span,
}

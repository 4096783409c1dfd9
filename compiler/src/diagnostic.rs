//! Diagnostics: one catalogue of error codes, and their rendering through miette (for people)
//! or JSON (for editors).

use std::fmt;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan};
use serde::Serialize;

use crate::source::{Sources, Span};

macro_rules! codes {
    ($($variant:ident => $code:literal, $summary:literal;)*) => {
        /// Every error Ovid reports, each with a stable code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum Code {
            $(
                #[doc = $summary]
                $variant,
            )*
        }

        impl Code {
            /// Every code, in catalogue order.
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            /// The stable code, such as `ovid::shard::missing_key`.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $code),* }
            }

            /// One line saying what the error means.
            pub fn summary(self) -> &'static str {
                match self { $(Code::$variant => $summary),* }
            }
        }
    };
}

codes! {
    Syntax => "ovid::syntax::parse", "the text is not valid .ovid syntax";
    TooDeep => "ovid::syntax::too_deep", "brackets, an expression or an `else if` chain nest deeper than the compiler accepts";
    ImportNotFound => "ovid::import::not_found", "an imported file cannot be read";
    Duplicate => "ovid::name::duplicate", "a name is declared twice";
    UnknownType => "ovid::name::unknown_type", "a type name is not declared";
    UnknownMessage => "ovid::name::unknown_message", "a message name is not declared";
    UnknownAgent => "ovid::name::unknown_agent", "an instance names an agent that is not declared";
    UnknownVariable => "ovid::name::unknown_variable", "a name in a handler is not a local, the message or a state field";
    UnknownField => "ovid::name::unknown_field", "a record has no field of that name";
    UnknownMethod => "ovid::name::unknown_method", "a method or builtin function does not exist for that type";
    UnknownInstance => "ovid::name::unknown_instance", "a system refers to an instance it does not declare";
    TypeMismatch => "ovid::type::mismatch", "a value has a different type than the one expected";
    TypeArity => "ovid::type::arity", "a type has the wrong number of type arguments";
    NeedsAnnotation => "ovid::type::needs_annotation", "`let x = [];` or `let x = none;`: nothing says what the list or option holds";
    MissingField => "ovid::type::missing_field", "a record literal leaves a field without a value";
    NotAssignable => "ovid::type::not_assignable", "an assignment or mutation targets something that is not a local or state field";
    ReplyType => "ovid::reply::wrong_type", "a handler replies with a message other than the one its `accepts` declares";
    ReplyOutsideHandler => "ovid::reply::no_request", "`reply` is used where there is no request to reply to";
    ReplyMissing => "ovid::reply::missing", "the handler of a request (`accepts M -> R`) has no `reply`";
    ReplySomePaths => "ovid::reply::some_paths", "the handler of a request replies on some paths only";
    ReplyTwice => "ovid::reply::twice", "the handler of a request may reply more than once to one request";
    SenderOutsideHandler => "ovid::sender::no_message", "`sender()` is used where no message is being handled";
    HandlerMissing => "ovid::handler::missing", "an accepted message has no handler";
    SendTarget => "ovid::send::unknown_target", "`send` names an identifier the agent does not declare in `uses`";
    ImplConflict => "ovid::agent::impl_conflict", "an agent has more than one implementation";
    DeterminismConflict => "ovid::agent::determinism_conflict", "an agent is declared both `deterministic` and `nondeterministic`, or `deterministic` while calling `now()` or `random()`";
    NotAccepted => "ovid::wiring::not_accepted", "a sender sends a message its receiver does not accept";
    Unbound => "ovid::wiring::unbound", "an instance leaves one of its agent's `uses` unbound";
    UnknownBinding => "ovid::wiring::unknown_binding", "an instance binds a name its agent does not use";
    IndexOutOfRange => "ovid::wiring::index_out_of_range", "an array element past the end of the array";
    MultipleSystems => "ovid::system::multiple", "a program declares more than one system";
    BadAddress => "ovid::placement::bad_address", "a box address is not host:port";
    BadPattern => "ovid::placement::bad_pattern", "a placement pattern is not a valid identifier pattern";
    DuplicateAddress => "ovid::placement::duplicate_address", "two boxes are given the same address";
    UnknownTransform => "ovid::transform::unknown", "a pipeline names a transformation the standard library does not have";
    TransformParams => "ovid::transform::params", "a transformation gets arguments it does not take";
    TransformTarget => "ovid::transform::target", "a transformation is applied to an agent where it needs a channel, or the reverse";
    ControllerTransform => "ovid::controller::transform", "the controller is transformed by something other than one `replicate(n)`";
    TransformOverlap => "ovid::transform::overlap", "two pipelines transform one agent or channel: a whole array and one of its elements";
    ShardMissingKey => "ovid::shard::missing_key", "`shard(by: f)` where an accepted message has no field `f`";
    ShardKeyType => "ovid::shard::key_type", "`shard(by: f)` where `f` has different types in the accepted messages";
    ShardStateNotKeyed => "ovid::shard::state_not_keyed", "`shard(by: f)` where the state is not partitioned by `f`";
    LoadBalanceStateful => "ovid::load_balance::stateful", "`load_balance` on an agent that has state";
    ReplicateNondeterministic => "ovid::replicate::nondeterministic", "`replicate` or `primary_backup` on an agent that is not deterministic";
    PlanOtherSystem => "ovid::plan::other_system", "`ovidc plan`: the new file declares another system than the old one";
    PlanAgentChanged => "ovid::plan::agent_changed", "`ovidc plan`: an instance runs another agent type than before, so its state cannot be carried over";
    PlanStateChanged => "ovid::plan::state_changed", "`ovidc plan`: an agent's state fields changed, and there is no migration between them";
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `n` and the noun, plural unless `n` is one: `1 element`, `3 elements`.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// One error, pointing at the source.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    /// Its stable code.
    pub code: Code,
    /// The headline.
    pub message: String,
    /// Where it is.
    pub span: Span,
    /// What the primary span shows.
    pub label: String,
    /// What to do about it.
    pub help: String,
    /// Further spans with labels (shown when in the same file).
    pub related: Vec<(Span, String)>,
}

impl Diagnostic {
    /// A diagnostic with a headline, a primary span and its label; add help with [`Self::help`].
    pub fn new(
        code: Code,
        message: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) -> Self {
        Diagnostic {
            code,
            message: message.into(),
            span,
            label: label.into(),
            help: String::new(),
            related: Vec::new(),
        }
    }

    /// Sets the help line.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = help.into();
        self
    }

    /// Adds a secondary labelled span.
    pub fn related(mut self, span: Span, label: impl Into<String>) -> Self {
        self.related.push((span, label.into()));
        self
    }
}

/// A diagnostic bound to its source text, as miette wants it.
#[derive(Debug)]
struct Rendered {
    diagnostic: Diagnostic,
    source: NamedSource<String>,
}

/// The longest source line shown in a snippet. Longer ones are useless to read, and miette
/// cannot pad a label past column 65535.
const SNIPPET_LINE_MAX: usize = 2000;

/// The length of the line(s) that `span` touches in `text`.
fn line_length(text: &str, span: Span) -> usize {
    let start = span.start.min(text.len());
    let end = span.end.clamp(start, text.len());
    let first = text.as_bytes()[..start]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let last = text.as_bytes()[end..]
        .iter()
        .position(|b| *b == b'\n')
        .map_or(text.len(), |i| end + i);
    // The longest single line within.
    text[first..last]
        .split('\n')
        .map(str::len)
        .max()
        .unwrap_or(0)
}

impl fmt::Display for Rendered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diagnostic.message)
    }
}

impl std::error::Error for Rendered {}

fn source_span(span: Span, len: usize) -> SourceSpan {
    let start = span.start.min(len);
    let end = span.end.clamp(start, len);
    SourceSpan::new(start.into(), end - start)
}

impl miette::Diagnostic for Rendered {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.diagnostic.code.as_str()))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        (!self.diagnostic.help.is_empty())
            .then(|| Box::new(&self.diagnostic.help) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let len = self.source.inner().len();
        let d = &self.diagnostic;
        let primary =
            LabeledSpan::new_primary_with_span(Some(d.label.clone()), source_span(d.span, len));
        let related = d
            .related
            .iter()
            .filter(|(span, _)| span.file == d.span.file)
            .map(move |(span, label)| {
                LabeledSpan::new_with_span(Some(label.clone()), source_span(*span, len))
            });
        Some(Box::new(std::iter::once(primary).chain(related)))
    }
}

/// How to render diagnostics for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Unicode and colour, for a terminal.
    Color,
    /// Unicode without colour: stable, for snapshots and pipes.
    Plain,
}

/// Renders one diagnostic the way `ovidc check` prints it.
pub fn render(sources: &Sources, diagnostic: &Diagnostic, style: Style) -> String {
    let file = sources.get(diagnostic.span.file);
    let at = sources.line_col(diagnostic.span.file, diagnostic.span.start);
    let d = diagnostic;
    let snippet = std::iter::once(&d.span)
        .chain(
            d.related
                .iter()
                .map(|(s, _)| s)
                .filter(|s| s.file == d.span.file),
        )
        .all(|s| line_length(&file.text, *s) <= SNIPPET_LINE_MAX);
    let rendered = Rendered {
        diagnostic: diagnostic.clone(),
        source: NamedSource::new(file.name.clone(), file.text.clone()),
    };
    let theme = match style {
        Style::Color => GraphicalTheme::unicode(),
        Style::Plain => GraphicalTheme::unicode_nocolor(),
    };
    let mut out = String::new();
    if snippet {
        let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
        if handler.render_report(&mut out, &rendered).is_err() {
            out = format!("error[{}]: {}\n", diagnostic.code, diagnostic.message);
        }
    } else {
        // The label goes under the headline, since there is no snippet to carry it.
        out = format!(
            "{}\n\n  × {}\n  ╰── {} (the line is too long to show)\n",
            d.code, d.message, d.label
        );
        if !d.help.is_empty() {
            out.push_str(&format!("  help: {}\n", d.help));
        }
    }
    // miette shows the file and line in the snippet header; say it once more up front so that
    // tools that only read the first line (and people grepping logs) get file:line:column.
    format!(
        "{}:{}:{}: {}",
        file.name,
        at.line,
        at.column,
        out.trim_start()
    )
}

/// A diagnostic as JSON, for editors.
#[derive(Debug, Serialize)]
pub struct JsonDiagnostic {
    /// Stable code.
    pub code: &'static str,
    /// Always `error`.
    pub severity: &'static str,
    /// Headline.
    pub message: String,
    /// File as named in the diagnostic.
    pub file: String,
    /// Start of the span.
    pub start: crate::source::LineCol,
    /// End of the span.
    pub end: crate::source::LineCol,
    /// Byte offsets of the span.
    pub byte_range: (usize, usize),
    /// The primary label.
    pub label: String,
    /// The help line.
    pub help: String,
}

/// Converts a diagnostic to its JSON form.
pub fn to_json(sources: &Sources, d: &Diagnostic) -> JsonDiagnostic {
    JsonDiagnostic {
        code: d.code.as_str(),
        severity: "error",
        message: d.message.clone(),
        file: sources.get(d.span.file).name.clone(),
        start: sources.line_col(d.span.file, d.span.start),
        end: sources.line_col(d.span.file, d.span.end),
        byte_range: (d.span.start, d.span.end),
        label: d.label.clone(),
        help: d.help.clone(),
    }
}

//! Syntax: `.ovid` text → [`ast::File`], and loading a program with its imports.

pub mod ast;
mod lower;

use std::path::{Path, PathBuf};

use pest::Parser as _;
use pest::error::{ErrorVariant, InputLocation};

use crate::diagnostic::{Code, Diagnostic};
use crate::source::Sources;
use ast::{File, FileId, Span};

mod grammar {
    //! The pest parser generated from `ovid.pest`; its rule names are the grammar's.
    #![allow(missing_docs)]

    #[derive(pest_derive::Parser)]
    #[grammar = "syntax/ovid.pest"]
    pub struct OvidParser;
}

use grammar::{OvidParser, Rule};

/// The deepest bracket nesting accepted; deeper input is refused before parsing, so that no
/// input can exhaust the stack of the recursive-descent parser.
pub const MAX_NESTING: usize = 64;

pub use lower::MAX_EXPR_DEPTH;

/// The longest `if .. else if ..` chain accepted (links along one path, nested chains
/// included): each `else if` is an `if` inside an `else`, so the syntax tree nests that deep
/// and the phases after parsing walk it recursively.
pub const MAX_ELSE_IF: usize = 256;

/// A program: every loaded file and its syntax tree, in load order (the root file first).
#[derive(Debug, Default)]
pub struct Program {
    /// The text of every file.
    pub sources: Sources,
    /// The parsed files, index = [`FileId`].
    pub files: Vec<File>,
}

/// Parses one file's text.
#[allow(clippy::result_large_err)] // a diagnostic is returned once per file, on the error path
pub fn parse(file: FileId, text: &str) -> Result<File, Diagnostic> {
    check_nesting(file, text)?;
    let mut pairs = OvidParser::parse(Rule::file, text).map_err(|e| syntax_error(file, text, e))?;
    let root = pairs
        .next()
        .expect("the `file` rule always yields one pair");
    lower::file(file, root)
}

/// Loads `path` and, transitively, the files it imports (each once), and parses them all.
/// Diagnostics of every file are collected rather than stopping at the first.
pub fn load(path: &Path) -> Result<(Program, Vec<Diagnostic>), std::io::Error> {
    let text = std::fs::read_to_string(path)?;
    Ok(load_source(path, text, &|p| std::fs::read_to_string(p)))
}

/// Like [`load`], with the root file's text given and imports read through `read`.
pub fn load_source(
    path: &Path,
    text: String,
    read: &dyn Fn(&Path) -> std::io::Result<String>,
) -> (Program, Vec<Diagnostic>) {
    let mut program = Program::default();
    let mut diagnostics = Vec::new();
    let mut queue: Vec<(PathBuf, String)> = vec![(path.to_path_buf(), text)];
    // Every file loaded or queued, spelled one way: `./a.ovid` and `a.ovid` are one file.
    let mut loaded: Vec<PathBuf> = vec![same_file(path)];
    while let Some((path, text)) = queue.pop() {
        let id = program.sources.add(path.clone(), text);
        let parsed = parse(id, &program.sources.get(id).text);
        let file = parsed.unwrap_or_else(|d| {
            diagnostics.push(d);
            File::default()
        });
        for import in &file.imports {
            let target = path.parent().unwrap_or(Path::new("")).join(&import.path);
            if loaded.contains(&same_file(&target)) {
                continue;
            }
            match read(&target) {
                Ok(text) => {
                    loaded.push(same_file(&target));
                    queue.push((target, text));
                }
                Err(e) => diagnostics.push(
                    Diagnostic::new(
                        Code::ImportNotFound,
                        format!("cannot read imported file `{}`", target.display()),
                        import.span,
                        format!("{e}"),
                    )
                    .help("import paths are relative to the importing file"),
                ),
            }
        }
        program.files.push(file);
    }
    (program, diagnostics)
}

/// A path without its `.` components, to tell whether two imports name one file. (`..` is
/// kept: through a symbolic link, `a/../b` need not be `b`.)
fn same_file(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

/// Refuses input that would nest the recursive-descent parser deeper than [`MAX_NESTING`],
/// before it is parsed. What nests is what the parser recurses on: the brackets `(`, `[` and
/// `{`, and the `<` of type arguments (`List<List<Int>>`), which only exist where a type is
/// written: in a message body and after `let x:` or `state x:`. A `<` anywhere else is a
/// comparison, which does not nest. `else if` chains are bounded too ([`MAX_ELSE_IF`]).
/// Strings and comments are skipped as the grammar skips them, so brackets inside them do not
/// count.
#[allow(clippy::result_large_err)] // a diagnostic is returned once per file, on the error path
fn check_nesting(file: FileId, text: &str) -> Result<(), Diagnostic> {
    let bytes = text.as_bytes();
    let too_deep = |at: usize| {
        Diagnostic::new(
            Code::TooDeep,
            format!("brackets nested more than {MAX_NESTING} deep"),
            Span {
                file,
                start: at,
                end: at + 1,
            },
            "this bracket is too deep",
        )
        .help("split the expression with `let` bindings, or flatten the type")
    };
    let mut depth = 0usize;
    // The length of the `else if` chain being read at each depth (index = depth), their sum,
    // and whether the last token closed a block (a chain goes on only with `else`).
    let mut chains: Vec<usize> = vec![0];
    let mut links = 0usize;
    let mut after_close = false;
    // Unclosed `<` of the type being written, if one is.
    let mut angles = 0usize;
    let mut in_type = false;
    // The bracket depth of the message body being read, if one is: all of it is types.
    let mut message_body: Option<usize> = None;
    // The last two words or punctuation marks, to recognise `let x :`, `state x :` and
    // `message M {`.
    let mut prev: [&str; 2] = ["", ""];
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let token: &str = match c {
            b' ' | b'\t' | b'\r' | b'\n' => {
                i += 1;
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                i = text[i..].find('\n').map_or(bytes.len(), |n| i + n);
                continue;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                match text[i + 2..].find("*/") {
                    Some(n) => i += 2 + n + 2,
                    None => return Err(unclosed_comment(file, i)),
                }
                continue;
            }
            b'"' => {
                // Up to the closing quote; a string ends at a newline too (a parse error).
                let mut j = i + 1;
                while j < bytes.len() && !matches!(bytes[j], b'"' | b'\n') {
                    j += if bytes[j] == b'\\' { 2 } else { 1 };
                }
                i = (j + 1).min(bytes.len());
                in_type = false;
                prev = [prev[1], "\""];
                continue;
            }
            c if c.is_ascii_alphanumeric() || c == b'_' => {
                let end = bytes[i..]
                    .iter()
                    .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
                    .map_or(bytes.len(), |n| i + n);
                &text[i..end]
            }
            _ => {
                // One byte of punctuation; anything else (a multi-byte character) is a parse
                // error, and ends a type as punctuation does.
                let len = text[i..].chars().next().map_or(1, char::len_utf8);
                &text[i..i + len]
            }
        };
        if std::mem::take(&mut after_close) && token != "else" {
            links -= std::mem::take(&mut chains[depth]);
        }
        let in_message = message_body.is_some_and(|d| d == depth);
        match token {
            "(" | "[" | "{" => {
                if token == "{" && prev[0] == "message" {
                    message_body = Some(depth + 1);
                }
                depth += 1;
                chains.push(0);
                in_type = false;
                angles = 0;
                if depth > MAX_NESTING {
                    return Err(too_deep(i));
                }
            }
            ")" | "]" | "}" => {
                if message_body == Some(depth) {
                    message_body = None;
                }
                if depth > 0 {
                    links -= chains.pop().unwrap_or(0);
                    depth -= 1;
                }
                after_close = true;
                in_type = false;
                angles = 0;
            }
            "if" if prev[1] == "else" => {
                chains[depth] += 1;
                links += 1;
                if links > MAX_ELSE_IF {
                    return Err(Diagnostic::new(
                        Code::TooDeep,
                        format!("`else if` chain longer than {MAX_ELSE_IF}"),
                        Span {
                            file,
                            start: i,
                            end: i + 2,
                        },
                        "one `else if` too many",
                    )
                    .help(
                        "turn the chain into a `match`, or split it into several `if` statements",
                    ));
                }
                in_type = false;
                angles = 0;
            }
            ":" if in_message || matches!(prev[0], "let" | "state") => {
                in_type = true;
                angles = 0;
            }
            "<" if in_type => {
                angles += 1;
                if depth + angles > MAX_NESTING {
                    return Err(too_deep(i));
                }
            }
            ">" if in_type => angles = angles.saturating_sub(1),
            // Type arguments are separated by commas; names are part of a type.
            "," if in_type => {}
            t if in_type && (t.as_bytes()[0].is_ascii_alphanumeric() || t.starts_with('_')) => {}
            _ => {
                in_type = false;
                angles = 0;
            }
        }
        prev = [prev[1], token];
        i += token.len();
    }
    Ok(())
}

fn unclosed_comment(file: FileId, at: usize) -> Diagnostic {
    Diagnostic::new(
        Code::Syntax,
        "unclosed block comment",
        Span {
            file,
            start: at,
            end: at + 2,
        },
        "this comment is never closed",
    )
    .help("end it with `*/`; block comments do not nest, so the first `*/` ends one")
}

fn syntax_error(file: FileId, text: &str, error: pest::error::Error<Rule>) -> Diagnostic {
    let (start, end) = match error.location {
        InputLocation::Pos(p) => (p, (p + 1).min(text.len()).max(p)),
        InputLocation::Span((s, e)) => (s, e),
    };
    let label = match &error.variant {
        ErrorVariant::ParsingError { positives, .. } if !positives.is_empty() => {
            let mut names: Vec<&str> = positives.iter().map(|r| describe(*r)).collect();
            names.sort_unstable();
            names.dedup();
            format!("expected {}", join_or(&names))
        }
        ErrorVariant::ParsingError { .. } => "unexpected text".to_string(),
        ErrorVariant::CustomError { message } => message.clone(),
    };
    let found = text[start.min(text.len())..].chars().next();
    if let Some(d) = likely_slip(file, text, start, found, &label) {
        return d;
    }
    let message = match found {
        Some(c) if !c.is_whitespace() => format!("unexpected `{}`", c.escape_debug()),
        Some(_) => "unexpected text".to_string(),
        None => "unexpected end of file".to_string(),
    };
    Diagnostic::new(Code::Syntax, message, Span { file, start, end }, label)
        .help("docs/language.md shows the syntax of every construct")
}

/// The usual slips, said as such: a statement missing its `;` (the parser stumbles on the
/// next line, but the `;` belongs at the end of this one), and `=` written for `==`.
fn likely_slip(
    file: FileId,
    text: &str,
    at: usize,
    found: Option<char>,
    expected: &str,
) -> Option<Diagnostic> {
    let before = &text[..at.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let first_on_line = before[line_start..].trim().is_empty();
    let previous = before.trim_end();
    let ends_statement = previous.ends_with([';', '{', '}', ',', '(']);
    if first_on_line && !ends_statement && expected.contains("an operator") {
        let end = previous.len();
        return Some(
            Diagnostic::new(
                Code::Syntax,
                "missing `;`",
                Span {
                    file,
                    start: end.saturating_sub(1),
                    end,
                },
                "the statement ends here",
            )
            .help("end the statement with `;`"),
        );
    }
    let rest = &text[at.min(text.len())..];
    if found == Some('=') && !rest.starts_with("==") && !rest.starts_with("=>") {
        return Some(
            Diagnostic::new(
                Code::Syntax,
                "unexpected `=`",
                Span {
                    file,
                    start: at,
                    end: at + 1,
                },
                expected.to_string(),
            )
            .help("to compare, write `==`; to change a state field or a local, write `x = v;` as a statement of its own (a record's field cannot be assigned: build a new record, `Put { key: k, value: p.value }`)"),
        );
    }
    None
}

fn join_or(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {}", init.join(", "), last),
    }
}

/// A reader's name for a grammar rule, used in "expected ..." labels.
fn describe(rule: Rule) -> &'static str {
    match rule {
        Rule::EOI => "end of file",
        Rule::item | Rule::file => "`import`, `message`, `agent` or `system`",
        Rule::agent_item => "`accepts`, `uses`, `state`, `impl`, `on` or `}`",
        Rule::system_item => "`instance`, a pipeline, `box` or `}`",
        Rule::stmt => "a statement",
        Rule::primary | Rule::cond_primary | Rule::literal => "an expression",
        Rule::arg_value => "an argument",
        Rule::import => "`import`",
        Rule::message => "`message`",
        Rule::agent => "`agent`",
        Rule::system => "`system`",
        Rule::ident | Rule::keyword => "a name",
        Rule::string | Rule::string_body => "a string",
        Rule::int => "an integer",
        Rule::duration => "a duration such as `5ms`",
        Rule::ty | Rule::type_args => "a type",
        Rule::field => "a field",
        Rule::accepts => "`accepts`",
        Rule::uses | Rule::use_decl => "`uses`",
        Rule::state => "`state`",
        Rule::key_annotation => "`by`",
        Rule::impl_rust | Rule::impl_process => "`impl`",
        Rule::determinism | Rule::deterministic_kw => "`deterministic`",
        Rule::handler => "`on`",
        Rule::start_trigger | Rule::message_trigger => "`start` or a message name",
        Rule::block => "a block `{ .. }`",
        Rule::let_stmt
        | Rule::assign_stmt
        | Rule::expr_stmt
        | Rule::if_stmt
        | Rule::match_stmt
        | Rule::for_stmt
        | Rule::send_stmt
        | Rule::reply_stmt
        | Rule::finish_stmt
        | Rule::print_stmt => "a statement",
        Rule::match_arm => "a match arm",
        Rule::pattern | Rule::some_pattern | Rule::wildcard => "a pattern",
        Rule::binop => "an operator",
        Rule::method_call | Rule::field_access => "`.`",
        Rule::expr
        | Rule::cond
        | Rule::unary
        | Rule::postfix
        | Rule::cond_postfix
        | Rule::bool_lit
        | Rule::none_lit
        | Rule::some_lit
        | Rule::record_lit
        | Rule::list_lit
        | Rule::call
        | Rule::paren => "an expression",
        Rule::field_init => "a field initializer",
        Rule::instance => "`instance`",
        Rule::array_len => "`[`",
        Rule::wiring | Rule::binding => "a binding `name = instance`",
        Rule::instance_ref => "an instance",
        Rule::pipeline | Rule::channel => "a pipeline",
        Rule::transform => "a transformation",
        Rule::arg | Rule::arg_name => "an argument",
        Rule::box_decl | Rule::box_address => "`box`",
        _ => "more input",
    }
}

//! No input makes the front end panic: generated inputs (random bytes, truncated and mutated
//! examples, deep nesting) all end in a model or in diagnostics. Over 10,000 inputs in all.

use std::path::Path;

use proptest::prelude::*;

/// Parses and checks `text` as a file with no readable imports; returns the number of
/// diagnostics (the point is that it returns at all).
fn front_end(text: &str) -> usize {
    let no_imports = |_: &Path| Err(std::io::Error::other("imports are not read in this test"));
    let (program, diagnostics) =
        ovidc::syntax::load_source(Path::new("input.ovid"), text.to_string(), &no_imports);
    let diagnostics = if diagnostics.is_empty() {
        ovidc::check::check(&program).err().unwrap_or_default()
    } else {
        diagnostics
    };
    for d in &diagnostics {
        // Rendering must not panic either, whatever the span.
        let _ = ovidc::diagnostic::render(&program.sources, d, ovidc::diagnostic::Style::Plain);
        let _ = ovidc::diagnostic::to_json(&program.sources, d);
    }
    diagnostics.len()
}

fn corpus() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut texts = Vec::new();
    for dir in ["examples", "tests/ui/fail"] {
        let mut stack = vec![root.join(dir)];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = entry.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|e| e == "ovid") {
                    texts.push(std::fs::read_to_string(&p).expect("readable"));
                }
            }
        }
    }
    texts.sort();
    texts
}

/// Pieces of the language to splice into inputs, so mutations reach deep into the grammar.
const TOKENS: &[&str] = &[
    "message",
    "agent",
    "system",
    "accepts",
    "uses",
    "state",
    "on",
    "start",
    "impl",
    "rust",
    "process",
    "let",
    "if",
    "else",
    "match",
    "for",
    "in",
    "send",
    "reply",
    "finish",
    "print",
    "instance",
    "box",
    "at",
    "by",
    "some",
    "none",
    "true",
    "false",
    "deterministic",
    "{",
    "}",
    "(",
    ")",
    "<",
    ">",
    "[",
    "]",
    ";",
    ":",
    ",",
    ".",
    "->",
    "|>",
    "=>",
    "=",
    "==",
    "+",
    "-",
    "*",
    "/",
    "%",
    "!",
    "&&",
    "||",
    "\"",
    "\"x\"",
    "0",
    "99999999999999999999999999999999999999999",
    "5ms",
    "_",
    "KVS",
    "key",
    "Map<String, Int>",
    "Option<",
    "List<",
    "shard(2, by: key)",
    "replicate(3)",
    "/*",
    "*/",
    "//",
    "\n",
    "é",
    "\u{0}",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        front_end(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn truncated_examples_never_panic(pick in any::<prop::sample::Index>(), cut in any::<prop::sample::Index>()) {
        let corpus = corpus();
        let text = pick.get(&corpus);
        let mut at = cut.index(text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        front_end(&text[..at]);
    }

    #[test]
    fn mutated_examples_never_panic(
        pick in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), 0..3u8), 1..6),
    ) {
        let corpus = corpus();
        let mut text = pick.get(&corpus).clone();
        for (at, token, kind) in edits {
            let mut i = at.index(text.len() + 1);
            while !text.is_char_boundary(i) {
                i -= 1;
            }
            let token = token.get(TOKENS);
            match kind {
                0 => text.insert_str(i, token),
                1 => {
                    let mut end = (i + token.len()).min(text.len());
                    while !text.is_char_boundary(end) {
                        end += 1;
                    }
                    text.replace_range(i..end, "");
                }
                _ => text.replace_range(i..i, &format!(" {token} ")),
            }
        }
        front_end(&text);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn deep_nesting_never_panics(depth in 0usize..200, shape in 0..4u8) {
        let (open, close, wrap) = match shape {
            0 => ("(", ")", ("agent A { on start { let x = ", "1; } }")),
            1 => ("List<", ">", ("message M { f: ", "Int }")),
            2 => ("some(", ")", ("agent A { on start { let x = ", "1; } }")),
            _ => ("if true { ", " }", ("agent A { on start { ", " } }")),
        };
        let text = format!("{}{}{}{}", wrap.0, open.repeat(depth), close.repeat(depth), wrap.1);
        front_end(&text);
    }
}

#[test]
fn nesting_at_the_limit_is_accepted_and_beyond_it_reported() {
    let limit = ovidc::syntax::MAX_NESTING - 2; // two levels are taken by the agent and handler braces
    let ok = format!(
        "agent A {{ on start {{ let x = {}1{}; }} }}",
        "(".repeat(limit),
        ")".repeat(limit)
    );
    assert_eq!(front_end(&ok), 0);
    let deep = format!(
        "agent A {{ on start {{ let x = {}1{}; }} }}",
        "(".repeat(limit + 1),
        ")".repeat(limit + 1)
    );
    assert_eq!(front_end(&deep), 1);
}

#[test]
fn long_else_if_chains_are_fine() {
    let chain = "if true { } else ".repeat(2000);
    front_end(&format!("agent A {{ on start {{ {chain} {{ }} }} }}"));
}

/// The codes of the diagnostics `text` gets.
fn codes(text: &str) -> Vec<&'static str> {
    let no_imports = |_: &Path| Err(std::io::Error::other("imports are not read in this test"));
    let (program, diagnostics) =
        ovidc::syntax::load_source(Path::new("input.ovid"), text.to_string(), &no_imports);
    let diagnostics = if diagnostics.is_empty() {
        ovidc::check::check(&program).err().unwrap_or_default()
    } else {
        diagnostics
    };
    diagnostics.iter().map(|d| d.code.as_str()).collect()
}

#[test]
fn comparisons_do_not_count_as_nesting() {
    // `<` is a bracket only in a type; a comparison opens nothing.
    let ifs = "if a < b { print(a); } ".repeat(200);
    let many = "a < b, ".repeat(100);
    let text =
        format!("agent A {{ on start {{ let a = 1; let b = 2; {ifs} print({many} b > a); }} }}");
    assert_eq!(codes(&text), Vec::<&str>::new());
}

#[test]
fn brackets_in_strings_and_comments_do_not_count() {
    let opens = "(".repeat(100);
    let text = format!(
        "// {opens}\n/* {opens} [[[ {{{{ */\nagent A {{ on start {{ print(\"{opens} \\\" {opens}\"); }} }}\n"
    );
    assert_eq!(codes(&text), Vec::<&str>::new());
}

#[test]
fn deep_brackets_and_type_arguments_are_refused_before_parsing() {
    let parens = format!(
        "agent A {{ on start {{ let x = {}1{}; }} }}",
        "(".repeat(10_000),
        ")".repeat(10_000)
    );
    assert_eq!(codes(&parens), ["ovid::syntax::too_deep"]);
    let unclosed = format!("agent A {{ on start {{ let x = {}", "[".repeat(10_000));
    assert_eq!(codes(&unclosed), ["ovid::syntax::too_deep"]);
    for (open, close) in [
        ("message M { f: ", " }"),
        ("agent A { on start { let x: ", " = []; } }"),
        ("agent A { state s: ", "; }"),
    ] {
        let text = format!(
            "{open}{}Int{}{close}",
            "List<".repeat(10_000),
            ">".repeat(10_000)
        );
        assert_eq!(codes(&text), ["ovid::syntax::too_deep"], "{open}");
    }
}

#[test]
fn an_unclosed_block_comment_is_reported_at_its_start() {
    let text = "message M {}\n/* never closed\nagent A {}\n";
    let no_imports = |_: &Path| Err(std::io::Error::other("imports are not read in this test"));
    let (_, diagnostics) =
        ovidc::syntax::load_source(Path::new("input.ovid"), text.to_string(), &no_imports);
    assert_eq!(diagnostics.len(), 1);
    assert_eq!(diagnostics[0].message, "unclosed block comment");
    assert_eq!(
        (diagnostics[0].span.start, diagnostics[0].span.end),
        (13, 15)
    );
}

#[test]
fn integer_literals_at_the_edges_of_their_types_are_accepted() {
    let text = "message M { u: U32, b: U8 }
agent A {
    accepts M;
    state top: U64 = 18446744073709551615;
    state low: Int = -9223372036854775807;
    state small: I32 = -2147483647;
    on M(m) {
        let back: U32 = - -5;
        if 255 == m.b && m.u > 0 { print(top, low, small, back, m.u - 1, -m.u); }
        let bytes = [0, m.b, 255];
        print(bytes, min(255, m.b));
    }
}";
    assert_eq!(codes(text), Vec::<&str>::new());
    // `-2147483648` is the negation of a literal that does not fit in `I32`: generated code
    // spells that literal, so it is refused (write `-2147483647 - 1`).
    assert_eq!(
        codes("agent A { state small: I32 = -2147483648; }"),
        ["ovid::type::mismatch"]
    );
}

#[test]
fn a_request_handler_that_replies_on_some_path_only_is_refused() {
    // It used to be accepted, and such a request was never answered (issue 11).
    let text = "message Get { key: String }
message Value { found: Bool }
agent A {
    accepts Get -> Value;
    state data: Map<String, String>;
    on Get(g) {
        match data.get(g.key) {
            some(v) => { reply Value { found: true }; }
            none => { }
        }
    }
}";
    assert_eq!(codes(text), ["ovid::reply::some_paths"]);
    let every_path = text.replace("none => { }", "none => { reply Value { found: false }; }");
    assert_eq!(codes(&every_path), Vec::<&str>::new());
}

#[test]
fn empty_lists_and_none_with_a_type_are_accepted() {
    let text = "agent A { state s: List<Int> = []; on start { let e: List<String> = []; let o: Option<Int> = none; let p = some([1]); print(s, e, o, p); } }";
    assert_eq!(codes(text), Vec::<&str>::new());
}

#[test]
fn separate_elements_can_have_their_own_pipelines() {
    let text = "message Job { n: Int }
agent W { accepts Job; on Job(j) { print(j.n); } }
agent B { uses pool; on start { send pool Job { n: 1 }; } }
system S {
    instance w[2]: W;
    instance b[2]: B { pool = w[0] };
    w[0] |> monitor;
    w[1] |> audit;
    b[0] -> w[0] |> compress;
    b[1] -> w[0] |> batch(8);
    box one at \"127.0.0.1:7000\" { \"w*\" }
    box two at \"127.0.0.1:7001\" { \"b*\" }
}";
    assert_eq!(codes(text), Vec::<&str>::new());
}

#[test]
fn long_chains_without_brackets_are_refused_not_overflowing() {
    let n = 100_000;
    let chains = [
        format!("agent A {{ on start {{ let x = {}1; }} }}", "-".repeat(n)),
        format!(
            "agent A {{ on start {{ let x = {}1; }} }}",
            "1 + ".repeat(n)
        ),
        format!(
            "message M {{ a: Int }} agent A {{ accepts M; on M(m) {{ let x = m{}; }} }}",
            ".a".repeat(n)
        ),
        format!(
            "agent A {{ on start {{ let x = \"\"{}; }} }}",
            ".trim()".repeat(n)
        ),
        format!(
            "agent A {{ on start {{ {} {{ }} }} }}",
            "if true { } else ".repeat(n)
        ),
    ];
    for text in chains {
        assert_eq!(codes(&text), ["ovid::syntax::too_deep"], "{}", &text[..60]);
        // Rendered too: the error sits past column 65535, further than miette can pad a label.
        front_end(&text);
    }
}

/// Everything at its limit at once, on a stack as small as a test thread's: 62 nested blocks,
/// in them a chain of `else if` as long as accepted, in it an expression as deep as accepted.
#[test]
fn the_limits_together_fit_a_small_stack() {
    let blocks = ovidc::syntax::MAX_NESTING - 2; // the agent's and the handler's braces
    let chain = ovidc::syntax::MAX_ELSE_IF;
    let expr = format!("{}1", "1 + ".repeat(ovidc::syntax::MAX_EXPR_DEPTH - 1));
    let text = format!(
        "agent A {{ on start {{ {} if true {{ }} {} {{ let x = {expr}; }} {} }} }}",
        "if true { ".repeat(blocks - 1),
        "else if true { } ".repeat(chain - 1) + "else if false { } else",
        "}".repeat(blocks - 1),
    );
    let run = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || codes(&text))
        .expect("thread starts");
    assert_eq!(run.join().expect("no stack overflow"), Vec::<&str>::new());
    let one_more = format!(
        "agent A {{ on start {{ if true {{ }} {} {{ }} }} }}",
        "else if true { } ".repeat(chain + 1) + "else"
    );
    assert_eq!(codes(&one_more), ["ovid::syntax::too_deep"]);
    let deeper = format!(
        "agent A {{ on start {{ let x = {}1; }} }}",
        "1 + ".repeat(ovidc::syntax::MAX_EXPR_DEPTH)
    );
    assert_eq!(codes(&deeper), ["ovid::syntax::too_deep"]);
}

#[test]
fn a_file_imported_as_name_and_as_dot_slash_name_is_loaded_once() {
    let shapes = "message Point { x: Int, y: Int }";
    let read = |p: &Path| {
        if p.file_name().is_some_and(|n| n == "shapes.ovid") {
            Ok(shapes.to_string())
        } else {
            Err(std::io::Error::other("no such file"))
        }
    };
    for root in ["main.ovid", "./main.ovid", "dir/main.ovid"] {
        let text = "import \"shapes.ovid\";\nimport \"./shapes.ovid\";\nimport \"./main.ovid\";\nmessage Segment { from: Point, to: Point }";
        let (program, diagnostics) =
            ovidc::syntax::load_source(Path::new(root), text.to_string(), &read);
        assert!(diagnostics.is_empty(), "{root}");
        assert_eq!(program.files.len(), 2, "{root}");
        assert!(ovidc::check::check(&program).is_ok(), "{root}");
    }
}

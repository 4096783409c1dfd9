//! Random well-typed programs, in the spirit of Csmith: a seeded generator writes agents whose
//! handlers mix every kind of expression and statement of the language (literals, negative and
//! computed from literals; arithmetic, comparisons, logic; strings; options, lists and maps with
//! their methods; `let`, assignment, `if`/`else`, `match`, `for`; a reply on every path), each
//! typed by construction. Every program must pass `ovidc check`, and its crate must compile
//! with no warning. The agents are built in batches of one system each, so that a thousand of
//! them compile in a few crates.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The types the generator writes values of.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ty {
    Int,
    U8,
    Bool,
    Str,
    OptInt,
    ListInt,
}

/// What a handler can read: the message's fields, the state, and the locals so far.
struct Scope {
    vars: Vec<(String, Ty)>,
    /// State fields that are maps `String → Int` (for map methods).
    maps: Vec<String>,
    next_local: usize,
}

impl Scope {
    fn of(&self, ty: Ty, rng: &mut Rng) -> Option<String> {
        let found: Vec<&String> = self
            .vars
            .iter()
            .filter(|(_, t)| *t == ty)
            .map(|(n, _)| n)
            .collect();
        (!found.is_empty()).then(|| found[rng.below(found.len() as u64) as usize].clone())
    }
}

fn expr(ty: Ty, depth: u32, s: &Scope, rng: &mut Rng) -> String {
    let leaf = depth == 0 || rng.chance(30);
    if leaf {
        if rng.chance(50)
            && let Some(v) = s.of(ty, rng)
        {
            return v;
        }
        return match ty {
            Ty::Int => match rng.below(3) {
                0 => format!("{}", rng.below(100)),
                1 => format!("-{}", rng.below(100)),
                _ => format!("{} - {}", rng.below(10), rng.below(10)),
            },
            Ty::U8 => format!("{}", rng.below(256)),
            Ty::Bool => ["true", "false"][rng.below(2) as usize].to_string(),
            Ty::Str => format!("\"s{}\"", rng.below(5)),
            Ty::OptInt => match rng.below(2) {
                0 => "none".to_string(),
                _ => format!("some({})", rng.below(9)),
            },
            Ty::ListInt => format!("[{}, {}]", rng.below(9), rng.below(9)),
        };
    }
    let d = depth - 1;
    // Every composite in parentheses: it may be the receiver of a method.
    let composite = match ty {
        Ty::Int => match rng.below(9) {
            0 => format!(
                "{} + {}",
                expr(Ty::Int, d, s, rng),
                expr(Ty::Int, d, s, rng)
            ),
            1 => format!(
                "{} * ({})",
                expr(Ty::Int, d, s, rng),
                expr(Ty::Int, d, s, rng)
            ),
            2 => format!(
                "({}) / {}",
                expr(Ty::Int, d, s, rng),
                expr(Ty::Int, d, s, rng)
            ),
            3 => format!(
                "min({}, {})",
                expr(Ty::Int, d, s, rng),
                expr(Ty::Int, d, s, rng)
            ),
            4 => format!("-({})", expr(Ty::Int, d, s, rng)),
            5 => format!("{}.len()", expr(Ty::Str, d, s, rng)),
            6 => format!(
                "{}.unwrap_or({})",
                expr(Ty::OptInt, d, s, rng),
                expr(Ty::Int, d, s, rng)
            ),
            7 => format!("({}).abs()", expr(Ty::Int, d, s, rng)),
            _ => format!(
                "max({}, {}) % {}",
                expr(Ty::Int, d, s, rng),
                expr(Ty::Int, d, s, rng),
                expr(Ty::Int, d, s, rng)
            ),
        },
        Ty::U8 => format!("{} + {}", expr(Ty::U8, d, s, rng), expr(Ty::U8, d, s, rng)),
        Ty::Bool => match rng.below(6) {
            0 => format!(
                "{} < {}",
                expr(Ty::Int, d, s, rng),
                expr(Ty::Int, d, s, rng)
            ),
            1 => format!(
                "{} == {}",
                expr(Ty::Str, d, s, rng),
                expr(Ty::Str, d, s, rng)
            ),
            2 => format!(
                "!({} && {})",
                expr(Ty::Bool, d, s, rng),
                expr(Ty::Bool, d, s, rng)
            ),
            3 => format!("{}.is_some()", expr(Ty::OptInt, d, s, rng)),
            4 => format!(
                "{}.contains({})",
                expr(Ty::ListInt, d, s, rng),
                expr(Ty::Int, d, s, rng)
            ),
            _ => match s.maps.first() {
                Some(m) => format!("{m}.contains_key({})", expr(Ty::Str, d, s, rng)),
                None => format!("{} || true", expr(Ty::Bool, d, s, rng)),
            },
        },
        Ty::Str => match rng.below(4) {
            0 => format!(
                "{} + {}",
                expr(Ty::Str, d, s, rng),
                expr(Ty::Str, d, s, rng)
            ),
            1 => format!("str({})", expr(Ty::Int, d, s, rng)),
            2 => format!("{}.to_upper()", expr(Ty::Str, d, s, rng)),
            _ => format!("str({})", expr(Ty::Bool, d, s, rng)),
        },
        Ty::OptInt => match rng.below(3) {
            0 => format!("{}.first()", expr(Ty::ListInt, d, s, rng)),
            1 => match s.maps.first() {
                Some(m) => format!("{m}.get({})", expr(Ty::Str, d, s, rng)),
                None => format!("some({})", expr(Ty::Int, d, s, rng)),
            },
            _ => format!("some({})", expr(Ty::Int, d, s, rng)),
        },
        Ty::ListInt => format!(
            "[{}, {}]",
            expr(Ty::Int, d, s, rng),
            expr(Ty::Int, d, s, rng)
        ),
    };
    format!("({composite})")
}

const TYPES: [Ty; 6] = [Ty::Int, Ty::U8, Ty::Bool, Ty::Str, Ty::OptInt, Ty::ListInt];

fn ty_name(t: Ty) -> &'static str {
    match t {
        Ty::Int => "Int",
        Ty::U8 => "U8",
        Ty::Bool => "Bool",
        Ty::Str => "String",
        Ty::OptInt => "Option<Int>",
        Ty::ListInt => "List<Int>",
    }
}

/// Statements, ending with a reply of `Answer` on every path.
fn block(out: &mut String, indent: usize, depth: u32, s: &mut Scope, rng: &mut Rng) {
    let pad = " ".repeat(indent);
    for _ in 0..rng.below(4) {
        match rng.below(6) {
            0 | 1 => {
                let ty = TYPES[rng.below(TYPES.len() as u64) as usize];
                let name = format!("v{}", s.next_local);
                s.next_local += 1;
                let value = expr(ty, 2, s, rng);
                let _ = writeln!(out, "{pad}let {name}: {} = {value};", ty_name(ty));
                s.vars.push((name, ty));
            }
            2 => {
                let v = expr(Ty::Int, 2, s, rng);
                let _ = writeln!(out, "{pad}total = total + {v};");
            }
            3 if !s.maps.is_empty() => {
                let m = s.maps[0].clone();
                let (k, v) = (expr(Ty::Str, 1, s, rng), expr(Ty::Int, 2, s, rng));
                let _ = writeln!(out, "{pad}{m}.insert({k}, {v});");
            }
            4 => {
                let list = expr(Ty::ListInt, 1, s, rng);
                let x = format!("x{}", s.next_local);
                s.next_local += 1;
                let _ = writeln!(out, "{pad}for {x} in {list} {{");
                let _ = writeln!(out, "{pad}    total = total + {x};");
                let _ = writeln!(out, "{pad}}}");
            }
            _ => {
                let v = expr(Ty::Str, 2, s, rng);
                let _ = writeln!(out, "{pad}print({v});");
            }
        }
    }
    let reply = |s: &Scope, rng: &mut Rng| {
        format!(
            "reply Answer {{ n: {}, ok: {}, text: {} }};",
            expr(Ty::Int, 2, s, rng),
            expr(Ty::Bool, 2, s, rng),
            expr(Ty::Str, 1, s, rng)
        )
    };
    if depth > 0 && rng.chance(40) {
        let cond = expr(Ty::Bool, 2, s, rng);
        let _ = writeln!(out, "{pad}if {cond} {{");
        let saved = s.vars.len();
        block(out, indent + 4, depth - 1, s, rng);
        s.vars.truncate(saved);
        let _ = writeln!(out, "{pad}}} else {{");
        block(out, indent + 4, depth - 1, s, rng);
        s.vars.truncate(saved);
        let _ = writeln!(out, "{pad}}}");
    } else if depth > 0 && rng.chance(30) {
        let opt = expr(Ty::OptInt, 1, s, rng);
        let bound = format!("o{}", s.next_local);
        s.next_local += 1;
        let _ = writeln!(out, "{pad}match {opt} {{");
        let saved = s.vars.len();
        let _ = writeln!(out, "{pad}    some({bound}) => {{");
        s.vars.push((bound, Ty::Int));
        block(out, indent + 8, depth - 1, s, rng);
        s.vars.truncate(saved);
        let _ = writeln!(out, "{pad}    }}");
        let _ = writeln!(out, "{pad}    none => {{");
        block(out, indent + 8, depth - 1, s, rng);
        s.vars.truncate(saved);
        let _ = writeln!(out, "{pad}    }}");
        let _ = writeln!(out, "{pad}}}");
    } else {
        let _ = writeln!(out, "{pad}{}", reply(s, rng));
    }
}

/// One program of `agents` random agents (and the messages they share), from `seed`.
fn program(seed: u64, agents: usize) -> String {
    let mut rng = Rng(seed);
    let mut out = String::new();
    out.push_str("message Ask { n: Int, b: U8, flag: Bool, word: String, maybe: Option<Int>, xs: List<Int> }\n");
    out.push_str("message Answer { n: Int, ok: Bool, text: String }\n\n");
    for a in 0..agents {
        let _ = writeln!(out, "agent Random{a} {{");
        let _ = writeln!(out, "    accepts Ask -> Answer;");
        let _ = writeln!(out, "    state total: Int = {};", rng.below(10));
        let _ = writeln!(out, "    state seen: Map<String, Int>;");
        let _ = writeln!(out, "    on Ask(q) {{");
        let mut scope = Scope {
            vars: vec![
                ("q.n".into(), Ty::Int),
                ("q.b".into(), Ty::U8),
                ("q.flag".into(), Ty::Bool),
                ("q.word".into(), Ty::Str),
                ("q.maybe".into(), Ty::OptInt),
                ("q.xs".into(), Ty::ListInt),
                ("total".into(), Ty::Int),
            ],
            maps: vec!["seen".into()],
            next_local: 0,
        };
        block(&mut out, 8, 2, &mut scope, &mut rng);
        let _ = writeln!(out, "    }}\n}}\n");
    }
    let _ = writeln!(out, "system Generated{seed} {{");
    for a in 0..agents {
        let _ = writeln!(out, "    instance r{a}: Random{a};");
    }
    let _ = writeln!(out, "}}");
    out
}

#[test]
fn random_well_typed_programs_check_and_compile_without_warnings() {
    let ovidc = env!("CARGO_BIN_EXE_ovidc");
    let dir = root().join("target/random-programs");
    std::fs::create_dir_all(&dir).unwrap();
    // Five crates of 200 agents: a thousand random handlers.
    for seed in 1..=5u64 {
        let file = dir.join(format!("random{seed}.ovid"));
        std::fs::write(&file, program(seed, 200)).unwrap();
        let check = Command::new(ovidc)
            .arg("check")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{} does not check:\n{}",
            file.display(),
            String::from_utf8_lossy(&check.stderr)
        );
        let out = dir.join(format!("crate{seed}"));
        let build = Command::new(ovidc)
            .arg("build")
            .arg(&file)
            .arg("-o")
            .arg(&out)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&build.stderr);
        assert!(
            build.status.success(),
            "{} does not build:\n{stderr}",
            file.display()
        );
        assert!(
            !stderr.lines().any(|l| l.starts_with("warning")),
            "{} builds with warnings:\n{stderr}",
            file.display()
        );
    }
}

#[test]
fn the_generator_is_deterministic_and_varied() {
    assert_eq!(program(7, 3), program(7, 3));
    assert_ne!(program(7, 3), program(8, 3));
    let text = program(3, 50);
    for construct in ["if ", "match ", "for ", "let ", "min(", "some(", ".insert("] {
        assert!(text.contains(construct), "no `{construct}` in 50 agents");
    }
}

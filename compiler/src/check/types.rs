//! The types of the language and their resolution from written [`TypeExpr`]s.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::diagnostic::{Code, Diagnostic};
use crate::syntax::ast::TypeExpr;

/// The integer types, each the Rust type of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum IntTy {
    /// `Int`: a 64-bit signed integer.
    Int,
    /// `I32`
    I32,
    /// `I64`
    I64,
    /// `U8`
    U8,
    /// `U16`
    U16,
    /// `U32`
    U32,
    /// `U64`
    U64,
}

impl IntTy {
    const ALL: [(&'static str, IntTy); 7] = [
        ("Int", IntTy::Int),
        ("I32", IntTy::I32),
        ("I64", IntTy::I64),
        ("U8", IntTy::U8),
        ("U16", IntTy::U16),
        ("U32", IntTy::U32),
        ("U64", IntTy::U64),
    ];

    /// The name written in `.ovid` source.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, t)| *t == self)
            .map_or("Int", |(n, _)| n)
    }

    /// The range of values it holds.
    pub fn range(self) -> (i128, i128) {
        match self {
            IntTy::Int | IntTy::I64 => (i64::MIN.into(), i64::MAX.into()),
            IntTy::I32 => (i32::MIN.into(), i32::MAX.into()),
            IntTy::U8 => (0, u8::MAX.into()),
            IntTy::U16 => (0, u16::MAX.into()),
            IntTy::U32 => (0, u32::MAX.into()),
            IntTy::U64 => (0, u64::MAX.into()),
        }
    }
}

/// A type of the language.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum Type {
    /// `String`
    String,
    /// An integer type.
    Int(IntTy),
    /// `Bool`
    Bool,
    /// `Bytes`
    Bytes,
    /// `Option<T>`
    Option(Box<Type>),
    /// `List<T>`
    List(Box<Type>),
    /// `Map<K, V>` (ordered by key, so iteration is deterministic).
    Map(Box<Type>, Box<Type>),
    /// A declared message (record) type.
    Message(String),
    /// What statements and mutating methods produce.
    Unit,
    /// An integer literal not yet given a type: fits any integer type.
    IntLiteral,
    /// A type not known because of an earlier error; fits anything, so one mistake is
    /// reported once.
    Unknown,
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::String => f.write_str("String"),
            Type::Int(i) => f.write_str(i.name()),
            Type::Bool => f.write_str("Bool"),
            Type::Bytes => f.write_str("Bytes"),
            Type::Option(t) => write!(f, "Option<{t}>"),
            Type::List(t) => write!(f, "List<{t}>"),
            Type::Map(k, v) => write!(f, "Map<{k}, {v}>"),
            Type::Message(m) => f.write_str(m),
            Type::Unit => f.write_str("()"),
            Type::IntLiteral => f.write_str("integer"),
            Type::Unknown => f.write_str("_"),
        }
    }
}

impl Type {
    /// Whether a value of type `self` can be used where `other` is expected (and the reverse:
    /// the relation is symmetric).
    pub fn fits(&self, other: &Type) -> bool {
        match (self, other) {
            (Type::Unknown, _) | (_, Type::Unknown) => true,
            (Type::IntLiteral, Type::Int(_) | Type::IntLiteral)
            | (Type::Int(_), Type::IntLiteral) => true,
            (Type::Option(a), Type::Option(b)) | (Type::List(a), Type::List(b)) => a.fits(b),
            (Type::Map(ak, av), Type::Map(bk, bv)) => ak.fits(bk) && av.fits(bv),
            (a, b) => a == b,
        }
    }

    /// Of two types that fit, the more precise one.
    pub fn join(&self, other: &Type) -> Type {
        match (self, other) {
            (Type::Unknown, t) | (t, Type::Unknown) => t.clone(),
            (Type::IntLiteral, t) | (t, Type::IntLiteral) => t.clone(),
            (Type::Option(a), Type::Option(b)) => Type::Option(Box::new(a.join(b))),
            (Type::List(a), Type::List(b)) => Type::List(Box::new(a.join(b))),
            (Type::Map(ak, av), Type::Map(bk, bv)) => {
                Type::Map(Box::new(ak.join(bk)), Box::new(av.join(bv)))
            }
            (a, _) => a.clone(),
        }
    }

    /// Whether it is an integer type (or literal).
    pub fn is_int(&self) -> bool {
        matches!(self, Type::Int(_) | Type::IntLiteral | Type::Unknown)
    }

    /// Whether values can be map keys: ordered, and simple to hash to a shard.
    pub fn is_key(&self) -> bool {
        matches!(
            self,
            Type::String | Type::Int(_) | Type::Bool | Type::Unknown
        )
    }
}

/// Resolves a written type against the declared messages, reporting unknown names and wrong
/// numbers of arguments.
pub fn resolve(
    t: &TypeExpr,
    messages: &BTreeMap<String, Vec<(String, Type)>>,
    out: &mut Vec<Diagnostic>,
) -> Type {
    let name = t.name.name.as_str();
    let want_args = match name {
        "Option" | "List" => 1,
        "Map" => 2,
        _ => 0,
    };
    if t.args.len() != want_args {
        let expected = match want_args {
            0 => format!("`{name}` takes no type arguments"),
            1 => format!("`{name}` takes one type argument, as in `{name}<String>`"),
            _ => "`Map` takes a key and a value type, as in `Map<String, Int>`".to_string(),
        };
        out.push(
            Diagnostic::new(
                Code::TypeArity,
                format!("wrong number of type arguments for `{name}`"),
                t.span,
                format!("{} given", t.args.len()),
            )
            .help(expected),
        );
        return Type::Unknown;
    }
    let mut arg = |i: usize| resolve(&t.args[i], messages, out);
    match name {
        "String" => Type::String,
        "Bool" => Type::Bool,
        "Bytes" => Type::Bytes,
        "Option" => Type::Option(Box::new(arg(0))),
        "List" => Type::List(Box::new(arg(0))),
        "Map" => {
            let k = arg(0);
            let v = arg(1);
            if !k.is_key() {
                out.push(
                    Diagnostic::new(
                        Code::TypeMismatch,
                        format!("`{k}` cannot be a map key"),
                        t.args[0].span,
                        "not a key type",
                    )
                    .help("map keys are String, an integer type or Bool"),
                );
            }
            Type::Map(Box::new(k), Box::new(v))
        }
        _ => {
            if let Some((_, i)) = IntTy::ALL.iter().find(|(n, _)| *n == name) {
                Type::Int(*i)
            } else if messages.contains_key(name) {
                Type::Message(name.to_string())
            } else {
                out.push(
                    Diagnostic::new(Code::UnknownType, format!("unknown type `{name}`"), t.name.span, "not a type")
                        .help("types are String, Int, I32, I64, U8, U16, U32, U64, Bool, Bytes, Option<T>, List<T>, Map<K, V> or a declared message"),
                );
                Type::Unknown
            }
        }
    }
}

//! Where a request handler replies: over all the paths of its body, how few and how many
//! replies, and a place that shows a path that misses or repeats (`ovid::reply::some_paths`,
//! `ovid::reply::twice`).

use crate::source::Span;
use crate::syntax::ast::{Block, Stmt};

/// How many times a block replies, over all its paths: at least `min`, at most `max` (2 stands
/// for "more than once"), with a place that shows each problem.
#[derive(Debug, Clone, Copy, Default)]
pub struct Replies {
    /// The fewest replies of any path.
    pub min: u8,
    /// The most replies of any path (capped at 2).
    pub max: u8,
    /// Where a path that does not reply leaves (a branch, or the condition of an `if` with no
    /// `else`), when some other path replies.
    pub missing: Option<(Span, &'static str)>,
    /// A reply that may come after another one on the same path (or in a loop).
    pub again: Option<(Span, &'static str)>,
    /// The first reply of the block.
    pub first: Option<Span>,
}

impl Replies {
    fn once(span: Span) -> Self {
        Replies {
            min: 1,
            max: 1,
            first: Some(span),
            ..Replies::default()
        }
    }

    /// One after the other.
    fn then(self, next: Replies) -> Replies {
        let again = self.again.or(next.again).or_else(|| {
            (self.max >= 1)
                .then_some(next.first)
                .flatten()
                .map(|s| (s, "a second reply on a path that has replied"))
        });
        Replies {
            min: (self.min + next.min).min(2),
            max: (self.max + next.max).min(2),
            missing: if self.min > 0 || next.min > 0 {
                None
            } else {
                self.missing.or(next.missing)
            },
            again,
            first: self.first.or(next.first),
        }
    }

    /// One or the other (`missing_at`: where the path through `other` goes, if it replies not).
    fn or(self, other: Replies, missing_at: (Span, &'static str)) -> Replies {
        let missing = match (self.min, other.min) {
            (0, _) if self.max == 0 && other.max > 0 => Some(missing_at),
            (_, 0) if other.max == 0 && self.max > 0 => Some(missing_at),
            _ => self.missing.or(other.missing),
        };
        Replies {
            min: self.min.min(other.min),
            max: self.max.max(other.max),
            missing,
            again: self.again.or(other.again),
            first: self.first.or(other.first),
        }
    }
}

/// How many times `b` replies on each of its paths.
pub fn reply_paths(b: &Block) -> Replies {
    b.stmts.iter().fold(Replies::default(), |acc, s| {
        let here = match s {
            Stmt::Reply { span, .. } => Replies::once(*span),
            Stmt::If {
                cond,
                then,
                otherwise,
            } => {
                let t = reply_paths(then);
                match otherwise {
                    Some(o) => {
                        let e = reply_paths(o);
                        // Point at the branch that does not reply.
                        let at = if t.max == 0 { then.span } else { o.span };
                        t.or(e, (at, "this branch does not reply"))
                    }
                    None => t.or(
                        Replies::default(),
                        (cond.span, "when this is false, nothing replies"),
                    ),
                }
            }
            Stmt::Match { arms, .. } => {
                let mut arms = arms.iter();
                match arms.next() {
                    None => Replies::default(),
                    Some(first) => arms.fold(reply_paths(&first.body), |acc, a| {
                        let r = reply_paths(&a.body);
                        let at = if r.max == 0 {
                            a.body.span
                        } else {
                            first.body.span
                        };
                        acc.or(r, (at, "this arm does not reply"))
                    }),
                }
            }
            Stmt::For { body, iter, .. } => {
                let r = reply_paths(body);
                match r.first {
                    // Once per element, and not at all for an empty list.
                    Some(first) => Replies {
                        min: 0,
                        max: 2,
                        missing: Some((iter.span, "when this is empty, nothing replies")),
                        again: Some((first, "replies once per element")),
                        first: Some(first),
                    },
                    None => r,
                }
            }
            _ => Replies::default(),
        };
        acc.then(here)
    })
}

//! Checks each agent on its own: accepted messages, uses, state, implementation and handlers.

use std::collections::{BTreeMap, BTreeSet};

use super::handlers::{self, Env, Facts, closest};
use super::model::{AgentInfo, Behaviour, StateInfo};
use super::types::{self, Type};
use crate::diagnostic::{Code, Diagnostic};
use crate::syntax::Program;
use crate::syntax::ast::{self, Ident, ImplKind, Span, Trigger};

/// An agent as checked, with the facts later phases need and that the model does not keep.
pub struct Checked {
    /// What goes into the model.
    pub info: AgentInfo,
    /// `uses` identifier → sent messages with the `send` statement spans.
    pub sends: BTreeMap<String, Vec<(String, Span)>>,
    /// Why it is not deterministic, if it is not.
    pub nondeterminism: Option<(Span, String)>,
    /// Accesses to keyed state.
    pub state_accesses: Vec<handlers::StateAccess>,
}

/// Checks every agent of the program.
pub fn check_agents(
    program: &Program,
    messages: &BTreeMap<String, Vec<(String, Type)>>,
    out: &mut Vec<Diagnostic>,
) -> BTreeMap<String, Checked> {
    let mut agents = BTreeMap::new();
    for file in &program.files {
        for a in &file.agents {
            if agents.contains_key(&a.name.name) {
                continue; // reported as a duplicate name
            }
            agents.insert(a.name.name.clone(), check_agent(a, messages, out));
        }
    }
    agents
}

pub(super) fn unknown_message(
    name: &Ident,
    messages: &BTreeMap<String, Vec<(String, Type)>>,
) -> Diagnostic {
    let help = match closest(&name.name, messages.keys().map(String::as_str)) {
        Some(c) => format!("did you mean `{c}`?"),
        None => format!("declare it: `message {} {{ .. }}`", name.name),
    };
    Diagnostic::new(
        Code::UnknownMessage,
        format!("unknown message `{}`", name.name),
        name.span,
        "not a declared message",
    )
    .help(help)
}

fn check_agent(
    a: &ast::Agent,
    messages: &BTreeMap<String, Vec<(String, Type)>>,
    out: &mut Vec<Diagnostic>,
) -> Checked {
    let mut accepts = BTreeMap::new();
    for acc in &a.accepts {
        let mut ok = true;
        for m in std::iter::once(&acc.message).chain(acc.reply.as_ref()) {
            if !messages.contains_key(&m.name) {
                out.push(unknown_message(m, messages));
                ok = false;
            }
        }
        if accepts.contains_key(&acc.message.name) {
            out.push(
                Diagnostic::new(
                    Code::Duplicate,
                    format!("`{}` is accepted twice", acc.message.name),
                    acc.span,
                    "declared again here",
                )
                .help("declare each accepted message once"),
            );
        } else if ok {
            accepts.insert(
                acc.message.name.clone(),
                acc.reply.as_ref().map(|r| r.name.clone()),
            );
        }
    }

    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut listed: BTreeMap<String, Option<BTreeSet<String>>> = BTreeMap::new();
    for u in &a.uses {
        if uses.contains_key(&u.name.name) {
            out.push(
                Diagnostic::new(
                    Code::Duplicate,
                    format!("`{}` is used twice", u.name.name),
                    u.name.span,
                    "declared again here",
                )
                .help("declare each `uses` identifier once"),
            );
            continue;
        }
        let mut sends = BTreeSet::new();
        for m in u.sends.iter().flatten() {
            if messages.contains_key(&m.name) {
                sends.insert(m.name.clone());
            } else {
                out.push(unknown_message(m, messages));
            }
        }
        listed.insert(
            u.name.name.clone(),
            u.sends.is_some().then(|| sends.clone()),
        );
        uses.insert(u.name.name.clone(), sends);
    }

    let mut state = Vec::new();
    for s in &a.state {
        if state
            .iter()
            .any(|(n, _, _): &(String, Type, Option<String>)| *n == s.name.name)
        {
            out.push(
                Diagnostic::new(
                    Code::Duplicate,
                    format!("state field `{}` is declared twice", s.name.name),
                    s.name.span,
                    "declared again here",
                )
                .help("rename or remove one of them"),
            );
            continue;
        }
        let ty = types::resolve(&s.ty, messages, out);
        if let Some(k) = &s.keyed_by
            && !matches!(ty, Type::Map(..) | Type::Unknown)
        {
            out.push(
                Diagnostic::new(Code::TypeMismatch, format!("`by {}` on a `{ty}`", k.name), k.span, "only a Map can be partitioned by key")
                    .help(format!("declare the field as a map from the key to the value, e.g. `Map<String, {ty}> by {}`", k.name)),
            );
        }
        state.push((
            s.name.name.clone(),
            ty,
            s.keyed_by.as_ref().map(|k| k.name.clone()),
        ));
    }

    let uses_names: Vec<String> = uses.keys().cloned().collect();
    let env = Env {
        messages,
        state: &state,
        uses: &uses_names,
        accepts: &accepts,
    };
    let mut facts = Facts::default();
    for (s, (_, ty, _)) in a.state.iter().zip(&state) {
        if let Some(init) = &s.init {
            handlers::check_init(&env, init, ty, &mut facts, out);
        }
    }

    let behaviour = behaviour(a, &accepts, messages, &env, &mut facts, out);

    // Sends through an identifier with a declared list must stay within it.
    for (u, sent) in &facts.sends {
        for (m, span) in sent {
            if let Some(Some(allowed)) = listed.get(u)
                && !allowed.contains(m)
            {
                out.push(
                    Diagnostic::new(
                        Code::NotAccepted,
                        format!(
                            "`{m}` is sent to `{u}`, which is declared to take {}",
                            handlers::list(&allowed.iter().collect::<Vec<_>>())
                        ),
                        *span,
                        "not in the declared list",
                    )
                    .help(format!("add `{m}` to the list in `uses {u}(..)`")),
                );
            }
            uses.get_mut(u)
                .expect("sends are only recorded for declared uses")
                .insert(m.clone());
        }
    }

    let declared = check_determinism(a, &facts, out);
    let nondeterminism = match (&declared, &behaviour, &facts.nondeterminism) {
        (_, _, Some(why)) => Some(why.clone()),
        (Some((true, _)), _, None) => None,
        (Some((false, span)), _, None) => Some((*span, "declared `nondeterministic`".to_string())),
        (None, Behaviour::Process { .. }, None) => {
            let span = a.implementation.first().map_or(a.name.span, |i| i.span);
            Some((
                span,
                "an external process is assumed nondeterministic unless declared `deterministic;`"
                    .to_string(),
            ))
        }
        (None, _, None) => None,
    };

    Checked {
        info: AgentInfo {
            accepts,
            uses,
            state: state
                .into_iter()
                .map(|(name, ty, keyed_by)| StateInfo { name, ty, keyed_by })
                .collect(),
            behaviour,
            deterministic: nondeterminism.is_none(),
            ast: a.clone(),
            expr_types: facts.expr_types,
            binding_types: facts.binding_types,
        },
        sends: facts.sends,
        nondeterminism,
        state_accesses: facts.state_accesses,
    }
}

/// The agent's one determinism declaration, reporting repeated and contradicting ones.
fn check_determinism(
    a: &ast::Agent,
    facts: &Facts,
    out: &mut Vec<Diagnostic>,
) -> Option<(bool, Span)> {
    let word = |d: bool| {
        if d {
            "deterministic"
        } else {
            "nondeterministic"
        }
    };
    let (&(first, first_span), rest) = a.determinism.split_first()?;
    for &(d, span) in rest {
        if d == first {
            out.push(
                Diagnostic::new(
                    Code::Duplicate,
                    format!("`{}` is declared `{};` twice", a.name.name, word(d)),
                    span,
                    "declared again here",
                )
                .related(first_span, "first declared here")
                .help("remove one of them"),
            );
        } else {
            out.push(
                Diagnostic::new(
                    Code::DeterminismConflict,
                    format!("`{}` is declared both `deterministic` and `nondeterministic`", a.name.name),
                    span,
                    format!("contradicts the `{};` above", word(first)),
                )
                .related(first_span, format!("declared `{};` here", word(first)))
                .help("keep the one that is true: deterministic when copies fed the same messages reach the same state"),
            );
        }
    }
    if first && let Some((span, why)) = &facts.nondeterminism {
        out.push(
            Diagnostic::new(Code::DeterminismConflict, format!("`{}` is declared `deterministic;`, but {why}", a.name.name), *span, "nondeterministic")
                .related(first_span, "declared deterministic here")
                .help("remove `deterministic;`, or pass the time or random number in a message so that every copy sees the same one"),
        );
    }
    Some((first, first_span))
}

fn behaviour(
    a: &ast::Agent,
    accepts: &BTreeMap<String, Option<String>>,
    messages: &BTreeMap<String, Vec<(String, Type)>>,
    env: &Env,
    facts: &mut Facts,
    out: &mut Vec<Diagnostic>,
) -> Behaviour {
    if a.implementation.len() > 1 || (!a.implementation.is_empty() && !a.handlers.is_empty()) {
        let second = if a.implementation.len() > 1 {
            a.implementation[1].span
        } else {
            a.handlers[0].head_span
        };
        out.push(
            Diagnostic::new(Code::ImplConflict, format!("agent `{}` has more than one implementation", a.name.name), second, "second implementation")
                .related(a.implementation[0].span, "first implementation")
                .help("an agent is implemented by inline handlers, or by one `impl rust`, or by one `impl process`"),
        );
    }
    if let Some(i) = a.implementation.first() {
        if i.target.trim().is_empty() {
            out.push(Diagnostic::new(Code::ImplConflict, "empty implementation target", i.span, "nothing to run").help("name a Rust type (`impl rust \"crate::Type\"`) or a command (`impl process \"python3 agent.py\"`)"));
        }
        return match i.kind {
            ImplKind::Rust => Behaviour::Rust {
                path: i.target.clone(),
            },
            ImplKind::Process => Behaviour::Process {
                command: i.target.clone(),
            },
        };
    }

    let mut handled: Vec<String> = Vec::new();
    let mut on_start = false;
    for h in &a.handlers {
        match &h.trigger {
            Trigger::Start => {
                if on_start {
                    out.push(
                        Diagnostic::new(
                            Code::Duplicate,
                            "two `on start` handlers",
                            h.head_span,
                            "second one",
                        )
                        .help("merge them into one `on start`"),
                    );
                }
                on_start = true;
            }
            Trigger::Message { message, .. } => {
                if !messages.contains_key(&message.name) {
                    out.push(unknown_message(message, messages));
                } else if handled.contains(&message.name) {
                    out.push(
                        Diagnostic::new(
                            Code::Duplicate,
                            format!("two handlers for `{}`", message.name),
                            h.head_span,
                            "second handler",
                        )
                        .help("merge them into one handler"),
                    );
                } else {
                    handled.push(message.name.clone());
                    // A reply can only be sent from this handler, so one without `reply` never
                    // answers its requests.
                    if let (Some(Some(reply)), Some(acc)) = (
                        accepts.get(&message.name),
                        a.accepts
                            .iter()
                            .find(|acc| acc.message.name == message.name),
                    ) {
                        let paths = super::replies::reply_paths(&h.body);
                        if paths.max == 0 {
                            out.push(
                                Diagnostic::new(Code::ReplyMissing, format!("`{}` never replies to `{}`", a.name.name, message.name), h.head_span, "this handler has no `reply`")
                                    .related(acc.span, format!("`{}` is answered with a `{reply}`", message.name))
                                    .help(format!("answer with `reply {reply} {{ .. }};` in this handler, or declare `accepts {};` if `{}` needs no answer", message.name, message.name)),
                            );
                        } else if let (0, Some((span, label))) = (paths.min, paths.missing) {
                            out.push(
                                Diagnostic::new(Code::ReplySomePaths, format!("`{}` answers some `{}` requests and not others", a.name.name, message.name), span, label)
                                    .related(h.head_span, "in this handler")
                                    .help(format!("reply with a `{reply}` on every path (an `else` that replies too), so that every request gets its answer")),
                            );
                        }
                        if let (2, Some((span, label))) = (paths.max, paths.again) {
                            out.push(
                                Diagnostic::new(Code::ReplyTwice, format!("`{}` may answer one `{}` request more than once", a.name.name, message.name), span, label)
                                    .related(h.head_span, "in this handler")
                                    .help("reply once per request: keep one `reply` on each path (compute the answer first, then reply)"),
                            );
                        }
                    }
                }
            }
        }
        handlers::check_handler(env, h, facts, out);
    }
    for acc in &a.accepts {
        if accepts.contains_key(&acc.message.name) && !handled.contains(&acc.message.name) {
            out.push(
                Diagnostic::new(Code::HandlerMissing, format!("`{}` accepts `{}` but has no handler for it", a.name.name, acc.message.name), acc.span, "accepted here")
                    .help(format!("add `on {}(msg) {{ .. }}`, or implement the agent with `impl rust` / `impl process`", acc.message.name)),
            );
        }
    }
    Behaviour::Handlers {
        messages: handled,
        on_start,
    }
}

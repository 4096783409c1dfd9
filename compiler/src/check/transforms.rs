//! Checks transformation pipelines against the standard library's signatures and
//! preconditions.

use std::collections::{BTreeMap, BTreeSet};

use ovid_stdlib::spec::{ParamKind, Precondition, Spec, Target};

use super::agents::Checked;
use super::handlers::{closest, list};
use super::model::{PipelineInfo, PipelineTargetInfo, TransformInfo};
use super::types::Type;
use super::wiring::{CheckedSystem, resolve_ref};
use crate::diagnostic::{Code, Diagnostic};
use crate::syntax::Program;
use crate::syntax::ast::{self, ArgValue, PipelineTarget, Span};

/// Checks every pipeline of the system and records the checked ones in its model.
pub fn check_pipelines(
    _program: &Program,
    messages: &BTreeMap<String, Vec<(String, Type)>>,
    agents: &BTreeMap<String, Checked>,
    system: &mut CheckedSystem,
    out: &mut Vec<Diagnostic>,
) {
    let instances: BTreeMap<String, &ast::Instance> = system.ast.instances.iter().map(|i| (i.name.name.clone(), i)).collect();
    let mut targets: BTreeMap<String, Span> = BTreeMap::new();
    let mut pipelines = Vec::new();
    for p in &system.ast.pipelines {
        let (target, agent, key) = match &p.target {
            PipelineTarget::Agent(r) => {
                let Ok(inst) = resolve_ref(r, &instances, out) else { continue };
                (PipelineTargetInfo::Agent(ref_id(r)), agents.get(&inst.agent.name), ref_id(r))
            }
            PipelineTarget::Channel(from, to) => {
                let (Ok(f), Ok(t)) = (resolve_ref(from, &instances, out), resolve_ref(to, &instances, out)) else { continue };
                let (from_id, to_id) = (ref_id(from), ref_id(to));
                let connected = system.info.channels.iter().any(|c| {
                    (c.from == from_id || c.from.starts_with(&format!("{from_id}["))) && (c.to == to_id || c.to.starts_with(&format!("{to_id}[")))
                });
                if !connected {
                    out.push(
                        Diagnostic::new(Code::TransformTarget, format!("there is no channel from `{from_id}` to `{to_id}`"), p.span, "nothing flows here")
                            .help(format!("a channel exists where `{}` binds one of its `uses` to `{to_id}`", f.name.name)),
                    );
                    continue;
                }
                let _ = t;
                (PipelineTargetInfo::Channel(from_id.clone(), to_id.clone()), None, format!("{from_id} -> {to_id}"))
            }
        };
        if let Some(first) = targets.get(&key) {
            out.push(
                Diagnostic::new(Code::Duplicate, format!("`{key}` is transformed twice"), p.span, "second pipeline")
                    .related(*first, "first pipeline")
                    .help("chain every transformation of one target in one pipeline: `X |> a |> b;`"),
            );
            continue;
        }
        targets.insert(key, p.span);

        let mut transforms = Vec::new();
        for t in &p.transforms {
            let Some(spec) = ovid_stdlib::lookup(&t.name.name) else {
                let names: Vec<&str> = ovid_stdlib::ALL.iter().map(|s| s.name).collect();
                let help = match closest(&t.name.name, names.iter().copied()) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None => format!("the transformations are {}", list(&names)),
                };
                out.push(Diagnostic::new(Code::UnknownTransform, format!("unknown transformation `{}`", t.name.name), t.name.span, "not in the standard library").help(help));
                continue;
            };
            if spec.target == Target::Agent && matches!(p.target, PipelineTarget::Channel(..)) {
                out.push(
                    Diagnostic::new(Code::TransformTarget, format!("`{}` transforms an agent, not a channel", spec.name), t.span, "applied to a channel")
                        .help(format!("apply it to the receiving agent: `{} |> {}`", channel_receiver(&p.target), spec.signature())),
                );
                continue;
            }
            let Some(args) = check_args(spec, t, out) else { continue };
            if let Some(agent) = agent {
                check_preconditions(spec, t, &args, agent, messages, out);
            }
            transforms.push(TransformInfo { name: spec.name.to_string(), args });
        }
        pipelines.push(PipelineInfo { target, transforms });
    }
    system.info.pipelines = pipelines;
}

fn ref_id(r: &ast::InstanceRef) -> String {
    match r.index {
        Some(i) => format!("{}[{i}]", r.name.name),
        None => r.name.name.clone(),
    }
}

fn channel_receiver(t: &PipelineTarget) -> String {
    match t {
        PipelineTarget::Channel(_, to) => ref_id(to),
        PipelineTarget::Agent(a) => ref_id(a),
    }
}

/// Matches arguments to parameters; `None` when any is wrong (all reported).
fn check_args(spec: &Spec, t: &ast::Transform, out: &mut Vec<Diagnostic>) -> Option<BTreeMap<String, ArgValue>> {
    let mut args: BTreeMap<String, ArgValue> = BTreeMap::new();
    let mut ok = true;
    let mut positional = spec.params.iter().filter(|p| p.positional);
    let mut error = |span: Span, message: String, label: &str, out: &mut Vec<Diagnostic>| {
        ok = false;
        out.push(Diagnostic::new(Code::TransformParams, message, span, label).help(format!("`{}` is written `{}`", spec.name, spec.signature())));
    };
    for a in &t.args {
        let param = match &a.name {
            Some(n) => match spec.params.iter().find(|p| p.name == n.name) {
                Some(p) => p,
                None => {
                    error(n.span, format!("`{}` has no parameter `{}`", spec.name, n.name), "unknown parameter", out);
                    continue;
                }
            },
            None => match positional.next() {
                Some(p) => p,
                None => {
                    error(a.span, format!("`{}` takes no more positional arguments", spec.name), "extra argument", out);
                    continue;
                }
            },
        };
        if args.contains_key(param.name) {
            error(a.span, format!("`{}` is given twice", param.name), "given again", out);
            continue;
        }
        if let Err(why) = value_fits(param.kind, &a.value) {
            error(a.span, format!("`{}` of `{}` {why}", param.name, spec.name), &format!("expected {}", param.doc), out);
            continue;
        }
        args.insert(param.name.to_string(), a.value.clone());
    }
    let all_given = t.args.len() == args.len();
    for p in spec.params.iter().filter(|p| p.required) {
        if !args.contains_key(p.name) && all_given {
            error(t.span, format!("`{}` needs `{}`: {}", spec.name, p.name, p.doc), "missing argument", out);
        }
    }
    if spec.name == "encrypt" && args.contains_key("key_env") && args.contains_key("key_file") {
        error(t.span, "`encrypt` takes the key from `key_env` or from `key_file`, not both".to_string(), "two key sources", out);
    }
    ok.then_some(args)
}

fn value_fits(kind: ParamKind, v: &ArgValue) -> Result<(), String> {
    match (kind, v) {
        (ParamKind::Int { min, max }, ArgValue::Int(n)) => {
            if *n < i128::from(min) || *n > i128::from(max) {
                Err(format!("must be from {min} to {max}, not {n}"))
            } else {
                Ok(())
            }
        }
        (ParamKind::OddInt { min, max }, ArgValue::Int(n)) => {
            if *n < i128::from(min) || *n > i128::from(max) {
                Err(format!("must be from {min} to {max}, not {n}"))
            } else if n % 2 == 0 {
                Err(format!("must be odd (2f+1 replicas tolerate f crashes), not {n}"))
            } else {
                Ok(())
            }
        }
        (ParamKind::Duration, ArgValue::DurationMs(_)) => Ok(()),
        (ParamKind::Field, ArgValue::Name(_)) => Ok(()),
        (ParamKind::Choice(options), ArgValue::Name(n)) => {
            if options.contains(&n.as_str()) {
                Ok(())
            } else {
                Err(format!("is one of {}, not `{n}`", list(options)))
            }
        }
        (ParamKind::Str, ArgValue::String(_)) => Ok(()),
        (kind, _) => Err(format!(
            "takes {}",
            match kind {
                ParamKind::Int { .. } | ParamKind::OddInt { .. } => "a whole number",
                ParamKind::Duration => "a duration such as `5ms` or `1s`",
                ParamKind::Field => "a message field name",
                ParamKind::Choice(_) => "one of its named options",
                ParamKind::Str => "a string",
            }
        )),
    }
}

fn check_preconditions(
    spec: &Spec,
    t: &ast::Transform,
    args: &BTreeMap<String, ArgValue>,
    agent: &Checked,
    messages: &BTreeMap<String, Vec<(String, Type)>>,
    out: &mut Vec<Diagnostic>,
) {
    let a = &agent.info.ast;
    for pre in spec.preconditions {
        match pre {
            Precondition::KeyedBy(param) => {
                let Some(ArgValue::Name(field)) = args.get(*param) else { continue };
                let arg_span = t.args.iter().find(|x| x.value == ArgValue::Name(field.clone())).map_or(t.span, |x| x.span);
                let mut key_types: BTreeSet<String> = BTreeSet::new();
                for acc in &a.accepts {
                    let Some(fields) = messages.get(&acc.message.name) else { continue };
                    match fields.iter().find(|(n, _)| n == field) {
                        Some((_, ty)) => {
                            key_types.insert(ty.to_string());
                        }
                        None => out.push(
                            Diagnostic::new(
                                Code::ShardMissingKey,
                                format!("cannot shard `{}` by `{field}`: it accepts `{}`, which has no field `{field}`", a.name.name, acc.message.name),
                                arg_span,
                                format!("`{}` has no `{field}`", acc.message.name),
                            )
                            .related(acc.span, "accepted here")
                            .help(format!("every accepted message needs the key: add `{field}` to `{}`, or shard by a field all of them have", acc.message.name)),
                        ),
                    }
                }
                if key_types.len() > 1 {
                    out.push(
                        Diagnostic::new(Code::ShardMissingKey, format!("the field `{field}` has different types in the accepted messages"), arg_span, format!("`{field}` is {}", list(&key_types.iter().collect::<Vec<_>>())))
                            .help("the shard key must have one type in every message, so equal keys reach the same shard"),
                    );
                }
                for s in &a.state {
                    let keyed = s.keyed_by.as_ref().map(|k| k.name.as_str());
                    if keyed != Some(field.as_str()) {
                        let what = match keyed {
                            Some(other) => format!("partitioned by `{other}`, not `{field}`"),
                            None => "not partitioned by any key".to_string(),
                        };
                        out.push(
                            Diagnostic::new(Code::ShardStateNotKeyed, format!("cannot shard `{}` by `{field}`: state `{}` is {what}", a.name.name, s.name.name), arg_span, "needs state keyed by this field")
                                .related(s.span, "this state")
                                .help(format!("declare each state field as a map keyed by the message's `{field}`: `state {}: Map<K, V> by {field};`", s.name.name)),
                        );
                    }
                }
                let keyed_fields: BTreeSet<&str> = a.state.iter().filter(|s| s.keyed_by.as_ref().is_some_and(|k| k.name == *field)).map(|s| s.name.name.as_str()).collect();
                for access in &agent.state_accesses {
                    if keyed_fields.contains(access.field.as_str()) && access.key_field.as_deref() != Some(field.as_str()) {
                        out.push(
                            Diagnostic::new(
                                Code::ShardStateNotKeyed,
                                format!("cannot shard `{}` by `{field}`: a handler reaches `{}` other than through the message's `{field}`", a.name.name, access.field),
                                arg_span,
                                "state would be split by this field",
                            )
                            .related(access.span, "this access spans shards")
                            .help(format!("a sharded handler may only touch `{}` at the key `msg.{field}` of the message it handles", access.field)),
                        );
                    }
                }
            }
            Precondition::Stateless => {
                if let Some(s) = a.state.first() {
                    out.push(
                        Diagnostic::new(Code::LoadBalanceStateful, format!("cannot {} `{}`: it has state", spec.name, a.name.name), t.span, "needs a stateless agent")
                            .related(s.span, "state declared here")
                            .help("any worker may get any message, so workers keep no state; shard the agent instead, or move its state to another agent"),
                    );
                }
            }
            Precondition::Deterministic => {
                if let Some((span, why)) = &agent.nondeterminism {
                    out.push(
                        Diagnostic::new(Code::ReplicateNondeterministic, format!("cannot {} `{}`: it is not deterministic ({why})", spec.name, a.name.name), t.span, "needs a deterministic agent")
                            .related(*span, "nondeterministic here")
                            .help("replicas must reach the same state from the same messages: pass times and random numbers in messages, or declare an external agent `deterministic;` if it is"),
                    );
                }
            }
        }
    }
}

//! Checks transformation pipelines against the standard library's signatures and
//! preconditions.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use ovid_stdlib::spec::{ParamKind, Precondition, Spec, Target};
use ovid_stdlib::transformation::Transformation;

use super::agents::Checked;
use super::handlers::{closest, list};
use super::model::{ChannelInfo, PipelineInfo, PipelineTargetInfo, TransformInfo, instance_name};
use super::types::Type;
use super::wiring::{CheckedSystem, resolve_ref};
use crate::diagnostic::{Code, Diagnostic};
use crate::syntax::Program;
use crate::syntax::ast::{self, ArgValue, InstanceRef, PipelineTarget, Span};

/// Checks every pipeline of the system and records the checked ones in its model.
pub fn check_pipelines(
    program: &Program,
    messages: &BTreeMap<String, Vec<(String, Type)>>,
    agents: &BTreeMap<String, Checked>,
    system: &mut CheckedSystem,
    out: &mut Vec<Diagnostic>,
) {
    let instances: BTreeMap<String, &ast::Instance> = system
        .ast
        .instances
        .iter()
        .map(|i| (i.name.name.clone(), i))
        .collect();
    // What each checked pipeline transforms, by the instance names it covers (only targets
    // with the same names can overlap), in source order.
    let mut targets: HashMap<Names, Vec<(Covered, Span)>> = HashMap::new();
    // Every (sender, receiver) a channel connects, each end as its element and as its whole
    // array, built on the first channel pipeline.
    let mut connections: Option<HashSet<(&str, &str)>> = None;
    let mut pipelines = Vec::new();
    for p in &system.ast.pipelines {
        if is_controller(&p.target, &instances) {
            if let Some(n) = check_controller(p, out) {
                if system.info.controller_replicas.is_some() {
                    out.push(
                        Diagnostic::new(
                            Code::ControllerTransform,
                            "the controller is replicated twice",
                            p.span,
                            "second pipeline",
                        )
                        .help(format!(
                            "transform the controller in one pipeline: {}",
                            controller_forms()
                        )),
                    );
                }
                system.info.controller_replicas = Some(n);
            }
            continue;
        }
        let (target, agent, key) = match &p.target {
            PipelineTarget::Agent(r) => {
                let Ok(inst) = resolve_ref(r, &instances, out) else {
                    continue;
                };
                (
                    PipelineTargetInfo::Agent(ref_id(r)),
                    agents.get(&inst.agent.name),
                    Covered::Agent(r.clone()),
                )
            }
            PipelineTarget::Channel(from, to) => {
                let (Ok(f), Ok(t)) = (
                    resolve_ref(from, &instances, out),
                    resolve_ref(to, &instances, out),
                ) else {
                    continue;
                };
                let (from_id, to_id) = (ref_id(from), ref_id(to));
                let connected = connections
                    .get_or_insert_with(|| connected_pairs(&system.info.channels))
                    .contains(&(from_id.as_str(), to_id.as_str()));
                if !connected {
                    out.push(
                        Diagnostic::new(
                            Code::TransformTarget,
                            format!("there is no channel from `{from_id}` to `{to_id}`"),
                            p.span,
                            "nothing flows here",
                        )
                        .help(format!(
                            "a channel exists where `{}` binds one of its `uses` to `{to_id}`",
                            f.name.name
                        )),
                    );
                    continue;
                }
                let _ = t;
                (
                    PipelineTargetInfo::Channel(from_id.clone(), to_id.clone()),
                    None,
                    Covered::Channel(from.clone(), to.clone()),
                )
            }
        };
        let same_names = targets.entry(key.names()).or_default();
        if let Some((first, first_span)) = same_names.iter().find(|(t, _)| t.overlaps(&key)) {
            out.push(overlap(&key, p.span, first, *first_span));
            continue;
        }
        same_names.push((key, p.span));

        let mut transforms = Vec::new();
        for t in &p.transforms {
            let Some(transformation) = ovid_stdlib::lookup(&t.name.name) else {
                let names: Vec<&str> = ovid_stdlib::ALL.iter().map(|t| t.spec().name).collect();
                let help = match closest(&t.name.name, names.iter().copied()) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None => format!("the transformations are {}", list(&names)),
                };
                out.push(
                    Diagnostic::new(
                        Code::UnknownTransform,
                        format!("unknown transformation `{}`", t.name.name),
                        t.name.span,
                        "not in the standard library",
                    )
                    .help(help),
                );
                continue;
            };
            let spec = transformation.spec();
            if spec.target == Target::Agent && matches!(p.target, PipelineTarget::Channel(..)) {
                out.push(
                    Diagnostic::new(
                        Code::TransformTarget,
                        format!("`{}` transforms an agent, not a channel", spec.name),
                        t.span,
                        "applied to a channel",
                    )
                    .help(format!(
                        "apply it to the receiving agent: `{} |> {}`",
                        channel_receiver(&p.target),
                        spec.signature()
                    )),
                );
                continue;
            }
            let Some(args) = check_args(transformation, t, out) else {
                continue;
            };
            if let Some(agent) = agent {
                check_preconditions(program, spec, t, &args, agent, messages, out);
            }
            transforms.push(TransformInfo {
                name: spec.name.to_string(),
                args,
            });
        }
        pipelines.push(PipelineInfo { target, transforms });
    }
    system.info.pipelines = pipelines;
}

/// Whether a pipeline transforms the controller: the name `controller`, where no instance of
/// the system has it.
fn is_controller(target: &PipelineTarget, instances: &BTreeMap<String, &ast::Instance>) -> bool {
    let names_controller = |r: &InstanceRef| {
        r.name.name == ovid::CONTROLLER && !instances.contains_key(ovid::CONTROLLER)
    };
    match target {
        PipelineTarget::Agent(r) => names_controller(r),
        PipelineTarget::Channel(from, to) => names_controller(from) || names_controller(to),
    }
}

/// Checks a pipeline that transforms the controller: only `controller |> replicate(n)` is
/// supported (the runtime replicates the controller itself, it is not expanded into proxies).
/// Gives `n`.
fn check_controller(p: &ast::Pipeline, out: &mut Vec<Diagnostic>) -> Option<u32> {
    let help = format!(
        "the controller can only be transformed by {}",
        controller_forms()
    );
    if let PipelineTarget::Channel(..) = p.target {
        out.push(
            Diagnostic::new(
                Code::ControllerTransform,
                "channels to or from the controller cannot be transformed",
                p.span,
                "a channel of the controller",
            )
            .help(help.clone()),
        );
        return None;
    }
    let mut replicas = None;
    for (i, t) in p.transforms.iter().enumerate() {
        // Whether the transformation may apply to the controller is its own to say.
        let transformation =
            ovid_stdlib::lookup(&t.name.name).filter(|tr| supports_controller(*tr));
        let what = match (transformation, i) {
            (None, _) => Some(format!(
                "the controller cannot be transformed by `{}`",
                t.name.name
            )),
            (Some(_), 1..) => Some("the controller is replicated once, by itself".to_string()),
            (Some(_), 0) => None,
        };
        if let Some(what) = what {
            out.push(
                Diagnostic::new(
                    Code::ControllerTransform,
                    what,
                    t.span,
                    "not supported on the controller",
                )
                .help(help),
            );
            return None;
        }
        let tr = transformation?;
        let args = check_args(tr, t, out)?;
        let n = tr.controller_replicas(&crate::check::model::args(&args));
        replicas = n.and_then(|n| u32::try_from(n).ok());
    }
    replicas
}

/// Whether a transformation can apply to the controller with some arguments: with its
/// smallest whole-number arguments, it says how many controller replicas they make.
fn supports_controller(t: &dyn Transformation) -> bool {
    let args = t
        .spec()
        .params
        .iter()
        .filter_map(|p| match p.kind {
            ParamKind::Int { min, .. } | ParamKind::OddInt { min, .. } => {
                Some((p.name.to_string(), ovid::latt::Value::Int(min)))
            }
            _ => None,
        })
        .collect();
    t.controller_replicas(&args).is_some()
}

/// The transformations that may apply to the controller, as a user writes them:
/// `` `controller |> replicate(n);` ``, quoted.
fn controller_forms() -> String {
    let forms: Vec<String> = ovid_stdlib::ALL
        .iter()
        .filter(|t| supports_controller(**t))
        .map(|t| format!("controller |> {};", t.spec().signature()))
        .collect();
    list(&forms)
}

/// What a pipeline transforms, to find two pipelines transforming the same thing.
enum Covered {
    Agent(InstanceRef),
    Channel(InstanceRef, InstanceRef),
}

/// The instance names a pipeline covers: the agent's, or the sender's and the receiver's.
type Names = (String, Option<String>);

/// Whether two references reach a common agent: the same one, or an array and its element.
fn share(a: &InstanceRef, b: &InstanceRef) -> bool {
    a.name.name == b.name.name && (a.index.is_none() || b.index.is_none() || a.index == b.index)
}

/// The narrower of two references that [`share`] an agent.
fn narrower<'a>(a: &'a InstanceRef, b: &'a InstanceRef) -> &'a InstanceRef {
    if a.index.is_some() { a } else { b }
}

impl Covered {
    fn overlaps(&self, other: &Covered) -> bool {
        match (self, other) {
            (Covered::Agent(a), Covered::Agent(b)) => share(a, b),
            (Covered::Channel(af, at), Covered::Channel(bf, bt)) => share(af, bf) && share(at, bt),
            _ => false,
        }
    }

    /// The instance names it covers: two targets overlap only if these are equal.
    fn names(&self) -> Names {
        match self {
            Covered::Agent(a) => (a.name.name.clone(), None),
            Covered::Channel(f, t) => (f.name.name.clone(), Some(t.name.name.clone())),
        }
    }

    fn name(&self) -> String {
        match self {
            Covered::Agent(a) => ref_id(a),
            Covered::Channel(f, t) => format!("{} -> {}", ref_id(f), ref_id(t)),
        }
    }
}

/// Every (sender, receiver) some channel connects, each end spelled as its element
/// (`client[2]`) and as its whole array (`client`): a channel pipeline `a -> b` needs one.
fn connected_pairs(channels: &[ChannelInfo]) -> HashSet<(&str, &str)> {
    let mut pairs = HashSet::new();
    for c in channels {
        let (from, to) = (c.from.as_str(), c.to.as_str());
        for f in [from, instance_name(from)] {
            for t in [to, instance_name(to)] {
                pairs.insert((f, t));
            }
        }
    }
    pairs
}

/// Two pipelines for one target: the same target twice, or an array and one of its elements
/// (expansion would apply only one of them).
fn overlap(second: &Covered, span: Span, first: &Covered, first_span: Span) -> Diagnostic {
    let (name, first_name) = (second.name(), first.name());
    if name == first_name {
        return Diagnostic::new(
            Code::Duplicate,
            format!("`{name}` is transformed twice"),
            span,
            "second pipeline",
        )
        .related(first_span, "first pipeline")
        .help("chain every transformation of one target in one pipeline: `X |> a |> b;`");
    }
    let (common, help) = match (second, first) {
        (Covered::Agent(a), Covered::Agent(b)) => {
            let array = if a.index.is_none() { a } else { b };
            (
                ref_id(narrower(a, b)),
                format!(
                    "give each agent one pipeline: transform the whole array `{0} |> ..;`, or each element on its own `{0}[0] |> ..; {0}[1] |> ..;`",
                    array.name.name
                ),
            )
        }
        (Covered::Channel(af, at), Covered::Channel(bf, bt)) => (
            format!("{} -> {}", ref_id(narrower(af, bf)), ref_id(narrower(at, bt))),
            "give each channel one pipeline: transform the channels of the whole array in one pipeline, or each element's channel on its own".to_string(),
        ),
        _ => unreachable!("only pipelines of the same kind overlap"),
    };
    Diagnostic::new(
        Code::TransformOverlap,
        format!("`{common}` is transformed by two pipelines"),
        span,
        format!("this pipeline transforms `{name}`"),
    )
    .related(first_span, format!("this one transforms `{first_name}`"))
    .help(help)
}

fn ref_id(r: &ast::InstanceRef) -> String {
    match r.index {
        Some(i) => format!("{}[{i}]", r.name.name),
        None => r.name.name.clone(),
    }
}

/// Where the type of `message`'s field `field` is written.
fn field_span(program: &Program, message: &str, field: &str) -> Option<Span> {
    let m = program
        .files
        .iter()
        .flat_map(|f| &f.messages)
        .find(|m| m.name.name == message)?;
    m.fields
        .iter()
        .find(|f| f.name.name == field)
        .map(|f| f.name.span.to(f.ty.span))
}

fn channel_receiver(t: &PipelineTarget) -> String {
    match t {
        PipelineTarget::Channel(_, to) => ref_id(to),
        PipelineTarget::Agent(a) => ref_id(a),
    }
}

/// Matches arguments to parameters; `None` when any is wrong (all reported).
fn check_args(
    transformation: &dyn Transformation,
    t: &ast::Transform,
    out: &mut Vec<Diagnostic>,
) -> Option<BTreeMap<String, ArgValue>> {
    let spec = transformation.spec();
    let mut args: BTreeMap<String, ArgValue> = BTreeMap::new();
    let mut ok = true;
    let mut positional = spec.params.iter().filter(|p| p.positional);
    let mut error = |span: Span, message: String, label: &str, out: &mut Vec<Diagnostic>| {
        ok = false;
        out.push(
            Diagnostic::new(Code::TransformParams, message, span, label).help(format!(
                "`{}` is written `{}`",
                spec.name,
                spec.signature()
            )),
        );
    };
    for a in &t.args {
        let param = match &a.name {
            Some(n) => match spec.params.iter().find(|p| p.name == n.name) {
                Some(p) => p,
                None => {
                    error(
                        n.span,
                        format!("`{}` has no parameter `{}`", spec.name, n.name),
                        "unknown parameter",
                        out,
                    );
                    continue;
                }
            },
            None => match positional.next() {
                Some(p) => p,
                None => {
                    error(
                        a.span,
                        format!("`{}` takes no more positional arguments", spec.name),
                        "extra argument",
                        out,
                    );
                    continue;
                }
            },
        };
        if args.contains_key(param.name) {
            error(
                a.span,
                format!("`{}` is given twice", param.name),
                "given again",
                out,
            );
            continue;
        }
        if let Err(why) = value_fits(param.kind, &a.value) {
            error(
                a.span,
                format!("`{}` of `{}` {why}", param.name, spec.name),
                &format!("expected {}", param.doc),
                out,
            );
            continue;
        }
        args.insert(param.name.to_string(), a.value.clone());
    }
    let all_given = t.args.len() == args.len();
    for p in spec.params.iter().filter(|p| p.required) {
        if !args.contains_key(p.name) && all_given {
            error(
                t.span,
                format!("`{}` needs `{}`: {}", spec.name, p.name, p.doc),
                "missing argument",
                out,
            );
        }
    }
    if let Err(invalid) = transformation.validate(&crate::check::model::args(&args)) {
        error(t.span, invalid.message, invalid.label, out);
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
                Err(format!(
                    "must be odd (2f+1 replicas tolerate f crashes), not {n}"
                ))
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
    program: &Program,
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
                let Some(ArgValue::Name(field)) = args.get(*param) else {
                    continue;
                };
                let arg_span = t
                    .args
                    .iter()
                    .find(|x| x.value == ArgValue::Name(field.clone()))
                    .map_or(t.span, |x| x.span);
                // (message, key type, where the accepted message is declared) for each message.
                let mut key_types: Vec<(&str, &Type, Span)> = Vec::new();
                for acc in &a.accepts {
                    let Some(fields) = messages.get(&acc.message.name) else {
                        continue;
                    };
                    match fields.iter().find(|(n, _)| n == field) {
                        Some((_, ty)) => {
                            key_types.push((&acc.message.name, ty, acc.span));
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
                if let Some(&(first_msg, first_ty, first_span)) = key_types.first()
                    && let Some(&(other_msg, other_ty, other_span)) =
                        key_types.iter().find(|(_, t, _)| !t.fits(first_ty))
                {
                    let (first_at, other_at) = (
                        field_span(program, first_msg, field).unwrap_or(first_span),
                        field_span(program, other_msg, field).unwrap_or(other_span),
                    );
                    let types: BTreeSet<String> =
                        key_types.iter().map(|(_, t, _)| format!("`{t}`")).collect();
                    out.push(
                        Diagnostic::new(
                            Code::ShardKeyType,
                            format!("cannot shard `{}` by `{field}`: it is `{first_ty}` in `{first_msg}` but `{other_ty}` in `{other_msg}`", a.name.name),
                            arg_span,
                            format!("`{field}` has {} types", types.len()),
                        )
                        .related(first_at, format!("`{first_ty}` here"))
                        .related(other_at, format!("`{other_ty}` here"))
                        .help(format!(
                            "give `{field}` one type in every accepted message (it is {}), so that equal keys reach the same shard",
                            types.into_iter().collect::<Vec<_>>().join(", ")
                        )),
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
                let keyed_fields: BTreeSet<&str> = a
                    .state
                    .iter()
                    .filter(|s| s.keyed_by.as_ref().is_some_and(|k| k.name == *field))
                    .map(|s| s.name.name.as_str())
                    .collect();
                for access in &agent.state_accesses {
                    if keyed_fields.contains(access.field.as_str())
                        && access.key_field.as_deref() != Some(field.as_str())
                    {
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

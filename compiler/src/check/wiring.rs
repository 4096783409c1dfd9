//! Checks a system's instances, their wiring and its boxes.

use std::collections::{BTreeMap, BTreeSet};

use super::agents::Checked;
use super::handlers::{closest, list};
use super::model::{BoxInfo, ChannelInfo, InstanceInfo, SystemInfo};
use super::types::Type;
use crate::diagnostic::{Code, Diagnostic};
use crate::syntax::Program;
use crate::syntax::ast::{self, InstanceRef};

/// A checked system with the syntax the transformation phase reads.
pub struct CheckedSystem {
    /// What goes into the model.
    pub info: SystemInfo,
    /// Its syntax.
    pub ast: ast::System,
}

/// Resolves an instance reference; `Err` has been reported.
pub(super) fn resolve_ref<'a>(
    r: &InstanceRef,
    instances: &'a BTreeMap<String, &ast::Instance>,
    out: &mut Vec<Diagnostic>,
) -> Result<&'a ast::Instance, ()> {
    let Some(inst) = instances.get(&r.name.name) else {
        let help = match closest(&r.name.name, instances.keys().map(String::as_str)) {
            Some(c) => format!("did you mean `{c}`?"),
            None => format!("declare it: `instance {}: SomeAgent;`", r.name.name),
        };
        out.push(
            Diagnostic::new(
                Code::UnknownInstance,
                format!("unknown instance `{}`", r.name.name),
                r.name.span,
                "not declared in this system",
            )
            .help(help),
        );
        return Err(());
    };
    match (r.index, inst.count) {
        (Some(i), Some((n, _))) if i >= n => {
            out.push(
                Diagnostic::new(
                    Code::IndexOutOfRange,
                    format!(
                        "`{}[{i}]` is past the end of `{}`",
                        r.name.name, r.name.name
                    ),
                    r.span,
                    format!("index {i}"),
                )
                .related(
                    inst.span,
                    format!(
                        "declared with {}",
                        crate::diagnostic::count(n as usize, "element")
                    ),
                )
                .help(format!("indices run from 0 to {}", n.saturating_sub(1))),
            );
            Err(())
        }
        (Some(_), None) => {
            out.push(
                Diagnostic::new(
                    Code::IndexOutOfRange,
                    format!("`{}` is not an array", r.name.name),
                    r.span,
                    "indexed here",
                )
                .related(inst.span, "declared without `[n]`")
                .help(format!("refer to it as plain `{}`", r.name.name)),
            );
            Err(())
        }
        _ => Ok(inst),
    }
}

/// Checks the program's system, if it has one.
pub fn check_system(
    program: &Program,
    _messages: &BTreeMap<String, Vec<(String, Type)>>,
    agents: &BTreeMap<String, Checked>,
    out: &mut Vec<Diagnostic>,
) -> Option<CheckedSystem> {
    let systems: Vec<&ast::System> = program.files.iter().flat_map(|f| &f.systems).collect();
    for extra in systems.iter().skip(1) {
        out.push(
            Diagnostic::new(Code::MultipleSystems, format!("a second system `{}`", extra.name.name), extra.name.span, "second system")
                .help("a program declares one system; put other systems in files of their own that import the shared declarations"),
        );
    }
    let sys = *systems.first()?;

    let mut instances: BTreeMap<String, &ast::Instance> = BTreeMap::new();
    for inst in &sys.instances {
        if let Some(first) = instances.get(&inst.name.name) {
            out.push(
                Diagnostic::new(
                    Code::Duplicate,
                    format!("instance `{}` is declared twice", inst.name.name),
                    inst.name.span,
                    "declared again here",
                )
                .related(first.span, "first declared here")
                .help("give each instance its own identifier"),
            );
            continue;
        }
        if let Some((0, span)) = inst.count {
            out.push(
                Diagnostic::new(
                    Code::IndexOutOfRange,
                    format!("`{}[0]` has no elements", inst.name.name),
                    span,
                    "zero",
                )
                .help("an array has at least one element"),
            );
        }
        instances.insert(inst.name.name.clone(), inst);
    }

    let mut infos = Vec::new();
    let mut channels = Vec::new();
    for inst in &sys.instances {
        if !std::ptr::eq(instances[&inst.name.name], inst) {
            continue;
        }
        let Some(agent) = agents.get(&inst.agent.name) else {
            let help = match closest(&inst.agent.name, agents.keys().map(String::as_str)) {
                Some(c) => format!("did you mean `{c}`?"),
                None => format!("declare it: `agent {} {{ .. }}`", inst.agent.name),
            };
            out.push(
                Diagnostic::new(
                    Code::UnknownAgent,
                    format!("unknown agent `{}`", inst.agent.name),
                    inst.agent.span,
                    "not a declared agent",
                )
                .help(help),
            );
            continue;
        };
        let mut bindings = BTreeMap::new();
        for b in &inst.bindings {
            if !agent.info.uses.contains_key(&b.name.name) {
                let used: Vec<&String> = agent.info.uses.keys().collect();
                let help = match closest(&b.name.name, used.iter().map(|s| s.as_str())) {
                    Some(c) => format!("did you mean `{c}`?"),
                    None if used.is_empty() => format!(
                        "`{}` uses no identifiers; remove the binding",
                        inst.agent.name
                    ),
                    None => format!("`{}` uses {}", inst.agent.name, list(&used)),
                };
                out.push(
                    Diagnostic::new(
                        Code::UnknownBinding,
                        format!("`{}` does not use `{}`", inst.agent.name, b.name.name),
                        b.name.span,
                        "not one of its `uses`",
                    )
                    .help(help),
                );
                continue;
            }
            if bindings.contains_key(&b.name.name) {
                out.push(
                    Diagnostic::new(
                        Code::Duplicate,
                        format!("`{}` is bound twice", b.name.name),
                        b.name.span,
                        "bound again here",
                    )
                    .help("bind each identifier once"),
                );
                continue;
            }
            let Ok(target) = resolve_ref(&b.target, &instances, out) else {
                continue;
            };
            if target.count.is_some() && b.target.index.is_none() {
                out.push(
                    Diagnostic::new(Code::Unbound, format!("`{}` is bound to the whole array `{}`", b.name.name, b.target.name.name), b.target.span, "an array, not one agent")
                        .help(format!("bind it to one element, e.g. `{} = {}[0]`, or load-balance one agent with `|> load_balance(n)`", b.name.name, b.target.name.name)),
                );
                continue;
            }
            let target_id = match b.target.index {
                Some(i) => format!("{}[{i}]", target.name.name),
                None => target.name.name.clone(),
            };
            // What the sender sends must be accepted by the receiver's agent.
            if let Some(receiver) = agents.get(&target.agent.name) {
                let sent = &agent.info.uses[&b.name.name];
                for m in sent {
                    if !receiver.info.accepts.contains_key(m) {
                        let mut d = Diagnostic::new(
                            Code::NotAccepted,
                            format!(
                                "`{}` sends `{m}` to `{}`, but `{}` does not accept `{m}`",
                                inst.name.name, b.name.name, target.agent.name
                            ),
                            b.target.span,
                            format!("`{target_id}` is a `{}`", target.agent.name),
                        )
                        .help(format!(
                            "bind `{}` to an agent that accepts {}, or add `accepts {m};` to `{}`",
                            b.name.name,
                            list(&sent.iter().collect::<Vec<_>>()),
                            target.agent.name
                        ));
                        if let Some((_, span)) = agent
                            .sends
                            .get(&b.name.name)
                            .and_then(|s| s.iter().find(|(x, _)| x == m))
                        {
                            d = d.related(*span, "sent here");
                        }
                        out.push(d);
                    }
                }
                for sender_id in ids(inst) {
                    channels.push(ChannelInfo {
                        from: sender_id,
                        via: b.name.name.clone(),
                        to: target_id.clone(),
                        messages: sent.clone(),
                    });
                }
            }
            bindings.insert(b.name.name.clone(), target_id);
        }
        for u in agent.info.uses.keys() {
            if !bindings.contains_key(u) && !inst.bindings.iter().any(|b| b.name.name == *u) {
                let use_span = agent
                    .info
                    .ast
                    .uses
                    .iter()
                    .find(|x| x.name.name == *u)
                    .map(|x| x.name.span);
                let mut d = Diagnostic::new(
                    Code::Unbound,
                    format!("`{}` leaves `{u}` unbound", inst.name.name),
                    inst.span,
                    format!("`{}` uses `{u}`", inst.agent.name),
                )
                .help(format!(
                    "bind it: `instance {}: {} {{ {u} = SomeInstance }};`",
                    inst.name.name, inst.agent.name
                ));
                if let Some(s) = use_span {
                    d = d.related(s, "declared here");
                }
                out.push(d);
            }
        }
        infos.push(InstanceInfo {
            name: inst.name.name.clone(),
            agent: inst.agent.name.clone(),
            count: inst.count.map(|(n, _)| n),
            bindings,
        });
    }

    let boxes = check_boxes(sys, out);
    Some(CheckedSystem {
        info: SystemInfo {
            name: sys.name.name.clone(),
            instances: infos,
            channels,
            pipelines: Vec::new(),
            boxes,
            controller_replicas: None,
        },
        ast: sys.clone(),
    })
}

fn ids(inst: &ast::Instance) -> Vec<String> {
    match inst.count {
        None => vec![inst.name.name.clone()],
        Some((n, _)) => (0..n).map(|i| format!("{}[{i}]", inst.name.name)).collect(),
    }
}

fn check_boxes(sys: &ast::System, out: &mut Vec<Diagnostic>) -> Vec<BoxInfo> {
    let mut names = BTreeSet::new();
    // Box name and address span by the address, normalised.
    let mut addresses: BTreeMap<String, (&str, ast::Span)> = BTreeMap::new();
    let mut boxes = Vec::new();
    for b in &sys.boxes {
        if !names.insert(b.name.name.clone()) {
            out.push(
                Diagnostic::new(
                    Code::Duplicate,
                    format!("box `{}` is declared twice", b.name.name),
                    b.name.span,
                    "declared again here",
                )
                .help("give each box its own name"),
            );
            continue;
        }
        if let Some((addr, span)) = &b.address {
            if !valid_address(addr) {
                out.push(
                    Diagnostic::new(
                        Code::BadAddress,
                        format!("`{addr}` is not a box address"),
                        *span,
                        "expected host:port",
                    )
                    .help("write it as host:port, e.g. \"127.0.0.1:7000\" or \"kvs-0.local:7000\""),
                );
            } else if let Some((first, first_span)) = addresses.get(&normal_address(addr)) {
                out.push(
                    Diagnostic::new(
                        Code::DuplicateAddress,
                        format!("boxes `{first}` and `{}` both listen on `{addr}`", b.name.name),
                        *span,
                        format!("`{}` listens here", b.name.name),
                    )
                    .related(*first_span, format!("and `{first}` here"))
                    .help("each box listens on an address of its own: give one of them another port, or leave out `at` to have one chosen"),
                );
            } else {
                addresses.insert(normal_address(addr), (&b.name.name, *span));
            }
        }
        for (p, span) in &b.patterns {
            if let Err(why) = valid_pattern(p) {
                out.push(
                    Diagnostic::new(Code::BadPattern, format!("`{p}` is not an identifier pattern"), *span, why)
                        .help("patterns are identifiers such as \"KVS/Shard0\" where `*` matches any run of characters"),
                );
            }
        }
        boxes.push(BoxInfo {
            name: b.name.name.clone(),
            address: b.address.as_ref().map(|(a, _)| a.clone()),
            patterns: b.patterns.iter().map(|(p, _)| p.clone()).collect(),
        });
    }
    boxes
}

fn valid_address(addr: &str) -> bool {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    port.parse::<u16>().is_ok()
        && !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
}

/// One spelling per address: IP addresses as the standard library prints them
/// (`[0:0::1]:7` is `[::1]:7`), host names in lower case.
fn normal_address(addr: &str) -> String {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(a) => a.to_string(),
        Err(_) => addr.to_ascii_lowercase(),
    }
}

fn valid_pattern(p: &str) -> Result<(), &'static str> {
    if p.is_empty() {
        return Err("empty");
    }
    if p.starts_with('/') || p.ends_with('/') || p.contains("//") {
        return Err("identifiers have no empty path segments");
    }
    if !p
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '/' | '*' | '[' | ']'))
    {
        return Err("identifiers hold letters, digits, `_`, `/` and `[n]`");
    }
    Ok(())
}
